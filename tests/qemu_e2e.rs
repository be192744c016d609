//! End to end on real QEMU guests (TCG) booted from the Debian-package test
//! fixture, driven through the real `imgbuild` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

type Env = BuildEnv;

/// A small template on the fixture; `provisioners` is spliced in as JSON.
/// `ssh_extra` adds fields to the `ssh` block (the timeout defaults to 2m).
fn template(provisioners: &str, ssh_extra: &str, cloud_init: bool) -> String {
    let ssh_extra = if ssh_extra.contains("\"timeout\"") {
        ssh_extra.to_string()
    } else {
        format!(", \"timeout\": \"2m\"{ssh_extra}")
    };
    format!(
        r#"{{
  "name": "e2e",
  "version": "auto",
  "variables": {{ "fixture_dir": {{ "required": true }} }},
  "source": {{ "type": "cloud-image", "url": "{{{{ var.fixture_dir }}}}/base.qcow2", "checksum": "file:{{{{ var.fixture_dir }}}}/SHA256SUMS" }},
  "builder": {{
    "type": "qemu", "accelerator": "tcg", "memory": "512M",
    "ssh": {{ "username": "root" {ssh_extra} }},
    "cloud_init": {cloud_init},
    "shutdown_command": "poweroff", "shutdown_timeout": "1m"
  }},
  "provisioners": {provisioners}
}}"#
    )
}

fn published_versions(store: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(store.join(name))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n != "channels.json")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn example_template_builds_and_changes_persist() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let example = repo_root().join("templates/fixture-web.json");
    let out = run(env.build_cmd(&example, &[]));
    assert_eq!(out.code, 0, "build failed:\n{}", out.stderr);
    assert!(out.stderr.contains("provisioners[1]: configured"), "{}", out.stderr);
    env.assert_clean();

    let versions = published_versions(&env.store(), "fixture-web");
    assert_eq!(versions.len(), 1, "{versions:?}");
    let version_dir = env.store().join("fixture-web").join(&versions[0]);
    let image = version_dir.join(format!("fixture-web-{}.qcow2", versions[0]));
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&image).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "captured image must be standalone: {info}");
    let sums = Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(&version_dir).status().unwrap();
    assert!(sums.success());
    // The manifest validates against its documented JSON Schema (a real validator).
    let validator = venv_python().parent().unwrap().join("check-jsonschema");
    let schema = repo_root().join("docs/manifest.schema.json");
    let check = Command::new(validator)
        .arg("--schemafile")
        .arg(schema)
        .arg(version_dir.join("manifest.json"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // Boot the captured image and read back what the provisioners wrote.
    let check = env.write_template(
        "check.json",
        &format!(
            r#"{{
  "name": "e2e-check", "version": "1.0.0",
  "source": {{ "type": "cloud-image", "url": "{}", "checksum": "file:{}/SHA256SUMS" }},
  "builder": {{ "type": "qemu", "accelerator": "tcg", "memory": "512M", "shutdown_command": "poweroff" }},
  "provisioners": [
    {{ "type": "shell", "inline": ["grep -q 'Welcome to fixture-web' /etc/motd", "test -f /srv/site/index.html", "test -f /srv/site/conf.d/site.conf"] }},
    {{ "type": "file", "direction": "download", "source": "/etc/imgbuild/greeting", "destination": "greeting.txt" }},
    {{ "type": "file", "direction": "download", "source": "/etc/imgbuild/tricky", "destination": "tricky.txt" }}
  ]
}}"#,
            image.display(),
            version_dir.display()
        ),
    );
    let mut c = imgbuild(env.path());
    c.arg("build").arg(&check).arg("--no-progress").arg("--store").arg(env.store());
    let out = run(c);
    assert_eq!(out.code, 0, "check build failed:\n{}", out.stderr);
    let greeting = std::fs::read_to_string(env.path().join("greeting.txt")).unwrap();
    assert_eq!(greeting, "it's \"quoted\" & $HOME; $(echo not-run)\n");
    assert_eq!(std::fs::read_to_string(env.path().join("tricky.txt")).unwrap(), "a;b|c`d`\n");
    env.assert_clean();
}

#[test]
fn failing_provisioner_exits_1_names_it_and_cleans_up() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let t = env.write_template(
        "t.json",
        &template(
            r#"[ { "type": "shell", "inline": ["echo first line", "echo about to fail >&2", "exit 1"] } ]"#,
            "",
            true,
        ),
    );
    let out = run(env.build_cmd(&t, &[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("provisioners[0] (shell) failed"), "{}", out.stderr);
    assert!(out.stderr.contains("exit status 1"), "{}", out.stderr);
    assert!(out.stderr.contains("about to fail"), "last output lines missing:\n{}", out.stderr);
    assert!(published_versions(&env.store(), "e2e").is_empty());
    env.assert_clean();
}

#[test]
fn wrong_password_times_out_with_console_tail() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    // Without the seed there is no key and root's password is locked, so no login can work.
    let t = env.write_template(
        "t.json",
        &template(
            r#"[ { "type": "shell", "inline": ["true"] } ]"#,
            r#", "password": "wrong-password", "timeout": "25s""#,
            false,
        ),
    );
    let started = Instant::now();
    let out = run(env.build_cmd(&t, &[]));
    let elapsed = started.elapsed();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("timed out after"), "{}", out.stderr);
    assert!(out.stderr.contains("serial console"), "{}", out.stderr);
    assert!(!out.stderr.contains("wrong-password"), "password leaked:\n{}", out.stderr);
    // A bound against hanging, not a performance assertion.
    assert!(elapsed < Duration::from_secs(25 + 60), "took {elapsed:?}");
    env.assert_clean();
}

/// A build whose host-side step marks that the VM is up, then a guest step that sleeps.
fn sleeping_build(env: &Env, marker: &Path) -> PathBuf {
    let provisioners = format!(
        r#"[ {{ "type": "shell-local", "inline": ["touch {}"] }}, {{ "type": "shell", "inline": ["sleep 600"] }} ]"#,
        marker.display()
    );
    env.write_template("t.json", &template(&provisioners, "", true))
}

fn spawn_build(env: &Env, template: &Path, extra: &[&str]) -> std::process::Child {
    env.spawn(template, extra)
}

fn wait_for_marker(env: &Env, marker: &Path) {
    assert!(wait_until(Duration::from_secs(120), || marker.exists()), "provisioner never started");
    let _ = env;
}

#[test]
fn qemu_killed_mid_provision_fails_fast() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let marker = env.path().join("started");
    let t = sleeping_build(&env, &marker);
    let child = spawn_build(&env, &t, &[]);
    wait_for_marker(&env, &marker);
    std::thread::sleep(Duration::from_secs(2));
    let needle = env.path().to_string_lossy().into_owned();
    let pids = qemu_processes_mentioning(&needle);
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed_at = Instant::now();
    Command::new("kill").arg("-9").arg(pids[0].to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("QEMU exited"), "{stderr}");
    assert!(killed_at.elapsed() < Duration::from_secs(60), "noticed only after {:?}", killed_at.elapsed());
    env.assert_clean();
}

#[test]
fn sigint_during_provisioning_exits_130_and_cleans_up() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let marker = env.path().join("started");
    let t = sleeping_build(&env, &marker);
    let child = spawn_build(&env, &t, &[]);
    wait_for_marker(&env, &marker);
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    env.assert_clean();
}

#[test]
fn on_error_abort_keeps_the_vm_and_says_how_to_reach_it() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let t = env.write_template("t.json", &template(r#"[ { "type": "shell", "inline": ["exit 3"] } ]"#, "", true));
    let out = run(env.build_cmd(&t, &["--on-error", "abort"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("ssh -i "), "{}", out.stderr);
    let needle = env.path().to_string_lossy().into_owned();
    let pids = qemu_processes_mentioning(&needle);
    assert_eq!(pids.len(), 1, "the VM should be kept: {}", out.stderr);
    // The printed command really reaches the kept VM.
    let line = out.stderr.lines().find(|l| l.contains("ssh -i ")).unwrap();
    let ssh = &line[line.find("ssh -i ").unwrap()..line.find("  (QMP").unwrap()];
    let mut args: Vec<&str> = ssh.split_whitespace().collect();
    args.extend(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "echo", "kept-vm-answers"]);
    let reach = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(String::from_utf8_lossy(&reach.stdout).contains("kept-vm-answers"), "{:?}", reach);
    for pid in pids {
        Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    }
    for dir in leftover_work_dirs(env.path()) {
        std::fs::remove_dir_all(env.path().join("work").join(dir)).unwrap();
    }
    env.assert_clean();
}

#[test]
fn two_builds_of_one_template_run_in_parallel() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let text = template(
        r#"[ { "type": "shell", "inline": ["hostname", "ls /dev/vda /dev/sda 2>/dev/null || true"] } ]"#,
        "",
        true,
    );
    let t = env.write_template("t.json", &text);
    // The second build also covers another disk bus: virtio-scsi (the guest sees /dev/sda).
    let scsi = text.replace(r#""type": "qemu","#, r#""type": "qemu", "disk_interface": "virtio-scsi","#);
    let t_scsi = env.write_template("t-scsi.json", &scsi);
    let a = spawn_build(&env, &t, &["--set-version", "1.0.0"]);
    let b = spawn_build(&env, &t_scsi, &["--set-version", "1.0.1"]);
    for (child, disk) in [(a, "/dev/vda"), (b, "/dev/sda")] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains(&format!("provisioners[0]: {disk}")), "expected the root disk {disk}:\n{stderr}");
    }
    let mut versions = published_versions(&env.store(), "e2e");
    versions.sort();
    assert_eq!(versions, ["1.0.0", "1.0.1"]);
    env.assert_clean();
}

/// `accelerator: kvm` is an error exactly where KVM cannot run guests (as on
/// the TCG-only CI machine): a clear one, in preflight. Where KVM works the
/// same build must succeed on it, so the test means something on both hosts.
#[test]
fn explicit_kvm_is_used_where_it_works_and_a_clear_error_elsewhere() {
    let env = Env::with_fixture_var();
    let t = template(r#"[ { "type": "shell", "inline": ["true"] } ]"#, "", true)
        .replace(r#""accelerator": "tcg""#, r#""accelerator": "kvm""#);
    let t = env.write_template("t.json", &t);
    let out = run(env.build_cmd(&t, &[]));
    if imgbuild::builder::qemu::accel::kvm_problem().is_none() {
        assert_eq!(out.code, 0, "KVM works here, so `kvm` must build:\n{}", out.stderr);
    } else {
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("accelerator `kvm` was requested but KVM cannot run guests here"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("[2/"),
            "fails in preflight, before anything is fetched or booted:\n{}",
            out.stderr
        );
    }
    env.assert_clean();
}

#[test]
fn missing_qemu_binary_names_the_packages() {
    let env = Env::with_fixture_var();
    let t = template(r#"[ { "type": "shell", "inline": ["true"] } ]"#, "", true)
        .replace(r#""type": "qemu","#, r#""type": "qemu", "qemu_binary": "qemu-system-imgbuild-missing","#);
    let t = env.write_template("t.json", &t);
    let out = run(env.build_cmd(&t, &[]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("apt-get install -y qemu-system-x86 qemu-utils"), "{}", out.stderr);
    env.assert_clean();
}

#[test]
fn verify_on_build_vm_checks_before_shutdown() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let t = template(r#"[ { "type": "shell", "inline": ["echo built-vm > /etc/built"] } ]"#, "", true).replace(
        r#""provisioners":"#,
        r#""verify": [ { "file": "/etc/built", "contains": "built-vm" }, { "boot_time_max": "3m" } ],
  "export": { "verify_on": "build-vm" },
  "provisioners":"#,
    );
    let t = env.write_template("t.json", &t);
    let out = run(env.build_cmd(&t, &["--set-version", "1.0.0"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("verify (build VM)"), "{}", out.stderr);
    assert!(!out.stderr.contains("verify (fresh boot)"), "{}", out.stderr);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store().join("e2e/1.0.0/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["verify"].as_array().unwrap().len(), 2);
    env.assert_clean();
}

#[test]
fn an_already_published_version_is_refused_before_the_build_starts() {
    let env = Env::with_fixture_var();
    let store = imgbuild::store::LocalStore::open(&env.store()).unwrap();
    let staging = store.begin("e2e", "3.0.0").unwrap();
    std::fs::write(staging.dir.join("x"), b"x").unwrap();
    let sums =
        imgbuild::store::format_sums([("x", "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")]);
    staging
        .commit(
            &serde_json::json!({"name": "e2e", "version": "3.0.0"}),
            &[(imgbuild::source::DigestAlgo::Sha256, sums)],
        )
        .unwrap();
    let t = env.write_template("t.json", &template(r#"[ { "type": "shell", "inline": ["true"] } ]"#, "", true));
    let out = run(env.build_cmd(&t, &["--set-version", "3.0.0"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("e2e@3.0.0 is already published"), "{}", out.stderr);
    assert!(!out.stderr.contains("launch VM"), "nothing may start: {}", out.stderr);
    env.assert_clean();
}

#[test]
fn if_changed_skips_an_unchanged_rebuild_and_metrics_are_written() {
    let _vm = vm_lock();
    let env = Env::with_fixture_var();
    let script = env.path().join("step.sh");
    std::fs::write(&script, "echo step one > /etc/step\n").unwrap();
    let t = env.write_template(
        "t.json",
        &template(&format!(r#"[ {{ "type": "shell", "script": "{}" }} ]"#, script.display()), "", true),
    );
    let metrics = env.path().join("imgbuild.prom");
    let metrics_arg = metrics.to_str().unwrap();
    let out = run(env.build_cmd(&t, &["--set-version", "1.0.0", "--metrics-file", metrics_arg]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("imgbuild_build_success{name=\"e2e\"} 1"), "{text}");
    assert!(text.contains("imgbuild_step_duration_seconds{name=\"e2e\",step=\"wait for SSH\"}"), "{text}");

    // Same inputs: nothing to do, no VM started.
    let out = run(env.build_cmd(&t, &["--set-version", "1.0.1", "--if-changed", "--metrics-file", metrics_arg]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("e2e@1.0.0 is up to date"), "{}", out.stderr);
    assert!(!out.stderr.contains("launch VM"), "{}", out.stderr);
    assert!(std::fs::read_to_string(&metrics).unwrap().contains("imgbuild_build_up_to_date{name=\"e2e\"} 1"));

    // One changed byte in a referenced script changes the digest the manifest recorded.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store().join("e2e/1.0.0/manifest.json")).unwrap()).unwrap();
    std::fs::write(&script, "echo step 0ne > /etc/step\n").unwrap();
    let mut c = imgbuild(env.path());
    c.args(["--output", "json", "inspect", "--digest"])
        .arg(&t)
        .arg("--var")
        .arg(format!("fixture_dir={}", fixture_dir().display()));
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let now: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_ne!(now["digest"], manifest["input_digest"], "a changed script must change the input digest");
    env.assert_clean();
}
