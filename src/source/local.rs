//! Local sources: hashed in place (never copied), with a memo of the digest
//! keyed by path, size, mtime and inode.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Fetched;
use super::cache::{Cache, create_dir};
use super::checksum::{Digest, DigestAlgo, Hasher};
use super::error::FetchError;
use super::progress::Throttle;

const READ_BUF: usize = 1024 * 1024;

/// What `CACHE/hashes/<sha256 of path>.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Memo {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    inode: u64,
    algo: DigestAlgo,
    hex: String,
}

/// Identity of a file's content as far as metadata can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    inode: u64,
}

/// A local file to hash.
pub(crate) struct LocalSource<'a> {
    /// As written in the template.
    pub given: &'a str,
    /// Resolved against the template directory.
    pub path: &'a Path,
    pub expected: Option<Digest>,
}

pub(crate) async fn fetch_local(
    cache: &Cache,
    src: LocalSource<'_>,
    throttle: &mut Throttle,
    cancel: &CancellationToken,
) -> Result<Fetched, FetchError> {
    let canonical = canonicalize(src.given, src.path).await?;
    let algo = src.expected.as_ref().map_or(DigestAlgo::Sha256, |d| d.algo);
    let memo_path = cache.memo_path(&canonical);
    let memoised = read_memo(&memo_path, &canonical, algo).await;
    let (digest, memo_hit) = match memoised {
        Some(d) if src.expected.as_ref().is_none_or(|e| *e == d) => (d, true),
        _ => (hash_and_memo(cache, &canonical, algo, throttle, cancel).await?, false),
    };
    verify(src.given, src.expected.as_ref(), &digest)?;
    Ok(Fetched { path: canonical, digest, cache_hit: memo_hit, bytes_downloaded: 0, source: src.given.to_string() })
}

fn verify(given: &str, expected: Option<&Digest>, actual: &Digest) -> Result<(), FetchError> {
    match expected {
        Some(e) if e != actual => {
            Err(FetchError::Mismatch { source_name: given.to_string(), expected: e.clone(), actual: actual.clone() })
        }
        _ => Ok(()),
    }
}

async fn canonicalize(given: &str, path: &Path) -> Result<PathBuf, FetchError> {
    match tokio::fs::canonicalize(path).await {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(FetchError::NotFound { given: given.to_string(), path: path.to_path_buf() })
        }
        Err(e) => Err(FetchError::io("resolve path", path, e)),
    }
}

async fn stamp(path: &Path) -> Result<Stamp, FetchError> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| FetchError::io("read metadata of", path, e))?;
    if !meta.is_file() {
        return Err(FetchError::InvalidLocation {
            given: path.display().to_string(),
            reason: "not a regular file".to_string(),
        });
    }
    Ok(Stamp { size: meta.len(), mtime_ns: mtime_ns(&meta), inode: inode(&meta) })
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    let Ok(modified) = meta.modified() else {
        return 0;
    };
    match modified.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// The memoised digest, if the memo matches the file as it is now.
async fn read_memo(memo_path: &Path, file: &Path, algo: DigestAlgo) -> Option<Digest> {
    let now = stamp(file).await.ok()?;
    let text = tokio::fs::read(memo_path).await.ok()?;
    let memo: Memo = serde_json::from_slice(&text).ok()?;
    let same = memo.path == file && memo.algo == algo && memo_stamp(&memo) == now;
    same.then(|| Digest::new(algo, &memo.hex).ok()).flatten()
}

fn memo_stamp(m: &Memo) -> Stamp {
    Stamp { size: m.size, mtime_ns: m.mtime_ns, inode: m.inode }
}

async fn hash_and_memo(
    cache: &Cache,
    file: &Path,
    algo: DigestAlgo,
    throttle: &mut Throttle,
    cancel: &CancellationToken,
) -> Result<Digest, FetchError> {
    let before = stamp(file).await?;
    let label = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    throttle.started(&label, Some(before.size), 0);
    let digest = hash_file(file, algo, throttle, cancel).await?;
    throttle.finished();
    // Only memoise if the file did not change while it was read.
    if stamp(file).await? == before {
        write_memo(cache, file, before, &digest).await;
    }
    Ok(digest)
}

async fn hash_file(
    file: &Path,
    algo: DigestAlgo,
    throttle: &Throttle,
    cancel: &CancellationToken,
) -> Result<Digest, FetchError> {
    let opened = tokio::fs::File::open(file).await.map_err(|e| FetchError::io("open", file, e))?;
    let std_file = opened.into_std().await;
    let hashed = hash_to_end(std_file, Hasher::new(algo), Some(throttle.fork()), cancel).await;
    match hashed {
        Ok(Some(done)) => Ok(done.hasher.finish()),
        Ok(None) => Err(FetchError::Cancelled),
        Err(e) => Err(FetchError::io("read", file, e)),
    }
}

/// The result of [`hash_to_end`].
pub(crate) struct Hashed {
    pub hasher: Hasher,
    /// Bytes read.
    pub bytes: u64,
    /// The file, positioned at its end.
    pub file: std::fs::File,
}

/// Reads `file` from its current position to the end on a blocking thread,
/// feeding `hasher` and reporting `Advanced` progress if given a throttle.
/// `None` if cancelled.
pub(crate) async fn hash_to_end(
    file: std::fs::File,
    hasher: Hasher,
    mut throttle: Option<Throttle>,
    cancel: &CancellationToken,
) -> std::io::Result<Option<Hashed>> {
    let cancel = cancel.clone();
    let task = tokio::task::spawn_blocking(move || hash_blocking(file, hasher, throttle.as_mut(), &cancel));
    task.await.map_err(std::io::Error::other)?
}

fn hash_blocking(
    mut file: std::fs::File,
    mut hasher: Hasher,
    mut throttle: Option<&mut Throttle>,
    cancel: &CancellationToken,
) -> std::io::Result<Option<Hashed>> {
    let mut buf = vec![0u8; READ_BUF];
    let mut bytes = 0u64;
    loop {
        if cancel.is_cancelled() {
            return Ok(None);
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
        if let Some(t) = throttle.as_deref_mut() {
            t.advance(n as u64);
        }
    }
    if let Some(t) = throttle {
        t.flush();
    }
    Ok(Some(Hashed { hasher, bytes, file }))
}

async fn write_memo(cache: &Cache, file: &Path, stamp: Stamp, digest: &Digest) {
    let memo = Memo {
        path: file.to_path_buf(),
        size: stamp.size,
        mtime_ns: stamp.mtime_ns,
        inode: stamp.inode,
        algo: digest.algo,
        hex: digest.hex.clone(),
    };
    let memo_path = cache.memo_path(file);
    if let Err(e) = write_atomic(&memo_path, &memo).await {
        tracing::warn!(memo = %memo_path.display(), error = %e, "could not save the digest of a local file");
    }
}

async fn write_atomic(path: &Path, memo: &Memo) -> Result<(), FetchError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    create_dir(&dir).await?;
    let json = serde_json::to_vec_pretty(memo).map_err(|e| FetchError::io("encode", path, e.into()))?;
    let target = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || {
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut tmp, &json)?;
        tmp.persist(&target).map(|_| ()).map_err(|e| e.error)
    });
    match task.await {
        Ok(res) => res.map_err(|e| FetchError::io("write", path, e)),
        Err(e) => Err(FetchError::Task { what: format!("writing {}", path.display()), source: e }),
    }
}
