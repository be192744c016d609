//! [`S3Store`]: construction, keys, reads, channels, the index, prune and
//! the sweep of stale uploads. Publishing is in `publish.rs`, verification
//! in `verify.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::error::{S3Error, request_error};
use crate::names::{self, validate_name, validate_version};
use crate::{CHANNELS_FILE, INDEX_FILE, INDEX_SCHEMA_VERSION, MANIFEST_FILE};
use imgbuild_store_format::policy::{self, Backend, Listed, Refusal};
use imgbuild_store_format::{Index, IndexEntry};

/// Default multipart part size: 8 MiB (the publish memory bound is about
/// `part_size * concurrency`).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Default number of parts uploaded in parallel.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// S3's smallest part (except the last one of an upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Attempts of a conditional read-modify-write of `channels.json` /
/// `index.json` before giving up.
const UPDATE_ATTEMPTS: u32 = 8;

/// The `"type": "s3"` publish target of a template:
/// `{ "type": "s3", "bucket": "golden-images", "prefix": "images/", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:5000" }`
/// (`type` is the caller's enum tag; `prefix`, `region`, `endpoint_url` are
/// optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

/// A store of versioned images in an S3 bucket (or any S3-compatible
/// service), in the layout of the local store; see the crate documentation.
/// Cheap to clone (the SDK client is reference-counted).
#[derive(Clone)]
pub struct S3Store {
    pub(crate) client: Client,
    pub(crate) bucket: String,
    /// `""` or ends with `/`.
    pub(crate) prefix: String,
    pub(crate) part_size: u64,
    pub(crate) concurrency: usize,
}

impl fmt::Debug for S3Store {
    // The client's configuration is left out: it holds the credentials provider.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// One published version, as listed by [`S3Store::list_versions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: String,
    /// When `manifest.json` was written (the moment the version became
    /// visible), RFC 3339.
    pub published_at: Option<String>,
    /// Total size of the objects of the version, in bytes.
    pub size: u64,
    /// Channels pointing at this version, sorted.
    pub channels: Vec<String>,
    /// `s3://bucket/prefix/NAME/VERSION/`.
    pub url: String,
}

/// What [`S3Store::cleanup_stale_uploads`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Keys of the multipart uploads that were aborted.
    pub aborted_uploads: Vec<String>,
    /// Objects of versions without `manifest.json` (left by a publisher that
    /// died between completing a file and writing the manifest) that were
    /// deleted.
    pub removed_leftovers: Vec<String>,
}

/// The new value of an [`S3Store::update_json`] update: a boxed `Send`
/// future rather than an async closure, whose futures rustc cannot yet prove
/// `Send` (and build steps must be `Send`).
pub(crate) type UpdateFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<T>, S3Error>> + Send + 'a>>;

/// An object from a listing.
#[derive(Debug, Clone)]
pub(crate) struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

/// The condition of a put.
pub(crate) enum Condition {
    /// Only if the key does not exist (`If-None-Match: *`).
    Absent,
    /// Only if the object has this ETag (`If-Match`).
    Matches(String),
}

/// The result of a conditional put.
pub(crate) enum PutOutcome {
    Written,
    /// 412 Precondition Failed (or 404 for `If-Match` on a deleted key).
    PreconditionFailed,
    /// 409 ConditionalRequestConflict: a concurrent conditional write to the
    /// same key; try again.
    Conflict,
}

impl S3Store {
    /// A store in `bucket` under `prefix` (`""`, `"images/"`; a missing
    /// trailing `/` is added).
    ///
    /// Credentials and, without `region`, the region come from the standard
    /// AWS chain (environment, profiles, SSO, web identity, IMDS...).
    /// `endpoint_url`, else `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`,
    /// selects an S3-compatible service; with an endpoint, requests use
    /// path-style addressing (`http://host/bucket/key`), which moto, MinIO
    /// and most others need.
    pub async fn new(
        bucket: &str,
        prefix: &str,
        region: Option<&str>,
        endpoint_url: Option<&str>,
    ) -> Result<Self, S3Error> {
        let (sdk, endpoint) = crate::config::load("S3", region, endpoint_url)
            .await
            .map_err(|e| S3Error::InvalidConfig { reason: e.to_string() })?;
        Self::from_sdk_config(&sdk, bucket, prefix, endpoint.is_some())
    }

    /// [`S3Store::new`] with the fields of a template target.
    pub async fn from_target(target: &S3Target) -> Result<Self, S3Error> {
        Self::new(&target.bucket, &target.prefix, target.region.as_deref(), target.endpoint_url.as_deref()).await
    }

    /// A store using an already loaded SDK configuration (e.g. with static
    /// test credentials). `path_style` forces path-style addressing.
    pub fn from_sdk_config(sdk: &SdkConfig, bucket: &str, prefix: &str, path_style: bool) -> Result<Self, S3Error> {
        if sdk.region().is_none() {
            return Err(S3Error::NoRegion { bucket: bucket.to_string() });
        }
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style || sdk.endpoint_url().is_some())
            // Integrity is handled explicitly: SHA-256 per part and per
            // object on upload, a full re-hash on verify. Leave out the
            // SDK's default CRC32 on every request.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self::from_client(Client::from_conf(config), bucket, prefix)
    }

    /// A store using a ready client.
    pub fn from_client(client: Client, bucket: &str, prefix: &str) -> Result<Self, S3Error> {
        Ok(S3Store {
            client,
            bucket: check_bucket(bucket)?,
            prefix: normalize_prefix(prefix)?,
            part_size: DEFAULT_PART_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
        })
    }

    /// Sets the multipart part size (5 MiB to 5 GiB). Files up to one part
    /// are uploaded with a single put. For files that would need more than
    /// 10,000 parts, the part size grows as needed.
    pub fn with_part_size(mut self, bytes: u64) -> Result<Self, S3Error> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&bytes) {
            return Err(S3Error::InvalidConfig {
                reason: format!("part size {bytes} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE} bytes"),
            });
        }
        self.part_size = bytes;
        Ok(self)
    }

    /// Sets how many parts are uploaded at once (1 to 64).
    pub fn with_concurrency(mut self, parts: usize) -> Result<Self, S3Error> {
        if !(1..=64).contains(&parts) {
            return Err(S3Error::InvalidConfig { reason: format!("concurrency {parts} is outside 1..=64") });
        }
        self.concurrency = parts;
        Ok(self)
    }

    /// The SDK client (for callers that need other S3 calls, e.g. tests
    /// creating a bucket).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix: `""` or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    // ----------------------------------------------------------------- keys

    /// `PREFIX/NAME/`. Validate `name` first when it comes from outside.
    pub fn image_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }

    /// `PREFIX/NAME/VERSION/`.
    pub fn version_prefix(&self, name: &str, version: &str) -> String {
        format!("{}{name}/{version}/", self.prefix)
    }

    /// `PREFIX/NAME/VERSION/FILE`.
    pub fn object_key(&self, name: &str, version: &str, file: &str) -> String {
        format!("{}{file}", self.version_prefix(name, version))
    }

    pub(crate) fn channels_key(&self, name: &str) -> String {
        format!("{}{CHANNELS_FILE}", self.image_prefix(name))
    }

    pub(crate) fn index_key(&self) -> String {
        format!("{}{INDEX_FILE}", self.prefix)
    }

    /// `s3://bucket/key`.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    // ---------------------------------------------------------------- reads

    /// Whether `name@version` is published: its `manifest.json` exists.
    pub async fn exists(&self, name: &str, version: &str) -> Result<bool, S3Error> {
        policy::exists(self, name, version).await
    }

    /// Published versions of `name`, oldest first. Only versions with a
    /// `manifest.json` count: an interrupted publish is invisible.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<VersionInfo>, S3Error> {
        Ok(policy::versions(self, name)
            .await?
            .into_iter()
            .map(|v| VersionInfo {
                url: self.url(&self.version_prefix(name, &v.version)),
                version: v.version,
                published_at: v.created_at,
                size: v.size,
                channels: v.channels,
            })
            .collect())
    }

    /// Published versions with their sizes, oldest first (empty when none).
    pub(crate) async fn visible_versions(&self, name: &str) -> Result<Vec<ListedVersion>, S3Error> {
        let image_prefix = self.image_prefix(name);
        let mut by_version: BTreeMap<String, ListedVersion> = BTreeMap::new();
        for object in self.list_objects(&image_prefix).await? {
            let Some((version, file)) = object.key[image_prefix.len()..].split_once('/') else {
                continue;
            };
            if validate_version(version).is_err() {
                continue;
            }
            let entry = by_version.entry(version.to_string()).or_insert_with(|| ListedVersion {
                version: version.to_string(),
                published_at: None,
                size: 0,
                has_manifest: false,
            });
            entry.size += object.size;
            if file == MANIFEST_FILE {
                entry.has_manifest = true;
                entry.published_at = object.last_modified;
            }
        }
        let mut list: Vec<ListedVersion> = by_version.into_values().filter(|v| v.has_manifest).collect();
        list.sort_by(|a, b| names::compare(&a.version, &b.version));
        Ok(list)
    }

    /// The parsed `manifest.json` of a published version.
    pub async fn manifest(&self, name: &str, version: &str) -> Result<serde_json::Value, S3Error> {
        policy::manifest(self, name, version).await
    }

    /// Channel → version for `name` (empty when none are set).
    pub async fn channels(&self, name: &str) -> Result<BTreeMap<String, String>, S3Error> {
        policy::channels(self, name).await
    }

    /// `NAME@VERSION`, `NAME@CHANNEL` or `NAME` (the `latest` channel) →
    /// `(name, version)` of a published version. Without a `latest` channel
    /// (a crash between the manifest and the channel update) the newest
    /// version is used.
    pub async fn resolve(&self, spec: &str) -> Result<(String, String), S3Error> {
        policy::resolve(self, spec).await
    }

    /// Downloads every object of a published version into `dest` (created
    /// if needed), streaming each to disk. Returns the written paths.
    pub async fn download(&self, name: &str, version: &str, dest: &Path) -> Result<Vec<PathBuf>, S3Error> {
        if !self.exists(name, version).await? {
            return Err(self.version_not_found(name, version));
        }
        tokio::fs::create_dir_all(dest).await.map_err(|e| S3Error::io("create directory", dest, e))?;
        let version_prefix = self.version_prefix(name, version);
        let mut written = Vec::new();
        for object in self.list_objects(&version_prefix).await? {
            let file = &object.key[version_prefix.len()..];
            if !crate::sums::is_safe_file_name(file) {
                continue;
            }
            let path = dest.join(file);
            self.download_object(&object.key, &path).await?;
            written.push(path);
        }
        Ok(written)
    }

    async fn download_object(&self, key: &str, path: &Path) -> Result<(), S3Error> {
        let resp = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error("download", &self.bucket, key, e))?;
        let mut out = tokio::fs::File::create(path).await.map_err(|e| S3Error::io("create", path, e))?;
        let mut body = resp.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.stream_error("download", key, e))?;
            out.write_all(&chunk).await.map_err(|e| S3Error::io("write", path, e))?;
        }
        out.flush().await.map_err(|e| S3Error::io("write", path, e))
    }

    // ------------------------------------------------------------ channels

    /// Points `channel` at `name@version`; returns the version it pointed at
    /// before, if any. The update of `channels.json` is a conditional write
    /// (`If-Match` on the ETag read, retried when another writer got there
    /// first), so concurrent promotes and publishes never lose each other's
    /// channels.
    pub async fn promote(&self, name: &str, version: &str, channel: &str) -> Result<Option<String>, S3Error> {
        policy::promote(self, name, version, channel).await
    }

    pub(crate) async fn set_channel(
        &self,
        name: &str,
        channel: &str,
        version: &str,
    ) -> Result<Option<String>, S3Error> {
        let mut previous = None;
        self.update_json(&self.channels_key(name), |current: Option<BTreeMap<String, String>>| {
            let mut channels = current.unwrap_or_default();
            let changed;
            (previous, changed) = policy::point_channel(&mut channels, channel, version);
            Box::pin(std::future::ready(Ok(changed.then_some(channels))))
        })
        .await?;
        Ok(previous)
    }

    /// Rewrites the entry of `name` in `PREFIX/index.json` from a fresh
    /// listing (conditional write, retried). Other images' entries are kept
    /// as they are: listing a whole bucket on every publish would not scale,
    /// and each image's entry heals on its next publish or prune.
    pub(crate) async fn update_index(&self, name: &str) -> Result<(), S3Error> {
        let key = self.index_key();
        self.update_json(&key, |current: Option<Index>| {
            Box::pin(async move {
                let mut index = match current {
                    Some(index) if index.schema_version == INDEX_SCHEMA_VERSION => index,
                    _ => Index { schema_version: INDEX_SCHEMA_VERSION, images: BTreeMap::new() },
                };
                // Listed after reading the index: this view is at least as new
                // as the state the write replaces.
                let versions: Vec<String> = self.visible_versions(name).await?.into_iter().map(|v| v.version).collect();
                if versions.is_empty() {
                    index.images.remove(name);
                } else {
                    let updated_at = jiff::Timestamp::now().to_string();
                    index.images.insert(name.to_string(), IndexEntry { versions, updated_at });
                }
                Ok(Some(index))
            })
        })
        .await
    }

    /// Removes all but the newest `keep` versions of `name`, except versions
    /// a channel points at. Returns the removed versions, oldest first.
    ///
    /// Each victim's `manifest.json` is deleted first, so the version
    /// disappears for readers at once; then its other objects, then the
    /// index entry is rewritten. A crash in between leaves objects without a
    /// manifest, which [`S3Store::cleanup_stale_uploads`] removes.
    ///
    /// Not guarded against a concurrent `promote` of a victim (S3 has no
    /// lock to take): that can leave a channel pointing at a removed
    /// version, which `resolve` then reports as a dangling channel.
    pub async fn prune(&self, name: &str, keep: usize) -> Result<Vec<String>, S3Error> {
        policy::prune(self, name, keep).await
    }

    // -------------------------------------------------------------- cleanup

    /// Aborts every multipart upload under the prefix started more than
    /// `older_than` ago (`Duration::ZERO`: all of them), and deletes the
    /// objects of versions that have no `manifest.json` and whose newest
    /// object is older than `older_than` (what a publisher killed between
    /// completing a file and writing the manifest leaves behind).
    ///
    /// Uploads of live publishers are younger than a sensible `older_than`
    /// (e.g. a day); with `Duration::ZERO` run it only when no publisher is
    /// running. Also set a bucket lifecycle rule
    /// (`AbortIncompleteMultipartUpload`) in production as a second net.
    pub async fn cleanup_stale_uploads(&self, older_than: Duration) -> Result<CleanupReport, S3Error> {
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = CleanupReport::default();
        for (key, upload_id) in self.stale_uploads(cutoff).await? {
            crate::publish::abort_upload(&self.client, &self.bucket, &key, &upload_id).await?;
            tracing::info!(key = %key, "aborted a stale multipart upload");
            report.aborted_uploads.push(key);
        }
        report.removed_leftovers = self.remove_leftovers(cutoff).await?;
        Ok(report)
    }

    /// Multipart uploads under the prefix: `(key, upload id)`, all of them.
    pub async fn list_multipart_uploads(&self) -> Result<Vec<(String, String)>, S3Error> {
        self.stale_uploads(SystemTime::now() + Duration::from_secs(3600)).await
    }

    async fn stale_uploads(&self, cutoff: SystemTime) -> Result<Vec<(String, String)>, S3Error> {
        let mut out = Vec::new();
        let (mut key_marker, mut upload_id_marker) = (None::<String>, None::<String>);
        loop {
            let resp = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|e| request_error("list multipart uploads in", &self.bucket, &self.prefix, e))?;
            for upload in resp.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let initiated = upload.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                if initiated.is_none_or(|t| t <= cutoff) {
                    out.push((key.to_string(), id.to_string()));
                }
            }
            if resp.is_truncated() != Some(true) {
                break;
            }
            key_marker = resp.next_key_marker().map(str::to_string);
            upload_id_marker = resp.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    async fn remove_leftovers(&self, cutoff: SystemTime) -> Result<Vec<String>, S3Error> {
        let mut groups: BTreeMap<(String, String), VersionObjects> = BTreeMap::new();
        for object in self.list_objects(&self.prefix).await? {
            let rest = &object.key[self.prefix.len()..];
            let mut parts = rest.splitn(3, '/');
            let (Some(name), Some(version), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if validate_name(name).is_err() || validate_version(version).is_err() {
                continue;
            }
            let group = groups.entry((name.to_string(), version.to_string())).or_default();
            group.keys.push(object.key.clone());
            group.has_manifest |= file == MANIFEST_FILE;
            group.newest = group.newest.max(object.last_modified);
        }
        let mut removed = Vec::new();
        for ((name, version), VersionObjects { keys, has_manifest, newest }) in groups {
            if has_manifest || newest.is_some_and(|t| t > cutoff) {
                continue;
            }
            tracing::info!(name = %name, version = %version, objects = keys.len(), "removing leftovers of an interrupted publish");
            self.delete_keys(&keys).await?;
            removed.extend(keys);
        }
        Ok(removed)
    }

    // ---------------------------------------------------- request helpers

    /// HEAD: `None` when the key does not exist. (A HEAD answer has no body,
    /// so a missing bucket looks the same; the next request names it.)
    pub(crate) async fn head(
        &self,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, S3Error> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(request_error("look up", &self.bucket, key, e)),
        }
    }

    /// GET a small object whole: `(bytes, etag)`, `None` when missing.
    pub(crate) async fn get_small(&self, key: &str) -> Result<Option<(Vec<u8>, Option<String>)>, S3Error> {
        let resp = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(resp) => resp,
            // Not any 404: NoSuchBucket must stay an error.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(request_error("read", &self.bucket, key, e)),
        };
        let etag = resp.e_tag().map(str::to_string);
        let bytes = resp.body.collect().await.map_err(|e| self.stream_error("read", key, e))?.to_vec();
        Ok(Some((bytes, etag)))
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Option<String>)>, S3Error> {
        let Some((bytes, etag)) = self.get_small(key).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&bytes).map_err(|source| S3Error::Corrupt {
            bucket: self.bucket.clone(),
            key: key.to_string(),
            source,
        })?;
        Ok(Some((value, etag)))
    }

    /// A conditional put of a small object from memory.
    pub(crate) async fn put_small(
        &self,
        key: &str,
        body: Vec<u8>,
        condition: Condition,
        content_type: &str,
        metadata: &[(&str, &str)],
    ) -> Result<PutOutcome, S3Error> {
        let checksum = crate::publish::sha256_base64(&body);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_sha256(checksum)
            .body(ByteStream::from(body));
        for (k, v) in metadata {
            req = req.metadata(*k, *v);
        }
        req = match condition {
            Condition::Absent => req.if_none_match("*"),
            Condition::Matches(etag) => req.if_match(etag),
        };
        match req.send().await {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let no_bucket = e.as_service_error().and_then(|s| s.code()) == Some("NoSuchBucket");
                match status {
                    Some(412) => Ok(PutOutcome::PreconditionFailed),
                    // `If-Match` on a key deleted meanwhile.
                    Some(404) if !no_bucket => Ok(PutOutcome::PreconditionFailed),
                    Some(409) => Ok(PutOutcome::Conflict),
                    _ => Err(request_error("write", &self.bucket, key, e)),
                }
            }
        }
    }

    /// Conditional read-modify-write of a JSON object. `f` gets the current
    /// value (`None` when missing or, for the index, unreadable) and returns
    /// the new one, or `None` for no change. Retried when another writer
    /// changed the object in between.
    pub(crate) async fn update_json<'a, T>(
        &'a self,
        key: &str,
        mut f: impl FnMut(Option<T>) -> UpdateFuture<'a, T> + Send,
    ) -> Result<(), S3Error>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
    {
        for attempt in 1..=UPDATE_ATTEMPTS {
            let (current, etag) = match self.get_small(key).await? {
                Some((bytes, etag)) => match serde_json::from_slice::<T>(&bytes) {
                    Ok(value) => (Some(value), etag),
                    Err(source) if key == self.index_key() => {
                        // Derived data: rebuild a damaged index.
                        tracing::warn!(key = %key, error = %source, "ignoring a damaged store index");
                        (None, etag)
                    }
                    Err(source) => {
                        return Err(S3Error::Corrupt { bucket: self.bucket.clone(), key: key.to_string(), source });
                    }
                },
                None => (None, None),
            };
            let Some(new) = f(current).await? else {
                return Ok(());
            };
            let mut body = serde_json::to_vec_pretty(&new).map_err(|source| S3Error::Corrupt {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                source,
            })?;
            body.push(b'\n');
            let condition = match etag {
                Some(etag) => Condition::Matches(etag),
                None => Condition::Absent,
            };
            match self.put_small(key, body, condition, "application/json", &[]).await? {
                PutOutcome::Written => return Ok(()),
                PutOutcome::PreconditionFailed | PutOutcome::Conflict => {
                    tracing::debug!(key = %key, attempt, "concurrent update; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Err(S3Error::ConcurrentUpdate { bucket: self.bucket.clone(), key: key.to_string(), attempts: UPDATE_ATTEMPTS })
    }

    /// Every object under `prefix`, in key order.
    pub(crate) async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectEntry>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| request_error("list", &self.bucket, prefix, e))?;
            for object in resp.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ObjectEntry {
                    key: key.to_string(),
                    size: object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    last_modified: object.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                });
            }
            token = resp.next_continuation_token().map(str::to_string);
            if resp.is_truncated() != Some(true) || token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) async fn delete_key(&self, key: &str) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error("delete", &self.bucket, key, e))?;
        Ok(())
    }

    /// Deletes keys in batches of 1000 (the DeleteObjects limit).
    pub(crate) async fn delete_keys(&self, keys: &[String]) -> Result<(), S3Error> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| S3Error::Task(format!("cannot build a delete request: {e}")))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| S3Error::Task(format!("cannot build a delete request: {e}")))?;
            let first = batch.first().map(String::as_str).unwrap_or_default();
            let resp = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| request_error("delete objects from", &self.bucket, first, e))?;
            if let Some(failed) = resp.errors().first() {
                let key = failed.key().unwrap_or(first);
                return Err(S3Error::Request {
                    action: "delete".to_string(),
                    bucket: self.bucket.clone(),
                    key: key.to_string(),
                    code: failed.code().map(str::to_string),
                    status: None,
                    source: failed.message().unwrap_or("DeleteObjects reported an error").to_string().into(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn stream_error(
        &self,
        action: &str,
        key: &str,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> S3Error {
        S3Error::Request {
            action: action.to_string(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            code: None,
            status: None,
            source: Box::new(e),
        }
    }

    pub(crate) fn version_not_found(&self, name: &str, version: &str) -> S3Error {
        self.refuse(Refusal::VersionNotFound { name: name.to_string(), version: version.to_string() })
    }
}

/// The bucket as a backend of the store policy.
#[async_trait::async_trait]
impl Backend for S3Store {
    type Error = S3Error;
    /// Nothing to hold: every write is conditional.
    type Guard = ();
    type Removed = ();

    fn refuse(&self, refusal: Refusal) -> S3Error {
        S3Error::refused(refusal, &self.bucket, &self.prefix)
    }

    async fn lock(&self) -> Result<(), S3Error> {
        Ok(())
    }

    async fn complete_versions(&self, name: &str, _details: bool) -> Result<Vec<Listed>, S3Error> {
        // One listing gives the sizes and times anyway.
        Ok(self
            .visible_versions(name)
            .await?
            .into_iter()
            .map(|v| Listed { version: v.version, size: v.size, created_at: v.published_at.map(rfc3339) })
            .collect())
    }

    /// Only published versions: a version without a manifest may be taken
    /// by its (live) publisher, which then loses at the manifest write.
    async fn taken_versions(&self, name: &str) -> Result<Vec<String>, S3Error> {
        Ok(self.visible_versions(name).await?.into_iter().map(|v| v.version).collect())
    }

    async fn has_manifest(&self, name: &str, version: &str) -> Result<bool, S3Error> {
        Ok(self.head(&self.object_key(name, version, MANIFEST_FILE)).await?.is_some())
    }

    async fn read_manifest(&self, name: &str, version: &str) -> Result<Option<serde_json::Value>, S3Error> {
        Ok(self.get_json(&self.object_key(name, version, MANIFEST_FILE)).await?.map(|(manifest, _)| manifest))
    }

    async fn read_channels(&self, name: &str) -> Result<BTreeMap<String, String>, S3Error> {
        Ok(self.get_json(&self.channels_key(name)).await?.map(|(c, _)| c).unwrap_or_default())
    }

    async fn write_channel(&self, name: &str, channel: &str, version: &str) -> Result<Option<String>, S3Error> {
        self.set_channel(name, channel, version).await
    }

    async fn remove_versions(&self, name: &str, versions: &[String]) -> Result<(), S3Error> {
        for version in versions {
            self.delete_key(&self.object_key(name, version, MANIFEST_FILE)).await?;
            let keys: Vec<String> =
                self.list_objects(&self.version_prefix(name, version)).await?.into_iter().map(|o| o.key).collect();
            self.delete_keys(&keys).await?;
        }
        if !versions.is_empty() {
            self.update_index(name).await?;
        }
        Ok(())
    }

    async fn purge(&self, (): ()) {}
}

/// The objects of one `NAME/VERSION/` in a listing of the whole prefix.
#[derive(Default)]
struct VersionObjects {
    keys: Vec<String>,
    has_manifest: bool,
    /// The newest modification time among them.
    newest: Option<SystemTime>,
}

/// A version directory as seen in a listing.
#[derive(Debug, Clone)]
pub(crate) struct ListedVersion {
    pub version: String,
    pub published_at: Option<SystemTime>,
    pub size: u64,
    pub has_manifest: bool,
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map(|t| t.to_string()).unwrap_or_default()
}

/// 50 ms, 100 ms, 200 ms, ... up to 1.6 s, plus up to 50 ms of jitter so
/// that racing writers spread out.
fn backoff(attempt: u32) -> Duration {
    let base = 50u64 << attempt.min(5);
    let jitter =
        u64::from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos()) % 50;
    Duration::from_millis(base + jitter)
}

fn check_bucket(bucket: &str) -> Result<String, S3Error> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && bucket.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(bucket.to_string())
    } else {
        Err(S3Error::InvalidConfig {
            reason: format!("`{bucket}` is not a bucket name (3-63 lowercase letters, digits, `-` or `.`)"),
        })
    }
}

/// `"images"` → `"images/"`, `"/a/b/"` → `"a/b/"`, `""` → `""`.
fn normalize_prefix(prefix: &str) -> Result<String, S3Error> {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad = trimmed.split('/').filter(|p| !p.is_empty()).any(|p| p == "." || p == "..")
        || trimmed.contains("//")
        || trimmed.contains(['\\', '\0', '\n', '\r']);
    if bad {
        return Err(S3Error::InvalidConfig { reason: format!("`{prefix}` is not a usable key prefix") });
    }
    Ok(if trimmed.ends_with('/') { trimmed.to_string() } else { format!("{trimmed}/") })
}

/// Only the scheme is checked, and the URL is not echoed: it could carry
/// user information.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalized() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("/").unwrap(), "");
        assert_eq!(normalize_prefix("images").unwrap(), "images/");
        assert_eq!(normalize_prefix("/a/b/").unwrap(), "a/b/");
        for bad in ["a/../b", "a//b", "..", "x\ny"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_names_and_endpoints() {
        assert!(check_bucket("golden-images").is_ok());
        for bad in ["", "ab", "Golden", "a/b", "-x"] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_parses_from_template_json() {
        let t: S3Target =
            serde_json::from_str(r#"{"bucket":"golden-images","prefix":"images/","region":"eu-west-1"}"#).unwrap();
        assert_eq!(t.prefix, "images/");
        assert_eq!(t.endpoint_url, None);
        // As a variant of the caller's internally tagged enum.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "kebab-case")]
        enum Target {
            S3(S3Target),
        }
        let Target::S3(t) = serde_json::from_str(r#"{"type":"s3","bucket":"b-1","endpoint_url":"http://x"}"#).unwrap();
        assert_eq!(t.endpoint_url.as_deref(), Some("http://x"));
        let typo = serde_json::from_str::<Target>(r#"{"type":"s3","bucket":"b-1","regoin":"x"}"#).unwrap_err();
        assert!(typo.to_string().contains("unknown field `regoin`"), "{typo}");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(1) < backoff(4));
        assert!(backoff(30) <= Duration::from_millis(1650));
    }
}
