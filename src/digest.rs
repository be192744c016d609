//! The input digest: one `sha256:` value over everything a build is made
//! of, so a build can be skipped when nothing changed (`build --if-changed`)
//! and a published image records what it was built from (`input_digest` in
//! `manifest.json`). See `docs/ci.md#input-digest`.
//!
//! What goes in, each as a labelled part (see [`InputDigest::parts`]):
//!
//! * `template`: the resolved template JSON ([`Loaded::resolved_json`],
//!   secrets masked), re-resolved with the *written* version spec and a fixed
//!   build id, so `version: "auto"`, `--set-version` and the build id never
//!   change the digest. Machine-dependent text is removed: the template
//!   directory is replaced by `{{ template_dir }}`, the source's URL and
//!   checksum are left out (the `source` part stands for them), variable
//!   values are left out (they count where they are used) and so is the
//!   `lint` block (it changes nothing in the image).
//! * `source`: the digest the source must have: the written digest, the one a
//!   `file:` checksum list gives *now* (a republished upstream image is a
//!   change), or for `checksum: none` the URL.
//! * every host file the build reads, as the input walk ([`crate::inputs`])
//!   lists them (the builder's `http_directory`, a provisioner's `script`,
//!   `scripts`, an upload's `source`; directories walked in sorted order,
//!   relative names, contents and the executable bit),
//! * every `--var-file`, byte for byte.
//!
//! Not in it: secrets (masked: a changed password alone does not rebuild),
//! absolute paths, timestamps, the build id, the per-build SSH key, the
//! imgbuild version, and
//! `{{ env.* }}` values only where they are interpolated into the template.

use std::path::PathBuf;

use crate::inputs::{self, HashError, hash_path, sha256_of, strip_dir};
use crate::source::{Checksum, FetchError, Fetcher};
use crate::template::{Loaded, Source, TemplateError};

pub use crate::inputs::{BUILD_ID_PLACEHOLDER, SSH_KEY_PLACEHOLDER, TEMPLATE_DIR_PLACEHOLDER};

/// Bumped when the way the digest is computed changes (every digest changes with it).
const DIGEST_SCHEME: &str = "imgbuild-input-digest/1";

/// The input digest and the parts it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputDigest {
    /// `sha256:<hex>`
    pub digest: String,
    /// `(label, digest)` in a stable order: `template`, `source`, then
    /// provisioner files, then var-files. Labels name no absolute path. The
    /// digest is `sha256:<hex>`, or for `source` the source's own digest.
    pub parts: Vec<(String, String)>,
}

impl InputDigest {
    /// Builds the digest from its parts.
    pub fn from_parts(parts: Vec<(String, String)>) -> Self {
        let mut hasher = imgbuild_store_format::MultiHasher::sha256_and(false);
        hasher.update(DIGEST_SCHEME.as_bytes());
        hasher.update(b"\n");
        for (label, digest) in &parts {
            hasher.update(label.as_bytes());
            hasher.update(&[0]);
            hasher.update(digest.as_bytes());
            hasher.update(b"\n");
        }
        InputDigest { digest: format!("sha256:{}", hasher.finish().sha256()), parts }
    }

    /// `{"digest": "sha256:…", "parts": {"template": "sha256:…", …}}`, for
    /// `inspect --digest --output json` and the manifest's `input_parts`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "digest": self.digest, "parts": self.parts_json() })
    }

    /// The parts as a JSON object, label → digest (in order).
    pub fn parts_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> =
            self.parts.iter().map(|(l, d)| (l.clone(), serde_json::Value::String(d.clone()))).collect();
        serde_json::Value::Object(map)
    }

    /// The digest, then one `  LABEL  DIGEST` line per part.
    pub fn render_text(&self) -> String {
        let width = self.parts.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut out = self.digest.clone();
        for (label, digest) in &self.parts {
            out.push_str(&format!("\n  {label:<width$}  {digest}"));
        }
        out
    }
}

/// Labels whose digest differs between two part lists, including parts
/// present in only one of them (in the order of `new`, then removed ones).
pub fn changed_parts(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = new
        .iter()
        .filter(|(label, digest)| old.iter().find(|(l, _)| l == label).is_none_or(|(_, d)| d != digest))
        .map(|(label, _)| label.clone())
        .collect();
    out.extend(old.iter().filter(|(l, _)| !new.iter().any(|(n, _)| n == l)).map(|(l, _)| format!("{l} (removed)")));
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("cannot resolve the template for its input digest")]
    Template(#[source] TemplateError),
    #[error("cannot read {} for the input digest", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve the source checksum for the input digest")]
    Source(#[source] FetchError),
}

impl From<HashError> for DigestError {
    fn from(e: HashError) -> Self {
        DigestError::Read { path: e.path, source: e.source }
    }
}

/// The input digest of a loaded template. `var_files` are the `--var-file`
/// arguments the template was loaded with (their values are already in
/// `loaded`; their bytes count too). Reads a `file:` checksum list through
/// `fetcher` (never cached) and nothing else from the network.
pub async fn input_digest(
    loaded: &Loaded,
    var_files: &[PathBuf],
    fetcher: &Fetcher,
) -> Result<InputDigest, DigestError> {
    let canonical = inputs::canonical(loaded).map_err(DigestError::Template)?;
    let mut parts = vec![("template".to_string(), sha256_of(&template_json(&canonical)))];
    if let Some(source) = source_digest(&canonical, fetcher).await? {
        parts.push(("source".to_string(), source));
    }
    let mut files: Vec<(String, PathBuf)> =
        inputs::walk(&canonical).host_files().map(|f| (f.label.clone(), f.path.resolved.clone())).collect();
    files.extend(var_files.iter().enumerate().map(|(i, p)| {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        (format!("var-file[{i}] {name}"), p.clone())
    }));
    let hashed = tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>, HashError> {
        files.into_iter().map(|(label, path)| Ok((label, hash_path(&path)?))).collect()
    })
    .await
    .map_err(|e| DigestError::Read { path: PathBuf::new(), source: std::io::Error::other(e.to_string()) })??;
    parts.extend(hashed);
    Ok(InputDigest::from_parts(parts))
}

/// The digest the source must have: the written digest, the one a `file:`
/// checksum list gives *now*, for `checksum: none` the digest of the URL
/// (template directory as `{{ template_dir }}`), for an AMI the digest of
/// how it is chosen. `None` when the template has no source.
pub async fn source_digest(loaded: &Loaded, fetcher: &Fetcher) -> Result<Option<String>, DigestError> {
    let dir = loaded.dir.to_string_lossy();
    let Some(source) = &loaded.template.source else {
        return Ok(None);
    };
    let (url, checksum) = match source {
        Source::Ami(ami) => return Ok(Some(sha256_of(ami.describe().as_bytes()))),
        Source::CloudImage { url, checksum } | Source::Iso { url, checksum } => (url, &checksum.0),
    };
    Ok(Some(match checksum {
        Checksum::Digest(d) => d.to_string(),
        Checksum::None => sha256_of(strip_dir(url, &dir).as_bytes()),
        list @ Checksum::File(_) => match fetcher.resolve_checksum(url, list, &loaded.dir).await {
            Ok(Some(d)) => d.to_string(),
            Ok(None) => sha256_of(strip_dir(url, &dir).as_bytes()),
            Err(e) => return Err(DigestError::Source(e)),
        },
    }))
}

/// The `input_digest` a manifest records (`sha256:<hex>`), if any.
pub fn manifest_digest(manifest: &serde_json::Value) -> Option<String> {
    manifest
        .get("input_digest")
        .and_then(|v| v.as_str())
        .filter(|s| {
            s.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .map(str::to_string)
}

/// The parts a manifest records under `input_parts` (label → digest), if any.
pub fn manifest_parts(manifest: &serde_json::Value) -> Vec<(String, String)> {
    manifest
        .get("input_parts")
        .and_then(|v| v.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// The canonical template JSON (see the module documentation).
fn template_json(canonical: &Loaded) -> Vec<u8> {
    let mut value = inputs::resolved_json(canonical);
    if let Some(top) = value.as_object_mut() {
        top.remove("lint");
        if let Some(vars) = top.get_mut("variables").and_then(|v| v.as_object_mut()) {
            for decl in vars.values_mut() {
                if let Some(decl) = decl.as_object_mut() {
                    decl.remove("value");
                }
            }
        }
        if let Some(source) = top.get_mut("source").and_then(|v| v.as_object_mut()) {
            source.remove("url");
            source.remove("checksum");
        }
    }
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_depends_on_every_part() {
        let a = InputDigest::from_parts(vec![("template".into(), "sha256:1".into())]);
        let b = InputDigest::from_parts(vec![("template".into(), "sha256:2".into())]);
        let c = InputDigest::from_parts(vec![("templatx".into(), "sha256:1".into())]);
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
        assert_eq!(a, InputDigest::from_parts(vec![("template".into(), "sha256:1".into())]));
        assert!(a.digest.starts_with("sha256:") && a.digest.len() == 71);
    }

    #[test]
    fn reports_changed_parts() {
        let old = vec![("a".to_string(), "1".to_string()), ("b".into(), "2".into()), ("gone".into(), "3".into())];
        let new = vec![("a".to_string(), "1".to_string()), ("b".into(), "9".into()), ("new".into(), "4".into())];
        assert_eq!(changed_parts(&old, &new), ["b", "new", "gone (removed)"]);
    }

    #[test]
    fn reads_the_manifest_field() {
        let hex = "a".repeat(64);
        let m =
            serde_json::json!({ "input_digest": format!("sha256:{hex}"), "input_parts": { "template": "sha256:1" } });
        assert_eq!(manifest_digest(&m), Some(format!("sha256:{hex}")));
        assert_eq!(manifest_parts(&m), [("template".to_string(), "sha256:1".to_string())]);
        assert_eq!(manifest_digest(&serde_json::json!({ "input_digest": "md5:x" })), None);
        assert_eq!(manifest_digest(&serde_json::json!({})), None);
    }
}
