//! HTTP downloads: resume with `Range`, retry transient failures with
//! back-off, hash while streaming, cancel promptly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{Client, Response, StatusCode, Url};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::checksum::{Digest, DigestAlgo, Hasher};
use super::error::{FetchError, TransientError};
use super::local::hash_to_end;
use super::progress::Throttle;

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// Pause after the first failure; doubled after each further one.
    pub first_delay: Duration,
    /// Upper bound of the pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, first_delay: Duration::from_millis(500), max_delay: Duration::from_secs(8) }
    }
}

impl RetryPolicy {
    fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// How one attempt failed.
pub(crate) enum Failure {
    Transient(TransientError),
    Fatal(FetchError),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fatal(e)
    }
}

/// Counts failures and sleeps between attempts.
pub(crate) struct Retry<'a> {
    policy: &'a RetryPolicy,
    url: &'a Url,
    failures: u32,
}

impl<'a> Retry<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy, url: &'a Url) -> Self {
        Retry { policy, url, failures: 0 }
    }

    /// Returns the error if it is fatal or the attempts are used up;
    /// otherwise waits before the next attempt.
    pub(crate) async fn after(
        &mut self,
        failure: Failure,
        throttle: &Throttle,
        cancel: &CancellationToken,
    ) -> Result<(), FetchError> {
        let cause = match failure {
            Failure::Fatal(e) => return Err(e),
            Failure::Transient(cause) => cause,
        };
        self.failures += 1;
        if self.failures >= self.policy.max_attempts {
            return Err(FetchError::GaveUp { url: self.url.to_string(), attempts: self.failures, last: cause });
        }
        let delay = self.policy.delay(self.failures);
        let why = error_chain(&cause);
        tracing::warn!(url = %self.url, attempt = self.failures, ?delay, "download failed, retrying: {why}");
        throttle.message(format!("retrying in {delay:?}: {why}"));
        tokio::select! {
            _ = cancel.cancelled() => Err(FetchError::Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// `error: cause: cause …` on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// A download in progress: the file being written and the running hash.
pub(crate) struct Partial {
    file: tokio::fs::File,
    path: PathBuf,
    hasher: Hasher,
    written: u64,
}

impl Partial {
    /// Opens (or creates) the partial file of an earlier run and hashes what
    /// it already holds (reported as a message only), so the download can
    /// continue from its end.
    pub(crate) async fn resume(
        path: &Path,
        algo: DigestAlgo,
        throttle: &Throttle,
        cancel: &CancellationToken,
    ) -> Result<Partial, FetchError> {
        let file = open_partial(path).await?;
        let len = file_len(&file, path).await?;
        if len > 0 {
            tracing::info!(path = %path.display(), bytes = len, "resuming an interrupted download");
            throttle.message(format!("checking {len} bytes downloaded earlier"));
        }
        let hashed = hash_to_end(file.into_std().await, Hasher::new(algo), None, cancel).await;
        match hashed {
            Ok(Some(done)) => Ok(Partial {
                file: tokio::fs::File::from_std(done.file),
                path: path.to_path_buf(),
                hasher: done.hasher,
                written: done.bytes,
            }),
            Ok(None) => Err(FetchError::Cancelled),
            Err(e) => Err(FetchError::io("read partial download", path, e)),
        }
    }

    /// Wraps a new, empty file.
    pub(crate) fn fresh(file: std::fs::File, path: &Path, algo: DigestAlgo) -> Partial {
        Partial {
            file: tokio::fs::File::from_std(file),
            path: path.to_path_buf(),
            hasher: Hasher::new(algo),
            written: 0,
        }
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Discards everything written so far.
    async fn reset(&mut self) -> Result<(), FetchError> {
        let path = &self.path;
        let err = |e| FetchError::io("truncate partial download", path, e);
        self.file.flush().await.map_err(err)?;
        self.file.set_len(0).await.map_err(err)?;
        self.file.seek(std::io::SeekFrom::Start(0)).await.map_err(err)?;
        self.hasher = Hasher::new(self.hasher.algo());
        self.written = 0;
        Ok(())
    }

    async fn append(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.file.write_all(chunk).await.map_err(|e| FetchError::io("write partial download", &self.path, e))?;
        self.hasher.update(chunk);
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Writes out buffered data (kept for a later resume).
    pub(crate) async fn flush(&mut self) -> Result<(), FetchError> {
        self.file.flush().await.map_err(|e| FetchError::io("write partial download", &self.path, e))
    }

    /// Flushes and fsyncs the file and returns the digest of its content.
    pub(crate) async fn finish(mut self) -> Result<Digest, FetchError> {
        self.flush().await?;
        self.file.sync_all().await.map_err(|e| FetchError::io("sync partial download", &self.path, e))?;
        Ok(self.hasher.finish())
    }
}

async fn open_partial(path: &Path) -> Result<tokio::fs::File, FetchError> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .await
        .map_err(|e| FetchError::io("open partial download", path, e))
}

async fn file_len(file: &tokio::fs::File, path: &Path) -> Result<u64, FetchError> {
    let meta = file.metadata().await.map_err(|e| FetchError::io("read metadata of", path, e))?;
    Ok(meta.len())
}

/// One HTTP download into a [`Partial`], with its retries.
pub(crate) struct Download<'a> {
    pub client: &'a Client,
    pub policy: &'a RetryPolicy,
    pub url: &'a Url,
    pub label: &'a str,
}

impl Download<'_> {
    /// Downloads the rest of the file into `partial`; returns the bytes
    /// received over the network (restarts included).
    pub(crate) async fn run(
        &self,
        partial: &mut Partial,
        throttle: &mut Throttle,
        cancel: &CancellationToken,
    ) -> Result<u64, FetchError> {
        let mut retry = Retry::new(self.policy, self.url);
        let mut received = 0;
        loop {
            let outcome = self.attempt(partial, &mut received, throttle, cancel).await;
            throttle.flush();
            match outcome {
                Ok(()) => return Ok(received),
                Err(failure) => retry.after(failure, throttle, cancel).await?,
            }
        }
    }

    async fn attempt(
        &self,
        partial: &mut Partial,
        received: &mut u64,
        throttle: &mut Throttle,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let resp = send(self.client, self.url, partial.written, cancel).await?;
        let total = self.accept(&resp, partial, throttle).await?;
        throttle.started(self.label, total, partial.written);
        let mut body = resp.bytes_stream();
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    partial.flush().await?;
                    return Err(FetchError::Cancelled.into());
                }
                next = body.next() => next,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(classify)?;
            partial.append(&chunk).await?;
            *received += chunk.len() as u64;
            throttle.advance(chunk.len() as u64);
        }
        check_complete(total, partial.written)
    }

    /// Decides from the status what the body continues; returns the full size
    /// if known.
    async fn accept(
        &self,
        resp: &Response,
        partial: &mut Partial,
        throttle: &Throttle,
    ) -> Result<Option<u64>, Failure> {
        let status = resp.status();
        if status == StatusCode::PARTIAL_CONTENT {
            return accept_range(resp, partial).await;
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && partial.written > 0 {
            partial.reset().await?;
            return Err(Failure::Transient(TransientError::Status(status)));
        }
        check_status(self.url, status)?;
        if partial.written > 0 {
            throttle.message("server does not resume downloads; starting over".to_string());
            partial.reset().await?;
        }
        Ok(resp.content_length())
    }
}

async fn accept_range(resp: &Response, partial: &mut Partial) -> Result<Option<u64>, Failure> {
    let range = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
    let (start, total) = range.and_then(parse_content_range).unwrap_or((u64::MAX, None));
    let expected = partial.written;
    if start != expected {
        partial.reset().await?;
        let got = start;
        return Err(Failure::Transient(TransientError::BadRange { expected, got }));
    }
    Ok(total.or_else(|| resp.content_length().map(|n| n + expected)))
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

fn check_complete(total: Option<u64>, written: u64) -> Result<(), Failure> {
    match total {
        Some(expected) if written != expected => {
            let got = written;
            Err(Failure::Transient(TransientError::Incomplete { expected, got }))
        }
        _ => Ok(()),
    }
}

/// Sends a GET (from byte `from` on, if not zero), cancellably.
pub(crate) async fn send(
    client: &Client,
    url: &Url,
    from: u64,
    cancel: &CancellationToken,
) -> Result<Response, Failure> {
    let mut req = client.get(url.clone());
    if from > 0 {
        req = req.header(RANGE, format!("bytes={from}-"));
    }
    tokio::select! {
        _ = cancel.cancelled() => Err(FetchError::Cancelled.into()),
        resp = req.send() => resp.map_err(classify),
    }
}

/// Success, or whether a status is worth retrying.
pub(crate) fn check_status(url: &Url, status: StatusCode) -> Result<(), Failure> {
    let retry =
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if status.is_success() && status != StatusCode::PARTIAL_CONTENT {
        Ok(())
    } else if retry {
        Err(Failure::Transient(TransientError::Status(status)))
    } else {
        Err(Failure::Fatal(FetchError::HttpStatus { url: url.to_string(), status }))
    }
}

/// Network trouble is transient; a malformed request or a redirect loop is not.
pub(crate) fn classify(e: reqwest::Error) -> Failure {
    let transient = e.is_connect() || e.is_timeout() || e.is_body() || e.is_decode() || e.is_request();
    if transient && !e.is_builder() && !e.is_redirect() {
        return Failure::Transient(TransientError::Network(e));
    }
    let url = e.url().map_or_else(String::new, |u| u.to_string());
    Failure::Fatal(FetchError::Request { url, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, Some(100))));
        assert_eq!(parse_content_range("bytes 10-99/*"), Some((10, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn back_off_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(3), Duration::from_secs(2));
        assert_eq!(p.delay(40), Duration::from_secs(8));
    }
}
