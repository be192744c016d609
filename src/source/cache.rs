//! The content-addressed download cache.
//!
//! ```text
//! CACHE/blobs/<algo>/<hex>          verified downloads, read-only
//! CACHE/partial/<algo>-<hex>.part   interrupted downloads, resumed later
//! CACHE/locks/<algo>-<hex>.lock     one downloader per digest (flock)
//! CACHE/hashes/<sha256(path)>.json  digests of local files (see `local.rs`)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::checksum::{Digest, sha256_hex};
use super::error::FetchError;
use super::progress::Throttle;

const LOCK_POLL_FIRST: Duration = Duration::from_millis(20);
const LOCK_POLL_MAX: Duration = Duration::from_millis(500);

/// Paths and operations of one cache directory.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    root: PathBuf,
}

/// Held while downloading a digest; the lock is released when dropped.
#[derive(Debug)]
pub(crate) struct BlobLock {
    _file: std::fs::File,
}

impl Cache {
    pub(crate) fn new(root: PathBuf) -> Self {
        Cache { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.algo.name()).join(&d.hex)
    }

    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.root.join("partial")
    }

    pub(crate) fn partial_path(&self, d: &Digest) -> PathBuf {
        self.partial_dir().join(format!("{}-{}.part", d.algo, d.hex))
    }

    fn lock_path(&self, d: &Digest) -> PathBuf {
        self.root.join("locks").join(format!("{}-{}.lock", d.algo, d.hex))
    }

    /// Where the memo for a local file (by canonical path) is kept.
    pub(crate) fn memo_path(&self, canonical: &Path) -> PathBuf {
        let key = sha256_hex(canonical.as_os_str().as_encoded_bytes());
        self.root.join("hashes").join(format!("{key}.json"))
    }

    /// The blob for `d`, if it is in the cache.
    pub(crate) async fn find_blob(&self, d: &Digest) -> Option<PathBuf> {
        let path = self.blob_path(d);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        meta.is_file().then_some(path)
    }

    /// Takes the exclusive lock for `d`, polling with back-off so that the
    /// wait can be cancelled.
    pub(crate) async fn lock(
        &self,
        d: &Digest,
        throttle: &Throttle,
        cancel: &CancellationToken,
    ) -> Result<BlobLock, FetchError> {
        let path = self.lock_path(d);
        let file = open_lock_file(&path).await?;
        let mut delay = LOCK_POLL_FIRST;
        let mut told = false;
        while !try_lock(&file, &path)? {
            if !told {
                tracing::info!(digest = %d, "waiting for another download of the same file");
                throttle.message(format!("waiting for another download of {d}"));
                told = true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(FetchError::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(LOCK_POLL_MAX);
        }
        Ok(BlobLock { _file: file })
    }

    /// Makes the verified file at `from` read-only and renames it to the
    /// blob path of `d` (atomically, same file system).
    pub(crate) async fn install(&self, from: &Path, d: &Digest) -> Result<PathBuf, FetchError> {
        let to = self.blob_path(d);
        let dir = parent(&to);
        create_dir(dir).await?;
        make_read_only(from).await?;
        tokio::fs::rename(from, &to)
            .await
            .map_err(|e| FetchError::io("move the download into the cache at", &to, e))?;
        sync_dir(dir).await;
        Ok(to)
    }
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

pub(crate) async fn create_dir(dir: &Path) -> Result<(), FetchError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| FetchError::io("create directory", dir, e))
}

async fn open_lock_file(path: &Path) -> Result<std::fs::File, FetchError> {
    create_dir(parent(path)).await?;
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .await
        .map_err(|e| FetchError::io("open lock file", path, e))?;
    Ok(file.into_std().await)
}

/// `Ok(false)` when another process or task holds the lock.
fn try_lock(file: &std::fs::File, path: &Path) -> Result<bool, FetchError> {
    match fs4::FileExt::try_lock(file) {
        Ok(()) => Ok(true),
        Err(fs4::TryLockError::WouldBlock) => Ok(false),
        Err(fs4::TryLockError::Error(e)) => Err(FetchError::io("lock", path, e)),
    }
}

async fn make_read_only(path: &Path) -> Result<(), FetchError> {
    let perms = read_only_permissions(path).await?;
    tokio::fs::set_permissions(path, perms).await.map_err(|e| FetchError::io("make read-only", path, e))
}

#[cfg(unix)]
async fn read_only_permissions(_path: &Path) -> Result<std::fs::Permissions, FetchError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::Permissions::from_mode(0o444))
}

#[cfg(not(unix))]
async fn read_only_permissions(path: &Path) -> Result<std::fs::Permissions, FetchError> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| FetchError::io("read metadata of", path, e))?;
    let mut perms = meta.permissions();
    perms.set_readonly(true);
    Ok(perms)
}

/// Persists a rename; failure only weakens crash safety, so it is logged.
async fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        let owned = dir.to_path_buf();
        let sync = move || std::fs::File::open(&owned)?.sync_all();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(sync).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not fsync cache directory");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}
