//! Waiting for a booting guest's SSH server.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::{SshError, WaitError};
use super::ssh::{SshClient, SshTarget, format_addr};

/// Timeout of each banner probe in [`wait_for_ssh`].
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of each connect + handshake + auth attempt in [`wait_for_ssh`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
// Probes are a loopback connect and a banner read: cheap enough to poll often,
// and every 100 ms of granularity is time the build waits on a guest that is ready.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Bytes read while looking for the `SSH-` line (RFC 4253 allows lines before it).
const BANNER_LIMIT: u64 = 16 * 1024;

/// Connects to `host:port` and succeeds once a line starting with `SSH-`
/// arrives within `timeout`. QEMU's user networking accepts TCP before the
/// guest is up, so a successful TCP connect alone proves nothing.
pub async fn probe_banner(host: &str, port: u16, timeout: Duration) -> Result<(), SshError> {
    let addr = format_addr(host, port);
    match tokio::time::timeout(timeout, read_banner(host, port, &addr)).await {
        Ok(result) => result,
        Err(_) => Err(SshError::Timeout { what: format!("waiting for an SSH banner from {addr}"), after: timeout }),
    }
}

async fn read_banner(host: &str, port: u16, addr: &str) -> Result<(), SshError> {
    let stream =
        TcpStream::connect((host, port)).await.map_err(|source| SshError::Connect { addr: addr.to_owned(), source })?;
    let mut reader = BufReader::new(stream).take(BANNER_LIMIT);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).await;
        let n = read.map_err(|source| SshError::NoBanner { addr: addr.to_owned(), source: Some(source) })?;
        if n == 0 {
            return Err(SshError::NoBanner { addr: addr.to_owned(), source: None });
        }
        if line.starts_with(b"SSH-") {
            return Ok(());
        }
    }
}

/// Retries [`probe_banner`] (2 s) then [`SshClient::connect`] (10 s) until one
/// connection succeeds, `overall` passes, or `cancel` fires. After an attempt
/// that timed out, the next one allows twice as long (up to 30 s and 60 s):
/// a guest on busy cores under TCG can be slower than the first timeout to
/// send its banner or finish the key exchange every single time, and
/// probes that always give up a moment too early never get through.
///
/// Every failed attempt — including an authentication rejection, since a
/// guest may apply its keys late — is passed to `on_attempt` and retried after
/// a back-off of 100 ms doubling up to 500 ms.
pub async fn wait_for_ssh(
    target: &SshTarget,
    overall: Duration,
    cancel: &CancellationToken,
    mut on_attempt: impl FnMut(&SshError),
) -> Result<SshClient, WaitError> {
    let deadline = Instant::now() + overall;
    let mut backoff = BACKOFF_START;
    let mut attempts = 0u32;
    let mut last_error: Option<SshError> = None;
    let mut patience = Patience::default();
    loop {
        attempts += 1;
        let err = tokio::select! {
            _ = cancel.cancelled() => return Err(WaitError::Cancelled),
            res = attempt(target, deadline, patience) => match res {
                Ok(client) => return Ok(client),
                Err(e) => e,
            },
        };
        if matches!(err, SshError::Timeout { .. }) {
            patience = patience.doubled();
        }
        on_attempt(&err);
        tracing::debug!(addr = %target.addr(), attempt = attempts, error = %err, "SSH not ready");
        keep_informative(&mut last_error, err, deadline);
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timeout_error(target, overall, attempts, last_error));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(WaitError::Cancelled),
            _ = tokio::time::sleep(backoff.min(remaining)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// How long one attempt's banner probe and connect may take.
#[derive(Debug, Clone, Copy)]
struct Patience {
    probe: Duration,
    connect: Duration,
}

const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(60);

impl Default for Patience {
    fn default() -> Self {
        Patience { probe: PROBE_TIMEOUT, connect: CONNECT_TIMEOUT }
    }
}

impl Patience {
    fn doubled(self) -> Self {
        Patience {
            probe: (self.probe * 2).min(PROBE_TIMEOUT_MAX),
            connect: (self.connect * 2).min(CONNECT_TIMEOUT_MAX),
        }
    }
}

/// One probe + connect, each bounded by its own timeout and by `deadline`.
async fn attempt(target: &SshTarget, deadline: Instant, patience: Patience) -> Result<SshClient, SshError> {
    let left = || deadline.saturating_duration_since(Instant::now());
    probe_banner(&target.host, target.port, patience.probe.min(left())).await?;
    SshClient::connect(target, patience.connect.min(left())).await
}

/// Keeps `err` as the last error, unless it is only the overall deadline
/// cutting an attempt short and an earlier, more telling error exists.
fn keep_informative(last: &mut Option<SshError>, err: SshError, deadline: Instant) {
    let cut_short = matches!(err, SshError::Timeout { .. }) && Instant::now() >= deadline;
    if cut_short && last.is_some() {
        return;
    }
    *last = Some(err);
}

fn timeout_error(target: &SshTarget, overall: Duration, attempts: u32, last_error: Option<SshError>) -> WaitError {
    WaitError::Timeout {
        host: target.host.clone(),
        port: target.port,
        username: target.username.clone(),
        auth_methods: target.auth_methods(),
        attempts,
        after: overall,
        last_error: last_error.map(Box::new),
    }
}
