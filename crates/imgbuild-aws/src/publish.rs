//! Publishing a version: artifact files (multipart, streamed from disk),
//! checksum lists, then `manifest.json` with `If-None-Match: *`, then the
//! `latest` channel and the index.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use imgbuild_store_format::MultiHasher;
use tokio::task::JoinSet;

use crate::error::{S3Error, request_error};
use crate::names::{validate_name, validate_version};
use crate::store::{Condition, MAX_PARTS, PutOutcome, S3Store};
use crate::sums::{Algo, is_safe_file_name, parse_sums};
use crate::{LATEST, MANIFEST_FILE};

/// The user metadata key holding an object's full SHA-256 (lowercase hex):
/// sent as `x-amz-meta-sha256`.
pub const SHA256_METADATA: &str = "sha256";

/// Upload progress: `(bytes done, bytes total)` over every object of the
/// publish. Called from the publishing task after each part or object, so
/// keep it quick.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How many times the final manifest put is repeated on 409
/// ConditionalRequestConflict (a concurrent conditional write in flight).
const MANIFEST_ATTEMPTS: u32 = 5;

/// One file to publish: where it is, its name in the version, and its
/// SHA-256 (lowercase hex) as recorded in `SHA256SUMS` and the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    pub path: PathBuf,
    pub file_name: String,
    pub sha256: String,
}

impl ArtifactFile {
    pub fn new(path: impl Into<PathBuf>, file_name: impl Into<String>, sha256: impl Into<String>) -> Self {
        ArtifactFile { path: path.into(), file_name: file_name.into(), sha256: sha256.into().to_ascii_lowercase() }
    }
}

impl From<(PathBuf, String, String)> for ArtifactFile {
    fn from((path, file_name, sha256): (PathBuf, String, String)) -> Self {
        ArtifactFile::new(path, file_name, sha256)
    }
}

/// What [`S3Store::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub name: String,
    pub version: String,
    /// `s3://bucket/prefix/NAME/VERSION/`.
    pub url: String,
    /// Artifact files uploaded by this publish.
    pub uploaded: Vec<String>,
    /// Artifact files already in place with the same SHA-256 (a resumed
    /// publish after a crash, or a concurrent publisher of identical
    /// content), not uploaded again.
    pub reused: Vec<String>,
    /// Bytes sent (artifacts, lists and manifest).
    pub bytes_uploaded: u64,
}

/// Progress state of one publish.
struct Tracker {
    done: u64,
    total: u64,
    sent: u64,
    progress: Option<Progress>,
}

impl Tracker {
    fn add(&mut self, bytes: u64, sent: bool) {
        self.done += bytes;
        if sent {
            self.sent += bytes;
        }
        if let Some(progress) = &self.progress {
            progress(self.done, self.total);
        }
    }
}

impl S3Store {
    /// Publishes `name@version`: uploads `files` and the checksum lists
    /// `sums` (`SHA256SUMS` required; `(algorithm, body)`), then writes
    /// `manifest` as `manifest.json`, which makes the version visible.
    ///
    /// * Refuses an existing version before uploading anything.
    /// * Files larger than one part go up as multipart uploads streamed from
    ///   disk with bounded memory (at most `concurrency` parts in memory),
    ///   each part with its SHA-256 for S3 to check, and the whole file's
    ///   SHA-256 as `x-amz-meta-sha256`. The file is re-hashed while it is
    ///   read; a digest other than the given one aborts the upload. Any
    ///   error aborts the multipart upload; so does dropping the future
    ///   (the abort is spawned on the runtime).
    /// * Every object is written with `If-None-Match: *`, so nothing of a
    ///   published version is ever overwritten; of two publishers of the
    ///   same version exactly one gets its manifest in, and the other gets
    ///   [`S3Error::VersionExists`] (or [`S3Error::VersionConflict`] when it
    ///   lost already on a file with other content; see
    ///   [`S3Error::is_already_exists`]). Files are uploaded one after the
    ///   other in name order, so two publishers of different content cannot
    ///   each win a different file.
    /// * Afterwards `latest` is pointed at the version and the index entry
    ///   is rewritten (conditional writes, retried). If that fails, the
    ///   error is [`S3Error::PublishedWithoutMetadata`]: the version is
    ///   published, only the metadata lags.
    pub async fn publish(
        &self,
        name: &str,
        version: &str,
        files: &[ArtifactFile],
        manifest: &serde_json::Value,
        sums: &[(Algo, String)],
    ) -> Result<Published, S3Error> {
        self.publish_with_progress(name, version, files, manifest, sums, None).await
    }

    /// [`S3Store::publish`] with a progress callback.
    pub async fn publish_with_progress(
        &self,
        name: &str,
        version: &str,
        files: &[ArtifactFile],
        manifest: &serde_json::Value,
        sums: &[(Algo, String)],
        progress: Option<Progress>,
    ) -> Result<Published, S3Error> {
        validate_name(name)?;
        validate_version(version)?;
        let invalid =
            |reason: String| S3Error::InvalidArtifacts { name: name.to_string(), version: version.to_string(), reason };
        let lists = check_inputs(files, sums).map_err(invalid)?;
        let mut manifest_body = serde_json::to_vec_pretty(manifest).map_err(|source| S3Error::Corrupt {
            bucket: self.bucket.clone(),
            key: self.object_key(name, version, MANIFEST_FILE),
            source,
        })?;
        manifest_body.push(b'\n');

        let mut sizes = Vec::with_capacity(files.len());
        for file in files {
            let meta = std::fs::metadata(&file.path).map_err(|e| S3Error::io("read", &file.path, e))?;
            if !meta.is_file() {
                return Err(invalid(format!("{} is not a regular file", file.path.display())));
            }
            sizes.push(meta.len());
        }
        let total = sizes.iter().sum::<u64>()
            + lists.iter().map(|(_, body)| body.len() as u64).sum::<u64>()
            + manifest_body.len() as u64;
        let mut tracker = Tracker { done: 0, total, sent: 0, progress };

        let manifest_key = self.object_key(name, version, MANIFEST_FILE);
        if self.head(&manifest_key).await?.is_some() {
            return Err(self.version_exists(name, version));
        }

        // Name order: two publishers racing upload the same key first.
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by(|a, b| files[*a].file_name.cmp(&files[*b].file_name));
        let (mut uploaded, mut reused) = (Vec::new(), Vec::new());
        for i in order {
            let file = &files[i];
            let key = self.object_key(name, version, &file.file_name);
            let ctx = FileCtx { name, version, key: &key, file, size: sizes[i] };
            match self.upload_file(&ctx, &mut tracker).await? {
                FileOutcome::Uploaded => uploaded.push(file.file_name.clone()),
                FileOutcome::Reused => reused.push(file.file_name.clone()),
            }
        }
        for (list, body) in &lists {
            let key = self.object_key(name, version, list);
            self.put_exclusive(name, version, &key, body.as_bytes(), "text/plain; charset=utf-8", &mut tracker).await?;
        }
        self.put_manifest(name, version, &manifest_key, manifest_body, &mut tracker).await?;

        let metadata = async {
            self.set_channel(name, LATEST, version).await?;
            self.update_index(name).await
        };
        metadata.await.map_err(|source| S3Error::PublishedWithoutMetadata {
            name: name.to_string(),
            version: version.to_string(),
            source: Box::new(source),
        })?;
        Ok(Published {
            name: name.to_string(),
            version: version.to_string(),
            url: self.url(&self.version_prefix(name, version)),
            uploaded,
            reused,
            bytes_uploaded: tracker.sent,
        })
    }

    /// The manifest put that decides a race: `If-None-Match: *`.
    async fn put_manifest(
        &self,
        name: &str,
        version: &str,
        key: &str,
        body: Vec<u8>,
        tracker: &mut Tracker,
    ) -> Result<(), S3Error> {
        let len = body.len() as u64;
        for attempt in 1..=MANIFEST_ATTEMPTS {
            match self.put_small(key, body.clone(), Condition::Absent, "application/json", &[]).await? {
                PutOutcome::Written => {
                    tracker.add(len, true);
                    return Ok(());
                }
                PutOutcome::PreconditionFailed => return Err(self.version_exists(name, version)),
                PutOutcome::Conflict => {
                    tracing::debug!(key = %key, attempt, "concurrent manifest write; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        Err(S3Error::ConcurrentUpdate {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            attempts: MANIFEST_ATTEMPTS,
        })
    }

    /// A small object that must not replace different content.
    async fn put_exclusive(
        &self,
        name: &str,
        version: &str,
        key: &str,
        body: &[u8],
        content_type: &str,
        tracker: &mut Tracker,
    ) -> Result<(), S3Error> {
        let sha256 = imgbuild_store_format::sha256_hex(body);
        let metadata = [(SHA256_METADATA, sha256.as_str())];
        match self.put_small(key, body.to_vec(), Condition::Absent, content_type, &metadata).await? {
            PutOutcome::Written => {
                tracker.add(body.len() as u64, true);
                Ok(())
            }
            PutOutcome::PreconditionFailed | PutOutcome::Conflict => {
                let same = matches!(self.get_small(key).await?, Some((existing, _)) if existing == body);
                if same {
                    tracker.add(body.len() as u64, false);
                    Ok(())
                } else {
                    Err(self.conflict(name, version, key).await)
                }
            }
        }
    }

    /// Uploads one artifact file, or finds it in place with the same digest.
    async fn upload_file(&self, ctx: &FileCtx<'_>, tracker: &mut Tracker) -> Result<FileOutcome, S3Error> {
        if self.existing_sha256(ctx.key).await?.is_some() {
            return self.settle_existing(ctx, tracker, true).await;
        }
        let part_size = self.effective_part_size(ctx.size);
        let outcome = if ctx.size <= part_size {
            self.upload_single(ctx).await?
        } else {
            self.upload_multipart(ctx, part_size, tracker).await?
        };
        match outcome {
            Completion::Done => {
                if ctx.size <= part_size {
                    tracker.add(ctx.size, true);
                }
                Ok(FileOutcome::Uploaded)
            }
            // A multipart upload already counted its parts.
            Completion::KeyTaken => self.settle_existing(ctx, tracker, ctx.size <= part_size).await,
        }
    }

    /// The key is taken: fine if it holds our content, a lost race or a
    /// leftover otherwise.
    async fn settle_existing(
        &self,
        ctx: &FileCtx<'_>,
        tracker: &mut Tracker,
        count: bool,
    ) -> Result<FileOutcome, S3Error> {
        match self.existing_sha256(ctx.key).await? {
            Some(Some(sha256)) if sha256 == ctx.file.sha256 => {
                tracing::debug!(key = %ctx.key, "already in place with the same sha256");
                if count {
                    tracker.add(ctx.size, false);
                }
                Ok(FileOutcome::Reused)
            }
            _ => Err(self.conflict(ctx.name, ctx.version, ctx.key).await),
        }
    }

    /// `None`: no object; `Some(None)`: an object without our metadata.
    async fn existing_sha256(&self, key: &str) -> Result<Option<Option<String>>, S3Error> {
        Ok(self.head(key).await?.map(|head| head.metadata().and_then(|m| m.get(SHA256_METADATA)).cloned()))
    }

    /// Someone else's object is at `key`: the version was published
    /// meanwhile, or another publisher (or a dead one's leftover) holds it.
    async fn conflict(&self, name: &str, version: &str, key: &str) -> S3Error {
        match self.head(&self.object_key(name, version, MANIFEST_FILE)).await {
            Ok(Some(_)) => self.version_exists(name, version),
            _ => S3Error::VersionConflict {
                name: name.to_string(),
                version: version.to_string(),
                bucket: self.bucket.clone(),
                key: key.to_string(),
            },
        }
    }

    /// At least the configured part size, large enough for 10,000 parts,
    /// rounded up to a MiB.
    fn effective_part_size(&self, size: u64) -> u64 {
        let needed = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
        self.part_size.max(needed)
    }

    /// A file of at most one part: one put, `If-None-Match: *`.
    async fn upload_single(&self, ctx: &FileCtx<'_>) -> Result<Completion, S3Error> {
        let path = ctx.file.path.clone();
        let size = ctx.size;
        let (data, file_sha, part_sha) = tokio::task::spawn_blocking(move || -> Result<_, S3Error> {
            let file = File::open(&path).map_err(|e| S3Error::io("open", &path, e))?;
            let mut hasher = file_hasher();
            let data = read_part(&file, &path, 0, size, &mut hasher, BytesMut::new())?;
            check_no_more_data(&file, &path, size)?;
            let file_sha = hasher.finish().sha256();
            let part_sha = sha256_base64(&data);
            Ok((data, file_sha, part_sha))
        })
        .await
        .map_err(|e| S3Error::Task(e.to_string()))??;
        check_digest(&ctx.file.path, &ctx.file.sha256, &file_sha)?;
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(ctx.key)
            .content_type("application/octet-stream")
            .content_length(size as i64)
            .checksum_sha256(part_sha)
            .metadata(SHA256_METADATA, &ctx.file.sha256)
            .if_none_match("*")
            .body(ByteStream::from(data))
            .send()
            .await;
        completion(result, "upload", &self.bucket, ctx.key)
    }

    async fn upload_multipart(
        &self,
        ctx: &FileCtx<'_>,
        part_size: u64,
        tracker: &mut Tracker,
    ) -> Result<Completion, S3Error> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(ctx.key)
            .content_type("application/octet-stream")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata(SHA256_METADATA, &ctx.file.sha256)
            .send()
            .await
            .map_err(|e| request_error("start a multipart upload of", &self.bucket, ctx.key, e))?;
        let upload_id = created.upload_id().ok_or_else(|| S3Error::Request {
            action: "start a multipart upload of".to_string(),
            bucket: self.bucket.clone(),
            key: ctx.key.to_string(),
            code: None,
            status: None,
            source: "the answer has no upload id".into(),
        })?;
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: ctx.key.to_string(),
            upload_id: upload_id.to_string(),
            armed: true,
        };
        tracing::debug!(key = %ctx.key, part_size, "multipart upload started");
        let result = self.upload_parts_and_complete(ctx, &guard.upload_id, part_size, tracker).await;
        match result {
            Ok(Completion::Done) => {
                guard.armed = false;
                Ok(Completion::Done)
            }
            // Not completed: the upload is still open.
            Ok(Completion::KeyTaken) => {
                guard.abort().await;
                Ok(Completion::KeyTaken)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    /// Reads the file part by part (at most `concurrency` parts in memory,
    /// each read only once a slot is free), hashing it whole on the way,
    /// uploads the parts in parallel, then completes the upload with
    /// `If-None-Match: *` if the whole-file digest is the expected one.
    ///
    /// Part buffers are recycled: a finished part's buffer is read into
    /// again, so the process holds `concurrency` buffers, not a trail of
    /// freed ones that the allocator keeps around.
    async fn upload_parts_and_complete(
        &self,
        ctx: &FileCtx<'_>,
        upload_id: &str,
        part_size: u64,
        tracker: &mut Tracker,
    ) -> Result<Completion, S3Error> {
        let path = ctx.file.path.clone();
        let file = Arc::new(File::open(&path).map_err(|e| S3Error::io("open", &path, e))?);
        let mut hasher = Some(file_hasher());
        let mut tasks: JoinSet<Result<(CompletedPart, Bytes), S3Error>> = JoinSet::new();
        let mut completed: Vec<CompletedPart> = Vec::new();
        let mut pool: Vec<BytesMut> = Vec::new();
        let (mut offset, mut part_number) = (0u64, 1i32);
        loop {
            while tasks.len() < self.concurrency && offset < ctx.size {
                let len = part_size.min(ctx.size - offset);
                let (file2, path2, mut h) = (file.clone(), path.clone(), hasher.take().unwrap_or_else(file_hasher));
                let buf = pool.pop().unwrap_or_default();
                let (data, h, checksum) = tokio::task::spawn_blocking(move || -> Result<_, S3Error> {
                    let data = read_part(&file2, &path2, offset, len, &mut h, buf)?;
                    let checksum = sha256_base64(&data);
                    Ok((data, h, checksum))
                })
                .await
                .map_err(|e| S3Error::Task(e.to_string()))??;
                hasher = Some(h);
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(ctx.key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .content_length(len as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .checksum_sha256(checksum.clone())
                    .body(ByteStream::from(data.clone()));
                let (bucket, key, number) = (self.bucket.clone(), ctx.key.to_string(), part_number);
                tasks.spawn(async move {
                    let out = request
                        .send()
                        .await
                        .map_err(|e| request_error(format!("upload part {number} of"), &bucket, &key, e))?;
                    let part = CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .checksum_sha256(out.checksum_sha256().map(str::to_string).unwrap_or(checksum))
                        .build();
                    Ok((part, data))
                });
                offset += len;
                part_number += 1;
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            // An error returns here; dropping `tasks` cancels the other parts.
            let (part, data) = joined.map_err(|e| S3Error::Task(e.to_string()))??;
            tracker.add(data.len() as u64, true);
            completed.push(part);
            // Unique once the SDK has dropped the request; else a new buffer
            // is allocated next time.
            if let Ok(buf) = data.try_into_mut() {
                pool.push(buf);
            }
        }
        check_no_more_data(&file, &path, ctx.size)?;
        let actual = hasher.take().unwrap_or_else(file_hasher).finish().sha256();
        check_digest(&path, &ctx.file.sha256, &actual)?;
        completed.sort_by_key(|p| p.part_number());
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(ctx.key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .if_none_match("*")
            .send()
            .await;
        completion(result, "complete the multipart upload of", &self.bucket, ctx.key)
    }

    fn version_exists(&self, name: &str, version: &str) -> S3Error {
        S3Error::VersionExists {
            name: name.to_string(),
            version: version.to_string(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
    }
}

struct FileCtx<'a> {
    name: &'a str,
    version: &'a str,
    key: &'a str,
    file: &'a ArtifactFile,
    size: u64,
}

enum FileOutcome {
    Uploaded,
    Reused,
}

enum Completion {
    Done,
    /// The conditional write found the key taken.
    KeyTaken,
}

/// Aborts a multipart upload unless disarmed: explicitly on errors
/// ([`AbortGuard::abort`]) and, when the publish future is dropped, from
/// `Drop` on a spawned task.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    async fn abort(&mut self) {
        if let Err(e) = abort_upload(&self.client, &self.bucket, &self.key, &self.upload_id).await {
            tracing::warn!(error = %e, "could not abort a multipart upload; cleanup_stale_uploads removes it later");
        }
        self.armed = false;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "multipart upload left open; cleanup_stale_uploads removes it");
            return;
        };
        let (client, bucket, key, upload_id) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        runtime.spawn(async move {
            if let Err(e) = abort_upload(&client, &bucket, &key, &upload_id).await {
                tracing::warn!(error = %e, "could not abort a cancelled multipart upload");
            }
        });
    }
}

/// AbortMultipartUpload; an upload that is already gone is fine.
pub(crate) async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<(), S3Error> {
    match client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
        Err(e) => Err(request_error("abort the multipart upload of", bucket, key, e)),
    }
}

/// Reads exactly `len` bytes at `offset` into `buf` (reusing its
/// allocation), feeding `hasher`.
fn read_part(
    file: &File,
    path: &Path,
    offset: u64,
    len: u64,
    hasher: &mut MultiHasher,
    mut buf: BytesMut,
) -> Result<Bytes, S3Error> {
    let len_usize = usize::try_from(len).map_err(|_| S3Error::Task("part larger than memory".to_string()))?;
    buf.clear();
    buf.resize(len_usize, 0);
    let mut filled = 0;
    while filled < len_usize {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => return Err(S3Error::FileChanged { path: path.to_path_buf(), expected: offset + len }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(S3Error::io("read", path, e)),
        }
    }
    hasher.update(&buf);
    Ok(buf.freeze())
}

/// The file must not have grown since it was measured.
fn check_no_more_data(file: &File, path: &Path, size: u64) -> Result<(), S3Error> {
    let mut probe = [0u8; 1];
    loop {
        match file.read_at(&mut probe, size) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(S3Error::FileChanged { path: path.to_path_buf(), expected: size }),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(S3Error::io("read", path, e)),
        }
    }
}

fn check_digest(path: &Path, expected: &str, actual: &str) -> Result<(), S3Error> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(S3Error::DigestMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// Base64 of the raw SHA-256, the form of `x-amz-checksum-sha256`.
pub(crate) fn sha256_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(imgbuild_store_format::hash::sha256(data))
}

/// The whole-file SHA-256 recorded as `x-amz-meta-sha256`.
fn file_hasher() -> MultiHasher {
    MultiHasher::new(&[Algo::Sha256])
}

/// Checks names, digests and lists; returns the lists as `(file name,
/// body)` with a final newline, `SHA256SUMS` first.
fn check_inputs(files: &[ArtifactFile], sums: &[(Algo, String)]) -> Result<Vec<(String, String)>, String> {
    let mut names = BTreeSet::new();
    let reserved: Vec<String> = [Algo::Sha256, Algo::Sha512].iter().map(|a| a.sums_file_name()).collect();
    for file in files {
        if !is_safe_file_name(&file.file_name) {
            return Err(format!("`{}` is not a plain file name", file.file_name));
        }
        if file.file_name == MANIFEST_FILE || reserved.contains(&file.file_name) {
            return Err(format!("`{}` is reserved for the store's own files", file.file_name));
        }
        if !names.insert(file.file_name.as_str()) {
            return Err(format!("`{}` is given twice", file.file_name));
        }
        if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("the sha256 of `{}` is not 64 hex digits", file.file_name));
        }
    }
    let mut lists: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut ordered: Vec<&(Algo, String)> = sums.iter().collect();
    ordered.sort_by_key(|(algo, _)| *algo != Algo::Sha256);
    for (algo, body) in ordered {
        let list = algo.sums_file_name();
        if !seen.insert(*algo) {
            return Err(format!("{list} is given twice"));
        }
        let entries = parse_sums(body, &list, *algo).map_err(|e| e.to_string())?;
        for entry in &entries {
            let Some(file) = files.iter().find(|f| f.file_name == entry.file) else {
                return Err(format!("{list} lists `{}`, which is not among the files", entry.file));
            };
            if *algo == Algo::Sha256 && !file.sha256.eq_ignore_ascii_case(&entry.hex) {
                return Err(format!("{list} records another sha256 for `{}` than the file list", entry.file));
            }
        }
        if *algo == Algo::Sha256 {
            for file in files {
                if !entries.iter().any(|e| e.file == file.file_name) {
                    return Err(format!("`{}` is not listed in {list}", file.file_name));
                }
            }
        }
        let mut text = body.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        lists.push((list, text));
    }
    if !seen.contains(&Algo::Sha256) {
        return Err("no SHA256SUMS list".to_string());
    }
    Ok(lists)
}

/// The outcome of an `If-None-Match: *` write: 412 (the key exists) and 409
/// (a concurrent conditional write to it) both mean another publisher has it.
fn completion<T, E>(
    result: Result<T, SdkError<E, HttpResponse>>,
    action: &str,
    bucket: &str,
    key: &str,
) -> Result<Completion, S3Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(Completion::Done),
        Err(e) if matches!(e.raw_response().map(|r| r.status().as_u16()), Some(412 | 409)) => Ok(Completion::KeyTaken),
        Err(e) => Err(request_error(action, bucket, key, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sums::format_sums;

    fn file(name: &str, hex: &str) -> ArtifactFile {
        ArtifactFile::new(format!("/tmp/{name}"), name, hex)
    }

    #[test]
    fn inputs_must_agree() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let files = [file("disk.qcow2", &a)];
        let ok = check_inputs(&files, &[(Algo::Sha256, format_sums([("disk.qcow2", a.as_str())]))]);
        assert_eq!(ok.unwrap()[0].0, "SHA256SUMS");
        type Case = (Vec<ArtifactFile>, Vec<(Algo, String)>, &'static str);
        let cases: Vec<Case> = vec![
            (files.to_vec(), vec![], "no SHA256SUMS"),
            (files.to_vec(), vec![(Algo::Sha256, format_sums([("disk.qcow2", b.as_str())]))], "another sha256"),
            (files.to_vec(), vec![(Algo::Sha256, format_sums([("other", a.as_str())]))], "not among the files"),
            (files.to_vec(), vec![(Algo::Sha256, String::new())], "not listed"),
            (vec![file("manifest.json", &a)], vec![], "reserved"),
            (vec![file("../x", &a)], vec![], "plain file name"),
            (vec![file("x", "zz")], vec![], "64 hex"),
            (vec![file("x", &a), file("x", &a)], vec![], "twice"),
        ];
        for (files, sums, wanted) in cases {
            let err = check_inputs(&files, &sums).unwrap_err();
            assert!(err.contains(wanted), "{err} (wanted {wanted})");
        }
    }

    #[test]
    fn part_size_grows_for_huge_files() {
        let store = S3Store {
            client: Client::from_conf(
                aws_sdk_s3::config::Builder::new()
                    .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                    .region(aws_sdk_s3::config::Region::new("eu-west-1"))
                    .build(),
            ),
            bucket: "b".into(),
            prefix: String::new(),
            part_size: 8 << 20,
            concurrency: 4,
        };
        assert_eq!(store.effective_part_size(40 << 20), 8 << 20);
        let huge = 200u64 << 30;
        let part = store.effective_part_size(huge);
        assert!(huge.div_ceil(part) <= MAX_PARTS && part.is_multiple_of(1 << 20), "{part}");
    }
}
