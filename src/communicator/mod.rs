//! SSH communicator: talks to a build VM's OpenSSH server.
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
