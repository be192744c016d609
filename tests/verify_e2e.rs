//! Verify on real QEMU guests: every check kind passing and failing, the
//! boot-time budget, JUnit read back by a real consumer, publishing blocked
//! by a failed check, and `imgbuild test` against a published artifact.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PASSING: &str = r#"[
    { "service": "ssh", "running": true, "enabled": true },
    { "port": 22, "listening": true, "protocol": "tcp" },
    { "file": "/etc/motd", "exists": true, "mode": "0644", "owner": "root", "contains": "verified", "matches": "^verified image$" },
    { "package": "openssh-server", "installed": true },
    { "command": "uname -s", "exit_code": 0, "stdout_matches": "^Linux$", "stderr_empty": true },
    { "user": "deploy", "exists": true, "groups": ["deploy"], "shell": "/bin/sh" },
    { "name": "boot budget", "boot_time_max": "3m" }
]"#;

/// One failing case per kind, each with a distinctive name.
const FAILING: &str = r#"[
    { "name": "F-service", "service": "nginx", "running": true },
    { "name": "F-port", "port": 8081, "listening": true },
    { "name": "F-file", "file": "/etc/motd", "contains": "not in the file" },
    { "name": "F-package", "package": "nginx", "installed": true },
    { "name": "F-command", "command": "sh -c 'echo oops >&2; exit 3'", "exit_code": 0, "stderr_empty": true },
    { "name": "F-user", "user": "nobody-here", "exists": true },
    { "name": "F-boot", "boot_time_max": "1ms" }
]"#;

fn template(dir: &Path, name: &str, checks: &str) -> PathBuf {
    let text = format!(
        r#"{{
  "name": "{name}", "version": "1.0.0",
  "variables": {{ "fixture_dir": {{ "required": true }} }},
  "source": {{ "type": "cloud-image", "url": "{{{{ var.fixture_dir }}}}/base.qcow2", "checksum": "file:{{{{ var.fixture_dir }}}}/SHA256SUMS" }},
  "builder": {{
    "type": "qemu", "accelerator": "tcg", "memory": "512M", "shutdown_command": "poweroff",
    // Extra user-data merged into imgbuild's seed: cloud-init creates the user.
    "cloud_init": {{ "user_data": "users:\n  - name: deploy\n    shell: /bin/sh\n    groups: [deploy]\n" }}
  }},
  "provisioners": [ {{ "type": "shell", "inline": ["echo 'verified image' > /etc/motd", "chmod 0644 /etc/motd"] }} ],
  "verify": {checks}
}}"#
    );
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, text).unwrap();
    path
}

fn build(dir: &Path, template: &Path, extra: &[&str]) -> Run {
    let mut c = imgbuild(dir);
    c.arg("build")
        .arg(template)
        .arg("--no-progress")
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--var")
        .arg(format!("fixture_dir={}", fixture_dir().display()))
        .args(extra);
    run(c)
}

fn junit_consumer_accepts(junit: &Path, tests: usize, failures: usize) {
    // junitparser (PyPI) is installed by scripts/setup.sh into the test venv.
    let python = venv_python();
    let script = format!(
        "import junitparser, sys\nx = junitparser.JUnitXml.fromfile(sys.argv[1])\nt = sum(s.tests for s in x)\nf = sum(s.failures for s in x)\nassert (t, f) == ({tests}, {failures}), (t, f)\nprint('junit ok', t, f)"
    );
    let out = std::process::Command::new(&python).arg("-c").arg(script).arg(junit).output().unwrap();
    assert!(out.status.success(), "junitparser rejected the report: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn verify_passes_records_results_and_tests_published_artifacts() {
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let t = template(dir.path(), "verified", PASSING);
    let junit = dir.path().join("junit.xml");
    let out = build(dir.path(), &t, &["--junit", junit.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    junit_consumer_accepts(&junit, 7, 0);

    let manifest_path = dir.path().join("store/verified/1.0.0/manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_path).unwrap()).unwrap();
    let verify = manifest["verify"].as_array().expect("verify results in the manifest");
    assert_eq!(verify.len(), 7);
    let boot = verify.iter().find(|r| r["kind"] == "boot_time_max").unwrap();
    assert!(boot["actual"].as_str().unwrap().starts_with("boot_time="), "{boot}");

    // The nightly re-test: every kind failing against the published artifact, without rebuilding.
    let failing = template(dir.path(), "verified-failing", FAILING);
    let junit = dir.path().join("failing.xml");
    let mut c = imgbuild(dir.path());
    c.args(["test"])
        .arg(&failing)
        .args(["--artifact", "verified@1.0.0", "--no-progress", "--junit", junit.to_str().unwrap()])
        .arg("--store")
        .arg(dir.path().join("store"))
        .arg("--var")
        .arg(format!("fixture_dir={}", fixture_dir().display()));
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("7 of 7 verify checks failed"), "{}", out.stderr);
    for (name, actual) in [
        ("F-service", "running=false"),
        ("F-port", "listening=false"),
        ("F-file", "contains=false"),
        ("F-package", "installed=false"),
        ("F-command", "exit_code=3"),
        ("F-user", "exists=false"),
        ("F-boot", "boot_time="),
    ] {
        let line = out.stderr.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {}", out.stderr));
        assert!(line.contains("FAIL") && line.contains(actual), "{name} should show {actual}: {line}");
    }
    junit_consumer_accepts(&junit, 7, 7);
    env_is_clean(dir.path());
}

#[test]
fn failed_verify_blocks_publishing() {
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let t = template(dir.path(), "blocked", r#"[ { "file": "/etc/motd", "contains": "something else" } ]"#);
    let out = build(dir.path(), &t, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("1 of 1 verify checks failed"), "{}", out.stderr);
    let published = std::fs::read_dir(dir.path().join("store/blocked"))
        .map(|rd| rd.filter_map(|e| e.ok()).filter(|e| !e.file_name().to_string_lossy().starts_with('.')).count())
        .unwrap_or(0);
    assert_eq!(published, 0, "nothing may be published after a failed verify");
    env_is_clean(dir.path());
}

fn env_is_clean(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    assert!(wait_until(std::time::Duration::from_secs(10), || qemu_processes_mentioning(&needle).is_empty()));
    assert!(leftover_work_dirs(dir).is_empty());
}
