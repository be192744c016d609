//! What a build is made of, walked once: for the source, the builder and
//! each provisioner in order, the inputs that determine its effect. The
//! input digest (`digest.rs`), `changed` (`changed.rs`), the manifest's
//! `provisioners` and the per-step cache keys ([`step_keys`]) all read
//! this walk, so a new kind of input is added in one place.
//!
//! The walk itself reads nothing from disk: host files are named, and
//! hashed by the one function every consumer calls, [`hash_path`].

pub mod step_keys;

use imgbuild_store_format::MultiHasher;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::template::jsonc::{Node, NodeKind};
use crate::template::{Builder, Commands, Direction, Loaded, ProvisionerKind, Source, TemplateError, TemplatePath};

/// What `{{ template_dir }}` expanded to is replaced by this, and the build id by [`BUILD_ID_PLACEHOLDER`].
pub const TEMPLATE_DIR_PLACEHOLDER: &str = "{{ template_dir }}";
pub const BUILD_ID_PLACEHOLDER: &str = "{{ build.id }}";
/// The per-build SSH key (`{{ build.ssh_public_key }}`) is new every build: it is replaced by this.
pub const SSH_KEY_PLACEHOLDER: &str = "{{ build.ssh_public_key }}";

/// Builder fields that say how long to wait, what runs after the
/// provisioners or which host program runs the guest (the QEMU version is a
/// machine fact, see [`step_keys::MachineFacts`]): they do not shape the
/// guest the provisioners see.
const NOT_GUEST_SHAPING: [&str; 11] = [
    "boot_timeout",
    "shutdown_command",
    "shutdown_timeout",
    "qemu_binary",
    "instance_wait_timeout",
    "ami_wait_timeout",
    "ami_name",
    "ami_description",
    "ami_regions",
    "tags",
    "encrypt_boot",
];

/// Provisioner fields that change when and how often a step is tried, not what it does.
const NOT_EFFECT: [&str; 3] = ["pause_before", "max_retries", "timeout"];

/// A host file or directory that part of a build reads.
#[derive(Debug, Clone)]
pub struct HostFile<'a> {
    /// `provisioners[1].script files/setup.sh`: the part, the field and the
    /// path as written (template directory as `{{ template_dir }}`).
    pub label: String,
    pub path: &'a TemplatePath,
}

/// The builder or one provisioner, with what determines its effect.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    /// `builder` or `provisioners[N]`.
    pub label: String,
    /// `qemu`, `ec2`, `null`; `shell`, `file`, `shell-local`.
    pub kind: &'static str,
    /// The resolved settings (secrets masked, the template directory
    /// replaced by `{{ template_dir }}`): for the builder only those that
    /// shape the guest, for a provisioner all but its retry and timing fields.
    pub settings: serde_json::Value,
    /// Text the template itself carries: inline commands joined with `\n`,
    /// or an upload's `content`.
    pub inline: Option<String>,
    /// Host files it reads, in template order.
    pub files: Vec<HostFile<'a>>,
    /// The `var.*`, `env.*` and `build.*` interpolations written in it.
    pub uses: BTreeSet<String>,
    /// It interpolates a variable declared `sensitive` (its value is masked in `settings`).
    pub sensitive: bool,
}

/// A build's inputs in the order they take effect.
#[derive(Debug, Clone)]
pub struct BuildInputs<'a> {
    pub source: Option<&'a Source>,
    pub builder: Part<'a>,
    pub provisioners: Vec<Part<'a>>,
}

impl<'a> BuildInputs<'a> {
    /// Every host file, builder first, then provisioners in order.
    pub fn host_files(&self) -> impl Iterator<Item = &HostFile<'a>> {
        std::iter::once(&self.builder).chain(&self.provisioners).flat_map(|p| &p.files)
    }
}

/// Walks `loaded` (see the module documentation).
pub fn walk(loaded: &Loaded) -> BuildInputs<'_> {
    let dir = loaded.dir.to_string_lossy().into_owned();
    let resolved = resolved_json(loaded);
    let template = &loaded.template;
    let sensitive: BTreeSet<&str> =
        template.variables.iter().filter(|(_, v)| v.sensitive).map(|(k, _)| k.as_str()).collect();
    let raw_provisioners = match loaded.raw.get("provisioners").map(|n| &n.kind) {
        Some(NodeKind::Array(items)) => items.as_slice(),
        _ => &[],
    };
    let part = |label: String, kind, settings, raw: Option<&Node>| {
        let uses = raw.map(interpolations).unwrap_or_default();
        let sensitive = uses.iter().filter_map(|u| u.strip_prefix("var.")).any(|v| sensitive.contains(v));
        Part { label, kind, settings, inline: None, files: Vec::new(), uses, sensitive }
    };

    let mut builder = part(
        "builder".into(),
        builder_kind(&template.builder),
        without(resolved.get("builder"), &NOT_GUEST_SHAPING, &[("ssh", "timeout")]),
        loaded.raw.get("builder"),
    );
    if let Builder::Qemu(q) = &template.builder
        && let Some(http) = &q.http_directory
    {
        builder.files.push(host_file("builder", "http_directory", http, &dir));
    }

    let resolved_provisioners = resolved.get("provisioners").and_then(|p| p.as_array());
    let provisioners = template
        .provisioners
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let label = format!("provisioners[{i}]");
            let settings = without(resolved_provisioners.and_then(|r| r.get(i)), &NOT_EFFECT, &[]);
            let mut out = part(label.clone(), p.kind.type_name(), settings, raw_provisioners.get(i));
            let (field, paths, inline) = match &p.kind {
                ProvisionerKind::Shell(s) => ("script", s.commands.files(), inline_text(&s.commands)),
                ProvisionerKind::ShellLocal(s) => ("script", s.commands.files(), inline_text(&s.commands)),
                // A download's source is a path in the guest: nothing on the host.
                ProvisionerKind::File(f) if f.direction == Direction::Download => ("source", Vec::new(), None),
                ProvisionerKind::File(f) => ("source", f.source.iter().collect(), f.content.clone()),
            };
            out.inline = inline;
            out.files = paths.into_iter().map(|path| host_file(&label, field, path, &dir)).collect();
            out
        })
        .collect();
    BuildInputs { source: template.source.as_ref(), builder, provisioners }
}

/// The template loaded again as every build of it sees it: the written
/// version, a placeholder build id and SSH key, the same variable values.
/// Digests and step keys are computed from it, so they do not change from
/// build to build.
pub fn canonical(loaded: &Loaded) -> Result<Loaded, TemplateError> {
    loaded.reresolve(BUILD_ID_PLACEHOLDER.to_string(), None, SSH_KEY_PLACEHOLDER.to_string())
}

/// The resolved template as JSON, secrets masked and the template directory
/// replaced by `{{ template_dir }}`.
pub fn resolved_json(loaded: &Loaded) -> serde_json::Value {
    let mut value = loaded.resolved_json();
    replace_dir(&mut value, &loaded.dir.to_string_lossy());
    value
}

fn builder_kind(builder: &Builder) -> &'static str {
    match builder {
        Builder::Qemu(_) => "qemu",
        Builder::Ec2(_) => "ec2",
        Builder::Null => "null",
    }
}

fn host_file<'a>(part: &str, field: &str, path: &'a TemplatePath, dir: &str) -> HostFile<'a> {
    HostFile { label: format!("{part}.{field} {}", strip_dir(&path.written, dir)), path }
}

fn inline_text(commands: &Commands) -> Option<String> {
    match commands {
        Commands::Inline(lines) => Some(lines.join("\n")),
        _ => None,
    }
}

/// `value` (an object) without the `fields`, and without `(object, field)` in nested objects.
fn without(value: Option<&serde_json::Value>, fields: &[&str], nested: &[(&str, &str)]) -> serde_json::Value {
    let mut value = value.cloned().unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for field in fields {
            map.shift_remove(*field);
        }
        for (object, field) in nested {
            if let Some(inner) = map.get_mut(*object).and_then(|v| v.as_object_mut()) {
                inner.shift_remove(*field);
            }
        }
    }
    value
}

/// The `var.*`, `env.*` and `build.*` expressions in every string value under `node`.
fn interpolations(node: &Node) -> BTreeSet<String> {
    fn go(node: &Node, out: &mut BTreeSet<String>) {
        match &node.kind {
            NodeKind::String(s) => out.extend(
                crate::template::interp::expressions(s)
                    .into_iter()
                    .filter(|e| ["var.", "env.", "build."].iter().any(|ns| e.starts_with(ns)))
                    .map(str::to_string),
            ),
            NodeKind::Array(items) => items.iter().for_each(|n| go(n, out)),
            NodeKind::Object(members) => members.iter().for_each(|(_, n)| go(n, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    go(node, &mut out);
    out
}

/// Every string in `value` with the template directory replaced (see [`strip_dir`]).
pub fn replace_dir(value: &mut serde_json::Value, dir: &str) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains(dir) => *s = strip_dir(s, dir),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_dir(v, dir)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_dir(v, dir)),
        _ => {}
    }
}

/// `dir` (the template directory) replaced by the placeholder where it is a
/// whole path prefix: `DIR` alone or `DIR/…`, anywhere in the text.
pub fn strip_dir(text: &str, dir: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(dir) {
        let after = &rest[pos + dir.len()..];
        out.push_str(&rest[..pos]);
        if after.is_empty() || after.starts_with('/') {
            out.push_str(TEMPLATE_DIR_PLACEHOLDER);
        } else {
            out.push_str(dir);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------- hashing

/// A host input that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct HashError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `sha256:<hex>` of bytes held in memory.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", imgbuild_store_format::sha256_hex(bytes))
}

/// `sha256:` of a host file's bytes, or of a directory tree: every file's
/// relative name (`/` separated), executable bit and bytes, in sorted order.
/// Every host input of a build (scripts, uploads, `http_directory`,
/// var-files) is hashed here and nowhere else.
pub fn hash_path(path: &Path) -> Result<String, HashError> {
    let err = |p: &Path, source| HashError { path: p.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(|e| err(path, e))?;
    let mut hasher = MultiHasher::sha256_and(false);
    if meta.is_dir() {
        hash_tree(path, "", &mut hasher).map_err(|(p, e)| err(&p, e))?;
    } else {
        stream_into(path, &mut hasher).map_err(|e| err(path, e))?;
    }
    Ok(format!("sha256:{}", hasher.finish().sha256()))
}

/// Feeds a file to the hasher as it is read (never whole in memory).
fn stream_into(path: &Path, hasher: &mut MultiHasher) -> std::io::Result<()> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(()),
            n => hasher.update(&buf[..n]),
        }
    }
}

fn hash_tree(dir: &Path, prefix: &str, hasher: &mut MultiHasher) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| (dir.to_path_buf(), e))?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    entries.sort();
    for (name, path) in entries {
        let relative = format!("{prefix}{name}");
        let meta = std::fs::metadata(&path).map_err(|e| (path.clone(), e))?;
        if meta.is_dir() {
            hash_tree(&path, &format!("{relative}/"), hasher)?;
            continue;
        }
        let exec = if meta.permissions().mode() & 0o111 != 0 { "x" } else { "-" };
        hasher.update(format!("{relative}\0{exec}\0{}\0", meta.len()).as_bytes());
        stream_into(&path, hasher).map_err(|e| (path.clone(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{LoadOptions, load_bytes};

    #[test]
    fn strips_whole_directory_prefixes_only() {
        assert_eq!(strip_dir("/t/x.sh", "/t"), "{{ template_dir }}/x.sh");
        assert_eq!(strip_dir("/t", "/t/"), "{{ template_dir }}");
        assert_eq!(strip_dir("/tmp/x", "/t"), "/tmp/x");
        assert_eq!(strip_dir("cd /t/a && /t/b", "/t"), "cd {{ template_dir }}/a && {{ template_dir }}/b");
    }

    const TEMPLATE: &str = r#"{
      "name": "walk",
      "variables": { "role": { "default": "web" }, "token": { "default": "not-a-real-secret-1", "sensitive": true } },
      "source": { "type": "cloud-image", "url": "base.qcow2", "checksum": "none" },
      "builder": { "type": "qemu", "memory": "1G", "boot_timeout": "5m", "http_directory": "http",
                   "ssh": { "username": "{{ var.role }}", "timeout": "2m" } },
      "provisioners": [
        { "type": "shell", "inline": ["echo {{ var.role }}", "echo {{ build.name }}"], "max_retries": 2 },
        { "type": "shell", "scripts": ["a.sh", "{{ template_dir }}/b.sh"], "env": { "T": "{{ var.token }}" } },
        { "type": "file", "source": "site", "destination": "/srv" },
        { "type": "file", "content": "hello", "destination": "/etc/motd" },
        { "type": "file", "source": "/etc/hostname", "destination": "out", "direction": "download" },
        { "type": "shell-local", "script": "local.sh", "timeout": "1m" }
      ]
    }"#;

    fn loaded() -> Loaded {
        load_bytes(Path::new("/t/walk.json"), TEMPLATE.as_bytes().to_vec(), &LoadOptions::default()).unwrap()
    }

    #[test]
    fn walks_every_part_in_order() {
        let loaded = loaded();
        let inputs = walk(&loaded);
        let labels: Vec<&str> = inputs.host_files().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "builder.http_directory http",
                "provisioners[1].script a.sh",
                "provisioners[1].script {{ template_dir }}/b.sh",
                "provisioners[2].source site",
                "provisioners[5].script local.sh",
            ]
        );
        assert_eq!(inputs.host_files().nth(2).unwrap().path.resolved, PathBuf::from("/t/b.sh"));
        let p = &inputs.provisioners;
        assert_eq!(
            p.iter().map(|p| p.kind).collect::<Vec<_>>(),
            ["shell", "shell", "file", "file", "file", "shell-local"]
        );
        assert_eq!(p[0].inline.as_deref(), Some("echo web\necho walk"));
        assert_eq!(p[3].inline.as_deref(), Some("hello"));
        assert!(p[4].inline.is_none() && p[4].files.is_empty(), "a download reads nothing on the host");
        assert_eq!(p[0].uses.iter().collect::<Vec<_>>(), ["build.name", "var.role"]);
        assert!(!p[0].sensitive && p[1].sensitive, "the second step receives the sensitive token");
        assert!(!p[1].settings.to_string().contains("not-a-real-secret-1"), "secrets are masked");
        assert!(inputs.builder.uses.contains("var.role"));
    }

    #[test]
    fn settings_leave_out_what_does_not_shape_the_guest() {
        let loaded = loaded();
        let inputs = walk(&loaded);
        let builder = inputs.builder.settings.as_object().unwrap();
        assert!(builder.contains_key("memory") && builder.contains_key("ssh"));
        assert!(!builder.contains_key("boot_timeout") && !builder.contains_key("qemu_binary"));
        assert!(!builder["ssh"].as_object().unwrap().contains_key("timeout"));
        assert!(builder["http_directory"].as_str().unwrap() == "http");
        let first = inputs.provisioners[0].settings.as_object().unwrap();
        assert!(first.contains_key("inline") && !first.contains_key("max_retries"));
        assert!(!inputs.provisioners[5].settings.as_object().unwrap().contains_key("timeout"));
    }

    #[test]
    fn hashes_files_and_trees() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tree/sub")).unwrap();
        std::fs::write(dir.path().join("tree/sub/a"), "a").unwrap();
        std::fs::write(dir.path().join("f"), "a").unwrap();
        assert_eq!(hash_path(&dir.path().join("f")).unwrap(), sha256_of(b"a"));
        let tree = hash_path(&dir.path().join("tree")).unwrap();
        std::fs::rename(dir.path().join("tree/sub/a"), dir.path().join("tree/sub/b")).unwrap();
        assert_ne!(hash_path(&dir.path().join("tree")).unwrap(), tree, "names count");
        let missing = hash_path(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"));
    }
}
