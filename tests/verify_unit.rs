//! `verify` probes run for real: through the host's `sh`, through a
//! busybox-only userland (like the test guest image), and over SSH to an
//! OpenSSH `sshd` started on 127.0.0.1 (needs root and `/usr/sbin/sshd`;
//! skipped loudly otherwise, and failed under CI: see `imgbuild::testing`).

use std::fs;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imgbuild::communicator::{KeyPair, SshAuth, SshClient, SshTarget};
use imgbuild::template::units::Dur;
use imgbuild::template::{Check, CheckKind, FileMode};
use imgbuild::verify::{
    CheckResult, CommandOutput, Guest, GuestExec, VerifyError, junit_xml, render_table, run_checks, summary,
};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- local "guests"

/// Runs probes with a local shell, optionally with `PATH` limited to one directory.
struct LocalShell {
    shell: Vec<String>,
    path: Option<PathBuf>,
}

#[async_trait::async_trait]
impl GuestExec for LocalShell {
    async fn run(&self, command: &str) -> Result<CommandOutput, VerifyError> {
        let mut cmd = tokio::process::Command::new(&self.shell[0]);
        cmd.args(&self.shell[1..]).arg("-c").arg(command);
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        let out = cmd.output().await.map_err(|e| VerifyError::Guest(e.to_string()))?;
        Ok(CommandOutput {
            exit_code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A directory holding every busybox applet (and the fixture image's
/// `dpkg-query`), to be used as the only `PATH` entry.
fn busybox_bin(dir: &Path) -> Option<PathBuf> {
    let out = Command::new("busybox").arg("--list").output().ok()?;
    let busybox = which("busybox")?;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let _ = std::os::unix::fs::symlink(&busybox, bin.join(applet));
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/base-image/rootfs/usr/bin/dpkg-query");
    if fixture.exists() {
        let dest = bin.join("dpkg-query");
        fs::copy(&fixture, &dest).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Some(bin)
}

use imgbuild::process::which;

// ---------------------------------------------------------------- checks

fn named(name: &str, kind: CheckKind) -> Check {
    Check { name: Some(name.to_owned()), kind }
}

#[allow(clippy::too_many_arguments)]
fn file(
    path: &str,
    exists: bool,
    mode: Option<u32>,
    owner: Option<&str>,
    contains: Option<&str>,
    matches: Option<&str>,
    sha256: Option<&str>,
) -> CheckKind {
    CheckKind::File {
        file: path.to_owned(),
        exists,
        mode: mode.map(FileMode),
        owner: owner.map(str::to_owned),
        contains: contains.map(str::to_owned),
        matches: matches.map(str::to_owned),
        sha256: sha256.map(str::to_owned),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn root_shell() -> String {
    fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("root:"))
        .and_then(|l| l.rsplit(':').next())
        .unwrap()
        .to_owned()
}

/// Checks that must hold on this host; each name says what it proves.
/// Returns the checks and a marker path that must never be created.
fn host_checks(dir: &Path, tcp_port: u16, udp_port: u16, daemon: &str) -> (Vec<Check>, PathBuf) {
    let data = b"alpha\r\nbeta = 42\ngamma";
    let data_file = dir.join("data file.txt");
    fs::write(&data_file, data).unwrap();
    fs::set_permissions(&data_file, fs::Permissions::from_mode(0o640)).unwrap();
    let pwned = dir.join("pwned");
    let evil = format!("{}/x'; touch {p}; echo '$(touch {p})`touch {p}`", dir.display(), p = pwned.display());
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() }.to_string();
    let checks = vec![
        named(
            "passwd file",
            file("/etc/passwd", true, Some(0o644), Some("root"), Some("root:x:0:0:"), Some(r"^root:[^:]*:0:0:"), None),
        ),
        named(
            "data file with spaces, CRLF, no final newline",
            file(
                &data_file.display().to_string(),
                true,
                Some(0o640),
                Some(&uid),
                Some("beta = 42"),
                Some(r"^beta = \d+$"),
                Some(&sha256_hex(data)),
            ),
        ),
        named("hostile path is only a path", file(&evil, false, None, None, None, None, None)),
        named("directory", file("/", true, None, Some("root"), None, None, None)),
        named("tcp listener", CheckKind::Port { port: tcp_port, listening: true, protocol: "tcp".into() }),
        named("udp socket", CheckKind::Port { port: udp_port, listening: true, protocol: "udp".into() }),
        named(
            "service by NAME+d",
            CheckKind::Service { service: daemon.trim_end_matches('d').to_owned(), enabled: None, running: Some(true) },
        ),
        named(
            "missing service",
            CheckKind::Service {
                service: "imgbuild-no-such-service".into(),
                enabled: Some(false),
                running: Some(false),
            },
        ),
        named(
            "root user",
            CheckKind::User {
                user: "root".into(),
                exists: true,
                groups: vec!["root".into()],
                shell: Some(root_shell()),
            },
        ),
        named(
            "missing user",
            CheckKind::User { user: "imgbuild-nobody".into(), exists: false, groups: vec![], shell: None },
        ),
        named(
            "command",
            CheckKind::Command {
                command: "echo hello; echo warn >&2; exit 3".into(),
                exit_code: Some(3),
                stdout_matches: Some("^hello$".into()),
                stderr_empty: Some(false),
            },
        ),
        named("boot time", CheckKind::BootTimeMax { boot_time_max: Dur(Duration::from_secs(120)) }),
    ];
    (checks, pwned)
}

/// A copy of `sleep` named `NAMEd`, so `/proc/PID/comm` is `NAMEd`.
struct Daemon {
    child: Child,
    name: String,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let name = format!("ibv{}d", std::process::id() % 100_000);
        let exe = dir.join(&name);
        fs::copy(which("sleep").expect("sleep"), &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let child = Command::new(&exe).arg("60").spawn().unwrap();
        // Wait until the exec has happened.
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(&comm).map(|c| c.trim() != name).unwrap_or(true) {
            assert!(Instant::now() < deadline, "daemon did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child, name }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_all_pass(results: &[CheckResult], pwned: &Path) {
    let table = render_table(results);
    eprintln!("{table}");
    assert!(!pwned.exists(), "a hostile path executed a command");
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}\n{table}");
    let xml = junit_xml("host", results);
    assert!(xml.contains(&format!("tests=\"{}\" failures=\"0\"", results.len())));
}

async fn run_host_suite(guest: &dyn GuestExec) {
    let dir = tempfile::tempdir().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let daemon = Daemon::start(dir.path());
    let (checks, pwned) =
        host_checks(dir.path(), tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port(), &daemon.name);
    let results = run_checks(guest, &checks, Some(Duration::from_secs(3))).await;
    assert_eq!(results.len(), checks.len());
    assert_all_pass(&results, &pwned);

    // The same checks negated must all fail, with the reason in `actual`.
    let tcp_port = tcp.local_addr().unwrap().port();
    drop(tcp);
    let failing = vec![
        named("closed port", CheckKind::Port { port: tcp_port, listening: true, protocol: "tcp".into() }),
        named("wrong mode", file("/etc/passwd", true, Some(0o600), None, Some("no such text in passwd"), None, None)),
        named("not installed", CheckKind::Package { package: "imgbuild-no-such-package".into(), installed: true }),
        named(
            "stopped",
            CheckKind::Service { service: "imgbuild-no-such-service".into(), enabled: None, running: Some(true) },
        ),
    ];
    let results = run_checks(guest, &failing, None).await;
    eprintln!("{}", render_table(&results));
    assert_eq!(summary(&results), (0, 4), "{results:#?}");
    assert!(results[1].actual.starts_with("exists=true, mode=0644, contains=false"));
    assert!(
        results[2].actual.starts_with("installed=false (")
            || results[2].actual.starts_with("error: no package manager"),
        "{}",
        results[2].actual
    );
}

#[tokio::test]
async fn probes_work_with_the_host_shell() {
    let guest = LocalShell { shell: vec!["sh".into()], path: None };
    run_host_suite(&guest).await;
    if Path::new("/var/lib/dpkg/status").exists() && which("dpkg-query").is_some() {
        let checks = [named("bash", CheckKind::Package { package: "bash".into(), installed: true })];
        let results = run_checks(&guest, &checks, None).await;
        assert!(results[0].passed, "{results:?}");
        assert_eq!(results[0].actual, "installed=true (dpkg: install ok installed)");
    }
}

#[tokio::test]
async fn probes_work_with_busybox_only() {
    let dir = tempfile::tempdir().unwrap();
    if !imgbuild::testing::require_command("busybox", "apt-get install -y busybox") {
        return;
    }
    let bin = busybox_bin(dir.path()).expect("busybox --list");
    // By its full path: PATH is the applet directory alone, which has no `busybox`.
    let busybox = which("busybox").expect("busybox on PATH").display().to_string();
    let guest = LocalShell { shell: vec![busybox, "sh".into()], path: Some(bin.clone()) };
    run_host_suite(&guest).await;
    // The fixture image's dpkg-query script over the host's dpkg database.
    if bin.join("dpkg-query").exists() && Path::new("/var/lib/dpkg/status").exists() {
        let checks =
            [named("bash via the fixture dpkg-query", CheckKind::Package { package: "bash".into(), installed: true })];
        let results = run_checks(&guest, &checks, None).await;
        assert!(results[0].passed, "{results:?}");
    }
}

// ---------------------------------------------------------------- real SSH

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    key: Arc<KeyPair>,
}

impl Sshd {
    fn start() -> Option<Sshd> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let have_sshd = root && Path::new(SSHD).exists() && which("ssh-keygen").is_some();
        if !imgbuild::testing::require(
            have_sshd,
            &format!("root, {SSHD} and ssh-keygen"),
            "run as root after `apt-get install -y openssh-server`",
        ) {
            return None;
        }
        fs::create_dir_all("/run/sshd").unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(KeyPair::generate().unwrap());
        let host_key = dir.path().join("host_ed25519");
        let status =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key).status().unwrap();
        assert!(status.success());
        fs::write(dir.path().join("authorized_keys"), key.public_openssh("imgbuild-verify-test") + "\n").unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile none\n\
             UsePAM no\nStrictModes no\nAuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nLogLevel VERBOSE\n",
            d = dir.path().display()
        );
        fs::write(dir.path().join("sshd_config"), config).unwrap();
        let log = fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sshd = Sshd { child, port, dir, key };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                    return Some(sshd);
                }
            }
            assert!(Instant::now() < deadline, "sshd did not start:\n{}", sshd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Per-connection sshd processes are children of ours.
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("sshd log:\n{}", self.log());
        }
    }
}

#[tokio::test]
async fn checks_run_over_real_ssh() {
    let Some(sshd) = Sshd::start() else {
        return;
    };
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port: sshd.port,
        username: "root".into(),
        auth: vec![SshAuth::Key(sshd.key.clone())],
    };
    let client = SshClient::connect(&target, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("connect: {e:?}\n{}", sshd.log()));

    let dir = tempfile::tempdir().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let daemon = Daemon::start(dir.path());
    let (mut checks, pwned) = host_checks(dir.path(), sshd.port, udp.local_addr().unwrap().port(), &daemon.name);
    checks.push(named(
        "sshd itself, as service ssh",
        CheckKind::Service { service: "ssh".into(), enabled: None, running: Some(true) },
    ));
    let results = run_checks(&Guest(&client), &checks, Some(Duration::from_secs(3))).await;
    assert_all_pass(&results, &pwned);

    // A dropped connection fails every check with the error, without panicking.
    let guest: &dyn GuestExec = &Guest(&client);
    assert!(results.len() > 3);
    let pid = sshd.child.id().to_string();
    let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let results = run_checks(guest, &checks[..3], None).await;
    assert_eq!(summary(&results), (0, 3), "{results:#?}");
    for r in &results {
        assert!(r.actual.starts_with("error: "), "{r:?}");
    }
    client.close().await;
}
