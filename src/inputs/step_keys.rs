//! Per-step cache keys, for a cache of machine checkpoints (issue 14).
//!
//! The machine's key covers what the guest is before any provisioner runs:
//! the source's digest, the builder settings that shape the guest (see
//! [`Part::settings`]) and facts of the host the caller adds (the QEMU
//! version, the accelerator in use). Each provisioner's key chains the key
//! before it with the provisioner's own inputs:
//!
//! ```text
//! machine = H(source digest ‖ builder settings and files ‖ machine facts)
//! step[k] = H(step[k-1] (machine for k = 0) ‖ settings, inline text,
//!             host file contents, interpolations of provisioner k)
//! ```
//!
//! so changing provisioner `k` changes `step[k..]` and nothing before, and
//! templates that share a source, builder settings and their first
//! provisioners share those keys. Keys are computed from the canonical
//! template ([`super::canonical`]): the build id, `auto` versions and the
//! per-build SSH key do not change them.
//!
//! Not in a key, and left to the cache's policy: secret values (masked, as
//! in the input digest; [`Part::sensitive`] says a step received one), and
//! files a step reads that an earlier `shell-local` step writes: they are
//! hashed when the key is computed, so compute each key with
//! [`KeyChain::step`] just before its step runs when that matters.

use super::{HashError, Part, canonical, hash_path, sha256_of, walk};
use crate::template::{Loaded, TemplateError};

/// Bumped when the way keys are computed changes (every key changes with it).
const KEY_SCHEME: &str = "imgbuild-step-key/1";

/// `sha256:<hex>`, naming the state of the guest after a step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKey(String);

impl StepKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StepKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Facts of the host that shape the guest, `(name, value)`: e.g.
/// `("qemu_version", "8.2.2")`, `("accelerator", "kvm")`.
pub type MachineFacts<'a> = &'a [(&'a str, &'a str)];

/// The machine's key and one key per provisioner, in template order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepKeys {
    pub machine: StepKey,
    pub steps: Vec<StepKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum StepKeyError {
    #[error("cannot resolve the template for its step keys")]
    Template(#[source] TemplateError),
    #[error("cannot compute a step key")]
    Read(#[from] HashError),
}

/// Every key of `loaded`'s build. `source_digest` is the digest the source
/// must have (see `digest::source_digest`); `None` for a build without one.
pub fn step_keys(
    loaded: &Loaded,
    source_digest: Option<&str>,
    facts: MachineFacts<'_>,
) -> Result<StepKeys, StepKeyError> {
    let canonical = canonical(loaded).map_err(StepKeyError::Template)?;
    let inputs = walk(&canonical);
    let mut chain = KeyChain::machine(&inputs.builder, source_digest, facts)?;
    let machine = chain.last().clone();
    let steps = inputs.provisioners.iter().map(|p| chain.step(p)).collect::<Result<_, _>>()?;
    Ok(StepKeys { machine, steps })
}

/// The chain of keys, one step at a time.
#[derive(Debug, Clone)]
pub struct KeyChain {
    last: StepKey,
}

impl KeyChain {
    /// Starts the chain at the machine's key.
    pub fn machine(builder: &Part, source_digest: Option<&str>, facts: MachineFacts<'_>) -> Result<Self, HashError> {
        let facts: serde_json::Map<String, serde_json::Value> =
            facts.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
        let record = serde_json::json!({
            "source": source_digest,
            "builder": part_record(builder)?,
            "facts": facts,
        });
        Ok(KeyChain { last: key_of("machine", &record) })
    }

    /// The key of the last step added (the machine's before any).
    pub fn last(&self) -> &StepKey {
        &self.last
    }

    /// Adds the next provisioner; returns its key. Reads its host files now.
    pub fn step(&mut self, provisioner: &Part) -> Result<StepKey, HashError> {
        let record = serde_json::json!({ "after": self.last.as_str(), "step": part_record(provisioner)? });
        self.last = key_of("step", &record);
        Ok(self.last.clone())
    }
}

/// Everything of `part` that goes into a key, host files hashed.
fn part_record(part: &Part) -> Result<serde_json::Value, HashError> {
    let files = part
        .files
        .iter()
        .map(|f| Ok(serde_json::json!([f.label, hash_path(&f.path.resolved)?])))
        .collect::<Result<Vec<_>, HashError>>()?;
    Ok(serde_json::json!({
        "part": part.label,
        "kind": part.kind,
        "settings": part.settings,
        "inline": part.inline,
        "files": files,
        "uses": part.uses,
        "sensitive": part.sensitive,
    }))
}

fn key_of(what: &str, record: &serde_json::Value) -> StepKey {
    let body = serde_json::to_vec(record).unwrap_or_default();
    let mut bytes = format!("{KEY_SCHEME}\n{what}\n").into_bytes();
    bytes.extend(body);
    StepKey(sha256_of(&bytes))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::template::{LoadOptions, VarInputs, load};

    const TEMPLATE: &str = r#"{
      "name": "keys",
      "version": "auto",
      "variables": {
        "memory": { "default": "1G" },
        "boot_timeout": { "default": "5m" },
        "step3": { "default": "three" }
      },
      "source": { "type": "cloud-image", "url": "base.qcow2", "checksum": "none" },
      "builder": { "type": "qemu", "memory": "{{ var.memory }}", "boot_timeout": "{{ var.boot_timeout }}" },
      "provisioners": [
        { "type": "shell", "inline": ["echo zero > /etc/zero"] },
        { "type": "file", "source": "files/site.conf", "destination": "/etc/site.conf" },
        { "type": "shell", "script": "files/setup.sh", "env": { "BUILD": "{{ build.id }}" } },
        { "type": "shell", "inline": ["echo {{ var.step3 }} > /etc/three"] },
        { "type": "shell", "inline": ["echo four > /etc/four"] }
      ]
    }"#;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("t.json"), TEMPLATE).unwrap();
        std::fs::write(dir.path().join("files/site.conf"), "listen 80\n").unwrap();
        std::fs::write(dir.path().join("files/setup.sh"), "#!/bin/sh\ntrue\n").unwrap();
        dir
    }

    fn keys_with(dir: &Path, vars: &[(&str, &str)], build_id: &str, source: &str, facts: MachineFacts<'_>) -> StepKeys {
        let options = LoadOptions {
            vars: VarInputs {
                cli: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                ..Default::default()
            },
            build_id: build_id.into(),
            version_override: None,
            ssh_public_key: format!("ssh-ed25519 {build_id}"),
        };
        let loaded = load(&dir.join("t.json"), &options).unwrap();
        step_keys(&loaded, Some(source), facts).unwrap()
    }

    fn keys(dir: &Path, vars: &[(&str, &str)]) -> StepKeys {
        keys_with(dir, vars, "build-1", "sha256:1111", &[("qemu_version", "8.2.2")])
    }

    /// How many leading keys two chains share, counting the machine's.
    fn shared(a: &StepKeys, b: &StepKeys) -> usize {
        if a.machine != b.machine {
            return 0;
        }
        1 + a.steps.iter().zip(&b.steps).take_while(|(x, y)| x == y).count()
    }

    fn all_differ(a: &StepKeys, b: &StepKeys) -> bool {
        a.machine != b.machine && a.steps.iter().zip(&b.steps).all(|(x, y)| x != y)
    }

    #[test]
    fn keys_are_stable_across_builds() {
        let dir = tree();
        let first = keys(dir.path(), &[]);
        assert_eq!(first.steps.len(), 5);
        let other_build = keys_with(dir.path(), &[], "build-2", "sha256:1111", &[("qemu_version", "8.2.2")]);
        assert_eq!(first, other_build, "the build id, auto version and SSH key are placeholders");
        assert!(first.machine.as_str().starts_with("sha256:") && first.machine.as_str().len() == 71);
        let mut distinct: Vec<_> = std::iter::once(&first.machine).chain(&first.steps).collect();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 6);
    }

    #[test]
    fn changing_a_step_changes_its_key_and_every_later_one_only() {
        let dir = tree();
        let before = keys(dir.path(), &[]);
        let after = keys(dir.path(), &[("step3", "drei")]);
        assert_eq!(before.machine, after.machine);
        assert_eq!(before.steps[..3], after.steps[..3], "keys before step 3 stay");
        assert!(before.steps[3..].iter().zip(&after.steps[3..]).all(|(a, b)| a != b), "step 3 and 4 change");
    }

    #[test]
    fn an_uploaded_file_counts_by_content() {
        let dir = tree();
        let before = keys(dir.path(), &[]);
        std::fs::write(dir.path().join("files/site.conf"), "listen 8080\n").unwrap();
        let after = keys(dir.path(), &[]);
        assert_eq!(shared(&before, &after), 2, "the machine and step 0 stay; the upload (step 1) and later change");
        assert!(before.steps[1..].iter().zip(&after.steps[1..]).all(|(a, b)| a != b));
        std::fs::write(dir.path().join("files/site.conf"), "listen 80\n").unwrap();
        assert_eq!(keys(dir.path(), &[]), before);
    }

    #[test]
    fn the_machine_key_covers_source_guest_settings_and_facts() {
        let dir = tree();
        let base = keys(dir.path(), &[]);
        assert!(all_differ(&base, &keys(dir.path(), &[("memory", "2G")])), "memory shapes the guest");
        let other_source = keys_with(dir.path(), &[], "build-1", "sha256:2222", &[("qemu_version", "8.2.2")]);
        assert!(all_differ(&base, &other_source));
        let other_qemu = keys_with(dir.path(), &[], "build-1", "sha256:1111", &[("qemu_version", "9.0.0")]);
        assert!(all_differ(&base, &other_qemu));
        assert_eq!(keys(dir.path(), &[("boot_timeout", "20m")]), base, "a timeout shapes nothing");
    }
}
