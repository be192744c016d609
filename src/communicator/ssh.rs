//! SSH client: connection, authentication and remote command execution.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use russh::client::{self, Msg};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Disconnect, MethodKind, Sig};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

use super::error::{ExitDisplay, SshError};
use super::keys::KeyPair;
use super::output::{ExecResult, LineRouter, OutputSink, OutputStream, command_with_env};

/// Interval between SSH keepalive requests.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered keepalives after which the connection counts as lost.
pub const KEEPALIVE_MAX: usize = 3;

const STDIN_CHUNK: usize = 32 * 1024;

/// One way to authenticate. `Debug` never prints a password.
#[derive(Clone)]
pub enum SshAuth {
    Password(String),
    Key(Arc<KeyPair>),
}

impl SshAuth {
    /// The SSH method name: `password` or `publickey`.
    pub fn method_name(&self) -> &'static str {
        match self {
            Self::Password(_) => "password",
            Self::Key(_) => "publickey",
        }
    }
}

impl fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(<redacted>)"),
            Self::Key(key) => f.debug_tuple("Key").field(key).finish(),
        }
    }
}

/// Where and how to log in. Methods in `auth` are tried in order on one connection.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: Vec<SshAuth>,
}

impl SshTarget {
    /// `host:port`, with IPv6 literals in brackets.
    pub fn addr(&self) -> String {
        format_addr(&self.host, self.port)
    }

    /// Configured methods, e.g. `publickey, password` (duplicates removed).
    pub fn auth_methods(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        for auth in &self.auth {
            if !names.contains(&auth.method_name()) {
                names.push(auth.method_name());
            }
        }
        names.join(", ")
    }
}

pub(crate) fn format_addr(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// russh event handler: accepts any host key (fresh VMs) and records its fingerprint.
pub(crate) struct ClientHandler {
    fingerprint: Arc<OnceLock<String>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let fingerprint = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256),
            PublicKeyOrCertificate::Certificate(cert) => cert.public_key().fingerprint(HashAlg::Sha256),
        };
        // The first key seen (initial key exchange) is the one we report.
        let _ = self.fingerprint.set(fingerprint.to_string());
        Ok(true)
    }
}

/// An authenticated SSH connection to a guest.
pub struct SshClient {
    pub(crate) handle: client::Handle<ClientHandler>,
    addr: String,
    fingerprint: String,
    pub(crate) force_exec: AtomicBool,
    pub(crate) sftp_missing: AtomicBool,
}

impl fmt::Debug for SshClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshClient")
            .field("addr", &self.addr)
            .field("host_key", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn client_config() -> client::Config {
    client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: None,
        ..Default::default()
    }
}

impl SshClient {
    /// TCP connect, SSH handshake and authentication, all within `timeout`.
    pub async fn connect(target: &SshTarget, timeout: Duration) -> Result<SshClient, SshError> {
        let addr = target.addr();
        match tokio::time::timeout(timeout, Self::connect_inner(target, addr.clone())).await {
            Ok(result) => result,
            Err(_) => Err(SshError::Timeout { what: format!("connecting to {addr}"), after: timeout }),
        }
    }

    async fn connect_inner(target: &SshTarget, addr: String) -> Result<SshClient, SshError> {
        let socket = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| SshError::Connect { addr: addr.clone(), source })?;
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "set_nodelay failed");
        }
        let seen = Arc::new(OnceLock::new());
        let handler = ClientHandler { fingerprint: Arc::clone(&seen) };
        let mut handle = client::connect_stream(Arc::new(client_config()), socket, handler)
            .await
            .map_err(|source| SshError::Handshake { addr: addr.clone(), source })?;
        authenticate(&mut handle, target).await?;
        let fingerprint = seen.get().cloned().unwrap_or_default();
        tracing::debug!(%addr, host_key = %fingerprint, user = %target.username, "SSH connected");
        Ok(SshClient {
            handle,
            addr,
            fingerprint,
            force_exec: AtomicBool::new(false),
            sftp_missing: AtomicBool::new(false),
        })
    }

    /// The server's host key fingerprint, `SHA256:…` as printed by `ssh-keygen -lf`.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `host:port` this client is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `command` through the remote user's shell.
    ///
    /// `env` is applied as `export K='v';` prefixes (not via `AcceptEnv`).
    /// `stdin` is sent and then closed; without it, stdin is closed at once.
    /// Output goes to `sink` line by line. A non-zero exit status is not an
    /// error; a dropped connection is [`SshError::Disconnected`]. On `timeout`
    /// the remote command is sent `KILL` and the channel closed. OpenSSH
    /// refuses `signal` requests in root sessions (no post-auth privilege
    /// separation for root), so there a command that ignores its closed
    /// stdout may keep running in the guest.
    pub async fn exec(
        &self,
        command: &str,
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        sink: &mut dyn OutputSink,
        timeout: Option<Duration>,
    ) -> Result<ExecResult, SshError> {
        let full = command_with_env(command, env)?;
        let (mut read, write) = self.start_command(&full).await?;
        let mut router = LineRouter::new(sink);
        let input = stdin.as_deref();
        let run = drive(&mut read, &write, input, &mut router, Path::new("<stdin>"));
        let ending = match timeout {
            None => run.await,
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(result) => result,
                Err(_) => {
                    abort_channel(&write).await;
                    return Err(SshError::Timeout { what: "waiting for the remote command".to_owned(), after: limit });
                }
            },
        };
        let ending = self.check_disconnect(ending)?;
        Ok(ExecResult { exit_status: ending.exit_status, exit_signal: ending.exit_signal, tail: router.finish() })
    }

    /// Opens a session channel and starts `command` on it.
    pub(crate) async fn start_command(
        &self,
        command: &str,
    ) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>), SshError> {
        let channel = self.open_channel("open session channel for exec").await?;
        let (read, write) = channel.split();
        if let Err(source) = write.exec(true, command).await {
            return Err(self.lost_or(SshError::Exec { source }));
        }
        Ok((read, write))
    }

    pub(crate) async fn open_channel(&self, what: &str) -> Result<russh::Channel<Msg>, SshError> {
        self.handle
            .channel_open_session()
            .await
            .map_err(|source| self.lost_or(SshError::Channel { what: what.to_owned(), source }))
    }

    /// Replaces `err` by [`SshError::Disconnected`] when the connection is gone.
    pub(crate) fn lost_or(&self, err: SshError) -> SshError {
        if self.handle.is_closed() { SshError::Disconnected } else { err }
    }

    pub(crate) fn check_disconnect(&self, ending: Result<Ending, SshError>) -> Result<Ending, SshError> {
        ending.map_err(|e| match e {
            SshError::Exec { .. } | SshError::Channel { .. } => self.lost_or(e),
            other => other,
        })
    }

    /// Sends an SSH disconnect and drops the connection.
    pub async fn close(self) {
        let result = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
        if let Err(e) = result {
            tracing::debug!(addr = %self.addr, error = %e, "SSH disconnect failed");
        }
    }
}

async fn authenticate(handle: &mut client::Handle<ClientHandler>, target: &SshTarget) -> Result<(), SshError> {
    let username = &target.username;
    if target.auth.is_empty() {
        return Err(SshError::NoAuthMethods { username: username.clone() });
    }
    let mut server_methods = String::new();
    for auth in &target.auth {
        let result = match auth {
            SshAuth::Key(pair) => {
                let key = PrivateKeyWithHashAlg::new(pair.private_key(), None);
                handle.authenticate_publickey(username, key).await
            }
            SshAuth::Password(password) => handle.authenticate_password(username, password).await,
        };
        let result = result.map_err(|source| SshError::Auth { username: username.clone(), source })?;
        match result {
            russh::client::AuthResult::Success => return Ok(()),
            russh::client::AuthResult::Failure { remaining_methods, .. } => {
                server_methods = method_names(&remaining_methods)
            }
        }
    }
    Err(SshError::AuthRejected { username: username.clone(), methods: target.auth_methods(), server_methods })
}

fn method_names(methods: &[MethodKind]) -> String {
    let names: Vec<&'static str> = methods.iter().map(<&'static str>::from).collect();
    names.join(", ")
}

/// How a channel ended.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    pub(crate) exit_status: Option<u32>,
    pub(crate) exit_signal: Option<String>,
}

impl Ending {
    pub(crate) fn display(&self) -> ExitDisplay {
        match (&self.exit_status, &self.exit_signal) {
            (Some(code), _) => ExitDisplay::Status(*code),
            (None, Some(sig)) => ExitDisplay::Signal(sig.clone()),
            (None, None) => ExitDisplay::Unknown,
        }
    }
}

/// Receives channel output chunks.
pub(crate) trait ChunkHandler: Send {
    fn chunk(&mut self, stream: OutputStream, data: &[u8]) -> impl Future<Output = Result<(), SshError>> + Send;
}

impl ChunkHandler for LineRouter<'_> {
    fn chunk(&mut self, stream: OutputStream, data: &[u8]) -> impl Future<Output = Result<(), SshError>> + Send {
        self.push(stream, data);
        std::future::ready(Ok(()))
    }
}

enum FeedError {
    Local(io::Error),
    Remote,
}

/// Sends `stdin` (if any) then EOF, while reading the channel until it closes.
/// A failure to read the local input (`stdin_path`) aborts the command.
pub(crate) async fn drive<R, H>(
    read: &mut ChannelReadHalf,
    write: &ChannelWriteHalf<Msg>,
    stdin: Option<R>,
    handler: &mut H,
    stdin_path: &Path,
) -> Result<Ending, SshError>
where
    R: AsyncRead + Unpin + Send,
    H: ChunkHandler,
{
    let feeder = feed(write, stdin);
    let reader = read_until_close(read, handler);
    tokio::pin!(feeder, reader);
    let mut fed = false;
    loop {
        tokio::select! {
            res = &mut feeder, if !fed => {
                fed = true;
                if let Err(FeedError::Local(source)) = res {
                    abort_channel(write).await;
                    return Err(SshError::Io { path: stdin_path.to_path_buf(), source });
                }
                // A remote write failure means the command stopped reading or
                // the connection dropped; the reader reports which.
            }
            res = &mut reader => return res,
        }
    }
}

async fn feed<R: AsyncRead + Unpin>(write: &ChannelWriteHalf<Msg>, stdin: Option<R>) -> Result<(), FeedError> {
    if let Some(mut input) = stdin {
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            let n = input.read(&mut buf).await.map_err(FeedError::Local)?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default().to_vec();
            write.data_bytes(chunk).await.map_err(|_| FeedError::Remote)?;
        }
    }
    write.eof().await.map_err(|_| FeedError::Remote)
}

async fn read_until_close<H: ChunkHandler>(read: &mut ChannelReadHalf, handler: &mut H) -> Result<Ending, SshError> {
    let mut ending = Ending::default();
    while let Some(msg) = read.wait().await {
        match msg {
            ChannelMsg::Data { data } => handler.chunk(OutputStream::Stdout, &data).await?,
            ChannelMsg::ExtendedData { data, ext: 1 } => handler.chunk(OutputStream::Stderr, &data).await?,
            ChannelMsg::ExitStatus { exit_status } => ending.exit_status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => ending.exit_signal = Some(signal_text(&signal_name)),
            ChannelMsg::Failure => {
                return Err(SshError::Exec { source: russh::Error::RequestDenied });
            }
            ChannelMsg::Close => return Ok(ending),
            _ => {}
        }
    }
    // The channel vanished without CHANNEL_CLOSE: the session itself ended.
    Err(SshError::Disconnected)
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// Best effort: kill the remote command and close the channel.
pub(crate) async fn abort_channel(write: &ChannelWriteHalf<Msg>) {
    let _ = write.signal(Sig::KILL).await;
    let _ = write.close().await;
}
