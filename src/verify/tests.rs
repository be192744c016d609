//! Unit tests: a fake guest that maps exact commands to canned output.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::checks::{CONTENT_MARKER, file_command, package_command, port_command, service_command, user_command};
use super::report::{escape, junit_xml_at};
use super::*;
use crate::communicator::shell_quote;
use crate::template::units::Dur;
use crate::template::{Check, CheckKind, FileMode};

// ---------------------------------------------------------------- fake guest

#[derive(Default)]
struct FakeGuest {
    replies: HashMap<String, Result<CommandOutput, String>>,
    calls: Mutex<Vec<String>>,
}

impl FakeGuest {
    fn new() -> Self {
        Self::default()
    }

    fn on(mut self, command: impl Into<String>, reply: CommandOutput) -> Self {
        self.replies.insert(command.into(), Ok(reply));
        self
    }

    fn on_error(mut self, command: impl Into<String>, error: &str) -> Self {
        self.replies.insert(command.into(), Err(error.to_owned()));
        self
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl GuestExec for FakeGuest {
    async fn run(&self, command: &str) -> Result<CommandOutput, VerifyError> {
        self.calls.lock().unwrap().push(command.to_owned());
        match self.replies.get(command) {
            Some(Ok(out)) => Ok(out.clone()),
            Some(Err(e)) => Err(VerifyError::Guest(e.clone())),
            None => Err(VerifyError::Guest(format!("fake guest: unexpected command {command:?}"))),
        }
    }
}

fn ok(stdout: &str) -> CommandOutput {
    CommandOutput { exit_code: Some(0), stdout: stdout.to_owned(), stderr: String::new() }
}

fn check(kind: CheckKind) -> Check {
    Check { name: None, kind }
}

async fn run1(guest: &FakeGuest, kind: CheckKind) -> CheckResult {
    let mut results = run_checks(guest, &[check(kind)], None).await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

/// The JUnit failure message of a single failed result.
fn failure_message(r: &CheckResult) -> String {
    let xml = junit_xml_at("t", std::slice::from_ref(r), "2024-01-01T00:00:00");
    let start = xml.find("<failure message=\"").expect("a failure element") + 18;
    let end = start + xml[start..].find('"').unwrap();
    xml[start..end].to_owned()
}

fn service(name: &str, enabled: Option<bool>, running: Option<bool>) -> CheckKind {
    CheckKind::Service { service: name.into(), enabled, running }
}

// ---------------------------------------------------------------- service

const BUSYBOX_SSHD: &str = "init=other
pidof=sshd 212
===comm
init
syslogd
sshd
sh
===inittab
# busybox init(8) configuration
::sysinit:/etc/init.d/rcS
::respawn:/etc/init.d/sshd
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
";

#[tokio::test]
async fn service_busybox_running_and_enabled() {
    let guest = FakeGuest::new().on(service_command("ssh").unwrap(), ok(BUSYBOX_SSHD));
    let r = run1(&guest, service("ssh", Some(true), Some(true))).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.kind, "service");
    assert_eq!(r.name, "service ssh running and enabled");
    assert_eq!(r.expected, "running=true, enabled=true");
    assert_eq!(
        r.actual,
        "running=true (process sshd, pid 212), enabled=true (/etc/inittab: ::respawn:/etc/init.d/sshd)"
    );
}

#[tokio::test]
async fn service_defaults_to_running() {
    let guest = FakeGuest::new().on(service_command("ssh").unwrap(), ok(BUSYBOX_SSHD));
    let r = run1(&guest, service("ssh", None, None)).await;
    assert!(r.passed);
    assert_eq!(r.name, "service ssh running");
    assert_eq!(r.expected, "running=true");
}

#[tokio::test]
async fn service_busybox_not_running_fails_with_expected_and_actual() {
    let stdout = "init=other\n===comm\ninit\nsh\n===inittab\n::respawn:/etc/init.d/sshd\n";
    let guest = FakeGuest::new().on(service_command("nginx").unwrap(), ok(stdout));
    let r = run1(&guest, service("nginx", Some(true), Some(true))).await;
    assert!(!r.passed);
    assert_eq!(
        r.actual,
        "running=false (no process named nginx or nginxd), enabled=false (no init script or inittab entry for nginx or nginxd)"
    );
    assert_eq!(
        failure_message(&r),
        "expected running=true, enabled=true; actual running=false (no process named nginx or nginxd), enabled=false (no init script or inittab entry for nginx or nginxd)"
    );
}

#[tokio::test]
async fn service_busybox_comm_fallback_and_init_script() {
    // No pidof output (applet missing): the /proc/*/comm scan finds it.
    let stdout = "init=other\ninitscript=/etc/init.d/S50crond\n===comm\ninit\ncrond\n===inittab\n";
    let guest = FakeGuest::new().on(service_command("cron").unwrap(), ok(stdout));
    let r = run1(&guest, service("cron", Some(true), Some(true))).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.actual, "running=true (process crond), enabled=true (/etc/init.d/S50crond)");
}

#[tokio::test]
async fn service_long_names_match_truncated_comm() {
    let stdout = "init=other\n===comm\nunattended-upgr\n===inittab\n";
    let guest = FakeGuest::new().on(service_command("unattended-upgrades").unwrap(), ok(stdout));
    let r = run1(&guest, service("unattended-upgrades", None, Some(true))).await;
    assert!(r.passed, "{r:?}");
}

#[tokio::test]
async fn service_inittab_comments_and_off_entries_do_not_count() {
    let stdout = "init=other\n===comm\n===inittab\n# ::respawn:/usr/sbin/sshd\nss:2345:off:/usr/sbin/sshd -D\n::respawn:/usr/sbin/sshdx\n";
    let guest = FakeGuest::new().on(service_command("ssh").unwrap(), ok(stdout));
    let r = run1(&guest, service("ssh", Some(true), None)).await;
    assert!(!r.passed, "{r:?}");
    // And a disabled expectation passes on the same guest.
    let r = run1(&guest, service("ssh", Some(false), Some(false))).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "service ssh not running and disabled");
}

#[tokio::test]
async fn service_systemd() {
    let stdout = "init=systemd\nis-enabled=disabled\nis-active=active\n";
    let guest = FakeGuest::new().on(service_command("ssh").unwrap(), ok(stdout));
    let r = run1(&guest, service("ssh", Some(true), Some(true))).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "running=true (systemd: active), enabled=false (systemd: disabled)");
    let r = run1(&guest, service("ssh", Some(false), Some(true))).await;
    assert!(r.passed, "{r:?}");

    let stdout = "init=systemd\nis-enabled=\nis-active=inactive\n";
    let guest = FakeGuest::new().on(service_command("nope").unwrap(), ok(stdout));
    let r = run1(&guest, service("nope", Some(true), Some(true))).await;
    assert_eq!(r.actual, "running=false (systemd: inactive), enabled=false (systemd: no such unit)");
}

#[tokio::test]
async fn service_probe_without_markers_is_an_error() {
    let reply = CommandOutput { exit_code: Some(127), stdout: String::new(), stderr: "sh: not found\n".into() };
    let guest = FakeGuest::new().on(service_command("ssh").unwrap(), reply);
    let r = run1(&guest, service("ssh", None, Some(true))).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "error: the service probe failed (exit status 127): sh: not found");
    assert_eq!(r.expected, "running=true");
}

// ---------------------------------------------------------------- port

const PROC_TCP: &str = "===/proc/net/tcp
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0F02000A:0016 0202000A:C350 01 00000000:00000000 02:000A7E2B 00000000     0        0 2 4 0 20 4 30 10 -1
   2: 0F02000A:1F90 0202000A:C351 01 00000000:00000000 02:000A7E2B 00000000     0        0 3 4 0 20 4 30 10 -1
===/proc/net/tcp6
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:0277 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";

fn port(port: u16, listening: bool, protocol: &str) -> CheckKind {
    CheckKind::Port { port, listening, protocol: protocol.into() }
}

#[tokio::test]
async fn port_listening_passes() {
    let guest = FakeGuest::new().on(port_command(false), ok(PROC_TCP));
    let r = run1(&guest, port(22, true, "tcp")).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "port 22/tcp listening");
    assert_eq!(r.expected, "listening=true");
    assert_eq!(r.actual, "listening=true (0.0.0.0:22, [::]:22)");
}

#[tokio::test]
async fn port_not_listening_fails_and_lists_listeners() {
    let guest = FakeGuest::new().on(port_command(false), ok(PROC_TCP));
    // 8080 (0x1F90) only appears as an established connection.
    let r = run1(&guest, port(8080, true, "tcp")).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "listening=false (listening tcp ports: 22, 631)");
    assert_eq!(failure_message(&r), "expected listening=true; actual listening=false (listening tcp ports: 22, 631)");
    let r = run1(&guest, port(8080, false, "TCP")).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "port 8080/tcp not listening");
}

#[tokio::test]
async fn port_udp() {
    let udp = "===/proc/net/udp\n  sl  local_address rem_address   st\n  5: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 9 2 0 0\n";
    let guest = FakeGuest::new().on(port_command(true), ok(udp));
    assert!(run1(&guest, port(68, true, "udp")).await.passed);
    let r = run1(&guest, port(53, true, "udp")).await;
    assert_eq!(r.actual, "listening=false (listening udp ports: 68)");
}

#[tokio::test]
async fn port_errors() {
    let guest = FakeGuest::new().on(port_command(false), ok(""));
    let r = run1(&guest, port(22, true, "tcp")).await;
    assert!(!r.passed);
    assert!(r.actual.starts_with("error: cannot read /proc/net/tcp"), "{}", r.actual);
    let r = run1(&guest, port(22, true, "sctp")).await;
    assert_eq!(r.actual, "error: unsupported protocol \"sctp\" (use \"tcp\" or \"udp\")");
    assert_eq!(guest.calls().len(), 1, "sctp never ran a command");
}

// ---------------------------------------------------------------- file

fn file(path: &str) -> CheckKind {
    CheckKind::File {
        file: path.into(),
        exists: true,
        mode: None,
        owner: None,
        contains: None,
        matches: None,
        sha256: None,
    }
}

const HELLO_SHA: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn motd_check() -> CheckKind {
    CheckKind::File {
        file: "/etc/motd".into(),
        exists: true,
        mode: Some(FileMode(0o644)),
        owner: Some("root".into()),
        contains: Some("hello".into()),
        matches: Some(r"^hel+o$".into()),
        sha256: Some(format!("sha256:{}", HELLO_SHA.to_uppercase())),
    }
}

fn motd_output(stat: &str, sha: &str, content: &str) -> CommandOutput {
    ok(&format!(
        "exists=yes\nstat={stat}\nregular=yes\nsha256={sha}\nsize={}\n{CONTENT_MARKER}\n{content}",
        content.len()
    ))
}

#[tokio::test]
async fn file_all_properties_pass() {
    let guest = FakeGuest::new()
        .on(file_command("/etc/motd", true, true), motd_output("644 0 root regular file", HELLO_SHA, "hello\n"));
    let r = run1(&guest, motd_check()).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "file /etc/motd");
    assert_eq!(
        r.expected,
        format!("exists=true, mode=0644, owner=root, contains=\"hello\", matches=/^hel+o$/, sha256={HELLO_SHA}")
    );
    assert_eq!(
        r.actual,
        format!("exists=true, mode=0644, owner=root, contains=true, matches=true (\"hello\"), sha256={HELLO_SHA}")
    );
}

#[tokio::test]
async fn file_every_property_can_fail() {
    let guest = FakeGuest::new().on(
        file_command("/etc/motd", true, true),
        motd_output("4755 1000 alice regular file", "00ff", "goodbye\nworld\n"),
    );
    let r = run1(&guest, motd_check()).await;
    assert!(!r.passed);
    assert_eq!(
        r.actual,
        "exists=true, mode=4755, owner=alice, contains=false (content: \"goodbye\\nworld\"), matches=false (content: \"goodbye\\nworld\"), sha256=00ff"
    );
    let msg = failure_message(&r);
    assert!(msg.starts_with("expected exists=true, mode=0644, owner=root"), "{msg}");
    assert!(msg.contains("; actual exists=true, mode=4755, owner=alice"), "{msg}");
}

#[tokio::test]
async fn file_owner_by_uid_and_unknown_user() {
    let mut kind = file("/data");
    if let CheckKind::File { owner, .. } = &mut kind {
        *owner = Some("1234".into());
    }
    let guest =
        FakeGuest::new().on(file_command("/data", false, false), ok("exists=yes\nstat=755 1234 UNKNOWN directory\n"));
    let r = run1(&guest, kind).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.actual, "exists=true, owner=1234");
}

#[tokio::test]
async fn file_missing() {
    let guest = FakeGuest::new().on(file_command("/etc/motd", true, true), ok("exists=no\n"));
    let r = run1(&guest, motd_check()).await;
    assert!(!r.passed);
    assert_eq!(
        r.actual,
        "exists=false, mode=n/a (no such file), owner=n/a (no such file), contains=n/a (no such file), matches=n/a (no such file), sha256=n/a (no such file)"
    );

    let mut absent = motd_check();
    if let CheckKind::File { exists, .. } = &mut absent {
        *exists = false;
    }
    let guest = FakeGuest::new().on(file_command("/etc/motd", false, false), ok("exists=no\n"));
    let r = run1(&guest, absent.clone()).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "file /etc/motd absent");
    assert_eq!(r.expected, "exists=false");

    let guest = FakeGuest::new()
        .on(file_command("/etc/motd", false, false), ok("exists=yes\nstat=644 0 root regular file\nregular=yes\n"));
    let r = run1(&guest, absent).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "exists=true");
}

#[tokio::test]
async fn file_directory_has_no_content() {
    let mut kind = file("/etc");
    if let CheckKind::File { contains, .. } = &mut kind {
        *contains = Some("x".into());
    }
    let guest = FakeGuest::new().on(file_command("/etc", false, true), ok("exists=yes\nstat=755 0 root directory\n"));
    let r = run1(&guest, kind).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "exists=true, contains=n/a (not a regular file)");
}

#[tokio::test]
async fn file_empty_and_large_content() {
    let mut kind = file("/e");
    if let CheckKind::File { matches, .. } = &mut kind {
        *matches = Some("^$".into());
    }
    let guest = FakeGuest::new().on(
        file_command("/e", false, true),
        ok(&format!("exists=yes\nstat=644 0 root regular empty file\nregular=yes\nsize=0\n{CONTENT_MARKER}\n")),
    );
    let r = run1(&guest, kind).await;
    assert!(r.passed, "{r:?}");

    let mut kind = file("/big");
    if let CheckKind::File { contains, .. } = &mut kind {
        *contains = Some("needle".into());
    }
    let guest = FakeGuest::new().on(
        file_command("/big", false, true),
        ok(&format!(
            "exists=yes\nstat=644 0 root regular file\nregular=yes\nsize=5000000\n{CONTENT_MARKER}\nhay needle hay\n"
        )),
    );
    let r = run1(&guest, kind).await;
    assert!(r.passed);
    assert_eq!(r.actual, "exists=true, contains=true (searched the first 1 MiB of 5000000 bytes)");
}

#[tokio::test]
async fn file_content_may_contain_the_marker() {
    let mut kind = file("/m");
    if let CheckKind::File { contains, .. } = &mut kind {
        *contains = Some(format!("{CONTENT_MARKER}\nexists=no"));
    }
    let body = format!("a\n{CONTENT_MARKER}\nexists=no\n");
    let guest = FakeGuest::new().on(
        file_command("/m", false, true),
        ok(&format!("exists=yes\nstat=600 0 root regular file\nregular=yes\nsize=9\n{CONTENT_MARKER}\n{body}")),
    );
    let r = run1(&guest, kind).await;
    assert!(r.passed, "{r:?}");
}

#[tokio::test]
async fn file_invalid_regex_fails_without_running_anything() {
    let mut kind = file("/etc/motd");
    if let CheckKind::File { matches, .. } = &mut kind {
        *matches = Some("(unclosed".into());
    }
    let guest = FakeGuest::new();
    let r = run1(&guest, kind).await;
    assert!(!r.passed);
    assert!(r.actual.starts_with("error: invalid `matches` regular expression"), "{}", r.actual);
    assert!(guest.calls().is_empty());
}

// ---------------------------------------------------------------- package

fn package(name: &str, installed: bool) -> CheckKind {
    CheckKind::Package { package: name.into(), installed }
}

#[tokio::test]
async fn package_dpkg() {
    let guest = FakeGuest::new()
        .on(package_command("openssh-server").unwrap(), ok("manager=dpkg\nrc=0\nstatus=install ok installed\n"))
        .on(package_command("nginx").unwrap(), ok("manager=dpkg\nrc=1\nstatus=\n"))
        .on(package_command("vim").unwrap(), ok("manager=dpkg\nrc=0\nstatus=deinstall ok config-files\n"));
    let r = run1(&guest, package("openssh-server", true)).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "package openssh-server installed");
    assert_eq!(r.actual, "installed=true (dpkg: install ok installed)");

    let r = run1(&guest, package("nginx", true)).await;
    assert!(!r.passed);
    assert_eq!(failure_message(&r), "expected installed=true; actual installed=false (dpkg: not known to dpkg)");
    let r = run1(&guest, package("nginx", false)).await;
    assert!(r.passed);

    let r = run1(&guest, package("vim", true)).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "installed=false (dpkg: deinstall ok config-files)");
}

#[tokio::test]
async fn package_rpm_apk_and_none() {
    let guest = FakeGuest::new()
        .on(package_command("bash").unwrap(), ok("manager=rpm\nrc=0\nstatus=bash-5.1.8-9.el9.x86_64\n"))
        .on(package_command("zsh").unwrap(), ok("manager=rpm\nrc=1\nstatus=package zsh is not installed\n"))
        .on(package_command("curl").unwrap(), ok("manager=apk\nrc=0\nstatus=curl\n"))
        .on(package_command("jq").unwrap(), ok("manager=none\n"));
    let r = run1(&guest, package("bash", true)).await;
    assert_eq!(r.actual, "installed=true (rpm: bash-5.1.8-9.el9.x86_64)");
    assert!(r.passed);
    let r = run1(&guest, package("zsh", true)).await;
    assert_eq!(r.actual, "installed=false (rpm: package zsh is not installed)");
    assert!(!r.passed);
    let r = run1(&guest, package("curl", true)).await;
    assert_eq!(r.actual, "installed=true (apk: installed)");
    let r = run1(&guest, package("jq", false)).await;
    assert!(!r.passed, "unknown is never a pass");
    assert_eq!(r.actual, "error: no package manager in the guest (looked for dpkg-query, rpm and apk)");
}

// ---------------------------------------------------------------- command

fn command(cmd: &str, exit: Option<i32>, re: Option<&str>, stderr_empty: Option<bool>) -> CheckKind {
    CheckKind::Command { command: cmd.into(), exit_code: exit, stdout_matches: re.map(str::to_owned), stderr_empty }
}

#[tokio::test]
async fn command_passes() {
    let guest = FakeGuest::new().on("uname -s", ok("Linux\n"));
    let r = run1(&guest, command("uname -s", None, Some("^Linux$"), Some(true))).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "command `uname -s`");
    assert_eq!(r.expected, "exit_code=0, stdout_matches=/^Linux$/, stderr_empty=true");
    assert_eq!(r.actual, "exit_code=0, stdout_matches=true (\"Linux\"), stderr_empty=true");
    assert_eq!(guest.calls(), vec!["uname -s"], "run exactly as written");
}

#[tokio::test]
async fn command_fails() {
    let reply = CommandOutput {
        exit_code: Some(2),
        stdout: "nothing here\n".into(),
        stderr: "warning: x\nfatal: no such thing\n".into(),
    };
    let guest = FakeGuest::new().on("false-ish", reply);
    let r = run1(&guest, command("false-ish", None, Some("^ok"), Some(true))).await;
    assert!(!r.passed);
    assert_eq!(
        r.actual,
        "exit_code=2 (stderr: \"fatal: no such thing\"), stdout_matches=false (stdout: \"nothing here\"), stderr_empty=false (stderr: \"warning: x\\nfatal: no such thing\")"
    );
    assert!(
        failure_message(&r)
            .starts_with("expected exit_code=0, stdout_matches=/^ok/, stderr_empty=true; actual exit_code=2")
    );
    // A non-zero expected code passes.
    let r = run1(&guest, command("false-ish", Some(2), None, Some(false))).await;
    assert!(r.passed, "{r:?}");
}

#[tokio::test]
async fn command_without_exit_status() {
    let reply = CommandOutput { exit_code: None, ..CommandOutput::default() };
    let guest = FakeGuest::new().on("sleep 999", reply);
    let r = run1(&guest, command("sleep 999", None, None, None)).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "exit_code=none (no exit status)");
}

// ---------------------------------------------------------------- user

fn user(name: &str, exists: bool, groups: &[&str], shell: Option<&str>) -> CheckKind {
    CheckKind::User {
        user: name.into(),
        exists,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        shell: shell.map(str::to_owned),
    }
}

const USERS: &str = "===passwd
root:x:0:0:root:/root:/bin/sh
deploy:x:1000:1000:Deploy,,,:/home/deploy:/bin/bash
===groups
deploy sudo docker
===end
";

#[tokio::test]
async fn user_passes() {
    let guest = FakeGuest::new().on(user_command("deploy").unwrap(), ok(USERS));
    let r = run1(&guest, user("deploy", true, &["sudo", "deploy"], Some("/bin/bash"))).await;
    assert!(r.passed, "{r:?}");
    assert_eq!(r.name, "user deploy exists");
    assert_eq!(r.expected, "exists=true, groups=[sudo, deploy], shell=/bin/bash");
    assert_eq!(r.actual, "exists=true (uid 1000), groups=[deploy, sudo, docker], shell=/bin/bash");
}

#[tokio::test]
async fn user_fails() {
    let guest = FakeGuest::new().on(user_command("deploy").unwrap(), ok(USERS));
    let r = run1(&guest, user("deploy", true, &["wheel", "sudo"], Some("/bin/zsh"))).await;
    assert!(!r.passed);
    assert_eq!(
        failure_message(&r),
        "expected exists=true, groups=[wheel, sudo], shell=/bin/zsh; actual exists=true (uid 1000), groups=[deploy, sudo, docker] (missing: wheel), shell=/bin/bash"
    );

    // "dep" is only a prefix of an existing name: not a match.
    let out = "===passwd\ndeploy:x:1000:1000::/home/deploy:/bin/sh\n===groups\n===end\n";
    let guest = FakeGuest::new().on(user_command("dep").unwrap(), ok(out));
    let r = run1(&guest, user("dep", true, &["x"], Some("/bin/sh"))).await;
    assert_eq!(r.actual, "exists=false, groups=n/a (no such user), shell=n/a (no such user)");
    let r = run1(&guest, user("dep", false, &[], None)).await;
    assert!(r.passed);
    assert_eq!(r.name, "user dep absent");
}

// ---------------------------------------------------------------- boot time

#[tokio::test]
async fn boot_time() {
    let guest = FakeGuest::new();
    let kind = CheckKind::BootTimeMax { boot_time_max: Dur(Duration::from_secs(60)) };
    let run = |t| {
        let checks = [check(kind.clone())];
        let guest = &guest;
        async move { run_checks(guest, &checks, t).await.remove(0) }
    };
    let r = run(Some(Duration::from_millis(37_250))).await;
    assert!(r.passed);
    assert_eq!(r.name, "boot time <= 1m");
    assert_eq!(r.expected, "boot_time<=1m");
    assert_eq!(r.actual, "boot_time=37.2s");
    let r = run(Some(Duration::from_secs(61))).await;
    assert!(!r.passed);
    assert_eq!(failure_message(&r), "expected boot_time&lt;=1m; actual boot_time=61.0s");
    let r = run(None).await;
    assert!(!r.passed);
    assert_eq!(r.actual, "boot_time=not measured");
    assert!(guest.calls().is_empty());
}

// ---------------------------------------------------------------- run_checks

#[tokio::test]
async fn ssh_errors_fail_one_check_and_the_rest_still_run() {
    let guest = FakeGuest::new().on_error(port_command(false), "SSH connection lost").on("true", ok(""));
    let checks = [
        Check { name: Some("sshd listens".into()), kind: port(22, true, "tcp") },
        check(command("true", None, None, None)),
        check(command("not-faked", None, None, None)),
    ];
    let results = run_checks(&guest, &checks, None).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].name, "sshd listens");
    assert!(!results[0].passed);
    assert_eq!(results[0].expected, "listening=true");
    assert_eq!(results[0].actual, "error: SSH connection lost");
    assert!(results[1].passed);
    assert!(!results[2].passed);
    assert_eq!(summary(&results), (1, 2));
    assert_eq!(guest.calls().len(), 3);
}

#[test]
fn verify_error_from_ssh_shows_its_cause() {
    let e = VerifyError::from(crate::communicator::SshError::Timeout {
        what: "waiting for the remote command".into(),
        after: Duration::from_secs(60),
    });
    assert_eq!(
        crate::error::chain(&e),
        "could not run the check command in the guest: timed out after 60s waiting for the remote command"
    );
}

#[tokio::test]
async fn names_from_the_template_are_kept() {
    let guest = FakeGuest::new().on("true", ok(""));
    let c = Check { name: Some("custom name".into()), kind: command("true", None, None, None) };
    let r = run_checks(&guest, &[c], None).await;
    assert_eq!(r[0].name, "custom name");
    let json = serde_json::to_value(&r[0]).unwrap();
    assert_eq!(json["kind"], "command");
    assert_eq!(json["passed"], true);
    assert!(json["duration_ms"].is_u64());
}

#[test]
fn long_commands_get_short_names() {
    let kind = command(
        "set -e\n  for i in 1 2 3; do echo \"$i\"; done; test -f /etc/hostname && cat /etc/hostname",
        None,
        None,
        None,
    );
    assert_eq!(checks::default_name(&kind), "command `set -e for i in 1 2 3; do echo \"$i\"; done; test -f…`");
}

// ---------------------------------------------------------------- quoting and injection

const EVIL_PATH: &str = "/tmp/x'; rm -rf /;'";
const EVIL_REGEX: &str = "$(touch /tmp/pwned)`id`";

#[test]
fn generated_commands_quote_every_value() {
    let cmd = file_command(EVIL_PATH, true, true);
    assert!(cmd.starts_with("f='/tmp/x'\\''; rm -rf /;'\\'''\n"), "{cmd}");
    // The value appears once, quoted, and is only used as "$f".
    assert_eq!(cmd.matches("rm -rf").count(), 1);
    assert!(!cmd.contains("$(touch"));

    let cmd = service_command("ssh$(id)").unwrap();
    assert!(cmd.starts_with("n='ssh$(id)'\n"), "{cmd}");
    let cmd = package_command("a;b`c`").unwrap();
    assert!(cmd.starts_with("p='a;b`c`'\n"), "{cmd}");
    let cmd = user_command("o'brien").unwrap();
    assert!(cmd.starts_with(&format!("u={}\n", shell_quote("o'brien"))), "{cmd}");
}

#[test]
fn option_like_names_are_refused() {
    assert!(service_command("-x").is_err());
    assert!(package_command("--admindir=/tmp").is_err());
    assert!(user_command("-s").is_err());
    assert!(user_command("a\nb").is_err());
    assert!(user_command("").is_err());
}

#[tokio::test]
async fn regexes_and_expected_content_never_reach_the_guest() {
    let kind = CheckKind::File {
        file: EVIL_PATH.into(),
        exists: true,
        mode: None,
        owner: None,
        contains: Some("'; reboot; '".into()),
        matches: Some(EVIL_REGEX.replace('(', "\\(").replace(')', "\\)")),
        sha256: Some("$(halt)".into()),
    };
    let guest = FakeGuest::new();
    let _ = run1(&guest, kind).await;
    let calls = guest.calls();
    assert_eq!(calls, vec![file_command(EVIL_PATH, true, true)]);
    for needle in ["reboot", "touch", "halt", "`id`"] {
        assert!(!calls[0].contains(needle), "{needle} leaked into {}", calls[0]);
    }
    let guest = FakeGuest::new().on("true", ok("x\n"));
    let r = run1(&guest, command("true", None, Some(EVIL_REGEX), None)).await;
    assert_eq!(guest.calls(), vec!["true"]);
    assert!(!r.passed);
}

/// Runs the generated probes with real shells: nothing in a hostile value
/// may execute, and the probes must still work on such paths.
#[test]
fn hostile_values_do_not_execute_in_real_shells() {
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let p = pwned.display();
    let hostile = [
        format!("/nonexistent/x'; touch {p};'"),
        format!("/nonexistent/$(touch {p})"),
        format!("/nonexistent/`touch {p}`"),
        format!("/nonexistent/\"; touch {p}; \""),
        format!("/nonexistent/x\ntouch {p}"),
        "/nonexistent/*".to_owned(),
    ];
    let shells: Vec<Vec<&str>> = [vec!["sh"], vec!["busybox", "sh"]]
        .into_iter()
        .filter(|s| Command::new(s[0]).arg("--help").output().is_ok())
        .collect();
    assert!(!shells.is_empty(), "no sh on this host");
    for shell in &shells {
        for value in &hostile {
            let mut probes = vec![file_command(value, true, true)];
            let name = value.trim_start_matches("/nonexistent/");
            if let Ok(c) = service_command(name) {
                probes.push(c);
            }
            if let Ok(c) = package_command(name) {
                probes.push(c);
            }
            if let Ok(c) = user_command(name) {
                probes.push(c);
            }
            for probe in probes {
                let out = Command::new(shell[0]).args(&shell[1..]).arg("-c").arg(&probe).output().unwrap();
                assert!(out.status.success(), "{shell:?} failed on {probe}: {out:?}");
                assert!(!pwned.exists(), "{shell:?} executed part of {value:?} via:\n{probe}");
            }
        }
        // And a real file with a hostile name is found and read.
        let evil = dir.path().join("a'b $(x) `y` \"z\"");
        std::fs::write(&evil, "content\n").unwrap();
        let probe = file_command(&evil.display().to_string(), true, true);
        let out = Command::new(shell[0]).args(&shell[1..]).arg("-c").arg(&probe).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("exists=yes\nstat="), "{shell:?}: {stdout}");
        assert!(stdout.contains(&format!("\n{CONTENT_MARKER}\ncontent\n")), "{shell:?}: {stdout}");
    }
}

// ---------------------------------------------------------------- JUnit and table

fn result(name: &str, passed: bool, expected: &str, actual: &str) -> CheckResult {
    CheckResult {
        name: name.into(),
        kind: "file",
        expected: expected.into(),
        actual: actual.into(),
        passed,
        duration_ms: 1234,
    }
}

#[test]
fn xml_escaping() {
    assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
    assert_eq!(escape("x\u{0}\u{1}\u{1b}[31my\u{7}\u{ffff}"), "x[31my");
    assert_eq!(escape("t\tn\nr\r"), "t&#9;n&#10;r&#13;");
    assert_eq!(escape("ünï ✓"), "ünï ✓");
}

#[test]
fn junit_structure() {
    let results = [
        result("file /etc/motd", true, "exists=true", "exists=true"),
        result(
            "weird <name> & \"quotes\" 'x'",
            false,
            "contains=\"<b>\"",
            "contains=false (content: \"\u{1b}[0m]]>\")",
        ),
    ];
    let xml = junit_xml_at("img & <suite>", &results, "2024-05-06T07:08:09");
    let expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<testsuites name=\"img &amp; &lt;suite&gt;\" tests=\"2\" failures=\"1\" errors=\"0\" time=\"2.468\">
  <testsuite name=\"img &amp; &lt;suite&gt;\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"2.468\" timestamp=\"2024-05-06T07:08:09\">
    <testcase classname=\"imgbuild.verify.file\" name=\"file /etc/motd\" time=\"1.234\"/>
    <testcase classname=\"imgbuild.verify.file\" name=\"weird &lt;name&gt; &amp; &quot;quotes&quot; &apos;x&apos;\" time=\"1.234\">
      <failure message=\"expected contains=&quot;&lt;b&gt;&quot;; actual contains=false (content: &quot;[0m]]&gt;&quot;)\" type=\"file\">expected: contains=&quot;&lt;b&gt;&quot;
actual: contains=false (content: &quot;[0m]]&gt;&quot;)</failure>
    </testcase>
  </testsuite>
</testsuites>
";
    assert_eq!(xml, expected);
    let now = junit_xml("s", &results);
    assert!(now.contains(" timestamp=\"20"), "{now}");
}

/// Parses the JUnit output with Python's standard library and compares
/// every attribute and text it reads back.
#[test]
fn junit_parses_with_python_elementtree() {
    if !crate::testing::require_command("python3", "apt-get install -y python3") {
        return;
    }
    let results = [
        result("plain", true, "exists=true", "exists=true"),
        result(
            "a <b> & \"c\" 'd'\ttab",
            false,
            "contains=\"]]> <!-- --> &amp;\"",
            "line1\nline2 \u{1}\u{8}\u{1b}[1m bold é ✓",
        ),
        result("empty", false, "", ""),
    ];
    let xml = junit_xml_at("suite \"<&>\"", &results, "2024-05-06T07:08:09");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    std::fs::write(&path, &xml).unwrap();
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suites = root.findall("testsuite")
assert len(suites) == 1
s = suites[0]
out = {"suite": s.get("name"), "tests": s.get("tests"), "failures": s.get("failures"),
       "timestamp": s.get("timestamp"), "cases": []}
for c in s.findall("testcase"):
    f = c.find("failure")
    out["cases"].append({"classname": c.get("classname"), "name": c.get("name"), "time": c.get("time"),
        "message": None if f is None else f.get("message"),
        "type": None if f is None else f.get("type"),
        "text": None if f is None else f.text})
print(json.dumps(out))
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(out.status.success(), "python rejected the XML:\n{}\n{xml}", String::from_utf8_lossy(&out.stderr));
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["suite"], "suite \"<&>\"");
    assert_eq!(parsed["tests"], "3");
    assert_eq!(parsed["failures"], "2");
    assert_eq!(parsed["timestamp"], "2024-05-06T07:08:09");
    let cases = parsed["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[0]["classname"], "imgbuild.verify.file");
    assert_eq!(cases[0]["time"], "1.234");
    assert!(cases[0]["message"].is_null());
    assert_eq!(cases[1]["name"], "a <b> & \"c\" 'd'\ttab");
    let actual_clean = "line1\nline2 [1m bold é ✓";
    assert_eq!(cases[1]["message"], format!("expected contains=\"]]> <!-- --> &amp;\"; actual {actual_clean}"));
    assert_eq!(cases[1]["type"], "file");
    assert_eq!(cases[1]["text"], format!("expected: contains=\"]]> <!-- --> &amp;\"\nactual: {actual_clean}"));
    assert_eq!(cases[2]["message"], "expected ; actual ");
}

#[test]
fn table_is_aligned() {
    let results = [
        result("file /etc/motd", true, "exists=true", "exists=true"),
        CheckResult {
            kind: "service",
            duration_ms: 25,
            ..result(
                "service ssh running",
                false,
                "running=true",
                "running=false (no process named ssh or sshd)\nsecond line",
            )
        },
        result("ü wide ✓", true, &"x".repeat(200), "ok"),
    ];
    let table = render_table(&results);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("CHECK"), "{table}");
    let col = |line: &str, word: &str| line.find(word).map(|i| line[..i].chars().count());
    let result_col = col(lines[0], "RESULT").unwrap();
    assert_eq!(col(lines[1], "PASS"), Some(result_col), "{table}");
    assert_eq!(col(lines[2], "FAIL"), Some(result_col), "{table}");
    assert_eq!(col(lines[3], "PASS"), Some(result_col), "{table}");
    let actual_col = col(lines[0], "ACTUAL").unwrap();
    assert_eq!(col(lines[2], "running=false"), Some(actual_col));
    assert!(lines[1].ends_with("1.2s"));
    assert!(lines[2].ends_with("25ms"));
    assert!(lines[3].contains("xxx…"), "long cells are cut: {table}");
    assert!(table.contains("\nverify: 3 checks, 2 passed, 1 failed (2.5s)\n"), "{table}");
    assert!(table.contains(
        "Failed checks:\n  service ssh running\n    expected: running=true\n    actual:   running=false (no process named ssh or sshd) second line\n"
    ), "{table}");
    assert_eq!(render_table(&[]), "verify: no checks\n");
}
