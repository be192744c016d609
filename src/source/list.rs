//! Reading a checksum list (`file:` checksums). Lists are small and may change
//! upstream, so they are read every time and never cached.

use std::path::Path;

use futures::StreamExt;
use reqwest::{Client, Url};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::download::{Failure, Retry, RetryPolicy, check_status, classify, send};
use super::error::FetchError;
use super::location::Location;
use super::progress::Throttle;

/// Largest checksum list accepted.
pub const CHECKSUM_LIST_LIMIT: u64 = 4 * 1024 * 1024;

/// The text of the checksum list at `list`.
pub(crate) async fn read_list(
    client: &Client,
    policy: &RetryPolicy,
    list: &Location,
    throttle: &Throttle,
    cancel: &CancellationToken,
) -> Result<String, FetchError> {
    let bytes = match list {
        Location::Http(url) => get_with_retries(client, policy, url, throttle, cancel).await?,
        Location::File(path) => read_local(path).await?,
    };
    String::from_utf8(bytes).map_err(|_| FetchError::ChecksumListNotText { list: list.to_string() })
}

fn too_large(list: String) -> FetchError {
    FetchError::ChecksumListTooLarge { list, limit: CHECKSUM_LIST_LIMIT }
}

async fn read_local(path: &Path) -> Result<Vec<u8>, FetchError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| FetchError::io("open checksum list", path, e))?;
    let mut bytes = Vec::new();
    file.take(CHECKSUM_LIST_LIMIT + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| FetchError::io("read checksum list", path, e))?;
    if bytes.len() as u64 > CHECKSUM_LIST_LIMIT {
        return Err(too_large(path.display().to_string()));
    }
    Ok(bytes)
}

async fn get_with_retries(
    client: &Client,
    policy: &RetryPolicy,
    url: &Url,
    throttle: &Throttle,
    cancel: &CancellationToken,
) -> Result<Vec<u8>, FetchError> {
    let mut retry = Retry::new(policy, url);
    loop {
        match get_once(client, url, cancel).await {
            Ok(bytes) => return Ok(bytes),
            Err(failure) => retry.after(failure, throttle, cancel).await?,
        }
    }
}

async fn get_once(client: &Client, url: &Url, cancel: &CancellationToken) -> Result<Vec<u8>, Failure> {
    let resp = send(client, url, 0, cancel).await?;
    check_status(url, resp.status())?;
    if resp.content_length().is_some_and(|n| n > CHECKSUM_LIST_LIMIT) {
        return Err(too_large(url.to_string()).into());
    }
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(FetchError::Cancelled.into()),
            next = body.next() => next,
        };
        let Some(chunk) = next else { return Ok(bytes) };
        bytes.extend_from_slice(&chunk.map_err(classify)?);
        if bytes.len() as u64 > CHECKSUM_LIST_LIMIT {
            return Err(too_large(url.to_string()).into());
        }
    }
}
