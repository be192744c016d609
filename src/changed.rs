//! `imgbuild changed --since GIT_REF [TEMPLATES...]`: the templates whose
//! build inputs changed between a git revision and the working tree
//! (committed, staged, unstaged and untracked-but-not-ignored files), so CI
//! builds only those. See `docs/ci.md#imgbuild-changed`.
//!
//! A template's inputs are its own file, every `--var-file`, every host file
//! or directory it reads (`script`, `scripts`, an upload's `source`, the
//! builder's `http_directory`) and a
//! source or checksum list that is a local file. They are found by loading
//! the template as `build` would (`--var`, `--var-file`, `IMGBUILD_VAR_*`).
//! A required variable nobody set gets a placeholder value (as in `lint`),
//! so paths that do not depend on it still resolve; if the template still
//! does not load, its raw JSON is scanned for `script`, `scripts`, upload
//! `source`, source `url` and `checksum` strings that need no variable (a
//! `{{ template_dir }}` prefix is allowed). A template that cannot even be
//! parsed counts as changed when its own file changed.
//!
//! Parent images: template B is also reported when its source `url` or
//! `checksum`, as written or resolved, contains `/NAME/` for the `name` of
//! a changed template A (the store layout is `STORE/NAME/VERSION/FILE`),
//! transitively. Parents are looked up among the given templates and every
//! `*.json` directly in `templates/` (of the current directory, else of the
//! repository root).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::source::Location;
use crate::template::jsonc::{self, Node, NodeKind};
use crate::template::{self, LoadOptions, Loaded, TemplateError, VarInputs};

/// Placeholder values for unset required variables start with this.
const UNSET: &str = "imgbuild-changed-unset-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChangedFormat {
    /// One template path per line
    Lines,
    /// `{"since": REF, "templates": [{"template", "name", "reasons"}]}`
    Json,
    /// `{"include": [{"template", "name"}]}` for a GitHub Actions matrix
    GithubMatrix,
}

/// What [`changed`] needs.
#[derive(Debug, Clone, Default)]
pub struct ChangedOptions {
    /// The git revision to compare with.
    pub since: String,
    /// Templates to report on; empty: every `*.json` in `templates/`.
    pub templates: Vec<PathBuf>,
    pub vars: VarInputs,
    /// The directory relative paths are taken against (the current directory for the CLI).
    pub cwd: PathBuf,
}

/// A template whose inputs changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedTemplate {
    /// As given, or (found in `templates/`) relative to `cwd`.
    pub path: PathBuf,
    /// The template's `name` (the file stem when it cannot be read).
    pub name: String,
    /// Changed repository paths, or `parent image NAME changed`.
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangedError {
    #[error("{} is not inside a git repository: {message}", dir.display())]
    NotARepo { dir: PathBuf, message: String },
    #[error("unknown git revision `{0}` (in a shallow CI clone, fetch it first, e.g. `git fetch origin main`)")]
    UnknownRef(String),
    #[error("`git {args}` failed: {message}")]
    Git { args: String, message: String },
    #[error("no templates: {} has no *.json files", dir.display())]
    NoTemplates { dir: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The output of `imgbuild changed` in `format` (no trailing newline; empty
/// for `lines` when nothing changed).
pub fn render(list: &[ChangedTemplate], format: ChangedFormat, since: &str) -> String {
    let path = |t: &ChangedTemplate| t.path.to_string_lossy().into_owned();
    match format {
        ChangedFormat::Lines => list.iter().map(path).collect::<Vec<_>>().join("\n"),
        ChangedFormat::Json => {
            let templates: Vec<_> = list
                .iter()
                .map(|t| serde_json::json!({ "template": path(t), "name": t.name, "reasons": t.reasons }))
                .collect();
            serde_json::json!({ "since": since, "templates": templates }).to_string()
        }
        ChangedFormat::GithubMatrix => {
            let include: Vec<_> =
                list.iter().map(|t| serde_json::json!({ "template": path(t), "name": t.name })).collect();
            serde_json::json!({ "include": include }).to_string()
        }
    }
}

/// The templates (of `options.templates`, or all in `templates/`) whose
/// inputs changed since `options.since`, in the order considered.
pub fn changed(options: &ChangedOptions) -> Result<Vec<ChangedTemplate>, ChangedError> {
    let cwd = std::path::absolute(&options.cwd).unwrap_or_else(|_| options.cwd.clone());
    let top = repo_root(&cwd)?;
    let files = changed_files(&top, &options.since)?;
    let templates_dir = [cwd.join("templates"), top.join("templates")].into_iter().find(|d| d.is_dir());
    let discovered = match &templates_dir {
        Some(dir) => list_templates(dir)?,
        None => Vec::new(),
    };
    let targets: Vec<(PathBuf, PathBuf)> = if options.templates.is_empty() {
        if discovered.is_empty() {
            return Err(ChangedError::NoTemplates { dir: templates_dir.unwrap_or_else(|| cwd.join("templates")) });
        }
        discovered.iter().map(|p| (display_relative(p, &cwd), p.clone())).collect()
    } else {
        let given: Vec<_> = options.templates.iter().map(|p| (p.clone(), normalize(&cwd.join(p)))).collect();
        for (shown, path) in &given {
            if !path.is_file() {
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such template file");
                return Err(ChangedError::Read { path: shown.clone(), source });
            }
        }
        given
    };
    // Every template that may be a parent, targets first.
    let mut pool: Vec<(PathBuf, PathBuf)> = targets.clone();
    for path in discovered {
        if !pool.iter().any(|(_, p)| same_file(p, &path)) {
            pool.push((display_relative(&path, &cwd), path));
        }
    }
    let repo = Repo { top: top.clone(), cwd: cwd.clone() };
    let var_files_changed: Vec<String> =
        options.vars.files.iter().filter_map(|f| repo.changed_under(&cwd.join(f), &files)).flatten().collect();
    let mut entries: Vec<Entry> = pool
        .iter()
        .map(|(shown, path)| {
            let inputs = template_inputs(path, &options.vars);
            let mut reasons: BTreeSet<String> = var_files_changed.iter().cloned().collect();
            for input in &inputs.files {
                reasons.extend(repo.changed_under(input, &files).unwrap_or_default());
            }
            let name = inputs
                .name
                .clone()
                .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
            let source_refs = inputs.source_refs.iter().map(|s| repo.match_form(s)).collect();
            Entry { shown: shown.clone(), name, reasons: reasons.into_iter().collect(), source_refs }
        })
        .collect();
    propagate_parents(&mut entries);
    Ok(entries
        .into_iter()
        .take(targets.len())
        .filter(|e| !e.reasons.is_empty())
        .map(|e| ChangedTemplate { path: e.shown, name: e.name, reasons: e.reasons })
        .collect())
}

struct Entry {
    shown: PathBuf,
    name: String,
    reasons: Vec<String>,
    /// Source `url`/`checksum` strings, each starting with `/`.
    source_refs: Vec<String>,
}

/// Marks templates built on a changed template's stored artifact, until nothing changes.
fn propagate_parents(entries: &mut [Entry]) {
    loop {
        let changed_names: Vec<String> =
            entries.iter().filter(|e| !e.reasons.is_empty()).map(|e| e.name.clone()).collect();
        let mut progress = false;
        for e in entries.iter_mut().filter(|e| e.reasons.is_empty()) {
            let parent = changed_names
                .iter()
                .filter(|n| **n != e.name && !n.is_empty())
                .find(|n| e.source_refs.iter().any(|s| s.contains(&format!("/{n}/"))));
            if let Some(parent) = parent {
                e.reasons.push(format!("parent image {parent} changed"));
                progress = true;
            }
        }
        if !progress {
            return;
        }
    }
}

/// What a template reads, as far as it can be told without building.
#[derive(Debug, Default)]
struct Inputs {
    name: Option<String>,
    /// Absolute paths: the template, provisioner files, a local source or checksum list.
    files: Vec<PathBuf>,
    /// Source `url` and `checksum` as written and as resolved (local ones as absolute paths).
    source_refs: Vec<String>,
}

fn template_inputs(path: &Path, vars: &VarInputs) -> Inputs {
    let mut inputs = Inputs { files: vec![path.to_path_buf()], ..Inputs::default() };
    let Some(raw) = std::fs::read_to_string(path).ok().and_then(|t| jsonc::parse(&t).ok()) else {
        return inputs;
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if let Some(source) = raw.get("source") {
        for field in ["url", "checksum"] {
            if let Some(s) = source.get(field).and_then(Node::as_str) {
                inputs.source_refs.push(s.to_string());
            }
        }
    }
    match load_permissive(path, vars) {
        Some(loaded) => from_loaded(&loaded, &mut inputs),
        None => from_raw(&raw, &dir, &mut inputs),
    }
    inputs
}

/// Loads as `build` would; unset required variables get placeholders.
fn load_permissive(path: &Path, vars: &VarInputs) -> Option<Loaded> {
    let options = LoadOptions {
        vars: vars.clone(),
        build_id: "changed".into(),
        ssh_public_key: "ssh-ed25519 imgbuild-changed".into(),
        ..Default::default()
    };
    match template::load(path, &options) {
        Ok(loaded) => Some(loaded),
        Err(TemplateError::Invalid(_)) => {
            let unset = unset_required(path, vars);
            if unset.is_empty() {
                return None;
            }
            let mut options = options;
            options.vars.cli.extend(unset.into_iter().map(|name| (name.clone(), format!("{UNSET}{name}"))));
            template::load(path, &options).ok()
        }
        Err(_) => None,
    }
}

/// Required variables without a value from `--var`, a var-file or the environment.
fn unset_required(path: &Path, vars: &VarInputs) -> Vec<String> {
    let Some(raw) = std::fs::read_to_string(path).ok().and_then(|t| jsonc::parse(&t).ok()) else {
        return Vec::new();
    };
    let mut given: BTreeSet<String> = vars.cli.iter().map(|(k, _)| k.clone()).collect();
    for file in &vars.files {
        if let Some(node) = std::fs::read_to_string(file).ok().and_then(|t| jsonc::parse(&t).ok()) {
            given.extend(members(&node).iter().map(|(k, _)| k.name.clone()));
        }
    }
    let declared = raw.get("variables").map(members).unwrap_or_default();
    declared
        .iter()
        .filter(|(_, decl)| matches!(decl.get("required").map(|n| &n.kind), Some(NodeKind::Bool(true))))
        .map(|(k, _)| k.name.clone())
        .filter(|name| !given.contains(name))
        .filter(|name| !(vars.use_env && std::env::var_os(format!("{}{name}", template::vars::ENV_PREFIX)).is_some()))
        .collect()
}

fn members(node: &Node) -> &[(jsonc::Key, Node)] {
    match &node.kind {
        NodeKind::Object(m) => m,
        _ => &[],
    }
}

fn from_loaded(loaded: &Loaded, inputs: &mut Inputs) {
    inputs.name = Some(loaded.template.name.clone());
    let walked = crate::inputs::walk(loaded);
    inputs
        .files
        .extend(walked.host_files().filter(|f| !f.path.written.contains(UNSET)).map(|f| f.path.resolved.clone()));
    if let Some((url, checksum)) = walked.source.and_then(|s| s.download()) {
        let checksum = match checksum {
            crate::source::Checksum::File(list) => Some(list.clone()),
            _ => None,
        };
        for s in std::iter::once(url.to_string()).chain(checksum).filter(|s| !s.contains(UNSET)) {
            match Location::parse(&s, &loaded.dir) {
                Ok(Location::File(path)) => {
                    inputs.source_refs.push(path.to_string_lossy().into_owned());
                    inputs.files.push(path);
                }
                _ => inputs.source_refs.push(s),
            }
        }
    }
}

/// The fallback: paths written in the raw JSON that need no variable.
fn from_raw(raw: &Node, dir: &Path, inputs: &mut Inputs) {
    inputs.name = raw.get("name").and_then(Node::as_str).filter(|s| !s.contains("{{")).map(str::to_string);
    let resolve = |s: &str| -> Option<PathBuf> {
        let s =
            s.replace("{{ template_dir }}", &dir.to_string_lossy()).replace("{{template_dir}}", &dir.to_string_lossy());
        (!s.contains("{{") && !s.is_empty()).then(|| dir.join(s))
    };
    let strings = |node: Option<&Node>| -> Vec<String> {
        match node.map(|n| &n.kind) {
            Some(NodeKind::String(s)) => vec![s.clone()],
            Some(NodeKind::Array(items)) => items.iter().filter_map(|n| n.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        }
    };
    if let Some(http) = raw.get("builder").and_then(|b| b.get("http_directory")).and_then(Node::as_str) {
        inputs.files.extend(resolve(http));
    }
    if let Some(NodeKind::Array(provisioners)) = raw.get("provisioners").map(|n| &n.kind) {
        for p in provisioners {
            let mut written = strings(p.get("script"));
            written.extend(strings(p.get("scripts")));
            let upload = p.get("direction").and_then(Node::as_str) != Some("download");
            if p.get("type").and_then(Node::as_str) == Some("file") && upload {
                written.extend(strings(p.get("source")));
            }
            inputs.files.extend(written.iter().filter_map(|s| resolve(s)));
        }
    }
    if let Some(source) = raw.get("source") {
        let url = source.get("url").and_then(Node::as_str).unwrap_or_default();
        let list = source.get("checksum").and_then(Node::as_str).and_then(|c| c.strip_prefix("file:"));
        for s in std::iter::once(url).chain(list) {
            if !s.contains("://") || s.starts_with("file://") {
                let s = s.trim_start_matches("file://");
                inputs.files.extend(resolve(s));
            }
        }
    }
}

/// The repository, for turning paths into repository paths.
struct Repo {
    /// The work tree's top directory (canonical).
    top: PathBuf,
    cwd: PathBuf,
}

impl Repo {
    /// `path` relative to the repository root with `/` separators, if inside it.
    fn relative(&self, path: &Path) -> Option<String> {
        let abs = normalize(&self.cwd.join(path));
        let candidates = [real_path(&abs), abs];
        candidates.iter().find_map(|p| p.strip_prefix(&self.top).ok()).map(|rel| {
            rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
        })
    }

    /// The changed paths at or below `input` (`None` when it is outside the repository).
    fn changed_under(&self, input: &Path, files: &BTreeSet<String>) -> Option<Vec<String>> {
        let rel = self.relative(input)?;
        Some(files.iter().filter(|f| rel.is_empty() || Path::new(f.as_str()).starts_with(&rel)).cloned().collect())
    }

    /// A source reference in the form `/NAME/` is matched against: local
    /// paths inside the repository relative to its root; always starting with `/`.
    fn match_form(&self, s: &str) -> String {
        let local = s.starts_with('/') && !s.contains("://");
        let s = match self.relative(Path::new(s)).filter(|_| local) {
            Some(rel) => rel,
            None => s.to_string(),
        };
        if s.starts_with('/') { s } else { format!("/{s}") }
    }
}

/// Lexically removes `.` and resolves `..` (no file system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The canonical form of the longest existing ancestor, with the rest appended.
fn real_path(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut current = path.to_path_buf();
    loop {
        if let Ok(real) = current.canonicalize() {
            return rest.iter().rev().fold(real, |acc, part| acc.join(part));
        }
        match (current.file_name().map(|n| n.to_os_string()), current.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                current = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    real_path(a) == real_path(b)
}

fn display_relative(path: &Path, cwd: &Path) -> PathBuf {
    path.strip_prefix(cwd).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}

/// `*.json` files directly in `dir`, sorted.
fn list_templates(dir: &Path) -> Result<Vec<PathBuf>, ChangedError> {
    let read = std::fs::read_dir(dir).map_err(|source| ChangedError::Read { path: dir.to_path_buf(), source })?;
    let mut out: Vec<PathBuf> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, (String, String)> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .map_err(|e| (args.join(" "), format!("cannot run git: {e}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err((args.join(" "), String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// The canonical top directory of the work tree containing `dir`.
pub fn repo_root(dir: &Path) -> Result<PathBuf, ChangedError> {
    let out = git(dir, &["rev-parse", "--show-toplevel"])
        .map_err(|(_, message)| ChangedError::NotARepo { dir: dir.to_path_buf(), message })?;
    let top = PathBuf::from(String::from_utf8_lossy(&out).trim());
    Ok(top.canonicalize().unwrap_or(top))
}

/// Repository paths (`/`-separated, relative to the root) that differ
/// between `since` and the working tree, plus untracked files that are not
/// ignored. Both sides of a rename are listed.
pub fn changed_files(top: &Path, since: &str) -> Result<BTreeSet<String>, ChangedError> {
    if since.is_empty() || since.starts_with('-') {
        return Err(ChangedError::UnknownRef(since.to_string()));
    }
    git(top, &["rev-parse", "--verify", "--quiet", &format!("{since}^{{commit}}")])
        .map_err(|_| ChangedError::UnknownRef(since.to_string()))?;
    let git_err = |(args, message)| ChangedError::Git { args, message };
    let diff =
        git(top, &["diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", since, "--"]).map_err(git_err)?;
    let untracked = git(top, &["ls-files", "-z", "--others", "--exclude-standard"]).map_err(git_err)?;
    Ok(diff
        .split(|b| *b == 0)
        .chain(untracked.split(|b| *b == 0))
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        assert_eq!(normalize(Path::new("/a/templates/../provisioners/x.sh")), PathBuf::from("/a/provisioners/x.sh"));
    }

    #[test]
    fn renders_every_format() {
        let list = vec![ChangedTemplate {
            path: PathBuf::from("templates/a.json"),
            name: "a".into(),
            reasons: vec!["templates/a.json".into()],
        }];
        assert_eq!(render(&list, ChangedFormat::Lines, "HEAD"), "templates/a.json");
        assert_eq!(
            render(&list, ChangedFormat::GithubMatrix, "HEAD"),
            r#"{"include":[{"template":"templates/a.json","name":"a"}]}"#
        );
        let json: serde_json::Value = serde_json::from_str(&render(&list, ChangedFormat::Json, "HEAD")).unwrap();
        assert_eq!(json["since"], "HEAD");
        assert_eq!(json["templates"][0]["reasons"][0], "templates/a.json");
        assert_eq!(render(&[], ChangedFormat::Lines, "HEAD"), "");
        assert_eq!(render(&[], ChangedFormat::GithubMatrix, "HEAD"), r#"{"include":[]}"#);
    }

    #[test]
    fn parents_propagate_transitively() {
        let entry = |name: &str, reasons: &[&str], refs: &[&str]| Entry {
            shown: PathBuf::from(format!("{name}.json")),
            name: name.into(),
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
            source_refs: refs.iter().map(|s| s.to_string()).collect(),
        };
        let mut entries = vec![
            entry("app", &[], &["/artifacts/mid/1.0.0/mid.qcow2"]),
            entry("mid", &[], &["/artifacts/base/1.0.0/base.qcow2"]),
            entry("base", &["x.sh"], &["https://example.org/base/debian.qcow2"]),
            entry("other", &[], &["/artifacts/basement/1.0.0/x.qcow2"]),
        ];
        propagate_parents(&mut entries);
        assert_eq!(entries[0].reasons, ["parent image mid changed"]);
        assert_eq!(entries[1].reasons, ["parent image base changed"]);
        assert_eq!(entries[2].reasons, ["x.sh"], "a template is not its own parent");
        assert!(entries[3].reasons.is_empty());
    }
}
