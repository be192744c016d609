//! `imgbuild changed --since REF`: which templates' build inputs changed, in
//! a scratch git repository with scripted commits. Through the library
//! (`imgbuild::changed`) and the real binary.

mod common;

use std::path::PathBuf;
use std::process::Command;

use imgbuild::changed::{ChangedOptions, ChangedTemplate, changed};
use imgbuild::template::VarInputs;

const SHA: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn files() -> Vec<(&'static str, String)> {
    vec![
        (".gitignore", "artifacts/\n".into()),
        ("README.md", "# images\n".into()),
        (
            "templates/base.json",
            format!(
                r#"{{
  "name": "base",
  "version": "auto",
  "source": {{ "type": "cloud-image", "url": "https://example.invalid/debian-12.qcow2", "checksum": "{SHA}" }},
  "builder": {{ "type": "qemu" }},
  "provisioners": [ {{ "type": "shell", "script": "files/base.sh" }} ],
  "export": {{ "publish": [ {{ "type": "local", "path": "../artifacts" }} ] }}
}}"#
            ),
        ),
        ("templates/files/base.sh", "#!/bin/sh\necho base\n".into()),
        (
            // Built on base's published artifact.
            "templates/web.json",
            r#"// the web image, on top of base
{
  "name": "web",
  "version": "auto",
  "variables": { "role": { "default": "web" } },
  "source": { "type": "cloud-image", "url": "../artifacts/base/2026.01.01.1/base.qcow2", "checksum": "none" },
  "builder": { "type": "qemu" },
  "provisioners": [
    { "type": "shell", "script": "files/web.sh", "env": { "ROLE": "{{ var.role }}" } },
    { "type": "file", "source": "files/site", "destination": "/srv/site" },
    { "type": "file", "source": "/var/log/syslog", "destination": "logs/syslog", "direction": "download" }
  ]
}"#
            .into(),
        ),
        ("templates/files/web.sh", "#!/bin/sh\necho web\n".into()),
        ("templates/files/site/index.html", "<h1>hi</h1>\n".into()),
        (
            // Built on web's artifact, through a variable: transitively on base.
            "templates/app.json",
            r#"{
  "name": "app",
  "variables": { "parent": { "default": "../artifacts/web/2026.01.01.1/web.qcow2" } },
  "source": { "type": "cloud-image", "url": "{{ var.parent }}", "checksum": "none" },
  "builder": { "type": "qemu" },
  "provisioners": [ { "type": "shell", "inline": ["echo app"] } ]
}"#
            .into(),
        ),
        (
            // A required variable nobody sets: loaded with a placeholder.
            "templates/standalone.json",
            format!(
                r#"{{
  "name": "standalone",
  "variables": {{ "key_dir": {{ "required": true }} }},
  "source": {{ "type": "iso", "url": "https://example.invalid/installer.iso", "checksum": "{SHA}" }},
  "builder": {{ "type": "qemu" }},
  "provisioners": [
    {{ "type": "shell", "scripts": ["../provisioners/common.sh"] }},
    {{ "type": "file", "source": "{{{{ var.key_dir }}}}/id.pub", "destination": "/root/id.pub" }}
  ]
}}"#
            ),
        ),
        (
            // Does not load at all (an unset environment variable): the raw JSON is scanned.
            "templates/broken.json",
            r#"{
  "name": "broken",
  "builder": { "type": "null" },
  "provisioners": [
    { "type": "shell-local", "inline": ["echo {{ env.IMGBUILD_TEST_SURELY_UNSET_42 }}"] },
    { "type": "shell-local", "script": "files/broken.sh" }
  ]
}"#
            .into(),
        ),
        ("templates/files/broken.sh", "#!/bin/sh\necho broken\n".into()),
        (
            // An installer: the files its HTTP server serves are inputs.
            "templates/installer.json",
            format!(
                r#"{{
  "name": "installer",
  "source": {{ "type": "iso", "url": "https://example.invalid/netinst.iso", "checksum": "{SHA}" }},
  "builder": {{ "type": "qemu", "http_directory": "http", "cloud_init": false }},
  "provisioners": [ {{ "type": "shell", "inline": ["echo {{{{ build.ssh_public_key }}}}"] }} ]
}}"#
            ),
        ),
        ("templates/http/preseed.cfg", "d-i debian-installer/locale string en_US\n".into()),
        ("provisioners/common.sh", "#!/bin/sh\necho common\n".into()),
        ("vars/prod.json", "{ \"role\": \"prod-web\" }\n".into()),
    ]
}

struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkout");
        std::fs::create_dir_all(&root).unwrap();
        let repo = Repo { _dir: dir, root };
        repo.git(&["init", "-q", "-b", "main"]);
        for (path, text) in files() {
            repo.write(path, &text);
        }
        repo.commit("initial");
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn append(&self, path: &str, text: &str) {
        let before = std::fs::read_to_string(self.root.join(path)).unwrap();
        self.write(path, &format!("{before}{text}"));
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    fn options(&self, since: &str, templates: &[&str], var_files: &[&str]) -> ChangedOptions {
        ChangedOptions {
            since: since.to_string(),
            templates: templates.iter().map(PathBuf::from).collect(),
            vars: VarInputs {
                cli: Vec::new(),
                files: var_files.iter().map(|f| self.root.join(f)).collect(),
                use_env: false,
            },
            cwd: self.root.clone(),
        }
    }

    fn changed_full(&self, since: &str, templates: &[&str], var_files: &[&str]) -> Vec<ChangedTemplate> {
        changed(&self.options(since, templates, var_files)).unwrap()
    }

    /// The changed templates' paths, in the order reported.
    fn changed(&self, since: &str) -> Vec<String> {
        paths(&self.changed_full(since, &[], &[]))
    }
}

fn paths(list: &[ChangedTemplate]) -> Vec<String> {
    list.iter().map(|t| t.path.to_string_lossy().into_owned()).collect()
}

#[test]
fn nothing_changed_reports_nothing() {
    let repo = Repo::new();
    assert!(repo.changed("HEAD").is_empty());
    // Committed changes that touch no input, and untracked or ignored files.
    let base = repo.head();
    repo.append("README.md", "more\n");
    repo.write("docs/notes.md", "notes\n");
    repo.commit("docs");
    repo.write("scratch.txt", "untracked\n");
    repo.write("artifacts/base/2026.01.01.1/base.qcow2", "ignored\n");
    assert!(repo.changed(&base).is_empty(), "{:?}", repo.changed(&base));
}

#[test]
fn a_template_edit_reports_it_and_the_images_built_on_it() {
    let repo = Repo::new();
    let base = repo.head();
    repo.write(
        "templates/web.json",
        &std::fs::read_to_string(repo.root.join("templates/web.json")).unwrap().replace("\"web\" }", "\"www\" }"),
    );
    repo.commit("web: role www");
    let list = repo.changed_full(&base, &[], &[]);
    assert_eq!(paths(&list), ["templates/app.json", "templates/web.json"]);
    let web = list.iter().find(|t| t.name == "web").unwrap();
    assert_eq!(web.reasons, ["templates/web.json"]);
    let app = list.iter().find(|t| t.name == "app").unwrap();
    assert_eq!(app.reasons, ["parent image web changed"]);
    assert!(repo.changed("HEAD").is_empty(), "nothing since the commit");
}

#[test]
fn script_edits_committed_staged_or_not_count() {
    let repo = Repo::new();
    let base = repo.head();
    // Uncommitted: the parent's script, so its children follow transitively.
    repo.append("templates/files/base.sh", "echo more\n");
    let list = repo.changed_full("HEAD", &[], &[]);
    assert_eq!(paths(&list), ["templates/app.json", "templates/base.json", "templates/web.json"]);
    assert_eq!(list[1].reasons, ["templates/files/base.sh"]);
    assert_eq!(list[2].reasons, ["parent image base changed"]);
    assert_eq!(list[0].reasons, ["parent image web changed"]);
    repo.git(&["add", "-A"]);
    assert_eq!(repo.changed("HEAD").len(), 3, "staged");
    repo.commit("base script");
    assert_eq!(repo.changed(&base).len(), 3, "committed");
    assert!(repo.changed("HEAD").is_empty());

    // A shared provisioner outside templates/, used by a template with an unset required variable.
    repo.append("provisioners/common.sh", "echo more\n");
    assert_eq!(repo.changed("HEAD"), ["templates/standalone.json"]);
    let head = repo.commit("common");

    // A new, untracked file in an uploaded directory.
    repo.write("templates/files/site/about.html", "<p>about</p>\n");
    let list = repo.changed_full(&head, &[], &[]);
    assert_eq!(paths(&list), ["templates/app.json", "templates/web.json"]);
    assert_eq!(list[1].reasons, ["templates/files/site/about.html"]);

    // A deleted script is a change too.
    let head = repo.commit("about");
    std::fs::remove_file(repo.root.join("templates/files/web.sh")).unwrap();
    assert_eq!(repo.changed(&head), ["templates/app.json", "templates/web.json"]);
}

#[test]
fn a_template_that_does_not_load_is_scanned() {
    let repo = Repo::new();
    repo.append("templates/files/broken.sh", "echo more\n");
    let list = repo.changed_full("HEAD", &[], &[]);
    assert_eq!(paths(&list), ["templates/broken.json"]);
    assert_eq!(list[0].name, "broken", "the name is read from the raw JSON");
}

#[test]
fn files_served_to_an_installer_count() {
    let repo = Repo::new();
    repo.append("templates/http/preseed.cfg", "d-i passwd/root-login boolean false\n");
    let list = repo.changed_full("HEAD", &[], &[]);
    assert_eq!(paths(&list), ["templates/installer.json"]);
    assert_eq!(list[0].reasons, ["templates/http/preseed.cfg"]);
}

#[test]
fn var_files_count_when_passed() {
    let repo = Repo::new();
    let base = repo.head();
    repo.write("vars/prod.json", "{ \"role\": \"prod-www\" }\n");
    repo.commit("prod vars");
    assert!(repo.changed(&base).is_empty(), "not an input unless passed with --var-file");
    let list = repo.changed_full(&base, &["templates/web.json"], &["vars/prod.json"]);
    assert_eq!(paths(&list), ["templates/web.json"]);
    assert_eq!(list[0].reasons, ["vars/prod.json"]);
}

#[test]
fn given_templates_limit_the_output_but_parents_are_still_found() {
    let repo = Repo::new();
    repo.append("templates/files/base.sh", "echo more\n");
    let list = repo.changed_full("HEAD", &["templates/app.json", "templates/standalone.json"], &[]);
    assert_eq!(paths(&list), ["templates/app.json"]);
    assert_eq!(list[0].reasons, ["parent image web changed"]);
    // Relative to the given working directory, as given.
    let options = ChangedOptions { cwd: repo.root.join("templates"), ..repo.options("HEAD", &["base.json"], &[]) };
    assert_eq!(paths(&changed(&options).unwrap()), ["base.json"]);
}

#[test]
fn bad_revisions_and_non_repositories_are_errors() {
    let repo = Repo::new();
    let err = changed(&repo.options("no-such-branch", &[], &[])).unwrap_err();
    assert!(err.to_string().contains("unknown git revision `no-such-branch`"), "{err}");
    assert!(changed(&repo.options("--output=x", &[], &[])).is_err());
    let outside = tempfile::tempdir().unwrap();
    let options = ChangedOptions { cwd: outside.path().to_path_buf(), ..repo.options("HEAD", &[], &[]) };
    let err = changed(&options).unwrap_err();
    assert!(err.to_string().contains("not inside a git repository"), "{err}");
}

// ------------------------------------------------------------------ binary
// These need `imgbuild changed` wired into the CLI (src/cli.rs, src/app.rs).

fn imgbuild_in(repo: &Repo, args: &[&str]) -> common::Run {
    let mut cmd = common::imgbuild(&repo._dir.path().join("env"));
    cmd.current_dir(&repo.root).args(args);
    common::run(cmd)
}

#[test]
fn cli_prints_a_github_matrix() {
    let repo = Repo::new();
    let base = repo.head();
    repo.append("templates/files/web.sh", "echo more\n");
    repo.commit("web script");
    let out = imgbuild_in(&repo, &["changed", "--since", &base, "--format", "github-matrix"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let matrix: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        matrix,
        serde_json::json!({ "include": [
            { "template": "templates/app.json", "name": "app" },
            { "template": "templates/web.json", "name": "web" }
        ] })
    );
    assert_eq!(out.stdout.trim().lines().count(), 1, "one line, for $GITHUB_OUTPUT");

    let out = imgbuild_in(&repo, &["changed", "--since", &base]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "templates/app.json\ntemplates/web.json\n");

    let out = imgbuild_in(&repo, &["changed", "--since", "HEAD", "--format", "github-matrix"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), r#"{"include":[]}"#);
    let out = imgbuild_in(&repo, &["changed", "--since", "HEAD"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""));
}

#[test]
fn cli_json_var_files_and_errors() {
    let repo = Repo::new();
    repo.write("vars/prod.json", "{ \"role\": \"prod-www\" }\n");
    let out = imgbuild_in(
        &repo,
        &["changed", "--since", "HEAD", "--format", "json", "--var-file", "vars/prod.json", "templates/web.json"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "since": "HEAD", "templates": [
            { "template": "templates/web.json", "name": "web", "reasons": ["vars/prod.json"] }
        ] })
    );
    let out = imgbuild_in(&repo, &["changed", "--since", "nope"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("unknown git revision `nope`"), "{}", out.stderr);
}
