//! The S3 store against a real moto server: every test starts its own
//! moto server on a free loopback port (killed when the test ends).
//!
//! moto comes from `scripts/moto-server.sh install` (the venv
//! `${IMGBUILD_VENV:-~/.cache/imgbuild-venv}`), or `MOTO_SERVER=/path/to/moto_server`
//! (the venv's `python` beside it is used).
//!
//! moto checks the conditions of conditional writes (`If-None-Match`,
//! `If-Match`) and then writes, without a lock, on a threaded server: two
//! racing requests can both pass the check, which real S3 never allows. The
//! tests therefore run moto's own `moto_server` entry point with one patch
//! (`scripts/moto_serialized.py`, shared with the root crate's tests): each
//! request is handled under a global lock, so a conditional write is atomic
//! as it is in S3. Connections are still served in parallel.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::Region;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use imgbuild_aws::{Algo, ArtifactFile, InvalidInput, Problem, S3Error, S3Store, format_sums};
use imgbuild_store_format::MultiHasher;
use rand::{RngCore, SeedableRng};
use serde_json::{Value, json};

const REGION: &str = "eu-west-1";
const PREFIX: &str = "images/";
const MIB: u64 = 1 << 20;

// ------------------------------------------------------------------ moto

// The root package's launcher (patched moto_server, one per test, killed on drop).
#[path = "../../../tests/common/moto.rs"]
mod moto;
use moto::Moto;

// ------------------------------------------------------------- fixtures

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    imgbuild_aws::sdk_loader()
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "imgbuild-aws-tests"))
        .load()
        .await
}

/// A store on a fresh bucket of its own moto server.
async fn new_store(moto: &Moto, part_size: u64) -> S3Store {
    let sdk = sdk_config(&moto.url()).await;
    let store =
        S3Store::from_sdk_config(&sdk, "golden-images", PREFIX, true).unwrap().with_part_size(part_size).unwrap();
    create_bucket(&store).await;
    store
}

async fn create_bucket(store: &S3Store) {
    let location =
        CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(REGION)).build();
    store.client().create_bucket().bucket(store.bucket()).create_bucket_configuration(location).send().await.unwrap();
}

/// A file of `size` random bytes (seeded), and its digest.
fn random_file(dir: &Path, file_name: &str, size: u64, seed: u64) -> ArtifactFile {
    let path = dir.join(file_name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut hasher = MultiHasher::sha256_and(false);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill_bytes(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    out.flush().unwrap();
    ArtifactFile::new(path, file_name, hasher.finish().sha256())
}

fn sums_for(files: &[ArtifactFile]) -> Vec<(Algo, String)> {
    vec![(Algo::Sha256, format_sums(files.iter().map(|f| (f.file_name.as_str(), f.sha256.as_str()))))]
}

fn manifest_for(name: &str, version: &str, files: &[ArtifactFile]) -> Value {
    json!({
        "schema_version": 1,
        "name": name,
        "version": version,
        "created_at": "2026-01-01T00:00:00Z",
        "artifacts": files.iter().map(|f| json!({"file": f.file_name, "digests": {"sha256": f.sha256}})).collect::<Vec<_>>(),
    })
}

async fn publish(store: &S3Store, name: &str, version: &str, files: &[ArtifactFile]) -> Result<(), S3Error> {
    store.publish(name, version, files, &manifest_for(name, version, files), &sums_for(files)).await.map(|_| ())
}

/// Publishes one small file (single put).
async fn publish_small(store: &S3Store, dir: &Path, name: &str, version: &str) {
    let file = random_file(dir, &format!("{name}-{version}.img"), 1000, seed_of(version));
    publish(store, name, version, &[file]).await.unwrap();
}

fn seed_of(text: &str) -> u64 {
    text.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
}

async fn versions(store: &S3Store, name: &str) -> Vec<String> {
    match store.list_versions(name).await {
        Ok(list) => list.into_iter().map(|v| v.version).collect(),
        Err(S3Error::ImageNotFound { .. }) => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

async fn read_json(store: &S3Store, key: &str) -> Value {
    let out = store.client().get_object().bucket(store.bucket()).key(key).send().await.unwrap();
    serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap()
}

/// What a publisher killed after completing a file leaves: the object with
/// its metadata, and no manifest.
async fn put_leftover(store: &S3Store, key: &str, file: &ArtifactFile) {
    store
        .client()
        .put_object()
        .bucket(store.bucket())
        .key(key)
        .metadata("sha256", &file.sha256)
        .body(ByteStream::from_path(&file.path).await.unwrap())
        .send()
        .await
        .unwrap();
}

async fn keys_under(store: &S3Store, prefix: &str) -> Vec<String> {
    let out = store.client().list_objects_v2().bucket(store.bucket()).prefix(prefix).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect()
}

// ---------------------------------------------------- child publisher

const CHILD_ENV: &str = "IMGBUILD_AWS_TEST_CHILD";
const CHILD_PAUSE_ENV: &str = "IMGBUILD_AWS_TEST_CHILD_PAUSE";
const PAUSED_LINE: &str = "IMGBUILD_AWS_PAUSED";

/// Not a test: the publisher that other tests run as a child process (the
/// test binary re-running itself) so that they can race two processes or
/// SIGKILL one. Configured through the environment; uses `S3Store::new`,
/// i.e. the standard credential chain and `AWS_ENDPOINT_URL`.
#[test]
#[ignore = "run by other tests as a child process"]
fn child_publish() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    // bucket|version|part size|path|file name|sha256
    let fields: Vec<&str> = spec.split('|').collect();
    let [bucket, version, part_size, path, file_name, sha256] = fields[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let pause = std::env::var_os(CHILD_PAUSE_ENV).is_some();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store =
            S3Store::new(bucket, PREFIX, None, None).await.unwrap().with_part_size(part_size.parse().unwrap()).unwrap();
        let files = [ArtifactFile::new(path, file_name, sha256)];
        let progress: imgbuild_aws::Progress = Arc::new(move |done, total| {
            if pause && done > 0 && done < total {
                // Called from the publishing task: sleeping here stops the
                // publish after this part, before the upload can complete.
                eprintln!("{PAUSED_LINE} {done} {total}");
                std::thread::sleep(Duration::from_secs(60));
            }
        });
        let manifest = manifest_for("web", version, &files);
        match store.publish_with_progress("web", version, &files, &manifest, &sums_for(&files), Some(progress)).await {
            Ok(published) => eprintln!("CHILD_OK {}", published.url),
            Err(e) => panic!("CHILD_ERR already_exists={} {}", e.is_already_exists(), imgbuild_aws::error_chain(&e)),
        }
    });
}

fn child_command(moto: &Moto, store: &S3Store, version: &str, file: &ArtifactFile, part_size: u64) -> Command {
    let spec =
        format!("{}|{version}|{part_size}|{}|{}|{}", store.bucket(), file.path.display(), file.file_name, file.sha256);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_publish", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .env_remove(CHILD_PAUSE_ENV)
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", REGION)
        .env_remove("AWS_REGION")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env("AWS_CONFIG_FILE", "/nonexistent/imgbuild-aws-test-config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/imgbuild-aws-test-credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

// ----------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_publish_downloads_and_passes_sha256sum_c() {
    let moto = Moto::start();
    let store = new_store(&moto, 16 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    // 40 MiB with 16 MiB parts: three parts, the last one short.
    let disk = random_file(tmp.path(), "web-1.0.0.qcow2", 40 * MIB, 1);
    let notes = random_file(tmp.path(), "notes.txt", 3000, 2);
    let files = [disk.clone(), notes.clone()];
    let calls: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let seen = calls.clone();
    let progress: imgbuild_aws::Progress = Arc::new(move |done, total| seen.lock().unwrap().push((done, total)));
    let manifest = manifest_for("web", "1.0.0", &files);
    let published = store
        .publish_with_progress("web", "1.0.0", &files, &manifest, &sums_for(&files), Some(progress))
        .await
        .unwrap();
    assert_eq!(published.uploaded, ["notes.txt", "web-1.0.0.qcow2"]);
    assert!(published.reused.is_empty());
    assert_eq!(published.url, "s3://golden-images/images/web/1.0.0/");

    // Progress: monotonic, per part, ends at the total.
    let calls = calls.lock().unwrap().clone();
    assert!(calls.len() >= 3 + 3, "{calls:?}");
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1), "{calls:?}");
    let (done, total) = *calls.last().unwrap();
    assert_eq!(done, total);
    assert!(total > 40 * MIB && total == published.bytes_uploaded, "{total} vs {}", published.bytes_uploaded);

    // The layout of the local store.
    let mut keys = keys_under(&store, "").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "images/index.json",
            "images/web/1.0.0/SHA256SUMS",
            "images/web/1.0.0/manifest.json",
            "images/web/1.0.0/notes.txt",
            "images/web/1.0.0/web-1.0.0.qcow2",
            "images/web/channels.json",
        ]
    );
    let head = store
        .client()
        .head_object()
        .bucket(store.bucket())
        .key("images/web/1.0.0/web-1.0.0.qcow2")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap()["sha256"], disk.sha256, "x-amz-meta-sha256");
    assert_eq!(head.content_length(), Some((40 * MIB) as i64));
    let checked = store
        .client()
        .head_object()
        .bucket(store.bucket())
        .key("images/web/1.0.0/web-1.0.0.qcow2")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert!(checked.checksum_sha256().is_some(), "uploaded with SHA-256 part checksums");
    assert_eq!(read_json(&store, "images/web/channels.json").await, json!({"latest": "1.0.0"}));
    let index = read_json(&store, "images/index.json").await;
    assert_eq!(index["schema_version"], 1);
    assert_eq!(index["images"]["web"]["versions"], json!(["1.0.0"]));
    assert_eq!(store.manifest("web", "1.0.0").await.unwrap(), manifest);
    assert!(store.list_multipart_uploads().await.unwrap().is_empty());

    // Everything downloads, and coreutils agrees with SHA256SUMS.
    let down = tmp.path().join("download");
    let written = store.download("web", "1.0.0", &down).await.unwrap();
    assert_eq!(written.len(), 4);
    let out = Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(&down).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sha256sum -c: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("web-1.0.0.qcow2: OK") && stdout.contains("notes.txt: OK"), "{stdout}");
    assert!(std::fs::read(down.join("web-1.0.0.qcow2")).unwrap() == std::fs::read(&disk.path).unwrap());

    assert!(store.verify("web", "1.0.0").await.unwrap().is_ok());
    let listed = store.list_versions("web").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].channels, ["latest"]);
    assert!(listed[0].size > 40 * MIB && listed[0].published_at.is_some(), "{listed:?}");

    // Published versions are immutable: refused before any upload.
    let err = publish(&store, "web", "1.0.0", &files).await.unwrap_err();
    assert!(matches!(err, S3Error::VersionExists { .. }), "{err}");
    assert_eq!(err.to_string(), "web@1.0.0 already exists in s3://golden-images/images/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_published_twice_concurrently_has_one_winner() {
    let moto = Moto::start();
    let store = new_store(&moto, 5 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    // Round 1: identical content (e.g. a retried CI job); round 2: different
    // builds of the same version. Files of 12 MiB: multipart, three parts.
    for (round, version) in ["1.0.0", "2.0.0"].into_iter().enumerate() {
        let a = random_file(tmp.path(), &format!("a-{version}"), 12 * MIB, 10);
        let b = random_file(tmp.path(), &format!("b-{version}"), 12 * MIB, if round == 0 { 10 } else { 11 });
        let file_name = "disk.img";
        let a = ArtifactFile::new(a.path, file_name, a.sha256);
        let b = ArtifactFile::new(b.path, file_name, b.sha256);
        let (ra, rb) = tokio::join!(
            publish(&store, "web", version, std::slice::from_ref(&a)),
            publish(&store, "web", version, std::slice::from_ref(&b))
        );
        let (winner, loser) = match (&ra, &rb) {
            (Ok(()), Err(e)) => (&a, e),
            (Err(e), Ok(())) => (&b, e),
            _ => panic!("{version}: expected exactly one winner: {ra:?} / {rb:?}"),
        };
        assert!(loser.is_already_exists(), "{version}: {loser}");
        assert!(loser.to_string().contains("already exists"), "{version}: {loser}");
        let report = store.verify("web", version).await.unwrap();
        assert!(report.is_ok(), "{version}: {:?}", report.problems);
        let manifest = store.manifest("web", version).await.unwrap();
        assert_eq!(manifest["artifacts"][0]["digests"]["sha256"], winner.sha256.as_str());
        assert!(store.list_multipart_uploads().await.unwrap().is_empty(), "{version}");
    }
    assert_eq!(versions(&store, "web").await, ["1.0.0", "2.0.0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_version_published_by_two_processes_has_one_winner() {
    let moto = Moto::start();
    let store = new_store(&moto, 5 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    let a = random_file(tmp.path(), "a.img", 11 * MIB, 20);
    let b = random_file(tmp.path(), "b.img", 11 * MIB, 21);
    let a = ArtifactFile::new(a.path, "disk.img", a.sha256);
    let b = ArtifactFile::new(b.path, "disk.img", b.sha256);
    let children: Vec<Child> = [&a, &b]
        .into_iter()
        .map(|file| child_command(&moto, &store, "3.0.0", file, 5 * MIB).spawn().unwrap())
        .collect();
    let outputs: Vec<std::process::Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let stderr: Vec<String> = outputs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).collect();
    let winners: Vec<usize> = (0..2).filter(|i| outputs[*i].status.success()).collect();
    assert_eq!(winners.len(), 1, "exactly one process wins:\n{}\n---\n{}", stderr[0], stderr[1]);
    let (winner, loser) = (winners[0], 1 - winners[0]);
    assert!(stderr[winner].contains("CHILD_OK s3://golden-images/images/web/3.0.0/"), "{}", stderr[winner]);
    assert!(stderr[loser].contains("CHILD_ERR already_exists=true"), "{}", stderr[loser]);
    assert!(stderr[loser].contains("already exists"), "{}", stderr[loser]);
    let report = store.verify("web", "3.0.0").await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let winner_sha = [&a, &b][winner].sha256.as_str();
    assert_eq!(store.manifest("web", "3.0.0").await.unwrap()["artifacts"][0]["digests"]["sha256"], winner_sha);
    assert!(store.list_multipart_uploads().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_killed_mid_upload_leaves_no_version_and_cleanup_leaves_no_upload() {
    let moto = Moto::start();
    let store = new_store(&moto, 16 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    publish_small(&store, tmp.path(), "web", "1.0.0").await;
    let big = random_file(tmp.path(), "web-2.0.0.qcow2", 40 * MIB, 30);

    let mut child = child_command(&moto, &store, "2.0.0", &big, 16 * MIB).env(CHILD_PAUSE_ENV, "1").spawn().unwrap();
    let mut seen = String::new();
    let mut paused = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with(PAUSED_LINE) {
            paused = true;
            child.kill().unwrap(); // SIGKILL
            break;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(paused, "the child never reached its first part ({status}); stderr:\n{seen}");

    // No visible version; readers fall back as before.
    assert!(!store.exists("web", "2.0.0").await.unwrap());
    assert_eq!(versions(&store, "web").await, ["1.0.0"]);
    assert_eq!(store.resolve("web").await.unwrap().1, "1.0.0");
    assert!(matches!(store.manifest("web", "2.0.0").await, Err(S3Error::VersionNotFound { .. })));
    let uploads = store.list_multipart_uploads().await.unwrap();
    assert_eq!(uploads.len(), 1, "the dead publisher's upload: {uploads:?}");
    assert_eq!(uploads[0].0, "images/web/2.0.0/web-2.0.0.qcow2");

    // (moto reports every upload as initiated in 2010, so the age threshold
    // cannot be tested here; leftover objects' ages are, below.)
    let report = store.cleanup_stale_uploads(Duration::ZERO).await.unwrap();
    assert_eq!(report.aborted_uploads, ["images/web/2.0.0/web-2.0.0.qcow2"]);
    assert!(store.list_multipart_uploads().await.unwrap().is_empty(), "ListMultipartUploads is empty");
    let raw = store.client().list_multipart_uploads().bucket(store.bucket()).send().await.unwrap();
    assert!(raw.uploads().is_empty(), "{:?}", raw.uploads());

    // The version can be published now.
    publish(&store, "web", "2.0.0", std::slice::from_ref(&big)).await.unwrap();
    assert_eq!(versions(&store, "web").await, ["1.0.0", "2.0.0"]);
    assert!(store.verify("web", "2.0.0").await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_publish_aborts_its_multipart_upload() {
    let moto = Moto::start();
    let store = new_store(&moto, 5 * MIB).await.with_concurrency(2).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let big = random_file(tmp.path(), "disk.img", 30 * MIB, 40);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let progress: imgbuild_aws::Progress = Arc::new(move |done, _| {
        if done > 0
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    });
    let files = [big];
    let manifest = manifest_for("web", "1.0.0", &files);
    let sums = sums_for(&files);
    let publish = store.publish_with_progress("web", "1.0.0", &files, &manifest, &sums, Some(progress));
    tokio::select! {
        result = publish => panic!("the publish finished before it was cancelled: {result:?}"),
        _ = rx => {}
    }
    // The future is dropped: its guard spawned the abort.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let uploads = store.list_multipart_uploads().await.unwrap();
        if uploads.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still open: {uploads:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!store.exists("web", "1.0.0").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_does_not_match_its_digest_is_not_published() {
    let moto = Moto::start();
    let store = new_store(&moto, 5 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    for size in [12 * MIB, 1000] {
        let file = random_file(tmp.path(), "disk.img", size, 50);
        // Consistent lists, but the file on disk is not what they record.
        let wrong = ArtifactFile::new(&file.path, "disk.img", "0".repeat(64));
        let err = publish(&store, "web", "1.0.0", &[wrong]).await.unwrap_err();
        match &err {
            S3Error::DigestMismatch { path, actual, .. } => {
                assert_eq!(path, &file.path);
                assert_eq!(actual, &file.sha256);
            }
            other => panic!("{size}: {other}"),
        }
        assert!(err.to_string().contains("disk.img"), "{err}");
        assert!(store.list_multipart_uploads().await.unwrap().is_empty(), "{size}: the upload was aborted");
        assert!(keys_under(&store, "images/web/").await.is_empty(), "{size}");
    }
    // Inconsistent inputs are refused before anything is sent.
    let file = random_file(tmp.path(), "disk.img", 1000, 51);
    let sums = vec![(Algo::Sha256, format_sums([("disk.img", "1".repeat(64).as_str())]))];
    let err = store.publish("web", "1.0.0", &[file], &json!({}), &sums).await.unwrap_err();
    assert!(matches!(err, S3Error::InvalidArtifacts { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_resolve_prune_and_verify() {
    let moto = Moto::start();
    let store = new_store(&moto, 5 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    for version in ["1.0.0", "2025.01.02.1", "1.1.0", "2.0.0-rc.1", "2.0.0"] {
        publish_small(&store, tmp.path(), "web", version).await;
    }
    publish_small(&store, tmp.path(), "db", "0.1.0").await;
    // Listed in version order, not publish order; `latest` is the last publish.
    assert_eq!(versions(&store, "web").await, ["1.0.0", "1.1.0", "2.0.0-rc.1", "2.0.0", "2025.01.02.1"]);
    assert_eq!(store.resolve("web").await.unwrap(), ("web".to_string(), "2.0.0".to_string()));

    assert_eq!(store.promote("web", "1.0.0", "stable").await.unwrap(), None);
    assert_eq!(store.promote("web", "1.1.0", "stable").await.unwrap(), Some("1.0.0".to_string()));
    assert_eq!(store.resolve("web@stable").await.unwrap().1, "1.1.0");
    assert_eq!(store.resolve("web@2.0.0-rc.1").await.unwrap().1, "2.0.0-rc.1");
    assert_eq!(store.resolve("db").await.unwrap().1, "0.1.0");
    let err = store.resolve("web@beta").await.unwrap_err();
    assert_eq!(err.to_string(), "channel `beta` of image `web` is not set (set: latest, stable)");
    assert!(matches!(store.resolve("web@9.9.9").await, Err(S3Error::VersionNotFound { .. })));
    assert!(matches!(store.resolve("Web@x/y").await, Err(S3Error::Invalid(InvalidInput::Spec { .. }))));
    assert!(matches!(store.promote("web", "9.9.9", "stable").await, Err(S3Error::VersionNotFound { .. })));
    assert!(matches!(store.promote("web", "1.0.0", "Bad").await, Err(S3Error::Invalid(InvalidInput::Channel { .. }))));
    assert_eq!(read_json(&store, "images/web/channels.json").await, json!({"latest": "2.0.0", "stable": "1.1.0"}));

    // Concurrent promotes of different channels lose nothing (If-Match + retry).
    let promotes: Vec<_> = ["a", "b", "c", "d", "e", "f"].iter().map(|c| store.promote("web", "1.0.0", c)).collect();
    for result in futures::future::join_all(promotes).await {
        result.unwrap();
    }
    let channels = store.channels("web").await.unwrap();
    assert_eq!(channels.len(), 8, "{channels:?}");

    // Prune keeps the newest 1 plus every channel target (latest → 2.0.0,
    // stable → 1.1.0, a..f → 1.0.0).
    for c in ["a", "b", "c", "d", "e", "f"] {
        store.promote("web", "1.1.0", c).await.unwrap();
    }
    let removed = store.prune("web", 1).await.unwrap();
    assert_eq!(removed, ["1.0.0", "2.0.0-rc.1"]);
    assert_eq!(versions(&store, "web").await, ["1.1.0", "2.0.0", "2025.01.02.1"]);
    assert!(keys_under(&store, "images/web/1.0.0/").await.is_empty(), "objects of pruned versions are gone");
    let index = read_json(&store, "images/index.json").await;
    assert_eq!(index["images"]["web"]["versions"], json!(["1.1.0", "2.0.0", "2025.01.02.1"]));
    assert_eq!(index["images"]["db"]["versions"], json!(["0.1.0"]));
    assert_eq!(store.prune("web", 0).await.unwrap(), ["2025.01.02.1"]);
    assert!(matches!(store.prune("nothing", 1).await, Err(S3Error::ImageNotFound { .. })));

    // Verify: good, then one flipped byte in the stored object.
    let report = store.verify("web", "2.0.0").await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.files, ["web-2.0.0.img"]);
    let key = "images/web/2.0.0/web-2.0.0.img";
    let out = store.client().get_object().bucket(store.bucket()).key(key).send().await.unwrap();
    let mut bytes = out.body.collect().await.unwrap().into_bytes().to_vec();
    bytes[500] ^= 0x01;
    store.client().put_object().bucket(store.bucket()).key(key).body(ByteStream::from(bytes)).send().await.unwrap();
    let report = store.verify("web", "2.0.0").await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.bad_files(), ["web-2.0.0.img"]);
    let recorded: Vec<&str> = report
        .problems
        .iter()
        .map(|p| match p {
            Problem::Mismatch { recorded_in, .. } => recorded_in.as_str(),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(recorded, ["SHA256SUMS", "manifest.json"]);
    assert!(report.problems[0].to_string().starts_with("web-2.0.0.img: sha256 mismatch"), "{}", report.problems[0]);

    // A missing object is named too.
    store.client().delete_object().bucket(store.bucket()).key(key).send().await.unwrap();
    let report = store.verify("web", "2.0.0").await.unwrap();
    assert_eq!(report.problems, [Problem::Missing { file: "web-2.0.0.img".to_string() }]);
    assert!(matches!(store.verify("web", "7.0.0").await, Err(S3Error::VersionNotFound { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_of_a_dead_publisher_are_reused_or_cleaned_up() {
    let moto = Moto::start();
    let store = new_store(&moto, 5 * MIB).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = random_file(tmp.path(), "disk.img", 7 * MIB, 60);
    let other = random_file(tmp.path(), "other.img", 7 * MIB, 61);
    let other = ArtifactFile::new(other.path, "disk.img", other.sha256);

    // A completed file without a manifest (a publisher killed after it):
    // invisible, resumed by a publish of the same content...
    put_leftover(&store, "images/web/1.0.0/disk.img", &file).await;
    assert!(!store.exists("web", "1.0.0").await.unwrap());
    let published = store
        .publish(
            "web",
            "1.0.0",
            std::slice::from_ref(&file),
            &manifest_for("web", "1.0.0", std::slice::from_ref(&file)),
            &sums_for(std::slice::from_ref(&file)),
        )
        .await
        .unwrap();
    assert_eq!(published.reused, ["disk.img"]);
    assert!(published.uploaded.is_empty());
    assert!(store.verify("web", "1.0.0").await.unwrap().is_ok());

    // ...refused for other content, until the cleanup removes it.
    let key = "images/web/2.0.0/disk.img";
    put_leftover(&store, key, &file).await;
    let err = publish(&store, "web", "2.0.0", std::slice::from_ref(&other)).await.unwrap_err();
    assert!(matches!(err, S3Error::VersionConflict { .. }), "{err}");
    assert!(err.is_already_exists());
    assert!(err.to_string().contains("s3://golden-images/images/web/2.0.0/disk.img"), "{err}");
    let report = store.cleanup_stale_uploads(Duration::from_secs(3600)).await.unwrap();
    assert!(report.removed_leftovers.is_empty(), "young leftovers stay: {report:?}");
    let report = store.cleanup_stale_uploads(Duration::ZERO).await.unwrap();
    assert_eq!(report.removed_leftovers, [key]);
    assert_eq!(versions(&store, "web").await, ["1.0.0"], "published versions are untouched");
    publish(&store, "web", "2.0.0", std::slice::from_ref(&other)).await.unwrap();
    assert!(store.verify("web", "2.0.0").await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_bucket_and_key_but_never_credentials() {
    let moto = Moto::start();
    let sdk = imgbuild_aws::sdk_loader()
        .region(Region::new(REGION))
        .endpoint_url(moto.url())
        .credentials_provider(Credentials::new("AKIDSECRETID", "very-secret-key", Some("tok3n".into()), None, "t"))
        .load()
        .await;
    // No such bucket.
    let store = S3Store::from_sdk_config(&sdk, "missing-bucket", "p", true).unwrap();
    let err = store.manifest("web", "1.0.0").await.unwrap_err();
    let text = imgbuild_aws::error_chain(&err);
    let debug = format!("{err:?} {store:?}");
    assert!(text.contains("s3://missing-bucket/p/web/1.0.0/manifest.json"), "{text}");
    assert!(text.contains("NoSuchBucket"), "{text}");
    for secret in ["very-secret-key", "tok3n"] {
        assert!(!text.contains(secret) && !debug.contains(secret), "{secret} leaked: {text} {debug}");
    }
    assert!(matches!(S3Store::from_sdk_config(&sdk, "Bad_Bucket", "", true), Err(S3Error::InvalidConfig { .. })));
}
