//! Faults under a running build, on the real binary: a full disk during
//! export, QEMU killed mid-provision, a guest whose sshd never answers, a
//! download cut off by a vanishing server, and a build killed with
//! `kill -9`. Each asserts the exit code, a cause that names what happened,
//! no QEMU left, no work directory left and nothing published.

mod common;

#[path = "common/http_server.rs"]
mod server;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

type Env = BuildEnv;

/// Clean (no QEMU, no work directory), and no version or staging directory in the store.
fn assert_nothing_left(env: &Env) {
    env.assert_clean();
    let entries: Vec<String> = std::fs::read_dir(env.store().join("e2e"))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let versions: Vec<&String> = entries.iter().filter(|n| n.starts_with(|c: char| c.is_ascii_digit())).collect();
    assert!(versions.is_empty(), "published: {versions:?}");
    assert!(!entries.iter().any(|n| n.starts_with(".staging")), "staging left in the store: {entries:?}");
}

/// A qemu template on the fixture with `provisioners` spliced in and
/// `ssh` fields besides the user name.
fn qemu_template(provisioners: &str, ssh: &str) -> String {
    format!(
        r#"{{
  "name": "e2e", "version": "1.0.0",
  "source": {{ "type": "cloud-image", "url": "{dir}/base.qcow2", "checksum": "file:{dir}/SHA256SUMS" }},
  "builder": {{
    "type": "qemu", "accelerator": "tcg", "memory": "512M",
    "ssh": {{ "username": "root", {ssh} }},
    "shutdown_command": "poweroff", "shutdown_timeout": "1m"
  }},
  "provisioners": {provisioners}
}}"#,
        dir = fixture_dir().display()
    )
}

const TIMEOUT: &str = r#""timeout": "2m""#;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error line: `error: step …`, the one line that names the cause.
fn error_line(stderr: &str) -> &str {
    stderr.lines().find(|l| l.contains("error: step ")).unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

/// A tmpfs of `size` mounted at `dir` for the life of the value.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir).output();
        let out = out.expect("run mount (util-linux)");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it and needs root (or CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir: dir.to_path_buf() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

#[test]
fn a_full_disk_during_export_names_enospc_and_the_file_system() {
    let _vm = vm_lock();
    let env = Env::new();
    // The fixture is ~22 MiB: its export cannot fit in 8 MiB.
    let _store = Tmpfs::mount(&env.store(), "8m");
    let t = env.write_template(
        "t.json",
        &qemu_template(r#"[ { "type": "shell", "inline": ["echo provisioned"] } ]"#, TIMEOUT),
    );
    let out = run(env.build_cmd(&t, &[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = error_line(&out.stderr);
    assert!(line.contains("(export) failed: the disk is full (ENOSPC) writing "), "{line}");
    assert!(line.contains(&env.store().display().to_string()), "names where: {line}");
    assert!(line.contains(&format!("the file system at {} (8.0 MiB)", env.store().display())), "{line}");
    assert_nothing_left(&env);
}

#[test]
fn qemu_killed_mid_provision_names_the_signal_and_the_work_dir_is_private() {
    let _vm = vm_lock();
    let env = Env::new();
    let marker = env.path().join("provisioning");
    let provisioners = format!(
        r#"[ {{ "type": "shell-local", "inline": ["touch {}"] }}, {{ "type": "shell", "inline": ["sleep 60"] }} ]"#,
        marker.display()
    );
    let t = env.write_template("t.json", &qemu_template(&provisioners, TIMEOUT));
    let child = env.spawn(&t, &[]);
    assert!(wait_until(Duration::from_secs(180), || marker.exists()), "provisioning never started");

    // While the build runs: the work directory and everything in it are the owner's only.
    let dirs = leftover_work_dirs(env.path());
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let work = env.path().join("work").join(&dirs[0]);
    assert_eq!(std::fs::metadata(&work).unwrap().permissions().mode() & 0o777, 0o700);
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&work).unwrap().flatten() {
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(mode & 0o077, 0, "{name} is {mode:o}");
        seen.push(name);
    }
    for expected in ["disk.qcow2", "build-console.log", "build-qemu.log", "id_ed25519", "seed.img"] {
        assert!(seen.iter().any(|n| n == expected), "{expected} not in {seen:?}");
    }

    let needle = env.path().to_string_lossy().into_owned();
    let pids = qemu_processes_mentioning(&needle);
    assert_eq!(pids.len(), 1, "{pids:?}");
    Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("QEMU exited (signal: 9 (SIGKILL))"), "{line}");
    assert!(line.contains("provisioners["), "{line}");
    for wrong in ["timed out", "SSH connection lost", "connection reset", "retrying"] {
        assert!(!stderr.contains(wrong), "reported `{wrong}` instead of QEMU's exit:\n{stderr}");
    }
    assert!(stderr.contains("--- serial console (last lines) ---"), "{stderr}");
    assert_nothing_left(&env);
}

/// The same for `verify` on the build VM: its checks race QEMU's end too.
#[test]
fn qemu_killed_mid_verify_on_the_build_vm_names_the_signal() {
    let _vm = vm_lock();
    let env = Env::new();
    let template = qemu_template("[]", TIMEOUT).replace(
        r#""provisioners": []"#,
        r#""provisioners": [], "verify": [ { "command": "sleep 60" } ], "export": { "verify_on": "build-vm" }"#,
    );
    let t = env.write_template("t.json", &template);
    let mut child = env.spawn(&t, &["--output", "json"]);
    let mut events = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let started = events
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains(r#""event":"step_started""#) && line.contains("verify (build VM)"));
    // Read on, so that the build never writes into a closed pipe.
    let drained = std::thread::spawn(move || events.count());
    assert!(started, "the verify step never started");
    let needle = env.path().to_string_lossy().into_owned();
    let pids = qemu_processes_mentioning(&needle);
    assert_eq!(pids.len(), 1, "{pids:?}");
    Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    drained.join().unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("verify (build VM)") && line.contains("QEMU exited (signal: 9 (SIGKILL))"), "{line}");
    assert!(!stderr.contains("timed out"), "reported a timeout instead of QEMU's exit:\n{stderr}");
    assert_nothing_left(&env);
}

#[test]
fn sshd_that_never_answers_times_out_with_the_console_tail() {
    let _vm = vm_lock();
    let env = Env::new();
    // Nothing listens on guest port 2222: QEMU accepts on the host side and hangs up.
    let t = env.write_template(
        "t.json",
        &qemu_template(r#"[ { "type": "shell", "inline": ["true"] } ]"#, r#""port": 2222, "timeout": "20s""#),
    );
    let out = run(env.build_cmd(&t, &[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = error_line(&out.stderr);
    assert!(line.contains("(wait for SSH) failed: timed out after 20s waiting for SSH on 127.0.0.1:"), "{line}");
    assert!(line.ends_with("(forwarded to guest port 2222)"), "{line}");
    let (_, console) = out.stderr.split_once("--- serial console (last lines) ---\n").expect("console tail");
    let console_lines =
        console.lines().take_while(|l| !l.starts_with("    step timings")).filter(|l| !l.trim().is_empty());
    assert!(console_lines.count() > 0, "the console tail is empty:\n{}", out.stderr);
    assert_nothing_left(&env);
}

/// A build with no machine that downloads `url` (checked against the fixture's list).
fn download_template(env: &Env, url: &str) -> PathBuf {
    env.write_template(
        "t.json",
        &format!(
            r#"{{
  "name": "e2e", "version": "1.0.0",
  "source": {{ "type": "cloud-image", "url": "{url}", "checksum": "file:{}/SHA256SUMS" }},
  "builder": {{ "type": "null" }},
  "provisioners": [ {{ "type": "shell-local", "inline": ["true"] }} ]
}}"#,
            fixture_dir().display()
        ),
    )
}

fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push((entry.path(), meta.len()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_off_by_a_vanishing_server_resumes_on_the_next_run() {
    let env = Env::new();
    let image = std::fs::read(fixture_dir().join("base.qcow2")).unwrap();
    let half = image.len() / 2;

    // First run: half the file, then the server stalls and goes away for good.
    let first = server::TestServer::start().await;
    let route = server::Route { hang_first_after: Some(half), ..server::Route::new(image.clone()) };
    first.add("/base.qcow2", route);
    let t = download_template(&env, &first.url("/base.qcow2"));
    let child = tokio::process::Command::from(env.build_cmd(&t, &[]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut waited = 0;
    while first.bytes_sent() < half as u64 {
        assert!(waited < 1200, "the server never sent half the file");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    first.stop().await;
    let out = child.wait_with_output().await.unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = error_line(&stderr);
    assert!(line.contains("(fetch source) failed: could not download http://127.0.0.1:"), "{line}");
    assert!(line.contains("gave up after 5 attempts"), "{line}");
    assert!(stderr.contains("the next run resumes the download from there"), "{stderr}");
    let cache = env.path().join("cache");
    assert!(files_under(&cache.join("blobs")).is_empty(), "a half file went into the cache");
    let partial = files_under(&cache.join("partial"));
    assert_eq!(partial.len(), 1, "{partial:?}");
    let kept = partial[0].1;
    assert!(kept > 0 && kept < image.len() as u64, "kept {kept} of {}", image.len());
    assert!(stderr.contains(&format!("kept the {kept} bytes received in {}", partial[0].0.display())), "{stderr}");
    assert_nothing_left(&env);

    // Next run, the file back at another address: only the rest is fetched.
    let second = server::TestServer::start().await;
    second.add("/base.qcow2", server::Route::new(image.clone()));
    let t = download_template(&env, &second.url("/base.qcow2"));
    let out = tokio::process::Command::from(env.build_cmd(&t, &[])).output().await.unwrap();
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(second.ranges(), [Some(format!("bytes={kept}-"))], "resumed where the first run stopped");
    assert_eq!(second.bytes_sent(), image.len() as u64 - kept);
    assert!(stderr.contains("source verified"), "{stderr}");
    let blobs = files_under(&cache.join("blobs"));
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert_eq!(std::fs::read(&blobs[0].0).unwrap(), image, "the cached source is the whole file");
    assert!(files_under(&cache.join("partial")).is_empty());
    second.stop().await;
    assert_nothing_left(&env);
}

/// A build with no machine whose host step marks that it runs, then waits to be killed.
fn sleeping_null_template(env: &Env, name: &str, marker: &Path) -> PathBuf {
    let text = format!(
        r#"{{ "name": "e2e", "version": "1.0.0", "builder": {{ "type": "null" }},
  "provisioners": [ {{ "type": "shell-local", "inline": ["touch {}", "exec sleep 600"] }} ] }}"#,
        marker.display()
    );
    env.write_template(&format!("{name}.json"), &text)
}

/// Kills the child with SIGKILL when dropped (a failed assertion must not leave it running).
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn work_dirs(env: &Env) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        leftover_work_dirs(env.path()).iter().map(|d| env.path().join("work").join(d)).collect();
    dirs.sort();
    dirs
}

#[test]
fn the_next_build_sweeps_a_killed_builds_work_dir_but_never_a_running_one() {
    let env = Env::new();
    let live_marker = env.path().join("live-running");
    let live_template = sleeping_null_template(&env, "live", &live_marker);
    let mut live = Running(env.spawn(&live_template, &[]));
    assert!(wait_until(Duration::from_secs(60), || live_marker.exists()), "the live build never started");
    let live_dir = work_dirs(&env).pop().unwrap();

    let killed_marker = env.path().join("killed-running");
    let killed_template = sleeping_null_template(&env, "killed", &killed_marker);
    let mut killed = Running(env.spawn(&killed_template, &[]));
    assert!(wait_until(Duration::from_secs(60), || killed_marker.exists()), "the build never started");
    let dead_dir = work_dirs(&env).into_iter().find(|d| *d != live_dir).unwrap();
    assert_eq!(std::fs::metadata(&dead_dir).unwrap().permissions().mode() & 0o777, 0o700);
    killed.0.kill().unwrap(); // SIGKILL
    killed.0.wait().unwrap();
    assert!(dead_dir.is_dir(), "kill -9 leaves the work directory behind");

    let quick = env.write_template(
        "quick.json",
        r#"{ "name": "e2e", "version": "1.0.0", "builder": { "type": "null" },
  "provisioners": [ { "type": "shell-local", "inline": ["true"] } ] }"#,
    );
    let out = run(env.build_cmd(&quick, &[]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let swept = format!("removed the work directory of a build that no longer runs: {}", dead_dir.display());
    assert!(out.stderr.contains(&swept), "{}", out.stderr);
    assert!(!out.stderr.contains(&live_dir.display().to_string()), "{}", out.stderr);
    assert!(!dead_dir.exists(), "the dead build's directory is swept");
    assert!(live_dir.is_dir(), "a running build's directory is never swept");

    // The live build still finishes cleanly (interrupted: it would sleep for 10 minutes).
    Command::new("kill").arg("-INT").arg(live.0.id().to_string()).status().unwrap();
    let status = live.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(live.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert_nothing_left(&env);
}
