//! Integration tests against a real OpenSSH `sshd` that each test starts on
//! 127.0.0.1 with a free port. Needs root, `/usr/sbin/sshd` and
//! `/usr/lib/openssh/sftp-server` (Debian: openssh-server, openssh-sftp-server).

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use imgbuild::communicator::{
    CollectSink, KeyPair, NullSink, OutputSink, OutputStream, SshAuth, SshClient, SshError, SshTarget, UploadSource,
    WaitError, probe_banner, wait_for_ssh,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const PW_USER: &str = "imgbuildpw";
const PW_PASSWORD: &str = "s3cret 'pass' $x";

// ---------------------------------------------------------------- harness

struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    key: Arc<KeyPair>,
}

#[derive(Clone, Copy)]
struct Opts {
    sftp: bool,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn run_ok(cmd: &mut Command) {
    let status = cmd.status().expect("spawn helper command");
    assert!(status.success(), "{cmd:?} failed: {status}");
}

impl Sshd {
    fn start(opts: Opts) -> Sshd {
        Self::start_on(free_port(), opts)
    }

    fn start_on(port: u16, opts: Opts) -> Sshd {
        assert!(Path::new(SSHD).exists(), "install openssh-server");
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Arc::new(KeyPair::generate().expect("generate key"));
        let host_key = dir.path().join("host_ed25519");
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key));
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, key.public_openssh("imgbuild-test") + "\n").expect("write keys");
        let config = dir.path().join("sshd_config");
        fs::write(&config, sshd_config(port, dir.path(), opts)).expect("write config");
        let log = fs::File::create(dir.path().join("sshd.log")).expect("log file");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        let sshd = Sshd { child, port, dir, key };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"SSH-" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not start; log:\n{}", self.log());
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn host_key_fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_ed25519.pub"))
            .output()
            .expect("ssh-keygen -lf");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().nth(1).unwrap_or_default().to_owned()
    }

    fn root_target(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.port,
            username: "root".into(),
            auth: vec![SshAuth::Key(self.key.clone())],
        }
    }

    async fn connect_root(&self) -> SshClient {
        match SshClient::connect(&self.root_target(), Duration::from_secs(10)).await {
            Ok(c) => c,
            Err(e) => panic!("connect failed: {e:?}\nsshd log:\n{}", self.log()),
        }
    }

    /// Kills the per-connection sshd processes (children of our sshd; they
    /// run in their own sessions) and then sshd itself.
    fn kill_all(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("pkill").args(["-KILL", "-P", &pid]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            eprintln!("sshd log for port {}:\n{}", self.port, self.log());
        }
    }
}

fn sshd_config(port: u16, dir: &Path, opts: Opts) -> String {
    let mut cfg = format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {dir}/host_ed25519\n\
         PidFile none\n\
         UsePAM no\n\
         StrictModes no\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PermitRootLogin yes\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         MaxStartups 100\n\
         MaxAuthTries 20\n\
         LogLevel VERBOSE\n",
        dir = dir.display()
    );
    if opts.sftp {
        cfg.push_str(&format!("Subsystem sftp {SFTP_SERVER}\n"));
    }
    cfg
}

/// Creates the throwaway password user once per test process (idempotent).
fn ensure_password_user() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let exists = Command::new("id")
            .arg("-u")
            .arg(PW_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !exists {
            let status = Command::new("useradd").args(["-m", "-s", "/bin/sh", PW_USER]).status().expect("useradd");
            // 9 = already exists (another test binary raced us).
            assert!(status.success() || status.code() == Some(9), "useradd: {status}");
        }
        let mut child = Command::new("chpasswd").stdin(Stdio::piped()).spawn().expect("chpasswd");
        {
            use std::io::Write;
            let stdin = child.stdin.as_mut().expect("chpasswd stdin");
            writeln!(stdin, "{PW_USER}:{PW_PASSWORD}").expect("write chpasswd");
        }
        assert!(child.wait().expect("chpasswd wait").success());
    });
}

fn password_target(port: u16, password: &str) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port,
        username: PW_USER.into(),
        auth: vec![SshAuth::Password(password.into())],
    }
}

fn sha256_file(path: &Path) -> String {
    let data = fs::read(path).expect("read file for hash");
    format!("{:x}", Sha256::digest(&data))
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    data
}

async fn run(client: &SshClient, cmd: &str) -> (Option<u32>, CollectSink) {
    let mut sink = CollectSink::default();
    let res = client.exec(cmd, &[], None, &mut sink, Some(Duration::from_secs(30))).await.expect("exec");
    (res.exit_status, sink)
}

// ---------------------------------------------------------------- keys

#[test]
fn key_pair_formats_are_accepted_by_ssh_keygen() {
    let key = KeyPair::generate().expect("generate");
    let public = key.public_openssh("build-123");
    assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
    assert!(public.ends_with(" build-123"), "{public}");
    let pem = key.private_openssh_pem().expect("pem");
    assert!(pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    assert!(!format!("{key:?}").contains("PRIVATE"));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("id");
    fs::write(&path, &pem).expect("write key");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path).output().expect("ssh-keygen -y");
    assert!(out.status.success());
    let derived = String::from_utf8_lossy(&out.stdout);
    let derived_key = derived.split_whitespace().take(2).collect::<Vec<_>>();
    let ours = public.split_whitespace().take(2).collect::<Vec<_>>();
    assert_eq!(derived_key, ours);
}

#[test]
fn error_and_client_types_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SshError>();
    assert_send_sync::<WaitError>();
    assert_send_sync::<SshClient>();
}

#[test]
fn debug_output_redacts_password() {
    let target = password_target(22, "hunter2");
    assert!(!format!("{target:?}").contains("hunter2"));
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn key_auth_records_host_key_fingerprint() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    assert_eq!(client.host_key_fingerprint(), sshd.host_key_fingerprint());
    assert!(client.host_key_fingerprint().starts_with("SHA256:"));
    let (status, out) = run(&client, "id -un").await;
    assert_eq!(status, Some(0));
    assert_eq!(out.text(OutputStream::Stdout), "root");
    client.close().await;
}

#[tokio::test]
async fn password_auth_succeeds() {
    ensure_password_user();
    let sshd = Sshd::start(Opts { sftp: true });
    let target = password_target(sshd.port, PW_PASSWORD);
    let client = SshClient::connect(&target, Duration::from_secs(10)).await.expect("password auth");
    let (status, out) = run(&client, "id -un").await;
    assert_eq!(status, Some(0));
    assert_eq!(out.text(OutputStream::Stdout), PW_USER);
    client.close().await;
}

#[tokio::test]
async fn key_then_password_falls_through_to_password() {
    ensure_password_user();
    let sshd = Sshd::start(Opts { sftp: true });
    let mut target = password_target(sshd.port, PW_PASSWORD);
    // The key is authorized, but AuthorizedKeysFile is shared by all users, so
    // use a different, unauthorized key to force the fall-through.
    let other = Arc::new(KeyPair::generate().expect("key"));
    target.auth.insert(0, SshAuth::Key(other));
    let client = SshClient::connect(&target, Duration::from_secs(10)).await.expect("key then password");
    client.close().await;
}

#[tokio::test]
async fn wrong_password_is_auth_rejected() {
    ensure_password_user();
    let sshd = Sshd::start(Opts { sftp: true });
    let target = password_target(sshd.port, "definitely-wrong");
    let err = SshClient::connect(&target, Duration::from_secs(10)).await.expect_err("must be rejected");
    match &err {
        SshError::AuthRejected { username, methods, .. } => {
            assert_eq!(username, PW_USER);
            assert_eq!(methods, "password");
        }
        other => panic!("expected AuthRejected, got {other:?}"),
    }
    let text = format!("{err} {err:?}");
    assert!(!text.contains("definitely-wrong"), "{text}");
}

#[tokio::test]
async fn connect_to_closed_port_is_connect_error() {
    let port = free_port();
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port,
        username: "root".into(),
        auth: vec![SshAuth::Password("x".into())],
    };
    let err = SshClient::connect(&target, Duration::from_secs(5)).await.expect_err("nothing listens");
    assert!(matches!(err, SshError::Connect { .. }), "{err:?}");
}

// ---------------------------------------------------------------- exec

#[tokio::test]
async fn exec_streams_lines_and_reports_exit_codes() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let mut sink = CollectSink::default();
    let cmd = "echo out1; echo err1 >&2; echo out2; printf 'no-newline'";
    let res = client.exec(cmd, &[], None, &mut sink, None).await.expect("exec");
    assert_eq!(res.exit_status, Some(0));
    assert!(res.success());
    assert_eq!(res.exit_signal, None);
    assert_eq!(sink.text(OutputStream::Stdout), "out1\nout2\nno-newline", "{:?}", sink.lines);
    assert_eq!(sink.text(OutputStream::Stderr), "err1");
    assert_eq!(res.tail.len(), 4);

    let (status, _) = run(&client, "echo failing >&2; exit 3").await;
    assert_eq!(status, Some(3));

    let mut null = NullSink;
    let res = client.exec("kill -9 $$", &[], None, &mut null, None).await.expect("exec");
    assert_eq!(res.exit_status, None);
    assert_eq!(res.exit_signal.as_deref(), Some("KILL"));
    client.close().await;
}

#[tokio::test]
async fn exec_tail_keeps_last_twenty_lines() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let mut null = NullSink;
    let res = client.exec("seq 1 100", &[], None, &mut null, None).await.expect("exec");
    assert_eq!(res.tail.len(), 20);
    assert_eq!(res.tail.first().map(String::as_str), Some("81"));
    assert_eq!(res.tail.last().map(String::as_str), Some("100"));
}

#[tokio::test]
async fn exec_env_values_arrive_verbatim() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let values =
        ["it's", "$(echo pwned)", "a; echo injected", "line1\nline2", "ünïcødé ✓", "`id` \\ \"q\" $HOME *", ""];
    for value in values {
        let env = vec![("K".to_owned(), value.to_owned()), ("_X1".into(), "x".into())];
        let mut sink = CollectSink::default();
        let res = client.exec("printf %s \"$K\"", &env, None, &mut sink, None).await.expect("exec");
        assert_eq!(res.exit_status, Some(0));
        assert_eq!(sink.text(OutputStream::Stdout), value);
        assert_eq!(sink.text(OutputStream::Stderr), "");
    }
    let bad = vec![("BAD-NAME".to_owned(), "v".to_owned())];
    let err = client.exec("true", &bad, None, &mut NullSink, None).await.expect_err("invalid name");
    assert!(matches!(err, SshError::InvalidEnvName { .. }), "{err:?}");
}

#[tokio::test]
async fn exec_feeds_stdin() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let mut sink = CollectSink::default();
    let res = client.exec("cat", &[], Some(b"hello\nworld\n".to_vec()), &mut sink, None).await.expect("exec");
    assert_eq!(res.exit_status, Some(0));
    assert_eq!(sink.text(OutputStream::Stdout), "hello\nworld");

    // Large stdin while the command also produces output.
    let big = random_bytes(3 * 1024 * 1024);
    let mut sink = CollectSink::default();
    let res = client.exec("sha256sum", &[], Some(big.clone()), &mut sink, None).await.expect("exec");
    assert_eq!(res.exit_status, Some(0));
    let expected = format!("{:x}", Sha256::digest(&big));
    assert!(sink.text(OutputStream::Stdout).starts_with(&expected));

    // No stdin: stdin is closed, so `cat` ends at once.
    let (status, out) = run(&client, "cat; echo done").await;
    assert_eq!(status, Some(0));
    assert_eq!(out.text(OutputStream::Stdout), "done");
}

async fn timeout_then_still_usable(client: &SshClient, marker: &str) -> String {
    let started = Instant::now();
    let err = client
        .exec(&format!("sleep {marker}"), &[], None, &mut NullSink, Some(Duration::from_millis(500)))
        .await
        .expect_err("must time out");
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe = format!("ps -eo args | grep -c '^sleep {marker}' || true");
    let (status, out) = run(client, &probe).await;
    assert_eq!(status, Some(0));
    out.text(OutputStream::Stdout)
}

#[tokio::test]
async fn exec_timeout_kills_command_and_keeps_connection() {
    ensure_password_user();
    let sshd = Sshd::start(Opts { sftp: true });
    let target = password_target(sshd.port, PW_PASSWORD);
    let client = SshClient::connect(&target, Duration::from_secs(10)).await.expect("password auth");
    let running = timeout_then_still_usable(&client, "29.75").await;
    assert_eq!(running, "0", "remote command was not killed\n{}", sshd.log());
}

#[tokio::test]
async fn exec_timeout_as_root_keeps_connection() {
    // OpenSSH refuses "signal" requests in root sessions (no post-auth privilege
    // separation for root), so the remote command may survive; the client must
    // still time out promptly and stay usable.
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let pid_file = sshd.dir.path().join("sleep.pid");
    let cmd = format!("echo $$ > '{}'; exec sleep 29.5", pid_file.display());
    let err =
        client.exec(&cmd, &[], None, &mut NullSink, Some(Duration::from_millis(500))).await.expect_err("must time out");
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    let (status, _) = run(&client, "true").await;
    assert_eq!(status, Some(0));
    kill_pid_from(&pid_file);
}

/// Kills the remote survivor whose pid a test command wrote to `pid_file`.
fn kill_pid_from(pid_file: &Path) {
    if let Ok(pid) = fs::read_to_string(pid_file) {
        let _ = Command::new("kill").args(["-KILL", pid.trim()]).stderr(Stdio::null()).status();
    }
}

#[tokio::test]
async fn disconnect_mid_exec_is_disconnected() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let mut sink = CollectSink::default();
    // $PPID of the remote shell is the per-connection sshd process.
    let res = client
        .exec("echo started; sleep 0.3; kill -9 $PPID; sleep 5", &[], None, &mut sink, Some(Duration::from_secs(20)))
        .await;
    match res {
        Err(SshError::Disconnected) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(sink.text(OutputStream::Stdout), "started");
    let err = client.exec("true", &[], None, &mut NullSink, None).await.expect_err("connection is gone");
    assert!(matches!(err, SshError::Disconnected), "{err:?}");
}

/// Forwards one TCP connection to `target` until `cut` fires, then drops both
/// sockets (what a client sees when a VM reboots or the network goes away).
async fn cutting_proxy(target: u16, cut: CancellationToken) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
            return;
        };
        tokio::select! {
            _ = cut.cancelled() => {}
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        }
    });
    port
}

/// Collects lines and cuts the connection once the command has printed.
struct CutOnOutput {
    collected: CollectSink,
    cut: CancellationToken,
}

impl OutputSink for CutOnOutput {
    fn line(&mut self, stream: OutputStream, line: &str) {
        self.collected.line(stream, line);
        self.cut.cancel();
    }
}

#[tokio::test]
async fn connection_cut_mid_exec_is_disconnected() {
    let sshd = Sshd::start(Opts { sftp: true });
    let cut = CancellationToken::new();
    let mut target = sshd.root_target();
    target.port = cutting_proxy(sshd.port, cut.clone()).await;
    let client = SshClient::connect(&target, Duration::from_secs(10)).await.expect("connect through proxy");
    // Cut once the command runs (it printed), not after a guessed delay.
    let mut sink = CutOnOutput { collected: CollectSink::default(), cut };
    let res = client.exec("echo started; sleep 10", &[], None, &mut sink, Some(Duration::from_secs(20))).await;
    assert!(matches!(res, Err(SshError::Disconnected)), "{res:?}");
    assert_eq!(sink.collected.text(OutputStream::Stdout), "started");
    assert!(client.is_closed());
}

/// Like [`cutting_proxy`], but on `freeze` stops forwarding while keeping both
/// sockets open: a peer that vanished without FIN/RST (guest powered off).
async fn freezing_proxy(target: u16, freeze: CancellationToken) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
            return;
        };
        tokio::select! {
            _ = freeze.cancelled() => {}
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        }
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop((inbound, outbound));
    });
    port
}

/// Slow (about 40 s: keepalive every 10 s, 3 unanswered); runs beside the others.
#[tokio::test]
async fn keepalive_detects_silent_peer() {
    let sshd = Sshd::start(Opts { sftp: true });
    let freeze = CancellationToken::new();
    let mut target = sshd.root_target();
    target.port = freezing_proxy(sshd.port, freeze.clone()).await;
    let client = SshClient::connect(&target, Duration::from_secs(10)).await.expect("connect through proxy");
    let pid_file = sshd.dir.path().join("sleep.pid");
    let cmd = format!("echo $$ > '{}'; exec sleep 90", pid_file.display());
    let mut null = NullSink;
    let exec = client.exec(&cmd, &[], None, &mut null, None);
    let freezer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        freeze.cancel();
    };
    let started = Instant::now();
    let (res, ()) = tokio::join!(exec, freezer);
    eprintln!("silent peer detected after {:?}", started.elapsed());
    kill_pid_from(&pid_file);
    assert!(matches!(res, Err(SshError::Disconnected)), "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn concurrent_execs_and_large_output() {
    let sshd = Sshd::start(Opts { sftp: true });
    let client = sshd.connect_root().await;
    let mut a = CollectSink::default();
    let mut b = CollectSink::default();
    let (ra, rb) = tokio::join!(
        client.exec("seq 1 200000", &[], None, &mut a, None),
        client.exec("sleep 0.2; echo b", &[], None, &mut b, None),
    );
    assert_eq!(ra.expect("exec a").exit_status, Some(0));
    assert_eq!(rb.expect("exec b").exit_status, Some(0));
    assert_eq!(a.lines.len(), 200_000);
    assert_eq!(a.lines.last().map(|l| l.1.as_str()), Some("200000"));
    assert_eq!(b.text(OutputStream::Stdout), "b");
}

// ---------------------------------------------------------------- transfers

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Sftp,
    NoSubsystem,
    Forced,
}

async fn transfer_client(mode: Mode) -> (Sshd, SshClient) {
    let sshd = Sshd::start(Opts { sftp: mode != Mode::NoSubsystem });
    let client = sshd.connect_root().await;
    if mode == Mode::Forced {
        client.force_exec_transfer(true);
    }
    (sshd, client)
}

fn check_transport(client: &SshClient, mode: Mode) {
    assert_eq!(client.uses_exec_transfer(), mode != Mode::Sftp);
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

async fn upload_file_roundtrip(mode: Mode) {
    let (_sshd, client) = transfer_client(mode).await;
    let local = tempfile::tempdir().expect("tempdir");
    let remote = tempfile::tempdir().expect("tempdir");
    let src = local.path().join("random.bin");
    fs::write(&src, random_bytes(1024 * 1024)).expect("write");
    let dst = remote.path().join("uploaded.bin");
    let dst_str = dst.to_str().expect("utf8");
    client.upload(UploadSource::File(&src), dst_str, None).await.expect("upload file");
    check_transport(&client, mode);
    assert_eq!(sha256_file(&src), sha256_file(&dst));

    // Bytes with a mode; overwrite keeps working.
    let script = remote.path().join("run me.sh");
    let script_str = script.to_str().expect("utf8");
    let body = b"#!/bin/sh\necho 'hi'\n";
    for _ in 0..2 {
        client.upload(UploadSource::Bytes(body), script_str, Some(0o755)).await.expect("upload bytes");
    }
    assert_eq!(fs::read(&script).expect("read"), body);
    assert_eq!(mode_of(&script), 0o755);
    let empty = remote.path().join("empty");
    client.upload(UploadSource::Bytes(b""), empty.to_str().expect("utf8"), Some(0o600)).await.expect("upload empty");
    assert_eq!(fs::read(&empty).expect("read").len(), 0);
    assert_eq!(mode_of(&empty), 0o600);

    // Parents are not created.
    let missing = remote.path().join("no/such/dir/file");
    let err = client
        .upload(UploadSource::Bytes(b"x"), missing.to_str().expect("utf8"), None)
        .await
        .expect_err("parent missing");
    assert!(matches!(err, SshError::Sftp { .. } | SshError::RemoteTransfer { .. }), "{err:?}");
    assert!(!remote.path().join("no").exists());

    // Missing local file is a local I/O error.
    let err =
        client.upload(UploadSource::File(&local.path().join("nope")), dst_str, None).await.expect_err("local missing");
    assert!(matches!(err, SshError::Io { .. }), "{err:?}");
}

async fn download_roundtrip(mode: Mode) {
    let (_sshd, client) = transfer_client(mode).await;
    let remote = tempfile::tempdir().expect("tempdir");
    let local = tempfile::tempdir().expect("tempdir");
    let src = remote.path().join("data.bin");
    fs::write(&src, random_bytes(1024 * 1024 + 17)).expect("write");
    let dst = local.path().join("copy.bin");
    let n = client.download(src.to_str().expect("utf8"), &dst).await.expect("download");
    check_transport(&client, mode);
    assert_eq!(n, 1024 * 1024 + 17);
    assert_eq!(sha256_file(&src), sha256_file(&dst));

    let gone = local.path().join("gone.bin");
    let missing = remote.path().join("missing");
    let err = client.download(missing.to_str().expect("utf8"), &gone).await.expect_err("remote missing");
    assert!(matches!(err, SshError::Sftp { .. } | SshError::RemoteTransfer { .. }), "{err:?}");
    assert!(!gone.exists(), "partial local file must be removed");
}

fn build_tree(root: &Path) -> PathBuf {
    let tree = root.join("tree");
    fs::create_dir_all(tree.join("a/b/c")).expect("mkdir");
    fs::create_dir_all(tree.join("empty")).expect("mkdir");
    fs::write(tree.join("top.txt"), "top").expect("write");
    fs::write(tree.join("a/one.sh"), "#!/bin/sh\n").expect("write");
    fs::set_permissions(tree.join("a/one.sh"), fs::Permissions::from_mode(0o750)).expect("chmod");
    fs::write(tree.join("a/b/c/deep.bin"), random_bytes(200_000)).expect("write");
    fs::write(tree.join("a/b/it's here.txt"), "quoted name").expect("write");
    fs::set_permissions(tree.join("a/b"), fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).expect("symlink");
    tree
}

async fn upload_dir_roundtrip(mode: Mode) {
    let (_sshd, client) = transfer_client(mode).await;
    let local = tempfile::tempdir().expect("tempdir");
    let remote = tempfile::tempdir().expect("tempdir");
    let tree = build_tree(local.path());
    let dst = remote.path().join("x/y/dest");
    let files = client.upload_dir(&tree, dst.to_str().expect("utf8")).await.expect("upload_dir");
    check_transport(&client, mode);
    assert_eq!(files, 4);
    assert_eq!(fs::read_to_string(dst.join("top.txt")).expect("read"), "top");
    assert_eq!(sha256_file(&tree.join("a/b/c/deep.bin")), sha256_file(&dst.join("a/b/c/deep.bin")));
    assert_eq!(fs::read_to_string(dst.join("a/b/it's here.txt")).expect("read"), "quoted name");
    assert_eq!(mode_of(&dst.join("a/one.sh")), 0o750);
    assert_eq!(mode_of(&dst.join("a/b")), 0o700);
    assert!(dst.join("empty").is_dir());
    assert!(!dst.join("link").exists(), "symlinks are skipped");
    assert!(fs::symlink_metadata(dst.join("link")).is_err());

    // Uploading again into the existing tree works (mkdir -p semantics).
    let again = client.upload_dir(&tree, dst.to_str().expect("utf8")).await.expect("upload_dir again");
    assert_eq!(again, 4);
}

#[tokio::test]
async fn sftp_upload_file_and_bytes() {
    upload_file_roundtrip(Mode::Sftp).await;
}

#[tokio::test]
async fn sftp_download() {
    download_roundtrip(Mode::Sftp).await;
}

#[tokio::test]
async fn sftp_upload_dir() {
    upload_dir_roundtrip(Mode::Sftp).await;
}

#[tokio::test]
async fn fallback_upload_file_and_bytes_without_subsystem() {
    upload_file_roundtrip(Mode::NoSubsystem).await;
}

#[tokio::test]
async fn fallback_download_without_subsystem() {
    download_roundtrip(Mode::NoSubsystem).await;
}

#[tokio::test]
async fn fallback_upload_dir_without_subsystem() {
    upload_dir_roundtrip(Mode::NoSubsystem).await;
}

#[tokio::test]
async fn forced_exec_upload_file_and_bytes() {
    upload_file_roundtrip(Mode::Forced).await;
}

#[tokio::test]
async fn forced_exec_download() {
    download_roundtrip(Mode::Forced).await;
}

#[tokio::test]
async fn forced_exec_upload_dir() {
    upload_dir_roundtrip(Mode::Forced).await;
}

// ---------------------------------------------------------------- waiting

#[tokio::test]
async fn probe_banner_times_out_on_silent_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // accept, never speak
        }
    });
    let started = Instant::now();
    let err = probe_banner("127.0.0.1", port, Duration::from_millis(500)).await.expect_err("no banner");
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.abort();
}

#[tokio::test]
async fn probe_banner_fails_when_peer_closes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    let err = probe_banner("127.0.0.1", port, Duration::from_secs(2)).await.expect_err("closed");
    assert!(matches!(err, SshError::NoBanner { .. }), "{err:?}");
    server.abort();
}

#[tokio::test]
async fn probe_banner_succeeds_on_sshd() {
    let sshd = Sshd::start(Opts { sftp: true });
    probe_banner("127.0.0.1", sshd.port, Duration::from_secs(2)).await.expect("banner");
}

#[tokio::test]
async fn wait_for_ssh_succeeds_when_server_starts_late() {
    let port = free_port();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        Sshd::start_on(port, Opts { sftp: true })
    });
    // The key is only known once sshd is up, so authorize a key we create now.
    let key = Arc::new(KeyPair::generate().expect("key"));
    let target =
        SshTarget { host: "127.0.0.1".into(), port, username: "root".into(), auth: vec![SshAuth::Key(key.clone())] };
    // Swap in our key as soon as the config directory exists.
    let cancel = CancellationToken::new();
    let mut attempts = 0u32;
    let waiter = wait_for_ssh(&target, Duration::from_secs(30), &cancel, |_| attempts += 1);
    let installer = async {
        let sshd = tokio::task::spawn_blocking(move || starter.join()).await.expect("join task").expect("sshd thread");
        let keys = sshd.dir.path().join("authorized_keys");
        fs::write(&keys, key.public_openssh("late") + "\n").expect("authorize");
        sshd
    };
    let (client, sshd) = tokio::join!(waiter, installer);
    let client = match client {
        Ok(c) => c,
        Err(e) => panic!("wait failed: {e}\n{}", sshd.log()),
    };
    assert!(attempts >= 1, "the server was not up at first");
    let (status, _) = run(&client, "true").await;
    assert_eq!(status, Some(0));
}

/// A guest so loaded that its sshd answers every connection later than the
/// first probe's timeout (2 s): later probes wait longer, so the wait gets
/// through instead of giving up a moment too early every time.
#[tokio::test]
async fn wait_for_ssh_gets_through_to_a_server_slower_than_the_first_probe() {
    let sshd = Sshd::start(Opts { sftp: true });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let upstream = sshd.port;
    let slow = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let target = SshTarget { port, ..sshd.root_target() };
    let cancel = CancellationToken::new();
    let mut timeouts = 0u32;
    let client = wait_for_ssh(&target, Duration::from_secs(60), &cancel, |e| {
        timeouts += u32::from(matches!(e, SshError::Timeout { .. }));
    })
    .await
    .unwrap_or_else(|e| panic!("never got through: {e}\n{}", sshd.log()));
    assert!(timeouts >= 1, "the first probe gave up before the banner");
    let (status, _) = run(&client, "true").await;
    assert_eq!(status, Some(0));
    slow.abort();
}

#[tokio::test]
async fn wait_for_ssh_with_wrong_password_times_out_with_last_error() {
    ensure_password_user();
    let sshd = Sshd::start(Opts { sftp: true });
    let target = password_target(sshd.port, "wrong-password");
    let cancel = CancellationToken::new();
    let mut seen = Vec::new();
    let started = Instant::now();
    let err = wait_for_ssh(&target, Duration::from_secs(3), &cancel, |e| seen.push(e.to_string()))
        .await
        .expect_err("must time out");
    assert!(started.elapsed() < Duration::from_secs(6));
    let text = err.to_string();
    match &err {
        WaitError::Timeout { attempts, auth_methods, last_error, .. } => {
            assert!(*attempts >= 2, "retried: {attempts}");
            assert_eq!(auth_methods, "password");
            assert!(matches!(last_error.as_deref(), Some(SshError::AuthRejected { .. })), "{last_error:?}");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    eprintln!("WaitError message: {text}");
    assert!(text.contains("authentication"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{}", sshd.port)), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn wait_for_ssh_stops_on_cancel() {
    let port = free_port();
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port,
        username: "root".into(),
        auth: vec![SshAuth::Password("x".into())],
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let err = wait_for_ssh(&target, Duration::from_secs(30), &cancel, |_| {}).await.expect_err("cancelled");
    assert!(matches!(err, WaitError::Cancelled), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}
