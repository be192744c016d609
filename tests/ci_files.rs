//! The ready-to-copy pipelines in `ci/` are valid for the systems that run
//! them (GitHub Actions and GitLab CI schemas, via check-jsonschema from the
//! test venv that scripts/setup.sh creates), the GitLab child pipeline they
//! generate is valid too, the Kubernetes objects are what docs/ci.md
//! promises, and every imgbuild flag they use exists.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{imgbuild, repo_root, run, venv_python};

fn check_jsonschema() -> PathBuf {
    venv_python().with_file_name("check-jsonschema")
}

fn validate(schema: &str, files: &[PathBuf]) {
    let out = Command::new(check_jsonschema()).args(["--builtin-schema", schema]).args(files).output().unwrap();
    assert!(
        out.status.success(),
        "check-jsonschema --builtin-schema {schema} {files:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn github_workflows_match_the_schema() {
    let dir = repo_root().join("ci/github");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    validate("vendor.github-workflows", &files);
}

#[test]
fn gitlab_pipeline_matches_the_schema() {
    validate("vendor.gitlab-ci", &[repo_root().join("ci/gitlab/.gitlab-ci.yml")]);
}

fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `changed` job turns `imgbuild changed --format json` into a child
/// pipeline with jq; what it writes must be a valid pipeline too, also when
/// nothing changed.
#[test]
fn the_generated_gitlab_child_pipeline_is_valid() {
    if !imgbuild::testing::require_command("jq", "apt-get install -y jq (scripts/setup.sh does)") {
        return;
    }
    let pipeline = yaml(&repo_root().join("ci/gitlab/.gitlab-ci.yml"));
    let script = pipeline["changed"]["script"][1].as_str().expect("the generator script").to_string();
    assert!(script.contains("child-pipeline.yml"), "{script}");
    let inputs = [
        r#"{"since":"abc","templates":[{"template":"templates/web.json","name":"web","reasons":["x"]},{"template":"templates/db.json","name":"db","reasons":["y"]}]}"#,
        r#"{"since":"abc","templates":[]}"#,
    ];
    for (i, input) in inputs.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("changed.json"), input).unwrap();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(dir.path())
            .env("IMGBUILD_IMAGE", "registry.example.com/imgbuild:1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let child = dir.path().join("child-pipeline.yml");
        validate("vendor.gitlab-ci", std::slice::from_ref(&child));
        let jobs = yaml(&child);
        let jobs = jobs.as_mapping().unwrap();
        if i == 0 {
            let web = &jobs[&serde_yaml::Value::from("build web")];
            assert_eq!(web["variables"]["TEMPLATE"].as_str(), Some("templates/web.json"));
            assert_eq!(web["stage"].as_str(), Some("build"));
            assert!(jobs.contains_key(serde_yaml::Value::from("build db")));
        } else {
            assert!(jobs.contains_key(serde_yaml::Value::from("nothing to build")), "{jobs:?}");
        }
    }
}

#[test]
fn kubernetes_cronjobs_are_unprivileged_and_share_a_volume() {
    let text = std::fs::read_to_string(repo_root().join("ci/kubernetes/cronjob.yaml")).unwrap();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["PersistentVolumeClaim", "CronJob", "CronJob"]);
    let claim = docs[0]["metadata"]["name"].as_str().unwrap();
    for job in &docs[1..] {
        assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
        assert_eq!(job["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
        assert!(job["spec"]["schedule"].as_str().is_some_and(|s| s.split_whitespace().count() == 5));
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        let containers =
            pod["containers"].as_sequence().unwrap().iter().chain(pod["initContainers"].as_sequence().unwrap());
        for c in containers {
            assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(false), "{c:?}");
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false), "{c:?}");
        }
        let build = &pod["containers"][0];
        let script = build["args"][0].as_str().unwrap();
        assert!(script.contains("imgbuild build --if-changed"), "{script}");
        let volumes = pod["volumes"].as_sequence().unwrap();
        assert!(volumes.iter().any(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim)));
        let env = build["env"].as_sequence().unwrap();
        for var in ["IMGBUILD_CACHE_DIR", "IMGBUILD_STORE"] {
            let value = env.iter().find(|e| e["name"].as_str() == Some(var)).unwrap()["value"].as_str().unwrap();
            assert!(value.starts_with("/data/"), "{var} must be on the volume: {value}");
        }
    }
}

#[test]
fn the_containerfile_installs_qemu_on_debian_12() {
    let text = std::fs::read_to_string(repo_root().join("ci/kubernetes/Containerfile")).unwrap();
    assert!(text.contains("FROM docker.io/library/debian:12-slim"), "{text}");
    for package in ["qemu-system-x86", "qemu-utils", "ovmf", "openssh-client", "ca-certificates"] {
        assert!(text.contains(package), "{package} missing");
    }
    assert!(text.contains("COPY --from=build /src/target/release/imgbuild /usr/local/bin/imgbuild"));
    assert!(text.contains("USER 10001"), "runs as the unprivileged user the CronJobs expect");
}

/// Needs `changed`, `lint` and the `build` flags wired into the CLI.
#[test]
fn every_imgbuild_flag_the_pipelines_use_exists() {
    let work = tempfile::tempdir().unwrap();
    let uses: [(&str, &[&str]); 9] = [
        ("build", &["--if-changed", "--force", "--metrics-file", "--store", "--junit"]),
        ("validate", &[]),
        ("lint", &["--format"]),
        ("changed", &["--since", "--format", "--var-file"]),
        ("inspect", &[]),
        ("show", &[]),
        ("promote", &[]),
        ("versions", &[]),
        ("prune", &["--keep"]),
    ];
    let mut problems = Vec::new();
    for (command, flags) in uses {
        let mut cmd = imgbuild(work.path());
        cmd.args([command, "--help"]);
        let out = run(cmd);
        // An unknown command is taken as a template name: `imgbuild build NAME --help`.
        if out.code != 0 || !out.stdout.contains(&format!("Usage: imgbuild {command}")) {
            problems.push(format!("`imgbuild {command}` is not a command"));
            continue;
        }
        for flag in flags {
            if !out.stdout.contains(flag) {
                problems.push(format!("`imgbuild {command}` has no {flag}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for file in ["ci/github/validate-and-build.yml", "ci/github/nightly.yml", "ci/gitlab/.gitlab-ci.yml"] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(text.contains("imgbuild "), "{file}");
    }
}
