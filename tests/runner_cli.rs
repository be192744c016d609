//! The step runner through the real binary, with the `null` builder (no VM):
//! interrupts, cleanup, exit codes, the JSON event stream and redaction.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("t.json");
    std::fs::write(&path, text).unwrap();
    path
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn sigint_mid_step_exits_130_runs_cleanups_and_leaves_no_child() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("sleep.pid");
    let t = write(
        dir.path(),
        &format!(
            r#"{{ "name": "sig", "version": "1.0.0", "builder": {{ "type": "null" }},
               "provisioners": [ {{ "type": "shell-local", "inline": ["sleep 300 & echo $! > {}", "wait"] }} ] }}"#,
            pid_file.display()
        ),
    );
    let mut cmd = imgbuild(dir.path());
    cmd.arg("build").arg(&t).stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(30), || pid_file.exists()), "step never started");
    assert_eq!(leftover_work_dirs(dir.path()).len(), 1, "the work dir exists while the step runs");
    std::thread::sleep(Duration::from_millis(200));
    let sleep_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cleaned up: remove work directory"), "{stderr}");
    assert!(leftover_work_dirs(dir.path()).is_empty(), "cleanup did not run");
    assert!(wait_until(Duration::from_secs(5), || !pid_alive(sleep_pid)), "child process {sleep_pid} left running");
}

#[test]
fn failing_step_exits_1_and_json_events_describe_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let t = write(
        dir.path(),
        r#"{ "name": "fail", "version": "1.0.0", "builder": { "type": "null" },
             "provisioners": [ { "type": "shell-local", "inline": ["echo ok"] },
                               { "type": "shell-local", "inline": ["echo failing >&2", "exit 4"] } ] }"#,
    );
    let mut cmd = imgbuild(dir.path());
    cmd.args(["--output", "json", "build"]).arg(&t);
    let out = run(cmd);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let events: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).expect("every stdout line is JSON")).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"build_started"));
    assert!(kinds.contains(&"step_finished"));
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["status"], "failed");
    assert_eq!(result["exit_code"], 1);
    assert!(result["error"].as_str().unwrap().contains("provisioners[1] (shell-local) failed"), "{result}");
    assert!(result["error"].as_str().unwrap().contains("failing"), "last output in the error: {result}");
    // Every event of the build, tool output included, names the build.
    let build_id = events[0]["build_id"].as_str().unwrap();
    assert!(events.iter().all(|e| e["build_id"] == build_id), "{}", out.stdout);
    assert!(events.iter().any(|e| e["event"] == "log" && e["source"].is_string()), "{}", out.stdout);
    assert!(leftover_work_dirs(dir.path()).is_empty());
}

#[test]
fn sensitive_values_never_reach_any_output() {
    let dir = tempfile::tempdir().unwrap();
    // One secret interpolated into commands, one with shell metacharacters
    // that reaches the step through its environment (where it arrives verbatim).
    let (token, tricky) = ("tok-9f8e7d6c5b4a", "s3cr3t 'quote' $value;");
    let t = write(
        dir.path(),
        r#"{ "name": "redact", "version": "1.0.0",
             "variables": { "token": { "required": true, "sensitive": true },
                            "tricky": { "required": true, "sensitive": true } },
             "builder": { "type": "null" },
             "provisioners": [
               { "type": "shell-local", "inline": ["echo \"token={{ var.token }}\"", "echo \"$IMGBUILD_VAR_tricky\" >&2"] },
               { "type": "shell-local", "inline": ["echo 'failing with {{ var.token }}'", "exit 1"] } ] }"#,
    );
    let mut checks = Vec::new();
    for args in [vec!["inspect"], vec!["build"], vec!["--output", "json", "build"], vec!["-v", "build"]] {
        let mut cmd = imgbuild(dir.path());
        cmd.args(&args).arg(&t).env("IMGBUILD_VAR_token", token).env("IMGBUILD_VAR_tricky", tricky);
        let out = run(cmd);
        let all = format!("{}{}", out.stdout, out.stderr);
        for secret in [token, tricky] {
            assert!(!all.contains(secret), "{args:?} leaked {secret}:\n{all}");
        }
        checks.push(all.contains("<sensitive>"));
    }
    assert!(checks.iter().all(|c| *c), "the masked form should appear in each output");
}

#[test]
fn example_null_template_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = imgbuild(dir.path());
    cmd.arg(repo_root().join("templates/hello-null.json"));
    let out = run(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("hello from hello-null 0.1.0"), "{}", out.stderr);
    assert!(!out.stderr.contains("not-a-real-secret"), "{}", out.stderr);
}

#[test]
fn a_second_interrupt_does_not_cut_cleanup_short_and_sigterm_counts_too() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    // The cleanup of the work dir is slowed by a big tree, so the second signal lands during cleanup.
    let t = write(
        dir.path(),
        &format!(
            r#"{{ "name": "sig2", "version": "1.0.0", "builder": {{ "type": "null" }},
               "provisioners": [ {{ "type": "shell-local", "inline": [
                 "for i in $(seq 1 2000); do mkdir -p \"$IMGBUILD_BUILD_DIR/t/$i\"; done",
                 "touch {}", "sleep 300"] }} ] }}"#,
            started.display()
        ),
    );
    let mut cmd = imgbuild(dir.path());
    cmd.arg("build").arg(&t).stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(60), || started.exists()), "step never started");
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    std::thread::sleep(Duration::from_millis(30));
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(leftover_work_dirs(dir.path()).is_empty(), "cleanup was cut short:\n{stderr}");
}
