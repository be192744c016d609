//! `imgbuild lint`: every rule fires on a template made for it and stays
//! quiet on a near miss (library API), positions and JSON paths, ignores,
//! output formats (SARIF validated against the official 2.1.0 schema) and
//! exit codes through the real binary.

mod common;

use std::path::{Path, PathBuf};

use common::{imgbuild, repo_root, run, venv_python};
use imgbuild::lint::{self, LintOptions, Report, Severity};
use imgbuild::template::VarInputs;

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A qemu template that lints clean (with `setup.sh` and `files/` beside it).
fn base() -> String {
    format!(
        r#"// a template with nothing to complain about
{{
  "name": "t",
  "version": "1.0.0",
  "description": "lint test image",
  "variables": {{
    "ssh_password": {{ "required": true, "sensitive": true }},
    "role": {{ "default": "webserver" }}
  }},
  "source": {{
    "type": "cloud-image",
    "url": "https://example.com/images/debian-12-20240101.qcow2",
    "checksum": "sha256:{ZEROS}"
  }},
  "builder": {{
    "type": "qemu",
    "accelerator": "auto",
    "ssh": {{ "username": "root", "password": "{{{{ var.ssh_password }}}}" }},
    "shutdown_command": "poweroff"
  }},
  "provisioners": [
    {{ "type": "shell", "inline": ["echo {{{{ var.role }}}} > /etc/role", "echo rebooting soon", "curl -fsSLo /tmp/i.sh https://example.com/i.sh"] }},
    {{ "type": "shell", "script": "setup.sh", "env": {{ "GITHUB_TOKEN": "{{{{ var.ssh_password }}}}" }} }},
    {{ "type": "file", "source": "files", "destination": "/srv" }},
    {{ "type": "shell", "inline": ["sleep 1 && reboot"], "expect_disconnect": true }}
  ],
  "verify": [ {{ "service": "ssh", "running": true }} ]
}}
"#
    )
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not in template");
    text.replacen(from, to, 1)
}

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("setup.sh"), "#!/bin/sh\n# reboot later\napt-get update\n").unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/motd"), "hi\n").unwrap();
        Case { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn lint_with(&self, text: &str, store: Option<PathBuf>) -> Report {
        let path = self.write("t.json", text);
        let mut given = Vec::new();
        if text.contains("\"ssh_password\"") {
            given.push(("ssh_password".to_string(), "s3cret-value".to_string()));
        }
        let options = LintOptions {
            vars: VarInputs { cli: given, files: vec![], use_env: false },
            store: Some(store.unwrap_or_else(|| self.path().join("no-store"))),
        };
        lint::lint_path(&path, &options).unwrap_or_else(|e| panic!("template does not load: {e}\n{text}"))
    }

    fn lint(&self, text: &str) -> Report {
        self.lint_with(text, None)
    }
}

fn ids(report: &Report) -> Vec<&'static str> {
    report.rule_ids()
}

/// `line:column` (1-based, characters) of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle} not in template"));
    let before = &text[..offset];
    (before.matches('\n').count() + 1, before.rsplit('\n').next().unwrap_or("").chars().count() + 1)
}

/// Asserts `rule` fired once at `needle`, with this JSON path.
fn assert_at(report: &Report, text: &str, rule: &str, needle: &str, path: &str) {
    let hits: Vec<_> = report.findings.iter().filter(|f| f.rule.id == rule).collect();
    assert_eq!(hits.len(), 1, "{rule}: {:#?}", report.findings.iter().map(|f| f.to_text()).collect::<Vec<_>>());
    assert_eq!(hits[0].line_col(), position_of(text, needle), "{rule} position: {}", hits[0].to_text());
    assert_eq!(hits[0].path, path, "{rule} path");
}

#[test]
fn base_template_is_clean() {
    let case = Case::new();
    let report = case.lint(&base());
    assert!(report.findings.is_empty(), "{:#?}", report.findings.iter().map(|f| f.to_text()).collect::<Vec<_>>());
}

#[test]
fn ib001_checksum_none() {
    let case = Case::new();
    let text = replace(&base(), &format!("sha256:{ZEROS}"), "none");
    let report = case.lint(&text);
    assert_at(&report, &text, "IB001", "\"none\"", "source.checksum");
    assert!(report.has_errors());
    assert!(!ids(&case.lint(&base())).contains(&"IB001"));
}

#[test]
fn ib002_missing_files() {
    let case = Case::new();
    let text = replace(&base(), "\"setup.sh\"", "\"stup.sh\"");
    assert_at(&case.lint(&text), &text, "IB002", "\"stup.sh\"", "provisioners[1].script");

    let text = replace(&base(), "\"source\": \"files\"", "\"source\": \"fils\"");
    assert_at(&case.lint(&text), &text, "IB002", "\"fils\"", "provisioners[2].source");

    let text = replace(&base(), "\"script\": \"setup.sh\"", "\"scripts\": [\"setup.sh\", \"files\"]");
    let report = case.lint(&text);
    assert_at(&report, &text, "IB002", "\"files\"]", "provisioners[1].scripts[1]");
    assert!(report.findings[0].message.contains("directory"), "{}", report.findings[0].message);

    let text = replace(&base(), "https://example.com/images/debian-12-20240101.qcow2", "images/base.qcow2");
    assert_at(&case.lint(&text), &text, "IB002", "\"images/base.qcow2\"", "source.url");
    std::fs::create_dir(case.path().join("images")).unwrap();
    std::fs::write(case.path().join("images/base.qcow2"), "x").unwrap();
    assert!(!ids(&case.lint(&text)).contains(&"IB002"));
    assert!(!ids(&case.lint(&base())).contains(&"IB002"));
}

#[test]
fn ib003_moving_source() {
    let case = Case::new();
    let moving = "https://cloud.example.com/bookworm/latest/debian-12.qcow2";
    let text = replace(&base(), "https://example.com/images/debian-12-20240101.qcow2", moving);
    let report = case.lint(&text);
    assert_at(&report, &text, "IB003", &format!("\"{moving}\""), "source.url");
    assert_eq!(report.findings[0].severity(), Severity::Warning);

    let daily = replace(&text, "/latest/", "/Daily/");
    assert!(ids(&case.lint(&daily)).contains(&"IB003"));

    // A checksum list moves with the image.
    let listed =
        replace(&text, &format!("sha256:{ZEROS}"), "file:https://cloud.example.com/bookworm/latest/SHA256SUMS");
    assert!(!ids(&case.lint(&listed)).contains(&"IB003"));
    // `latest` inside a word is not a moving path segment.
    let word = replace(&base(), "images/debian", "latestnews/debian");
    assert!(!ids(&case.lint(&word)).contains(&"IB003"));
}

#[test]
fn ib004_secrets() {
    let case = Case::new();
    let text = replace(&base(), "{{ var.ssh_password }}", "hunter2");
    let report = case.lint(&text);
    assert_at(&report, &text, "IB004", "\"hunter2\"", "builder.ssh.password");
    assert!(!report.findings[0].message.contains("hunter2"), "never repeat the secret");

    // A variable that is not sensitive.
    let text = replace(&base(), "{{ var.ssh_password }}", "{{ var.role }}");
    let report = case.lint(&text);
    assert_at(&report, &text, "IB004", "\"{{ var.role }}\"", "builder.ssh.password");
    assert!(report.findings.iter().any(|f| f.message.contains("not marked `sensitive`")));

    // Password-like keys anywhere, e.g. provisioner env.
    let text = replace(&base(), "\"GITHUB_TOKEN\": \"{{ var.ssh_password }}\"", "\"GITHUB_TOKEN\": \"ghp_abc123\"");
    assert_at(&case.lint(&text), &text, "IB004", "\"ghp_abc123\"", "provisioners[1].env.GITHUB_TOKEN");

    // AWS key in a comment: pointed at exactly.
    let text = replace(&base(), "// a template", "// key AKIAIOSFODNN7EXAMPLE in a template");
    assert_at(&case.lint(&text), &text, "IB004", "AKIAIOSFODNN7EXAMPLE", "");

    // A private key in an upload's inline content.
    let text = replace(
        &base(),
        "{ \"type\": \"file\", \"source\": \"files\", \"destination\": \"/srv\" }",
        "{ \"type\": \"file\", \"content\": \"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Bl\\n\", \"destination\": \"/root/.ssh/id\" }",
    );
    assert_at(&case.lint(&text), &text, "IB004", "-----BEGIN", "provisioners[2].content");

    // cloud-init user data with a literal password.
    let text = replace(
        &base(),
        "\"shutdown_command\": \"poweroff\"",
        "\"shutdown_command\": \"poweroff\", \"cloud_init\": { \"user_data\": \"#cloud-config\\npassword: hunter2\\n\" }",
    );
    assert_at(&case.lint(&text), &text, "IB004", "\"#cloud-config", "builder.cloud_init.user_data");

    // A variable named like a secret with a literal default, not sensitive.
    let text = replace(&base(), "\"role\": {", "\"db_password\": { \"default\": \"hunter22\" },\n    \"role\": {");
    let report = case.lint(&text);
    assert!(report.findings.iter().any(|f| f.rule.id == "IB004" && f.path == "variables.db_password.default"));
    assert_eq!(
        report.findings.iter().find(|f| f.rule.id == "IB004").unwrap().line_col(),
        position_of(&text, "\"hunter22\"")
    );

    assert!(!ids(&case.lint(&base())).contains(&"IB004"));
}

#[test]
fn ib005_reboot_without_expect_disconnect() {
    let case = Case::new();
    let text = replace(&base(), ", \"expect_disconnect\": true", "");
    assert_at(&case.lint(&text), &text, "IB005", "\"sleep 1 && reboot\"", "provisioners[3].inline[0]");

    std::fs::write(case.path().join("setup.sh"), "#!/bin/sh\napt-get -y upgrade\nsudo shutdown -r now\n").unwrap();
    let report = case.lint(&base());
    assert_at(&report, &base(), "IB005", "\"setup.sh\"", "provisioners[1].script");
    assert!(report.findings[0].message.contains("line 3"), "{}", report.findings[0].message);

    // `shell-local` reboots nothing in the guest; base has `expect_disconnect` and `echo rebooting`.
    std::fs::write(case.path().join("setup.sh"), "#!/bin/sh\n# reboot\n").unwrap();
    let local = replace(
        &base(),
        "{ \"type\": \"shell\", \"inline\": [\"sleep",
        "{ \"type\": \"shell-local\", \"inline\": [\"sleep",
    );
    let local = replace(&local, ", \"expect_disconnect\": true", "");
    assert!(!ids(&case.lint(&local)).contains(&"IB005"));
    assert!(!ids(&case.lint(&base())).contains(&"IB005"));
}

#[test]
fn ib006_no_verify() {
    let case = Case::new();
    let text = replace(&base(), "[ { \"service\": \"ssh\", \"running\": true } ]", "[]");
    assert_at(&case.lint(&text), &text, "IB006", "[]", "verify");
    let text = replace(&base(), ",\n  \"verify\": [ { \"service\": \"ssh\", \"running\": true } ]", "");
    assert_at(&case.lint(&text), &text, "IB006", "{\n  \"name\"", "");
    assert!(!ids(&case.lint(&base())).contains(&"IB006"));
}

#[test]
fn ib007_version_already_published() {
    let case = Case::new();
    let store = case.path().join("store");
    std::fs::create_dir_all(store.join("t/1.0.0")).unwrap();
    std::fs::write(store.join("t/1.0.0/manifest.json"), "{}").unwrap();
    let report = case.lint_with(&base(), Some(store.clone()));
    assert_at(&report, &base(), "IB007", "\"1.0.0\"", "version");
    assert!(report.has_errors());

    let next = replace(&base(), "\"1.0.0\"", "\"1.0.1\"");
    assert!(!ids(&case.lint_with(&next, Some(store.clone()))).contains(&"IB007"));
    let auto = replace(&base(), "\"1.0.0\"", "\"auto\"");
    assert!(!ids(&case.lint_with(&auto, Some(store.clone()))).contains(&"IB007"));
    // A store that does not exist holds nothing, and lint does not create it.
    let missing = case.path().join("nowhere");
    assert!(!ids(&case.lint_with(&base(), Some(missing.clone()))).contains(&"IB007"));
    assert!(!missing.exists());
}

#[test]
fn ib008_no_shutdown_command() {
    let case = Case::new();
    let text = replace(&base(), ",\n    \"shutdown_command\": \"poweroff\"", "");
    assert_at(&case.lint(&text), &text, "IB008", "{\n    \"type\": \"qemu\"", "builder");
    assert!(!ids(&case.lint(&base())).contains(&"IB008"));
}

#[test]
fn ib009_pipe_to_shell() {
    let case = Case::new();
    let text = replace(
        &base(),
        "curl -fsSLo /tmp/i.sh https://example.com/i.sh",
        "curl -fsSL https://example.com/i.sh | sudo bash",
    );
    assert_at(&case.lint(&text), &text, "IB009", "\"curl -fsSL", "provisioners[0].inline[2]");

    std::fs::write(case.path().join("setup.sh"), "#!/bin/sh\nwget -qO- https://example.com/x | sh\n").unwrap();
    assert_at(&case.lint(&base()), &base(), "IB009", "\"setup.sh\"", "provisioners[1].script");
    std::fs::write(case.path().join("setup.sh"), "#!/bin/sh\nwget -O /tmp/x https://example.com/x\n").unwrap();
    assert!(!ids(&case.lint(&base())).contains(&"IB009"));
}

#[test]
fn ib010_no_description() {
    let case = Case::new();
    let text = replace(&base(), "\n  \"description\": \"lint test image\",", "");
    let report = case.lint(&text);
    assert_at(&report, &text, "IB010", "{\n  \"name\"", "");
    assert_eq!(report.findings[0].severity(), Severity::Note);
    assert!(!report.has_errors());
    assert!(!ids(&case.lint(&base())).contains(&"IB010"));
}

#[test]
fn ib011_sensitive_variable_with_default() {
    let case = Case::new();
    let text =
        replace(&base(), "\"required\": true, \"sensitive\": true", "\"default\": \"changeme1\", \"sensitive\": true");
    assert_at(&case.lint(&text), &text, "IB011", "\"changeme1\"", "variables.ssh_password.default");
    // A default on a variable that is not sensitive is fine.
    assert!(!ids(&case.lint(&base())).contains(&"IB011"));
}

#[test]
fn ib012_accelerator_kvm() {
    let case = Case::new();
    let text = replace(&base(), "\"accelerator\": \"auto\"", "\"accelerator\": \"kvm\"");
    assert_at(&case.lint(&text), &text, "IB012", "\"kvm\"", "builder.accelerator");
    let tcg = replace(&base(), "\"accelerator\": \"auto\"", "\"accelerator\": \"tcg\"");
    assert!(!ids(&case.lint(&tcg)).contains(&"IB012"));
}

#[test]
fn ib013_checksum_list_over_http() {
    let case = Case::new();
    let text = replace(&base(), &format!("sha256:{ZEROS}"), "file:http://example.com/SHA256SUMS");
    assert_at(&case.lint(&text), &text, "IB013", "\"file:http:", "source.checksum");
    let https = replace(&base(), &format!("sha256:{ZEROS}"), "file:https://example.com/SHA256SUMS");
    assert!(case.lint(&https).findings.is_empty());
}

#[test]
fn ib014_unused_variable() {
    let case = Case::new();
    let text = replace(
        &base(),
        "\"role\": { \"default\": \"webserver\" }",
        "\"role\": { \"default\": \"webserver\" },\n    \"region\": {}",
    );
    assert_at(&case.lint(&text), &text, "IB014", "\"region\"", "variables.region");
    assert!(!ids(&case.lint(&base())).contains(&"IB014"));
}

#[test]
fn ib015_verify_with_null_builder() {
    let case = Case::new();
    let null = r#"{
  "name": "n",
  "description": "host-side only",
  "builder": { "type": "null" },
  "provisioners": [ { "type": "shell-local", "inline": ["true"] } ],
  "verify": [ { "command": "true" } ]
}"#;
    let report = case.lint(null);
    assert_at(&report, null, "IB015", "[ { \"command\"", "verify");
    // No IB006, IB007 or IB008 for the null builder.
    assert_eq!(ids(&report), vec!["IB015"]);
    let without = replace(null, ",\n  \"verify\": [ { \"command\": \"true\" } ]", "");
    assert!(case.lint(&without).findings.is_empty());
}

#[test]
fn lint_ignore_silences_rules() {
    let case = Case::new();
    let text = replace(&base(), &format!("sha256:{ZEROS}"), "none");
    let text = replace(
        &text,
        "\"verify\":",
        "// unverified on purpose: the image is rebuilt hourly\n  \"lint\": { \"ignore\": [\"IB001\", \"IB099\"] },\n  \"verify\":",
    );
    let report = case.lint(&text);
    assert!(report.findings.is_empty(), "{:?}", ids(&report));
    assert_eq!(report.ignored.iter().map(|f| f.rule.id).collect::<Vec<_>>(), vec!["IB001"]);
    assert_eq!(report.unknown_ignores, vec!["IB099".to_string()]);
    assert!(!report.has_errors());
}

#[test]
fn unloadable_template_is_an_error() {
    let case = Case::new();
    let path = case.write("bad.json", "{ \"name\": \"t\" \"builder\": {} }");
    let err = lint::lint_path(&path, &LintOptions::default()).unwrap_err();
    assert!(err.to_string().contains("expected `,` or `}`"), "{err}");
    let path = case.write("bad.json", "{ \"name\": \"t\", \"builder\": { \"type\": \"qemu\", \"memroy\": \"1G\" } }");
    assert!(lint::lint_path(&path, &LintOptions::default()).is_err());
}

#[test]
fn required_variables_get_placeholders() {
    let case = Case::new();
    let text = replace(&base(), "\"script\": \"setup.sh\"", "\"script\": \"{{ var.dir }}/setup.sh\"");
    let text = replace(&text, "\"role\": {", "\"dir\": { \"required\": true },\n    \"role\": {");
    let path = case.write("t.json", &text);
    let options = LintOptions { vars: VarInputs::default(), store: Some(case.path().join("no-store")) };
    let report = lint::lint_path(&path, &options).unwrap();
    let mut unset = report.unset_variables.clone();
    unset.sort();
    assert_eq!(unset, vec!["dir".to_string(), "ssh_password".to_string()]);
    // The script path depends on `dir`: not judged.
    assert!(report.findings.is_empty(), "{:?}", ids(&report));
}

#[test]
fn example_templates_lint_clean() {
    for name in ["fixture-web.json", "hello-null.json"] {
        let path = repo_root().join("templates").join(name);
        let report = lint::lint_path(&path, &LintOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let texts: Vec<String> = report.findings.iter().map(|f| f.to_text()).collect();
        assert!(texts.is_empty(), "{name}:\n{}", texts.join("\n"));
    }
}

// ---------------------------------------------------------------- SARIF

fn check_jsonschema(document: &Path) -> (bool, String) {
    let tool = venv_python().with_file_name("check-jsonschema");
    let schema = repo_root().join("tests/data/sarif-schema-2.1.0.json");
    let out = std::process::Command::new(tool)
        .arg("--schemafile")
        .arg(schema)
        .arg(document)
        .output()
        .expect("run check-jsonschema");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn sarif_is_valid_against_the_official_schema() {
    let case = Case::new();
    let text = replace(&base(), &format!("sha256:{ZEROS}"), "none");
    let text = replace(&text, "\"accelerator\": \"auto\"", "\"accelerator\": \"kvm\"");
    let text = replace(&text, "\n  \"description\": \"lint test image\",", "");
    let report = case.lint(&text);
    assert_eq!(ids(&report), vec!["IB001", "IB010", "IB012"]);
    let sarif = lint::to_sarif(&[report]);
    let run = &sarif["runs"][0];
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["$schema"].as_str().unwrap().contains("sarif-schema-2.1.0"));
    assert_eq!(run["tool"]["driver"]["name"], "imgbuild");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), lint::RULES.len());
    assert_eq!(rules[0]["id"], "IB001");
    assert_eq!(rules[0]["helpUri"], "docs/lint/IB001.md");
    assert_eq!(rules[0]["defaultConfiguration"]["level"], "error");
    assert_eq!(rules[9]["defaultConfiguration"]["level"], "note");
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let first = results.iter().find(|r| r["ruleId"] == "IB001").expect("IB001 result");
    assert_eq!(first["ruleId"], "IB001");
    assert_eq!(first["level"], "error");
    let loc = &first["locations"][0]["physicalLocation"];
    let (line, col) = position_of(&text, "\"none\"");
    assert_eq!(loc["region"]["startLine"], line);
    assert_eq!(loc["region"]["startColumn"], col);
    let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
    assert!(uri.ends_with("t.json"), "{uri}");
    assert_eq!(first["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], "source.checksum");

    let doc = case.write("out.sarif", &serde_json::to_string_pretty(&sarif).unwrap());
    let (ok, output) = check_jsonschema(&doc);
    assert!(ok, "SARIF does not validate:\n{output}");

    // The validator does reject a broken log.
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    let doc = case.write("broken.sarif", &serde_json::to_string(&broken).unwrap());
    let (ok, output) = check_jsonschema(&doc);
    assert!(!ok && output.contains("fatal"), "{output}");
}

// ---------------------------------------------------------------- binary
// These need `lint` wired into the CLI (`Command::Lint`).

#[test]
fn binary_text_output_and_exit_codes() {
    let case = Case::new();
    let bad = replace(&base(), &format!("sha256:{ZEROS}"), "none");
    let path = case.write("bad.json", &bad);
    let mut cmd = imgbuild(case.path());
    cmd.current_dir(case.path()).args(["lint", "--store", "store", "--var", "ssh_password=xyzw1234", "bad.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let (line, col) = position_of(&bad, "\"none\"");
    let expected = format!("bad.json:{line}:{col}: error[IB001]: ");
    assert!(r.stdout.starts_with(&expected), "{}", r.stdout);
    assert!(r.stdout.contains("(fix: set `checksum`"), "{}", r.stdout);
    assert!(r.stderr.contains("lint: 1 error, 0 warnings, 0 notes in 1 template"), "{}", r.stderr);
    assert!(path.exists());

    // Warnings and notes alone do not fail; required variables may be unset.
    let warn = replace(&base(), "\"accelerator\": \"auto\"", "\"accelerator\": \"kvm\"");
    case.write("warn.json", &warn);
    let mut cmd = imgbuild(case.path());
    cmd.current_dir(case.path()).args(["lint", "--store", "store", "warn.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("warning[IB012]"), "{}", r.stdout);
    assert!(r.stderr.contains("`ssh_password` not set"), "{}", r.stderr);
    assert!(!case.path().join("store").exists(), "lint must not create the store");

    // `lint.ignore` through the binary.
    let ignored = replace(&bad, "\"verify\":", "\"lint\": { \"ignore\": [\"IB001\"] },\n  \"verify\":");
    case.write("ignored.json", &ignored);
    let mut cmd = imgbuild(case.path());
    cmd.current_dir(case.path()).args(["lint", "--store", "store", "ignored.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("1 ignored"), "{}", r.stderr);
}

#[test]
fn binary_unloadable_template_exits_2_with_diagnostics() {
    let case = Case::new();
    let text = "{\n  \"name\": \"t\",\n  \"builder\": { \"type\": \"qemu\", \"memroy\": \"1G\" }\n}\n";
    case.write("broken.json", text);
    case.write("ok.json", &base());
    let mut cmd = imgbuild(case.path());
    cmd.current_dir(case.path()).args(["lint", "ok.json", "broken.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let (line, col) = position_of(text, "\"memroy\"");
    assert!(r.stderr.contains(&format!("broken.json:{line}:{col}")), "{}", r.stderr);
    assert!(r.stderr.contains("builder.memroy"), "{}", r.stderr);
}

#[test]
fn binary_json_and_sarif_formats() {
    let case = Case::new();
    let text = replace(&base(), "\"setup.sh\"", "\"missing.sh\"");
    case.write("t.json", &text);
    let mut cmd = imgbuild(case.path());
    cmd.current_dir(case.path()).args(["lint", "--format", "json", "--store", "store", "t.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let findings: serde_json::Value = serde_json::from_str(&r.stdout).expect("a JSON array");
    let f = &findings.as_array().unwrap()[0];
    let (line, col) = position_of(&text, "\"missing.sh\"");
    assert_eq!(f["rule"], "IB002");
    assert_eq!(f["severity"], "error");
    assert_eq!(f["file"], "t.json");
    assert_eq!((f["line"].as_u64().unwrap() as usize, f["column"].as_u64().unwrap() as usize), (line, col));
    assert_eq!(f["path"], "provisioners[1].script");
    assert_eq!(f["doc"], "docs/lint/IB002.md");

    let mut cmd = imgbuild(case.path());
    cmd.current_dir(case.path()).args(["lint", "--format", "sarif", "--store", "store", "t.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let sarif: serde_json::Value = serde_json::from_str(&r.stdout).expect("SARIF JSON");
    let loc = &sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], "t.json");
    assert_eq!(loc["region"]["startLine"], line);
    let doc = case.write("out.sarif", &r.stdout);
    let (ok, output) = check_jsonschema(&doc);
    assert!(ok, "SARIF does not validate:\n{output}");
}

#[test]
fn binary_lints_the_examples() {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = imgbuild(work.path());
    cmd.current_dir(repo_root()).args(["lint", "templates/fixture-web.json", "templates/hello-null.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}
