//! Errors of fetching a source.

use std::path::PathBuf;

use super::checksum::{ChecksumParseError, Digest};

/// Why fetching a source (or its checksum list) failed.
///
/// Messages name what failed and where; the underlying cause, if any, is the
/// error's `source()` and is not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or path could not be understood.
    #[error("invalid source location `{given}`: {reason}")]
    InvalidLocation { given: String, reason: String },

    /// A URL scheme other than http, https or file.
    #[error("unsupported URL scheme `{scheme}` in `{given}` (use https://, http://, file:// or a path)")]
    UnsupportedScheme { given: String, scheme: String },

    /// The HTTP client could not be built (TLS set-up).
    #[error("could not set up the HTTP client")]
    Client(#[source] reqwest::Error),

    /// A request failed in a way that retrying cannot fix.
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The server answered with a permanent error status (4xx other than 408/429).
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: reqwest::StatusCode },

    /// Transient failures every time, until the retries ran out.
    #[error("could not download {url}: gave up after {attempts} attempts")]
    GaveUp {
        url: String,
        attempts: u32,
        #[source]
        last: TransientError,
    },

    /// The downloaded or local file does not have the expected digest.
    #[error("checksum mismatch for {source_name}: expected {expected}, got {actual}")]
    Mismatch { source_name: String, expected: Digest, actual: Digest },

    /// A local source file does not exist.
    #[error("source file `{given}` not found (looked for {})", path.display())]
    NotFound { given: String, path: PathBuf },

    /// The checksum list is larger than the limit.
    #[error("checksum list {list} is larger than {limit} bytes")]
    ChecksumListTooLarge { list: String, limit: u64 },

    /// The checksum list is not UTF-8 text.
    #[error("checksum list {list} is not text (invalid UTF-8)")]
    ChecksumListNotText { list: String },

    /// The checksum list has no line for the file.
    #[error(
        "checksum list {list} has no entry for `{file_name}` ({})",
        list_names(names, *listed)
    )]
    ChecksumNotListed {
        list: String,
        file_name: String,
        /// Up to five names the list does contain.
        names: Vec<String>,
        /// How many names the list contains.
        listed: usize,
    },

    /// The source URL has no file name to look up in a checksum list.
    #[error("cannot look up {url} in a checksum list: the URL has no file name")]
    NoFileName { url: String },

    /// A `checksum` value could not be parsed.
    #[error(transparent)]
    Checksum(#[from] ChecksumParseError),

    /// A file-system operation failed.
    #[error("could not {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A background task (blocking I/O) failed.
    #[error("background task for {what} failed")]
    Task {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },

    /// The fetch was cancelled; a partial download is kept for resuming.
    #[error("download cancelled")]
    Cancelled,
}

impl FetchError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FetchError::Io { action, path: path.into(), source }
    }

    /// True for [`FetchError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, FetchError::Cancelled)
    }
}

/// The last of the failures that made a download give up.
#[derive(Debug, thiserror::Error)]
pub enum TransientError {
    /// Connect error, timeout, or the connection was cut.
    #[error("network error")]
    Network(#[source] reqwest::Error),
    /// 5xx, 408 or 429.
    #[error("server answered HTTP {0}")]
    Status(reqwest::StatusCode),
    /// The body ended early.
    #[error("body ended after {got} of {expected} bytes")]
    Incomplete { expected: u64, got: u64 },
    /// A 206 answer that does not continue where the partial file ends.
    #[error("server sent a range starting at byte {got}, expected {expected}")]
    BadRange { expected: u64, got: u64 },
}

fn list_names(names: &[String], listed: usize) -> String {
    if names.is_empty() {
        return "it lists no file names".to_string();
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    let more = listed.saturating_sub(names.len());
    match more {
        0 => format!("it lists {}", quoted.join(", ")),
        n => format!("it lists {} and {n} more", quoted.join(", ")),
    }
}
