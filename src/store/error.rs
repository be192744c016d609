//! Errors of the artifact store.

use std::path::{Path, PathBuf};

use imgbuild_store_format::{ChannelError, InvalidInput, IoFailure, Refusal};

/// Why a store operation failed.
///
/// Messages name what failed and where (path, `name@version`); the underlying
/// cause, if any, is the error's `source()` and is not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name, version, channel or image reference the store format does not allow.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),

    /// The version is already published (or was published by a concurrent
    /// build first).
    #[error("{name}@{version} already exists in the store")]
    VersionExists { name: String, version: String },

    /// No such version of the image.
    #[error("{name}@{version} not found in the store {}", store.display())]
    VersionNotFound { name: String, version: String, store: PathBuf },

    /// The store directory does not exist (commands that only read).
    #[error("no artifact store at {} (set --store or IMGBUILD_STORE)", path.display())]
    NoStore { path: PathBuf },

    /// The image has no published version.
    #[error("image `{name}` not found in the store {}", store.display())]
    ImageNotFound { name: String, store: PathBuf },

    /// A channel that does not lead to a published version.
    #[error(transparent)]
    Channel(#[from] ChannelError),

    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] IoFailure),

    /// Taking a lock failed (not: the lock is busy — that waits).
    #[error("cannot lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Moving a directory into place failed for a reason other than the
    /// target existing.
    #[error("cannot rename {} to {}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A store metadata file or manifest is not the JSON it should be.
    #[error("{} is not valid JSON of the expected shape", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// JSON could not be serialised (should not happen with plain values).
    #[error("cannot serialise {}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// `commit` was called without a SHA-256 checksum list, or `verify` found
    /// no `SHA256SUMS` in the directory.
    #[error("no SHA256SUMS in {}", dir.display())]
    MissingSha256Sums { dir: PathBuf },

    /// A checksum list line is not `<hex>  <file name>`.
    #[error("{}:{line}: {reason}", path.display())]
    InvalidSums { path: PathBuf, line: usize, reason: String },

    /// A checksum list names a file that is not in the staging directory.
    #[error("{list} lists `{file}`, which is not in {}", dir.display())]
    ListedFileMissing { list: String, file: String, dir: PathBuf },

    /// The version directory is in place, but `channels.json` or `index.json`
    /// could not be updated.
    #[error(
        "{name}@{version} was published, but the store metadata could not be updated (run `imgbuild promote {name} {version} latest` to point `latest` at it)"
    )]
    PublishedWithoutMetadata {
        name: String,
        version: String,
        #[source]
        source: Box<StoreError>,
    },

    /// An S3 store (`--store s3://…` or a `type: s3` publish target) in an
    /// imgbuild built with `--no-default-features`.
    #[error("{what} needs AWS support, but this imgbuild was built without it (cargo feature `aws`)")]
    NoAwsSupport { what: String },

    /// `--store s3://` without a usable bucket.
    #[error("invalid store `{value}`: expected a directory or s3://BUCKET[/PREFIX]")]
    InvalidStoreUrl { value: String },

    /// An S3 store operation failed; the message names the bucket and key.
    #[cfg(feature = "aws")]
    #[error(transparent)]
    S3(#[from] imgbuild_aws::S3Error),
}

impl StoreError {
    /// The store policy's refusal, for the store at `store`.
    pub(crate) fn refused(refusal: Refusal, store: &Path) -> Self {
        let store = store.to_path_buf();
        match refusal {
            Refusal::Invalid(invalid) => StoreError::Invalid(invalid),
            Refusal::Channel(channel) => StoreError::Channel(channel),
            Refusal::ImageNotFound { name } => StoreError::ImageNotFound { name, store },
            Refusal::VersionNotFound { name, version } => StoreError::VersionNotFound { name, version, store },
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io(IoFailure { action, path: path.into(), source })
    }
}
