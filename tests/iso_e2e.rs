//! Installer builds on real QEMU guests from the installer ISO fixture
//! (built from Debian packages): boot_command typed over QMP, the answer
//! file served over HTTP, install to disk, then provision/verify/publish.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// An ISO template; `answers` is the answer file served at /answers.cfg.
fn iso_template(dir: &Path, name: &str, answers: &str, communicator: &str, extra: &str) -> PathBuf {
    let template = serde_json::json!({
        "name": name,
        "version": "1.0.0",
        "source": {
            "type": "iso",
            "url": format!("{}/installer.iso", installer_dir().display()),
            "checksum": format!("file:{}/SHA256SUMS", installer_dir().display()),
        },
        "builder": {
            // The fixture's Debian cloud kernel has no AHCI driver: on `pc` the CD-ROM is IDE.
            "type": "qemu", "accelerator": "tcg", "memory": "512M", "disk_size": "1G", "machine": "pc",
            "boot_wait": "2s",
            "boot_command": ["install url={{ http.url }}/answers.cfg<enter>"],
            "http_content": { "answers.cfg": answers },
            "communicator": communicator,
            "ssh": { "username": "root", "timeout": "4m" },
            "shutdown_command": "poweroff",
            "shutdown_timeout": "4m",
        },
    });
    let mut template = template;
    let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        template[k] = v.clone();
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    path
}

fn build(dir: &Path, template: &Path) -> std::process::Command {
    let mut c = imgbuild(dir);
    c.arg("build").arg(template).arg("--no-progress").arg("--store").arg(dir.join("store"));
    c
}

fn clean(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    assert!(wait_until(Duration::from_secs(10), || qemu_processes_mentioning(&needle).is_empty()));
    assert!(leftover_work_dirs(dir).is_empty(), "{:?}", leftover_work_dirs(dir));
}

/// The installer reboots by itself with the CD still attached, and the
/// fixture's boot prompt waits forever: the build reaches SSH only if the
/// reboot starts from the disk (the CD boots once).
#[test]
fn iso_install_reboots_into_the_disk_then_provision_verify_and_publish() {
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let answers = "hostname=installed\nuser=root\nssh_key={{ build.ssh_public_key }}\nreboot=yes\n";
    let t = iso_template(
        dir.path(),
        "iso-web",
        answers,
        "ssh",
        r#"{
          "provisioners": [ { "type": "shell", "inline": ["hostname", "echo provisioned > /etc/provisioned"] } ],
          "verify": [
            { "file": "/etc/provisioned", "contains": "provisioned" },
            { "command": "hostname", "stdout_matches": "^installed$" },
            { "file": "/etc/imgbuild-installer", "contains": "hostname=installed" }
          ]
        }"#,
    );
    let out = run(build(dir.path(), &t));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("provisioners[0]: installed"), "{}", out.stderr);
    assert!(dir.path().join("store/iso-web/1.0.0/iso-web-1.0.0.qcow2").exists());
    clean(dir.path());
}

/// Busy loops on every core while it lives, so the guest and imgbuild's
/// typing get the CPU late and unevenly (what a loaded CI runner does).
/// Killed and reaped on drop; each loop also dies with the test process.
struct CpuHog(Vec<std::process::Child>);

impl CpuHog {
    fn on_every_core() -> CpuHog {
        use std::os::unix::process::CommandExt;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let loops = (0..cores)
            .map(|_| {
                let mut cmd = std::process::Command::new("sh");
                cmd.args(["-c", "while :; do :; done"]);
                // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                cmd.spawn().expect("start a CPU hog")
            })
            .collect();
        CpuHog(loops)
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What isolinux puts before the typed arguments on the kernel command line
/// (`BOOT_IMAGE=`, the `install` label's APPEND line, its `initrd=`); the label
/// name itself is consumed. Seen as is in /proc/cmdline: the kernel keeps the
/// raw line there, quotes included, and adds a newline.
const ISOLINUX_INSTALL_PREFIX: &str = "BOOT_IMAGE=/isolinux/vmlinuz console=tty0 console=ttyS0,115200 \
     imgbuild.mode=install initrd=/isolinux/initrd.img ";

/// Every printable US-ASCII character, 0x20..=0x7e.
fn printable_ascii() -> String {
    (0x20u8..=0x7e).map(char::from).collect()
}

/// `text` in boot_command syntax: `<` and `>` as `<lt>` and `<gt>`.
fn boot_command_literal(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "<lt>".to_string(),
            '>' => "<gt>".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The bytes the provisioner dumped with `od -An -tx1 -v | sed 's/^/cmdline-hex:/'`.
fn dumped_bytes(log: &str) -> Vec<u8> {
    log.lines()
        .filter_map(|l| l.split_once("cmdline-hex:").map(|(_, hex)| hex))
        .flat_map(|hex| {
            hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect::<Vec<_>>()
        })
        .collect()
}

/// One build whose boot_command types all printable ASCII at the installer's
/// boot prompt; the installed system's /etc/imgbuild-cmdline (the installer
/// kernel's /proc/cmdline) must hold exactly what was typed.
fn build_typing_every_printable_character(dir: &Path, run_index: usize) {
    let typed_arg = format!("typed={}", printable_ascii());
    let boot_command =
        format!("install url={{{{ http.url }}}}/answers.cfg {}<enter>", boot_command_literal(&typed_arg));
    let answers = "hostname=typed\nuser=root\nssh_key={{ build.ssh_public_key }}\nreboot=yes\n";
    let extra = serde_json::json!({
        "provisioners": [ { "type": "shell", "inline": ["od -An -tx1 -v /etc/imgbuild-cmdline | sed 's/^/cmdline-hex:/'"] } ],
        // The build itself fails on a garbled line, not just this test.
        "verify": [ { "file": "/etc/imgbuild-cmdline", "contains": format!(" {typed_arg}\n") } ],
        // In the build VM: the installed system's file is what is checked, and a second
        // (fresh-boot) VM would only double the time under the CPU hog.
        "export": { "verify_on": "build-vm" },
    });
    let name = format!("iso-typing-{run_index}");
    let t = iso_template(dir, &name, answers, "ssh", &extra.to_string());
    let mut template: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    template["builder"]["boot_command"] = serde_json::json!([boot_command]);
    std::fs::write(&t, template.to_string()).unwrap();

    let out = run(build(dir, &t));
    assert_eq!(out.code, 0, "run {run_index}: {}", out.stderr);
    let port = out
        .stderr
        .split_once("serving answer files at http://10.0.2.2:")
        .and_then(|(_, rest)| rest.split(' ').next())
        .expect("the HTTP server's port in the build log");
    let expected = format!("{ISOLINUX_INSTALL_PREFIX}url=http://10.0.2.2:{port}/answers.cfg {typed_arg}\n");
    let got = dumped_bytes(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&got), expected, "run {run_index}: /proc/cmdline differs from what was typed");
    assert_eq!(got, expected.as_bytes());
}

/// boot_command keys arrive exactly, in order and with the right shift
/// state, while every core is busy: `IMGBUILD_TYPING_RUNS` builds in a row
/// (default 3; scripts/bench-boot-typing.sh runs it 20 times).
#[test]
fn boot_command_types_every_printable_character_under_cpu_load() {
    let _vm = vm_lock();
    let runs: usize = std::env::var("IMGBUILD_TYPING_RUNS").map_or(3, |n| n.parse().expect("IMGBUILD_TYPING_RUNS"));
    let _hog = CpuHog::on_every_core();
    for run_index in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        build_typing_every_printable_character(dir.path(), run_index);
        clean(dir.path());
    }
}

#[test]
fn iso_install_without_communicator_publishes_after_power_off() {
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let t = iso_template(dir.path(), "iso-none", "hostname=quiet\npoweroff=yes\n", "none", "{}");
    let out = run(build(dir.path(), &t));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("the guest powered itself off"), "{}", out.stderr);
    assert!(!out.stderr.contains("wait for SSH"), "{}", out.stderr);
    let image = dir.path().join("store/iso-none/1.0.0/iso-none-1.0.0.qcow2");
    let info = std::process::Command::new("qemu-img").args(["info", "--output=json"]).arg(&image).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info["actual-size"].as_u64().unwrap() > 10 << 20, "the installed system is on the disk: {info}");
    clean(dir.path());
}

#[test]
fn two_iso_builds_run_in_parallel() {
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let a = iso_template(dir.path(), "iso-a", "poweroff=yes\n", "none", "{}");
    let b = iso_template(dir.path(), "iso-b", "poweroff=yes\n", "none", "{}");
    let children: Vec<_> = [a, b]
        .iter()
        .map(|t| {
            let mut c = build(dir.path(), t);
            c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    clean(dir.path());
}

/// Every printable US-ASCII character typed through QMP arrives byte-exact.
#[test]
fn typing_round_trip_of_every_printable_character() {
    let _vm = vm_lock();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(type_and_read_back());
}

async fn type_and_read_back() {
    use imgbuild::builder::qemu::{iso, keys, qmp::Qmp, vm::Vm, vm::VmConfig};
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("blank.qcow2");
    assert!(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .unwrap()
            .success()
    );
    let cfg = VmConfig {
        cdrom: Some(installer_dir().join("installer.iso")),
        vga: true,
        ..test_vm(dir.path(), disk, "typing")
    };
    let vm = Vm::launch(&cfg).await.unwrap();
    let console = vm.console_path.clone();
    let seen = |marker: &str| std::fs::read_to_string(&console).unwrap_or_default().contains(marker);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut qmp = Qmp::connect(&vm.qmp_path).await.unwrap();
    iso::type_actions(&mut qmp, &keys::parse("shell<enter>").unwrap(), Duration::from_millis(20)).await.unwrap();
    assert!(wait_until(Duration::from_secs(90), || seen("IMGBUILD-SHELL-READY")), "{}", vm.console_tail(30));

    let printable: String = (0x20u8..=0x7e).map(char::from).collect();
    // `<` starts a key name in boot_command syntax; type the text key by key instead.
    let actions: Vec<keys::Action> = printable
        .chars()
        .map(|c| {
            let (key, shift) = keys::char_key(c).unwrap();
            keys::Action::Press(if shift { vec!["shift", key] } else { vec![key] })
        })
        .chain([keys::Action::Press(vec!["ret"])])
        .collect();
    iso::type_actions(&mut qmp, &actions, Duration::from_millis(20)).await.unwrap();
    let expected = format!("IMGBUILD-LINE:{printable}");
    assert!(wait_until(Duration::from_secs(60), || seen("IMGBUILD-LINE:")), "{}", vm.console_tail(30));
    let text = std::fs::read_to_string(&console).unwrap();
    let line = text.lines().find(|l| l.starts_with("IMGBUILD-LINE:")).unwrap().trim_end_matches('\r');
    assert_eq!(line, expected);

    // The same through the boot_command parser, which treats `<` specially only for known names.
    let via_parser = "A<b>c<wait1>d";
    iso::type_actions(&mut qmp, &keys::parse(&format!("{via_parser}<enter>")).unwrap(), Duration::from_millis(20))
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || std::fs::read_to_string(&console)
            .unwrap_or_default()
            .contains("IMGBUILD-LINE:A<b>cd")),
        "{}",
        vm.console_tail(10)
    );
    vm.kill();
}
