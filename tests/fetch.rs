//! Fetcher tests against a real HTTP server on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imgbuild::source::{
    Checksum, Digest, DigestAlgo, FetchError, Fetched, Fetcher, ProgressEvent, ProgressFn, RetryPolicy,
};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use server::{Route, TestServer};

#[path = "common/http_server.rs"]
mod server;

// ----------------------------------------------------------------------------
// helpers

fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256(d: &[u8]) -> Digest {
    Digest::new(DigestAlgo::Sha256, &hex::encode(sha2::Sha256::digest(d))).unwrap()
}

fn sha512(d: &[u8]) -> Digest {
    Digest::new(DigestAlgo::Sha512, &hex::encode(sha2::Sha512::digest(d))).unwrap()
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<ProgressEvent>>>);

impl Events {
    fn sink(&self) -> ProgressFn {
        let events = self.0.clone();
        Arc::new(move |e| events.lock().unwrap().push(e))
    }

    fn take(&self) -> Vec<ProgressEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn advanced(events: &[ProgressEvent]) -> (usize, u64) {
    let bytes: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::Advanced { bytes } => Some(*bytes),
            _ => None,
        })
        .collect();
    (bytes.len(), bytes.iter().sum())
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy { max_attempts: 5, first_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) }
}

fn fetcher(cache: &Path, events: &Events) -> Fetcher {
    Fetcher::new(cache.to_path_buf(), events.sink()).unwrap().with_retry_policy(fast_retries())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_in(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn digest_checksum(d: &Digest) -> Checksum {
    Checksum::Digest(d.clone())
}

async fn fetch(f: &Fetcher, url: &str, checksum: &Checksum) -> Result<Fetched, FetchError> {
    f.fetch(url, checksum, Path::new("/"), &CancellationToken::new()).await
}

// ----------------------------------------------------------------------------
// HTTP: verification

#[tokio::test]
async fn good_sha256_downloads_into_read_only_blob() {
    let server = TestServer::start().await;
    let body = data(3 * 1024 * 1024 + 17, 1);
    server.add("/img/disk.iso", Route::new(body.clone()));
    let cache = tempfile::tempdir().unwrap();
    let events = Events::default();
    let f = fetcher(cache.path(), &events);
    let want = sha256(&body);

    let got = fetch(&f, &server.url("/img/disk.iso"), &digest_checksum(&want)).await.unwrap();

    assert_eq!(got.digest, want);
    assert!(!got.cache_hit);
    assert_eq!(got.bytes_downloaded, body.len() as u64);
    let blob = cache.path().join("blobs/sha256").join(&want.hex);
    assert_eq!(got.path, blob);
    assert_eq!(std::fs::read(&blob).unwrap(), body);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&blob).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
    }
    assert!(files_in(&cache.path().join("partial")).is_empty());
    let events = events.take();
    assert!(matches!(
        &events[0],
        ProgressEvent::Started { label, total: Some(t), resumed_from: 0 }
            if label == "disk.iso" && *t == body.len() as u64
    ));
    let (count, sum) = advanced(&events);
    assert_eq!(sum, body.len() as u64);
    assert!(count < 20, "progress not throttled: {count} Advanced events");
    assert_eq!(events.last(), Some(&ProgressEvent::Finished));
    server.stop().await;
}

#[tokio::test]
async fn good_sha512_downloads() {
    let server = TestServer::start().await;
    let body = data(100_000, 2);
    server.add("/a.img", Route::new(body.clone()));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let want = sha512(&body);

    let got = fetch(&f, &server.url("/a.img"), &digest_checksum(&want)).await.unwrap();

    assert_eq!(got.digest, want);
    assert_eq!(got.path, cache.path().join("blobs/sha512").join(&want.hex));
    assert_eq!(std::fs::read(&got.path).unwrap(), body);
    server.stop().await;
}

#[tokio::test]
async fn mismatch_names_both_digests_and_leaves_nothing() {
    let server = TestServer::start().await;
    let body = data(200_000, 3);
    server.add("/a.img", Route::new(body.clone()));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let wrong = sha256(b"something else");
    let url = server.url("/a.img");

    let err = fetch(&f, &url, &digest_checksum(&wrong)).await.unwrap_err();

    assert!(matches!(err, FetchError::Mismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert_eq!(msg, format!("checksum mismatch for {url}: expected {wrong}, got {}", sha256(&body)));
    assert!(files_in(&cache.path().join("blobs")).is_empty());
    assert!(files_in(&cache.path().join("partial")).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn checksum_none_downloads_and_keys_by_sha256() {
    let server = TestServer::start().await;
    let body = data(50_000, 4);
    server.add("/x.raw", Route::new(body.clone()));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());

    let first = fetch(&f, &server.url("/x.raw"), &Checksum::None).await.unwrap();
    let second = fetch(&f, &server.url("/x.raw"), &Checksum::None).await.unwrap();

    assert_eq!(first.digest, sha256(&body));
    assert_eq!(first.path, cache.path().join("blobs/sha256").join(&first.digest.hex));
    assert_eq!(second.path, first.path);
    assert_eq!(server.full_gets(), 2, "`none` downloads every time");
    assert!(files_in(&cache.path().join("partial")).is_empty());
    server.stop().await;
}

// ----------------------------------------------------------------------------
// HTTP: checksum lists

#[tokio::test]
async fn gnu_checksum_list_over_http() {
    let server = TestServer::start().await;
    let body = data(70_000, 5);
    let want = sha256(&body);
    server.add("/rel/my%20image.iso", Route::new(body.clone()));
    let list = format!("{}  other.iso\n{} *./my image.iso\n", sha256(b"x").hex, want.hex.to_uppercase());
    server.add("/rel/SHA256SUMS", Route::new(list));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let checksum: Checksum = format!("file:{}", server.url("/rel/SHA256SUMS")).parse().unwrap();
    let url = server.url("/rel/my%20image.iso");

    let resolved = f.resolve_checksum(&url, &checksum, Path::new("/")).await.unwrap();
    let got = fetch(&f, &url, &checksum).await.unwrap();

    assert_eq!(resolved, Some(want.clone()));
    assert_eq!(got.digest, want);
    server.stop().await;
}

#[tokio::test]
async fn bsd_checksum_list_over_http() {
    let server = TestServer::start().await;
    let body = data(70_000, 6);
    let want = sha512(&body);
    server.add("/disk.qcow2", Route::new(body.clone()));
    let list = format!("SHA512 (other.qcow2) = {}\nSHA512 (disk.qcow2) = {}\n", sha512(b"x").hex, want.hex);
    server.add("/CHECKSUM", Route::new(list));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let checksum = Checksum::File(server.url("/CHECKSUM"));

    let got = fetch(&f, &server.url("/disk.qcow2"), &checksum).await.unwrap();

    assert_eq!(got.digest, want);
    assert_eq!(got.path, cache.path().join("blobs/sha512").join(&want.hex));
    server.stop().await;
}

#[tokio::test]
async fn checksum_list_without_the_file_is_an_error() {
    let server = TestServer::start().await;
    server.add("/disk.iso", Route::new(data(1000, 7)));
    let names: String = (1..=7).map(|i| format!("{}  f{i}.iso\n", sha256(&[i]).hex)).collect();
    server.add("/SHA256SUMS", Route::new(names));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let list_url = server.url("/SHA256SUMS");

    let err = fetch(&f, &server.url("/disk.iso"), &Checksum::File(list_url.clone())).await.unwrap_err();

    assert!(matches!(err, FetchError::ChecksumNotListed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "checksum list {list_url} has no entry for `disk.iso` \
             (it lists `f1.iso`, `f2.iso`, `f3.iso`, `f4.iso`, `f5.iso` and 2 more)"
        )
    );
    assert_eq!(server.requests(), 1, "the image itself was not requested");
    server.stop().await;
}

#[tokio::test]
async fn local_checksum_list_relative_to_template_dir() {
    let server = TestServer::start().await;
    let body = data(10_000, 8);
    server.add("/a.iso", Route::new(body.clone()));
    let tmpl = tempfile::tempdir().unwrap();
    std::fs::write(tmpl.path().join("SUMS"), format!("{}  a.iso\n", sha256(&body).hex)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let checksum: Checksum = "file:SUMS".parse().unwrap();

    let got = f.fetch(&server.url("/a.iso"), &checksum, tmpl.path(), &CancellationToken::new()).await.unwrap();

    assert_eq!(got.digest, sha256(&body));
    server.stop().await;
}

// ----------------------------------------------------------------------------
// HTTP: cache, resume, concurrency, errors, cancellation

#[tokio::test]
async fn cache_hit_needs_no_network() {
    let server = TestServer::start().await;
    let body = data(300_000, 9);
    let want = sha256(&body);
    server.add("/a.iso", Route::new(body.clone()));
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let first = fetch(&f, &server.url("/a.iso"), &digest_checksum(&want)).await.unwrap();
    server.stop().await;
    let other = TestServer::start().await;
    let stopped_too = TestServer::start().await;
    let dead_url = stopped_too.url("/mirror/renamed.iso");
    stopped_too.stop().await;

    let f2 = fetcher(cache.path(), &Events::default());
    let via_other = fetch(&f2, &other.url("/b.iso"), &digest_checksum(&want)).await.unwrap();
    let via_dead = fetch(&f2, &dead_url, &digest_checksum(&want)).await.unwrap();

    assert!(!first.cache_hit);
    for hit in [&via_other, &via_dead] {
        assert!(hit.cache_hit);
        assert_eq!(hit.bytes_downloaded, 0);
        assert_eq!(hit.path, first.path);
        assert_eq!(hit.digest, want);
    }
    assert_eq!(other.requests(), 0);
    other.stop().await;
}

#[tokio::test]
async fn interrupted_download_resumes_with_range() {
    let server = TestServer::start().await;
    let body = data(2 * 1024 * 1024 + 999, 10);
    let cut = 1024 * 1024 + 12_345;
    let route = Route { cut_first_after: Some(cut), ..Route::new(body.clone()) };
    server.add("/big.iso", route);
    let cache = tempfile::tempdir().unwrap();
    let events = Events::default();
    let f = fetcher(cache.path(), &events);
    let want = sha256(&body);

    let got = fetch(&f, &server.url("/big.iso"), &digest_checksum(&want)).await.unwrap();

    assert_eq!(got.digest, want);
    assert_eq!(std::fs::read(&got.path).unwrap(), body);
    assert_eq!(server.ranges(), vec![None, Some(format!("bytes={cut}-"))]);
    assert_eq!(server.bytes_sent(), body.len() as u64, "nothing sent twice");
    assert_eq!(got.bytes_downloaded, body.len() as u64);
    let events = events.take();
    let restarted =
        events.iter().any(|e| matches!(e, ProgressEvent::Started { resumed_from, .. } if *resumed_from == cut as u64));
    assert!(restarted, "{events:?}");
    server.stop().await;
}

#[tokio::test]
async fn server_without_range_support_restarts_from_zero() {
    let server = TestServer::start().await;
    let body = data(500_000, 11);
    let route = Route { cut_first_after: Some(100_000), no_ranges: true, ..Route::new(body.clone()) };
    server.add("/a.iso", route);
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let want = sha256(&body);

    let got = fetch(&f, &server.url("/a.iso"), &digest_checksum(&want)).await.unwrap();

    assert_eq!(got.digest, want);
    assert_eq!(server.full_gets(), 2);
    assert_eq!(got.bytes_downloaded, 100_000 + body.len() as u64);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_fetches_download_once() {
    let server = TestServer::start().await;
    let body = data(1024 * 1024, 12);
    let route = Route { chunk_delay: Some(Duration::from_millis(10)), ..Route::new(body.clone()) };
    server.add("/a.iso", route);
    let cache = tempfile::tempdir().unwrap();
    let want = sha256(&body);
    let events = Events::default();
    let a = Arc::new(fetcher(cache.path(), &events));
    let b = Arc::new(fetcher(cache.path(), &events));
    let url = server.url("/a.iso");

    let mut tasks = tokio::task::JoinSet::new();
    for f in [a.clone(), a, b.clone(), b] {
        let (url, checksum) = (url.clone(), digest_checksum(&want));
        tasks.spawn(async move { fetch(&f, &url, &checksum).await });
    }
    let results: Vec<Fetched> = tasks.join_all().await.into_iter().map(Result::unwrap).collect();

    assert_eq!(server.requests(), 1);
    assert_eq!(server.full_gets(), 1);
    assert_eq!(results.iter().filter(|r| !r.cache_hit).count(), 1);
    assert!(results.iter().all(|r| r.digest == want));
    assert_eq!(std::fs::read(&results[0].path).unwrap(), body);
    let waited = events
        .take()
        .into_iter()
        .any(|e| matches!(e, ProgressEvent::Message(m) if m.starts_with("waiting for another download")));
    assert!(waited, "the other fetches should have waited on the lock");
    server.stop().await;
}

#[tokio::test]
async fn connection_refused_is_retried_then_given_up() {
    let server = TestServer::start().await;
    let url = server.url("/a.iso");
    server.stop().await;
    let cache = tempfile::tempdir().unwrap();
    let events = Events::default();
    let f = fetcher(cache.path(), &events);

    let err = fetch(&f, &url, &Checksum::None).await.unwrap_err();

    assert!(matches!(err, FetchError::GaveUp { attempts: 5, .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("could not download {url}: gave up after 5 attempts"));
    let retries = events
        .take()
        .into_iter()
        .filter(|e| matches!(e, ProgressEvent::Message(m) if m.starts_with("retrying")))
        .count();
    assert_eq!(retries, 4);
    assert!(files_in(&cache.path().join("partial")).is_empty());
}

#[tokio::test]
async fn not_found_is_permanent() {
    let server = TestServer::start().await;
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let url = server.url("/missing.iso");

    let err = fetch(&f, &url, &digest_checksum(&sha256(b"x"))).await.unwrap_err();

    match &err {
        FetchError::HttpStatus { status, .. } => assert_eq!(status.as_u16(), 404),
        other => panic!("expected HttpStatus, got {other:?}"),
    }
    assert_eq!(err.to_string(), format!("{url} answered HTTP 404 Not Found"));
    assert_eq!(server.requests(), 1, "no retries");
    assert!(files_in(&cache.path().join("partial")).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_then_given_up() {
    let server = TestServer::start().await;
    let body = data(10_000, 13);
    let flaky = Route { fail_first: 2, ..Route::new(body.clone()) };
    server.add("/flaky.iso", flaky);
    let broken = Route { fail_first: usize::MAX, ..Route::new(body.clone()) };
    server.add("/broken.iso", broken);
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());

    let ok = fetch(&f, &server.url("/flaky.iso"), &digest_checksum(&sha256(&body))).await;
    let err = fetch(&f, &server.url("/broken.iso"), &Checksum::None).await.unwrap_err();

    assert_eq!(ok.unwrap().digest, sha256(&body));
    assert!(matches!(err, FetchError::GaveUp { attempts: 5, .. }), "{err:?}");
    let chain = std::error::Error::source(&err).map(ToString::to_string);
    assert_eq!(chain.as_deref(), Some("server answered HTTP 503 Service Unavailable"));
    assert_eq!(server.requests(), 3 + 5);
    server.stop().await;
}

#[tokio::test]
async fn cancellation_keeps_partial_for_resume() {
    let server = TestServer::start().await;
    let body = data(3 * 1024 * 1024, 14);
    let sent_first = 1024 * 1024 + 4096;
    let route = Route { hang_first_after: Some(sent_first), ..Route::new(body.clone()) };
    server.add("/a.iso", route);
    let cache = tempfile::tempdir().unwrap();
    let f = Arc::new(fetcher(cache.path(), &Events::default()));
    let want = sha256(&body);
    let partial = cache.path().join(format!("partial/sha256-{}.part", want.hex));
    let cancel = CancellationToken::new();

    let task = {
        let (f, url, cancel) = (f.clone(), server.url("/a.iso"), cancel.clone());
        let checksum = digest_checksum(&want);
        tokio::spawn(async move { f.fetch(&url, &checksum, Path::new("/"), &cancel).await })
    };
    wait_for_len(&partial, sent_first as u64).await;
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), task).await;

    let err = result.expect("cancel is prompt").unwrap().unwrap_err();
    assert!(matches!(err, FetchError::Cancelled), "{err:?}");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), sent_first as u64);
    assert!(files_in(&cache.path().join("blobs")).is_empty());

    let got = fetch(&f, &server.url("/a.iso"), &digest_checksum(&want)).await.unwrap();
    assert_eq!(got.digest, want);
    assert_eq!(got.bytes_downloaded, (body.len() - sent_first) as u64);
    assert_eq!(server.ranges()[1], Some(format!("bytes={sent_first}-")));
    assert!(!partial.exists());
    server.stop().await;
}

async fn wait_for_len(path: &Path, len: u64) {
    for _ in 0..500 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() >= len) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never reached {len} bytes", path.display());
}

// ----------------------------------------------------------------------------
// Local sources

#[tokio::test]
async fn local_file_is_hashed_in_place_and_memoised() {
    let tmpl = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmpl.path().join("img")).unwrap();
    let file = tmpl.path().join("img/disk.raw");
    let body = data(2 * 1024 * 1024, 15);
    std::fs::write(&file, &body).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let events = Events::default();
    let f = fetcher(cache.path(), &events);
    let cancel = CancellationToken::new();
    let want = sha256(&body);
    let checksum = digest_checksum(&want);

    let first = f.fetch("img/disk.raw", &checksum, tmpl.path(), &cancel).await.unwrap();
    let first_events = events.take();
    let second = f.fetch("img/disk.raw", &checksum, tmpl.path(), &cancel).await.unwrap();
    let second_events = events.take();

    let canonical = file.canonicalize().unwrap();
    assert_eq!(first.path, canonical, "not copied into the cache");
    assert!(files_in(&cache.path().join("blobs")).is_empty());
    assert_eq!(first.digest, want);
    assert!(!first.cache_hit);
    assert_eq!(advanced(&first_events).1, body.len() as u64);
    assert_eq!(second.digest, want);
    assert!(second.cache_hit);
    assert_eq!(advanced(&second_events), (0, 0), "second fetch read the file");
    let memos = files_in(&cache.path().join("hashes"));
    assert_eq!(memos.len(), 1);
    let memo: serde_json::Value = serde_json::from_slice(&std::fs::read(&memos[0]).unwrap()).unwrap();
    assert_eq!(memo["hex"], want.hex.as_str());
    assert_eq!(memo["size"], body.len() as u64);
}

#[tokio::test]
async fn local_memo_is_trusted_until_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.raw");
    std::fs::write(&file, b"version one").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let path = file.to_str().unwrap();
    fetch(&f, path, &Checksum::None).await.unwrap();

    // Plant a different digest in the memo: if it is returned, the file was not read.
    let memo_path = files_in(&cache.path().join("hashes")).remove(0);
    let mut memo: serde_json::Value = serde_json::from_slice(&std::fs::read(&memo_path).unwrap()).unwrap();
    let planted = sha256(b"planted");
    memo["hex"] = planted.hex.clone().into();
    std::fs::write(&memo_path, serde_json::to_vec(&memo).unwrap()).unwrap();
    let memoised = fetch(&f, path, &Checksum::None).await.unwrap();

    std::fs::write(&file, b"version two").unwrap();
    let changed = fetch(&f, path, &Checksum::None).await.unwrap();

    assert_eq!(memoised.digest, planted);
    assert!(memoised.cache_hit);
    assert_eq!(changed.digest, sha256(b"version two"));
    assert!(!changed.cache_hit);
}

#[tokio::test]
async fn local_file_url_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a b.img");
    std::fs::write(&file, b"content").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());
    let url = format!("file://{}", file.to_str().unwrap().replace(' ', "%20"));

    let ok = fetch(&f, &url, &digest_checksum(&sha256(b"content"))).await.unwrap();
    let err = fetch(&f, &url, &digest_checksum(&sha256(b"other"))).await.unwrap_err();

    assert_eq!(ok.path, file.canonicalize().unwrap());
    assert_eq!(
        err.to_string(),
        format!("checksum mismatch for {url}: expected {}, got {}", sha256(b"other"), sha256(b"content"))
    );
}

#[tokio::test]
async fn missing_local_file_names_both_forms() {
    let tmpl = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());

    let err = f.fetch("images/nope.iso", &Checksum::None, tmpl.path(), &CancellationToken::new()).await.unwrap_err();

    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    let full = tmpl.path().join("images/nope.iso");
    assert_eq!(err.to_string(), format!("source file `images/nope.iso` not found (looked for {})", full.display()));
}

#[tokio::test]
async fn unsupported_scheme_is_rejected() {
    let cache = tempfile::tempdir().unwrap();
    let f = fetcher(cache.path(), &Events::default());

    let err = fetch(&f, "ftp://example.com/a.iso", &Checksum::None).await.unwrap_err();

    assert!(matches!(err, FetchError::UnsupportedScheme { .. }), "{err:?}");
}
