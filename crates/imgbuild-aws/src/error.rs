//! Errors of the S3 store.

use std::path::PathBuf;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use imgbuild_store_format::{ChannelError, InvalidInput, IoFailure, Refusal};

/// A boxed underlying error (an SDK error, an I/O error, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an S3 store operation failed.
///
/// Messages name what failed and where (`s3://bucket/key`, `name@version`);
/// the underlying cause, if any, is the error's `source()` and is not
/// repeated in the message. No message ever contains credentials: they are
/// never formatted by this crate, and SDK errors carry only the response.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// A name, version, channel or image reference the store format does not allow.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),

    /// The target or an option is unusable (empty bucket, part size out of
    /// range, ...).
    #[error("invalid S3 target: {reason}")]
    InvalidConfig { reason: String },

    /// Neither the target nor the standard chain gave a region.
    #[error(
        "no AWS region for bucket `{bucket}`: set `region` in the target, AWS_REGION / AWS_DEFAULT_REGION, or a profile region"
    )]
    NoRegion { bucket: String },

    /// The version is already published (or another publisher's
    /// `manifest.json` got there first).
    #[error("{name}@{version} already exists in s3://{bucket}/{prefix}")]
    VersionExists { name: String, version: String, bucket: String, prefix: String },

    /// An object of the version exists with other content while the version
    /// has no manifest: another publisher of the same version is (or was)
    /// uploading. Treated like [`S3Error::VersionExists`] by
    /// [`S3Error::is_already_exists`].
    #[error(
        "{name}@{version} already exists or is being published by another publisher: s3://{bucket}/{key} has other content (if no publisher is running, it is the leftover of an interrupted publish; `cleanup_stale_uploads` removes it)"
    )]
    VersionConflict { name: String, version: String, bucket: String, key: String },

    /// No such version of the image.
    #[error("{name}@{version} not found in s3://{bucket}/{prefix}")]
    VersionNotFound { name: String, version: String, bucket: String, prefix: String },

    /// The image has no published version.
    #[error("image `{name}` not found in s3://{bucket}/{prefix}")]
    ImageNotFound { name: String, bucket: String, prefix: String },

    /// A channel that does not lead to a published version.
    #[error(transparent)]
    Channel(#[from] ChannelError),

    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] IoFailure),

    /// The content of a file to publish does not have the SHA-256 the caller
    /// gave (it changed after export, or the caller's digest is wrong). The
    /// upload was aborted.
    #[error("{}: sha256 is {actual}, expected {expected}; the upload was aborted", path.display())]
    DigestMismatch { path: PathBuf, expected: String, actual: String },

    /// The file changed size while it was being uploaded.
    #[error("{} changed size during the upload (expected {expected} bytes)", path.display())]
    FileChanged { path: PathBuf, expected: u64 },

    /// The files, names or checksum lists handed to `publish` do not fit
    /// together.
    #[error("cannot publish {name}@{version}: {reason}")]
    InvalidArtifacts { name: String, version: String, reason: String },

    /// A published version has no `SHA256SUMS` (`verify`).
    #[error("{name}@{version} has no SHA256SUMS")]
    MissingSha256Sums { name: String, version: String },

    /// A checksum list line is not `<hex>  <file name>`.
    #[error("{list}:{line}: {reason}")]
    InvalidSums { list: String, line: usize, reason: String },

    /// An S3 request failed. `code` is the S3 error code, when S3 answered.
    #[error("cannot {action} s3://{bucket}/{key}{}", code_suffix(code.as_deref(), *status))]
    Request {
        action: String,
        bucket: String,
        key: String,
        code: Option<String>,
        status: Option<u16>,
        #[source]
        source: BoxError,
    },

    /// A stored JSON object (manifest, channels, index) does not parse.
    #[error("s3://{bucket}/{key} is not valid JSON of the expected shape")]
    Corrupt {
        bucket: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// A conditional update kept losing against concurrent writers.
    #[error("s3://{bucket}/{key} was changed concurrently {attempts} times in a row; giving up")]
    ConcurrentUpdate { bucket: String, key: String, attempts: u32 },

    /// The manifest is in place (the version is published), but
    /// `channels.json` or `index.json` could not be updated.
    #[error(
        "{name}@{version} was published, but the store metadata could not be updated (promote {name} {version} to `latest` to point `latest` at it)"
    )]
    PublishedWithoutMetadata {
        name: String,
        version: String,
        #[source]
        source: Box<S3Error>,
    },

    /// An internal task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl S3Error {
    /// The store policy's refusal, for the store at `s3://bucket/prefix`.
    pub(crate) fn refused(refusal: Refusal, bucket: &str, prefix: &str) -> Self {
        let (bucket, prefix) = (bucket.to_string(), prefix.to_string());
        match refusal {
            Refusal::Invalid(invalid) => S3Error::Invalid(invalid),
            Refusal::Channel(channel) => S3Error::Channel(channel),
            Refusal::ImageNotFound { name } => S3Error::ImageNotFound { name, bucket, prefix },
            Refusal::VersionNotFound { name, version } => S3Error::VersionNotFound { name, version, bucket, prefix },
        }
    }

    /// Whether this is the "the version is already there (or being
    /// published by someone else)" outcome of a publish race.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, S3Error::VersionExists { .. } | S3Error::VersionConflict { .. })
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        S3Error::Io(IoFailure { action, path: path.into(), source })
    }

    /// The S3 error code of a failed request (`NoSuchKey`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Request { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of a failed request, when S3 answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            S3Error::Request { status, .. } => *status,
            _ => None,
        }
    }
}

/// Turns an SDK error into [`S3Error::Request`], keeping the code and status.
pub(crate) fn request_error<E, R>(action: impl Into<String>, bucket: &str, key: &str, err: SdkError<E, R>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: HttpStatus,
{
    let status = err.http_status();
    let code = err.as_service_error().and_then(|e| e.code()).map(str::to_string);
    S3Error::Request {
        action: action.into(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        code,
        status,
        source: Box::new(err),
    }
}

/// The HTTP status of a raw response, when there is one.
pub(crate) trait HttpStatus {
    fn http_status(&self) -> Option<u16>;
}

impl<E> HttpStatus for SdkError<E, aws_sdk_s3::config::http::HttpResponse> {
    fn http_status(&self) -> Option<u16> {
        self.raw_response().map(|r| r.status().as_u16())
    }
}

fn code_suffix(code: Option<&str>, status: Option<u16>) -> String {
    match (code, status) {
        (Some(code), _) => format!(" ({code})"),
        (None, Some(status)) => format!(" (HTTP {status})"),
        (None, None) => String::new(),
    }
}
