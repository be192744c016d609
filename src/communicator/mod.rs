//! The communicator: how the build talks to a running machine.
//! [`Communicator`] is the seam; SSH is its implementation, talking to the
//! guest's OpenSSH server.
//!
//! * [`KeyPair`] — an ed25519 key generated per build (public key for
//!   `authorized_keys`, private key text for `--on-error abort`).
//! * [`wait_for_ssh`] / [`probe_banner`] — wait for a booting guest.
//! * [`unless_gone`] — SSH operations race against the machine's end
//!   ([`MachineWatch`]), so a killed machine is reported as such.
//! * [`SshClient`] — run commands ([`SshClient::exec`]) and copy files
//!   ([`SshClient::upload`], [`SshClient::upload_dir`], [`SshClient::download`])
//!   over SFTP, falling back to `cat`/`mkdir -p`/`chmod` over exec when the
//!   server has no `sftp` subsystem.
//!
//! Host keys are accepted on first use (the guests are fresh VMs); the
//! fingerprint is available from [`SshClient::host_key_fingerprint`].
//! Passwords and private keys never appear in errors, logs or `Debug` output.

mod error;
mod gone;
mod keys;
mod output;
mod ssh;
mod transfer;
mod wait;

pub use error::{DisplayChain, ExitDisplay, SshError, WaitError};
pub use gone::{EXIT_GRACE, MachineGone, MachineWatch, Raced, unless_gone};
pub use keys::KeyPair;
pub use output::{
    CollectSink, ExecResult, NullSink, OutputSink, OutputStream, TAIL_LINES, command_with_env, is_valid_env_name,
    shell_quote,
};
pub use ssh::{KEEPALIVE_INTERVAL, KEEPALIVE_MAX, SshAuth, SshClient, SshTarget};
pub use transfer::UploadSource;
pub use wait::{CONNECT_TIMEOUT, PROBE_TIMEOUT, probe_banner, wait_for_ssh};

use std::path::Path;
use std::time::Duration;

/// A session with a running machine: run commands and copy files.
/// Provisioners and verify know a machine through this alone; [`SshClient`]
/// implements it, and a test can fake it.
#[async_trait::async_trait]
pub trait Communicator: Send + Sync {
    /// Runs `command` (see [`SshClient::exec`]).
    async fn exec(
        &self,
        command: &str,
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        sink: &mut dyn OutputSink,
        timeout: Option<Duration>,
    ) -> Result<ExecResult, SshError>;
    /// Writes a file in the guest (see [`SshClient::upload`]).
    async fn upload(&self, data: UploadSource<'_>, remote_path: &str, mode: Option<u32>) -> Result<(), SshError>;
    /// Copies a directory tree into the guest; returns the number of files.
    async fn upload_dir(&self, local_dir: &Path, remote_dir: &str) -> Result<u64, SshError>;
    /// Copies a guest file to the host; returns its size.
    async fn download(&self, remote_path: &str, local_path: &Path) -> Result<u64, SshError>;
    /// The guest's identity as the session saw it (an SSH host key fingerprint).
    fn peer_identity(&self) -> String;
    /// Ends the session politely.
    async fn close(self: Box<Self>);
}

#[async_trait::async_trait]
impl Communicator for SshClient {
    async fn exec(
        &self,
        command: &str,
        env: &[(String, String)],
        stdin: Option<Vec<u8>>,
        sink: &mut dyn OutputSink,
        timeout: Option<Duration>,
    ) -> Result<ExecResult, SshError> {
        SshClient::exec(self, command, env, stdin, sink, timeout).await
    }

    async fn upload(&self, data: UploadSource<'_>, remote_path: &str, mode: Option<u32>) -> Result<(), SshError> {
        SshClient::upload(self, data, remote_path, mode).await
    }

    async fn upload_dir(&self, local_dir: &Path, remote_dir: &str) -> Result<u64, SshError> {
        SshClient::upload_dir(self, local_dir, remote_dir).await
    }

    async fn download(&self, remote_path: &str, local_path: &Path) -> Result<u64, SshError> {
        SshClient::download(self, remote_path, local_path).await
    }

    fn peer_identity(&self) -> String {
        self.host_key_fingerprint().to_string()
    }

    async fn close(self: Box<Self>) {
        SshClient::close(*self).await
    }
}

/// Reads the guest's boot id, which changes on every boot.
pub async fn boot_id(communicator: &dyn Communicator) -> Option<String> {
    let mut sink = CollectSink::default();
    let r = communicator
        .exec("cat /proc/sys/kernel/random/boot_id", &[], None, &mut sink, Some(Duration::from_secs(10)))
        .await
        .ok()?;
    r.success().then(|| sink.text(OutputStream::Stdout).trim().to_string())
}
