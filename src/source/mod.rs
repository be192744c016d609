//! Fetching build sources (ISOs, cloud images) into a verified,
//! content-addressed cache.
//!
//! * HTTP(S) sources are downloaded into `CACHE/partial/`, hashed while
//!   streaming, verified, and renamed into `CACHE/blobs/<algo>/<hex>`
//!   (read-only). A cached digest is reused without touching the network.
//! * Interrupted downloads resume with `Range`; transient failures are retried
//!   with exponential back-off.
//! * Local paths and `file://` URLs are hashed in place, never copied; their
//!   digests are memoised by size, mtime and inode.
//! * Checksums are `sha256:<hex>`, `sha512:<hex>`, `file:<checksum list>` or
//!   `none`.

mod cache;
mod checksum;
mod download;
mod error;
mod list;
mod local;
mod location;
mod progress;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Client, Url};
use tokio_util::sync::CancellationToken;

pub use checksum::{Checksum, ChecksumParseError, Digest, DigestAlgo, ListLookup, lookup_in_list};
pub use download::RetryPolicy;
pub use error::{FetchError, TransientError};
pub use list::CHECKSUM_LIST_LIMIT;
pub use location::Location;
pub use progress::{ProgressEvent, ProgressFn};

use cache::Cache;
use download::{Download, Partial};
use local::{LocalSource, fetch_local};
use progress::Throttle;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A fetched source, ready to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The cached blob (HTTP) or the file itself (local, canonical path).
    pub path: PathBuf,
    /// Digest of the content (computed, and equal to the expected one if any).
    pub digest: Digest,
    /// HTTP: served from the cache without downloading. Local: the digest was
    /// taken from the memo without reading the file.
    pub cache_hit: bool,
    /// Bytes received over the network by this call.
    pub bytes_downloaded: u64,
    /// The URL or path as given.
    pub source: String,
}

/// Downloads and verifies sources into a cache directory.
pub struct Fetcher {
    client: Client,
    cache: Cache,
    progress: ProgressFn,
    retry: RetryPolicy,
}

impl Fetcher {
    /// A fetcher using `cache_dir` (created when first needed).
    pub fn new(cache_dir: PathBuf, progress: ProgressFn) -> Result<Self, FetchError> {
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("imgbuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Fetcher { client, cache: Cache::new(cache_dir), progress, retry: RetryPolicy::default() })
    }

    /// Replaces the retry policy (default: 5 attempts, 0.5 s doubling to 8 s).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        self.cache.root()
    }

    /// `$IMGBUILD_CACHE_DIR`, else `$XDG_CACHE_HOME/imgbuild`, else
    /// `$HOME/.cache/imgbuild`, else `imgbuild-cache` in the temp directory.
    pub fn default_cache_dir() -> PathBuf {
        let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(dir) = var("IMGBUILD_CACHE_DIR") {
            return dir;
        }
        if let Some(dir) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
            return dir.join("imgbuild");
        }
        match var("HOME") {
            Some(home) => home.join(".cache").join("imgbuild"),
            None => std::env::temp_dir().join("imgbuild-cache"),
        }
    }

    /// Fetches `url` (relative paths against `base_dir`) and verifies it
    /// against `checksum`.
    pub async fn fetch(
        &self,
        url: &str,
        checksum: &Checksum,
        base_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<Fetched, FetchError> {
        let location = Location::parse(url, base_dir)?;
        let expected = self.resolve(&location, checksum, base_dir, cancel).await?;
        let mut throttle = Throttle::new(self.progress.clone());
        match location {
            Location::File(path) => {
                let src = LocalSource { given: url.trim(), path: &path, expected };
                fetch_local(&self.cache, src, &mut throttle, cancel).await
            }
            Location::Http(u) => self.fetch_http(&u, url.trim(), expected, &mut throttle, cancel).await,
        }
    }

    /// The digest a source must have: the given one, the one from a checksum
    /// list, or `None` for `none`. Reads the list every time (never cached).
    pub async fn resolve_checksum(
        &self,
        url: &str,
        checksum: &Checksum,
        base_dir: &Path,
    ) -> Result<Option<Digest>, FetchError> {
        let location = Location::parse(url, base_dir)?;
        let never = CancellationToken::new();
        self.resolve(&location, checksum, base_dir, &never).await
    }

    async fn resolve(
        &self,
        source: &Location,
        checksum: &Checksum,
        base_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<Option<Digest>, FetchError> {
        match checksum {
            Checksum::Digest(d) => Ok(Some(d.clone())),
            Checksum::None => Ok(None),
            Checksum::File(list) => self.digest_from_list(source, list, base_dir, cancel).await.map(Some),
        }
    }

    async fn digest_from_list(
        &self,
        source: &Location,
        list: &str,
        base_dir: &Path,
        cancel: &CancellationToken,
    ) -> Result<Digest, FetchError> {
        let file_name = source.file_name().ok_or_else(|| FetchError::NoFileName { url: source.to_string() })?;
        let list = Location::parse(list, base_dir)?;
        let throttle = Throttle::new(self.progress.clone());
        let text = list::read_list(&self.client, &self.retry, &list, &throttle, cancel).await?;
        match lookup_in_list(&text, &file_name) {
            ListLookup::Found(d) => Ok(d),
            ListLookup::Missing { names, listed } => {
                Err(FetchError::ChecksumNotListed { list: list.to_string(), file_name, names, listed })
            }
        }
    }

    async fn fetch_http(
        &self,
        url: &Url,
        given: &str,
        expected: Option<Digest>,
        throttle: &mut Throttle,
        cancel: &CancellationToken,
    ) -> Result<Fetched, FetchError> {
        let label = Location::Http(url.clone()).file_name().unwrap_or_else(|| url.to_string());
        let download = Download { client: &self.client, policy: &self.retry, url, label: &label };
        let (path, digest, hit, bytes) = match expected {
            Some(d) => self.fetch_verified(&download, d, throttle, cancel).await?,
            None => self.fetch_unverified(&download, throttle, cancel).await?,
        };
        Ok(Fetched { path, digest, cache_hit: hit, bytes_downloaded: bytes, source: given.to_string() })
    }

    /// Returns (blob path, digest, cache hit, bytes downloaded).
    async fn fetch_verified(
        &self,
        download: &Download<'_>,
        expected: Digest,
        throttle: &mut Throttle,
        cancel: &CancellationToken,
    ) -> Result<(PathBuf, Digest, bool, u64), FetchError> {
        if let Some(path) = self.cached(&expected, throttle).await {
            return Ok((path, expected, true, 0));
        }
        let _lock = self.cache.lock(&expected, throttle, cancel).await?;
        if let Some(path) = self.cached(&expected, throttle).await {
            return Ok((path, expected, true, 0));
        }
        cache::create_dir(&self.cache.partial_dir()).await?;
        let part_path = self.cache.partial_path(&expected);
        let mut partial = Partial::resume(&part_path, expected.algo, throttle, cancel).await?;
        let received = match download.run(&mut partial, throttle, cancel).await {
            Ok(n) => n,
            Err(e) => return Err(keep_partial_if_useful(partial, &part_path, e, throttle).await),
        };
        let actual = partial.finish().await?;
        throttle.finished();
        if actual != expected {
            remove_quietly(&part_path).await;
            return Err(mismatch(download.url, expected, actual));
        }
        let path = self.cache.install(&part_path, &expected).await?;
        Ok((path, expected, false, received))
    }

    async fn cached(&self, digest: &Digest, throttle: &Throttle) -> Option<PathBuf> {
        let path = self.cache.find_blob(digest).await?;
        tracing::debug!(%digest, path = %path.display(), "cache hit");
        throttle.message(format!("using cached {digest}"));
        Some(path)
    }

    /// Checksum `none`: download to a temporary partial every time, then key
    /// the blob by its SHA-256.
    async fn fetch_unverified(
        &self,
        download: &Download<'_>,
        throttle: &mut Throttle,
        cancel: &CancellationToken,
    ) -> Result<(PathBuf, Digest, bool, u64), FetchError> {
        let dir = self.cache.partial_dir();
        cache::create_dir(&dir).await?;
        let temp = tempfile::Builder::new()
            .prefix("unverified-")
            .suffix(".part")
            .tempfile_in(&dir)
            .map_err(|e| FetchError::io("create a temporary file in", &dir, e))?;
        let (file, temp_path) = temp.into_parts();
        let mut partial = Partial::fresh(file, &temp_path, DigestAlgo::Sha256);
        let received = download.run(&mut partial, throttle, cancel).await?;
        let digest = partial.finish().await?;
        throttle.finished();
        let path = match self.cache.find_blob(&digest).await {
            Some(existing) => existing,
            None => self.cache.install(&temp_path, &digest).await?,
        };
        Ok((path, digest, false, received))
    }
}

/// On failure, an empty partial is removed; a non-empty one stays for
/// resuming (and the user is told so: the next run is not a fresh start).
/// It is never used before its digest is checked.
async fn keep_partial_if_useful(mut partial: Partial, path: &Path, err: FetchError, throttle: &Throttle) -> FetchError {
    if let Err(e) = partial.flush().await {
        tracing::debug!(error = %e, "could not flush partial download");
    }
    match partial.written() {
        0 => {
            drop(partial);
            remove_quietly(path).await;
        }
        kept if !err.is_cancelled() => throttle.message(format!(
            "kept the {kept} bytes received in {}; the next run resumes the download from there",
            path.display()
        )),
        _ => {}
    }
    err
}

async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove partial download");
    }
}

fn mismatch(url: &Url, expected: Digest, actual: Digest) -> FetchError {
    FetchError::Mismatch { source_name: url.to_string(), expected, actual }
}
