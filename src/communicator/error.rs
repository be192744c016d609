//! Error types of the SSH communicator.
//!
//! Every variant names the phase that failed; the underlying cause is kept as
//! the error `source` and is not repeated in the message. No variant ever
//! carries a password, a private key or a command line (commands may embed
//! secrets through environment assignments).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Errors from connecting to, running commands on, or copying files to a guest.
#[derive(thiserror::Error, Debug)]
pub enum SshError {
    /// Generating or encoding the per-build key pair failed.
    #[error("could not generate or encode the SSH key pair")]
    KeyGen {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The TCP connection could not be established.
    #[error("could not connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// The peer accepted TCP but closed it before sending an `SSH-` banner.
    #[error("{addr} closed the connection before sending an SSH banner")]
    NoBanner {
        addr: String,
        #[source]
        source: Option<std::io::Error>,
    },

    /// Protocol version exchange or key exchange failed.
    #[error("SSH handshake with {addr} failed")]
    Handshake {
        addr: String,
        #[source]
        source: russh::Error,
    },

    /// Every configured authentication method was rejected by the server.
    #[error("authentication as {username:?} rejected (tried: {methods}; server accepts: {server_methods})")]
    AuthRejected {
        username: String,
        /// Methods we tried, e.g. `publickey, password`.
        methods: String,
        /// Methods the server said could continue, e.g. `publickey`.
        server_methods: String,
    },

    /// The target lists no authentication method at all.
    #[error("no SSH authentication method configured for {username:?}")]
    NoAuthMethods { username: String },

    /// The authentication exchange itself broke (not a rejection).
    #[error("SSH authentication as {username:?} failed")]
    Auth {
        username: String,
        #[source]
        source: russh::Error,
    },

    /// Opening a channel or requesting something on it failed.
    #[error("SSH channel request failed: {what}")]
    Channel {
        what: String,
        #[source]
        source: russh::Error,
    },

    /// Sending data to, or starting, a remote command failed.
    #[error("remote command failed to run")]
    Exec {
        #[source]
        source: russh::Error,
    },

    /// An SFTP operation failed.
    #[error("SFTP {op} of {path:?} failed")]
    Sftp {
        op: &'static str,
        path: String,
        #[source]
        source: russh_sftp::client::error::Error,
    },

    /// A transfer over the exec fallback (`cat`, `mkdir -p`, `chmod`) failed remotely.
    #[error("remote {op} of {path:?} failed ({status}): {stderr}")]
    RemoteTransfer {
        op: &'static str,
        path: String,
        status: ExitDisplay,
        /// Last lines the remote command wrote to stderr.
        stderr: String,
    },

    /// A local file operation failed.
    #[error("local I/O on {path:?} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A local path cannot be transferred (not UTF-8, or not a file/directory).
    #[error("cannot transfer {path:?}: {reason}")]
    Unsupported { path: PathBuf, reason: &'static str },

    /// An operation did not finish in time.
    #[error("timed out after {after:?} {what}")]
    Timeout { what: String, after: Duration },

    /// The SSH connection dropped (reboot, network loss, sshd killed).
    #[error("SSH connection lost")]
    Disconnected,

    /// An environment variable name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid environment variable name {name:?}")]
    InvalidEnvName { name: String },
}

/// How a remote command ended, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitDisplay {
    Status(u32),
    Signal(String),
    Unknown,
}

impl fmt::Display for ExitDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(code) => write!(f, "exit status {code}"),
            Self::Signal(sig) => write!(f, "killed by signal {sig}"),
            Self::Unknown => f.write_str("no exit status"),
        }
    }
}

/// Why [`wait_for_ssh`](super::wait_for_ssh) gave up.
#[derive(thiserror::Error, Debug)]
pub enum WaitError {
    /// The cancellation token fired.
    #[error("waiting for SSH was cancelled")]
    Cancelled,

    /// The deadline passed without a successful connection. The last attempt's
    /// error (with its causes) is part of the message, and is not a `source`,
    /// so it is not printed twice by error-chain formatters.
    #[error(
        "timed out after {after:?} waiting for SSH on {host}:{port} as {username:?} \
         (auth: {auth_methods}; {attempts} attempts); last error: {}",
        DisplayChain(.last_error.as_deref())
    )]
    Timeout {
        host: String,
        port: u16,
        username: String,
        auth_methods: String,
        attempts: u32,
        after: Duration,
        last_error: Option<Box<SshError>>,
    },
}

/// Displays an error followed by its `source` chain, joined with `: `.
pub struct DisplayChain<'a>(pub Option<&'a SshError>);

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(err) = self.0 else {
            return f.write_str("none (no attempt finished)");
        };
        write!(f, "{err}")?;
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
