//! Export and publish: the disk is converted straight into a staging
//! directory inside the store, and the version appears in one atomic rename
//! only after everything (verify included) has passed. S3 targets are
//! uploaded from that staging directory before the local rename.

use std::path::{Path, PathBuf};

use super::BuildState;
use crate::export::{self, Artifact, manifest};
use crate::machine::Capture;
use crate::report::{BuildReporter, Event};
use crate::runner::{BoxError, Step, StepContext};
use crate::source::DigestAlgo;
use crate::store::{Day, LocalStore, Staging, StoreError};
use crate::template::{Loaded, Publish, S3Publish};

/// Where artifacts go: `--store`, then `IMGBUILD_STORE`, then the template's
/// `local` publish entry, then `./artifacts`.
pub fn store_path(loaded: &Loaded, cli_store: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = cli_store {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("IMGBUILD_STORE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    loaded
        .template
        .export
        .publish
        .iter()
        .find_map(|p| match p {
            Publish::Local { path } => Some(path.resolved.clone()),
            Publish::S3(_) => None,
        })
        .unwrap_or_else(|| PathBuf::from("artifacts"))
}

/// The template's S3 publish targets.
pub fn s3_targets(loaded: &Loaded) -> Vec<&S3Publish> {
    loaded.template.export.publish.iter().filter_map(Publish::as_s3).collect()
}

/// Whether the build publishes into the local store: always without S3
/// targets (a build always publishes somewhere); with S3 targets only when
/// the template also lists a `local` target. The local store is then only
/// where the files are staged for the upload, in the work directory.
pub fn publishes_locally(loaded: &Loaded) -> bool {
    let publish = &loaded.template.export.publish;
    publish.iter().any(|p| matches!(p, Publish::Local { .. })) || !publish.iter().any(|p| matches!(p, Publish::S3(_)))
}

/// Errors of the publish step that are not the store's own.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A publish of the same version to S3 lost its race; the message names the location.
    #[error("{name}@{version} already exists in {url} (published by another build)")]
    ExistsInS3 { name: String, version: String, url: String },
    /// Any other failure of an S3 target, with the target named.
    #[error("cannot publish {name}@{version} to {url}")]
    S3 {
        name: String,
        version: String,
        url: String,
        #[source]
        source: StoreError,
    },
    /// Our upload was aborted under us, by another publisher of the same version.
    #[error(
        "cannot publish {name}@{version} to {url}: the upload was aborted, by another build publishing the same version"
    )]
    UploadTakenOver {
        name: String,
        version: String,
        url: String,
        #[source]
        source: StoreError,
    },
    /// An object of the version with other content and no manifest: a
    /// concurrent publisher's, or a dead one's that is not stale yet.
    #[error(
        "cannot publish {name}@{version}: {object} holds other content, from another build publishing this version or an interrupted one; if none is running, run again with IMGBUILD_S3_STALE_AFTER=0s to remove its leftovers"
    )]
    Leftover { name: String, version: String, object: String },
    #[error("{0}")]
    StaleAge(String),
}

/// What the export step hands to verify and publish, and what publish
/// leaves for the end of the build.
pub struct ExportState {
    /// `None` once published (renamed into the store, or removed after an
    /// S3-only publish).
    pub staging: Option<Staging>,
    pub artifacts: Vec<Artifact>,
    /// Where the version was published: the local version directory and
    /// `s3://bucket/prefix/NAME/VERSION/` URLs, in publish order.
    pub published: Vec<String>,
}

pub struct Export;

#[async_trait::async_trait]
impl Step<BuildState> for Export {
    fn name(&self) -> String {
        "export".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let store = if publishes_locally(&state.loaded) {
            LocalStore::open(&state.settings.store)?
        } else {
            // S3 only: staged in the work directory, removed with it.
            let work = BuildState::require(&state.work_dir, "the work directory")?;
            LocalStore::open(&work.join("staging"))?
        };
        let name = state.loaded.template.name.clone();
        // Checked again here: another build may have published this version meanwhile.
        let staging = store.begin(&name, &state.version)?;
        // A builder that captured images in a cloud has no disk to convert:
        // its version is the manifest that records them.
        let artifacts = match BuildState::require(&state.captured, "what the builder captured")? {
            Capture::CloudImages(_) => Vec::new(),
            Capture::Disk(disk) => {
                let export_cfg = &state.loaded.template.export;
                let base = format!("{name}-{}", state.version);
                export::export_all(disk, &staging.dir, &base, &export_cfg.formats, &export_cfg.checksums, &state.report)
                    .await?
            }
        };
        for a in &artifacts {
            state.report.info(format!(
                "exported {} ({} bytes, sha256 {})",
                a.file,
                a.size,
                a.digests.get("sha256").map_or("-", |s| s)
            ));
        }
        state.export = Some(ExportState { staging: Some(staging), artifacts, published: Vec::new() });
        Ok(())
    }
}

pub struct PublishStep;

#[async_trait::async_trait]
impl Step<BuildState> for PublishStep {
    fn name(&self) -> String {
        "publish".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let mut exported = state.export.take().ok_or(crate::build::MissingState::new("the exported artifacts"))?;
        let staging = exported.staging.take().ok_or(crate::build::MissingState::new("the staging directory"))?;
        let mut manifest = manifest::build(state, &state.version, cx.timings(), &exported.artifacts).await;
        manifest.verify = state.verify_results.clone();
        let images: Vec<String> = manifest.amis.iter().flatten().map(|a| format!("{} {}", a.region, a.id)).collect();
        let what = match images.is_empty() {
            true => format!("{}@{}", manifest.name, manifest.version),
            false => format!("{}@{} (AMIs: {})", manifest.name, manifest.version, images.join(", ")),
        };
        let mut json = serde_json::to_value(&manifest)?;
        crate::redact::scrub_json(&mut json);
        let sums = export::sums_files(&exported.artifacts, &state.loaded.template.export.checksums);
        let mut bundle = Bundle {
            name: &manifest.name,
            version: &manifest.version,
            staging: Some(staging),
            artifacts: &exported.artifacts,
            manifest: &json,
            sums: &sums,
            report: &state.report,
        };
        let mut targets = targets(&state.loaded, &state.settings.store)?;
        // S3 first: if an upload fails, nothing is published locally either
        // and the build can simply be run again. (The local store also takes
        // the staging directory, so it can only come last.)
        targets.sort_by_key(|t| t.kind() == LOCAL);
        let mut published = Vec::new();
        for target in &targets {
            let placed = target.publish(&mut bundle).await?;
            state.report.info(format!("published {what} to {}", placed.location));
            state.report.emit(Event::Published {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                target: target.kind().to_string(),
                location: placed.location.clone(),
            });
            match placed.dir {
                Some(dir) => {
                    published.insert(0, placed.location);
                    state.published = Some(dir);
                }
                None => published.push(placed.location),
            }
        }
        // Without a local target the staging directory was only the uploads' source.
        drop(bundle);
        exported.published.extend(published);
        state.published_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        state.export = Some(exported);
        Ok(())
    }
}

/// What a build publishes to every target: the exported files in the
/// staging directory with the manifest and the checksum lists; for a build
/// that captured cloud images (ec2), no files and a manifest that records
/// the images.
pub struct Bundle<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// Holds the files. The local store takes it (its publish is the rename
    /// of this directory into place), so it publishes last.
    pub staging: Option<Staging>,
    pub artifacts: &'a [Artifact],
    pub manifest: &'a serde_json::Value,
    pub sums: &'a [(DigestAlgo, String)],
    /// Where publishing reports progress.
    pub report: &'a BuildReporter,
}

/// Where a target put a bundle.
pub struct Placed {
    /// A directory or an `s3://` URL.
    pub location: String,
    /// The version directory, when the target is the local store.
    pub dir: Option<PathBuf>,
}

/// The `target` of the `published` event of the local store.
const LOCAL: &str = "local";

/// A publish target: before the build starts, whether a version is taken
/// (published versions are immutable, so that refuses the build) and how far
/// today's `auto` numbers got; at the end, publishing the bundle. The local
/// store and every S3 target answer alike, for every builder. The store's
/// own conditional write stays the real guarantee against a concurrent
/// build of the same version.
#[async_trait::async_trait]
pub trait PublishTarget: Send + Sync {
    /// Where, for messages: a directory or an `s3://` URL.
    fn location(&self) -> String;
    /// `local` or `s3`: the `target` of the `published` event.
    fn kind(&self) -> &'static str;
    async fn has_version(&self, name: &str, version: &str) -> Result<bool, StoreError>;
    /// The highest `N` of `today`'s `YYYY.MM.DD.N` versions of `name` (0 when none).
    async fn highest_auto_number(&self, name: &str, today: Day) -> Result<u64, StoreError>;
    /// Publishes the bundle as `name@version`; the version appears complete
    /// or not at all.
    async fn publish(&self, bundle: &mut Bundle<'_>) -> Result<Placed, BoxError>;
    /// The version `latest` points at and its manifest (`--if-changed`).
    /// `None` when there is none or it cannot be read: the build then runs.
    async fn latest(&self, name: &str) -> Option<(String, serde_json::Value)>;
}

#[async_trait::async_trait]
impl PublishTarget for LocalStore {
    fn location(&self) -> String {
        self.root().display().to_string()
    }

    fn kind(&self) -> &'static str {
        LOCAL
    }

    async fn has_version(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        Ok(self.exists(name, version))
    }

    async fn highest_auto_number(&self, name: &str, today: Day) -> Result<u64, StoreError> {
        LocalStore::highest_auto_number(self, name, today)
    }

    /// Renames the staging directory into place (it was begun in this store).
    async fn publish(&self, bundle: &mut Bundle<'_>) -> Result<Placed, BoxError> {
        let staging = bundle.staging.take().ok_or(crate::build::MissingState::new("the staging directory"))?;
        let dir = staging.commit(bundle.manifest, bundle.sums)?;
        Ok(Placed { location: dir.display().to_string(), dir: Some(dir) })
    }

    async fn latest(&self, name: &str) -> Option<(String, serde_json::Value)> {
        let (name, version) = self.resolve(name).ok()?;
        let manifest = self.manifest(&name, &version).ok()?;
        Some((version, manifest))
    }
}

struct S3Target(S3Publish);

#[async_trait::async_trait]
impl PublishTarget for S3Target {
    fn location(&self) -> String {
        self.0.url()
    }

    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn has_version(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        s3::has_version(&self.0, name, version).await
    }

    async fn highest_auto_number(&self, name: &str, today: Day) -> Result<u64, StoreError> {
        s3::highest_auto_number(&self.0, name, today).await
    }

    /// Uploads the files from the staging directory, which stays in place.
    async fn publish(&self, bundle: &mut Bundle<'_>) -> Result<Placed, BoxError> {
        let location = s3::publish(&self.0, bundle).await?;
        Ok(Placed { location, dir: None })
    }

    async fn latest(&self, name: &str) -> Option<(String, serde_json::Value)> {
        s3::latest(&self.0, name).await
    }
}

/// Every target the build publishes to: each S3 target of the template and
/// the local store at `store_dir` when the build publishes locally.
pub fn targets(loaded: &Loaded, store_dir: &Path) -> Result<Vec<Box<dyn PublishTarget>>, StoreError> {
    let mut targets: Vec<Box<dyn PublishTarget>> = Vec::new();
    if publishes_locally(loaded) {
        targets.push(Box::new(LocalStore::open(store_dir)?));
    }
    for target in s3_targets(loaded) {
        targets.push(Box::new(S3Target(target.clone())));
    }
    Ok(targets)
}

#[cfg(feature = "aws")]
mod s3 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use imgbuild_aws::{Algo, ArtifactFile, S3Error};

    use super::{Bundle, PublishError};
    use crate::error::chain;
    use crate::runner::BoxError;
    use crate::store::{Day, StoreError, s3 as store_s3};
    use crate::template::S3Publish;

    pub async fn publish(target: &S3Publish, bundle: &Bundle<'_>) -> Result<String, BoxError> {
        let Bundle { name, version, artifacts, manifest, sums, report, .. } = *bundle;
        let staging = bundle.staging.as_ref().ok_or(crate::build::MissingState::new("the staging directory"))?;
        // Every error names the target.
        fn failed(name: &str, version: &str, target: &S3Publish, source: StoreError) -> PublishError {
            PublishError::S3 { name: name.to_string(), version: version.to_string(), url: target.url(), source }
        }
        let stale_after = store_s3::stale_after().map_err(PublishError::StaleAge)?;
        let store = store_s3::open_target(target).await.map_err(|e| failed(name, version, target, e))?;
        let url = store.url(&store.version_prefix(name, version));
        let sweep = store_s3::sweep_before_publish(&store, name, version, stale_after)
            .await
            .map_err(|e| failed(name, version, target, e))?;
        let removed = sweep.aborted_same_version.len() + sweep.stale.aborted_uploads.len();
        if removed > 0 || !sweep.stale.removed_leftovers.is_empty() {
            report.info(format!(
                "{}: removed {removed} unfinished upload(s) and {} leftover object(s) of interrupted publishes",
                target.url(),
                sweep.stale.removed_leftovers.len()
            ));
        }
        let files: Vec<ArtifactFile> = artifacts
            .iter()
            .map(|a| {
                let sha256 = a.digests.get("sha256").cloned().unwrap_or_default();
                ArtifactFile::new(staging.dir.join(&a.file), a.file.clone(), sha256)
            })
            .collect();
        let lists: Vec<(Algo, String)> = sums.iter().map(|(algo, body)| ((*algo).into(), body.clone())).collect();
        let artifact_bytes = artifacts.iter().map(|a| a.size).sum::<u64>();
        let progress = Arc::new(report.progress(&format!("upload {url}"), Some(artifact_bytes.max(1))));
        let (paused_uploading, paused_files) = (AtomicBool::new(false), AtomicBool::new(false));
        let bar = progress.clone();
        let callback: imgbuild_aws::Progress = Arc::new(move |done, total| {
            bar.set_total(Some(total));
            bar.set_position(done);
            // Crash tests: stop once the first part of an upload is in and the
            // rest are in flight, or once the files and SHA256SUMS are in but
            // not the manifest (a part is counted before its upload completes,
            // a list only once written).
            if done < artifact_bytes && !paused_uploading.swap(true, Ordering::SeqCst) {
                crate::store::pause_point("s3-uploading");
            }
            if done > artifact_bytes && done < total && !paused_files.swap(true, Ordering::SeqCst) {
                crate::store::pause_point("s3-before-manifest");
            }
        });
        // Dropping this future (an interrupted build) aborts the multipart upload.
        let result = store.publish_with_progress(name, version, &files, manifest, &lists, Some(callback)).await;
        progress.finish();
        match result {
            Ok(published) => {
                tracing::debug!(
                    uploaded = ?published.uploaded,
                    reused = ?published.reused,
                    bytes = published.bytes_uploaded,
                    "S3 publish done"
                );
                Ok(published.url)
            }
            Err(e) => Err(lost_race(&store, name, version, &url, e).await.into()),
        }
    }

    /// A publish that failed because a concurrent build of the same version
    /// won (its manifest is in, or it aborted our upload on its way in) is
    /// reported as that, not as the request that happened to fail.
    async fn lost_race(
        store: &imgbuild_aws::S3Store,
        name: &str,
        version: &str,
        url: &str,
        e: S3Error,
    ) -> PublishError {
        let published_by_other = matches!(e, S3Error::VersionExists { .. })
            || (!matches!(e, S3Error::PublishedWithoutMetadata { .. })
                && store.exists(name, version).await.unwrap_or(false));
        if published_by_other {
            tracing::debug!(error = %chain(&e), "lost the publish race");
            return PublishError::ExistsInS3 { name: name.to_string(), version: version.to_string(), url: url.into() };
        }
        // A file of this version is there with other content, and no manifest.
        if let S3Error::VersionConflict { bucket, key, .. } = &e {
            return PublishError::Leftover {
                name: name.to_string(),
                version: version.to_string(),
                object: format!("s3://{bucket}/{key}"),
            };
        }
        // Our multipart upload vanished: another build of this version swept it
        // before starting its own upload (see `sweep_before_publish`).
        if e.code() == Some("NoSuchUpload") {
            return PublishError::UploadTakenOver {
                name: name.to_string(),
                version: version.to_string(),
                url: url.into(),
                source: e.into(),
            };
        }
        PublishError::S3 { name: name.to_string(), version: version.to_string(), url: url.into(), source: e.into() }
    }

    pub async fn has_version(target: &S3Publish, name: &str, version: &str) -> Result<bool, StoreError> {
        let store = store_s3::open_target(target).await?;
        Ok(store.exists(name, version).await?)
    }

    pub async fn highest_auto_number(target: &S3Publish, name: &str, today: Day) -> Result<u64, StoreError> {
        let store = store_s3::open_target(target).await?;
        store_s3::highest_auto_number(&store, name, today).await
    }

    pub async fn latest(target: &S3Publish, name: &str) -> Option<(String, serde_json::Value)> {
        let store = store_s3::open_target(target).await.ok()?;
        let (name, version) = store.resolve(name).await.ok()?;
        let manifest = store.manifest(&name, &version).await.ok()?;
        Some((version, manifest))
    }
}

/// Without the `aws` feature the template still parses; publishing fails clearly.
#[cfg(not(feature = "aws"))]
mod s3 {
    use super::Bundle;
    use crate::runner::BoxError;
    use crate::store::{Day, StoreError};
    use crate::template::S3Publish;

    fn unsupported() -> StoreError {
        StoreError::NoAwsSupport { what: "the `s3` publish target".to_string() }
    }

    pub async fn publish(_: &S3Publish, _: &Bundle<'_>) -> Result<String, BoxError> {
        Err(unsupported().into())
    }

    pub async fn has_version(_: &S3Publish, _: &str, _: &str) -> Result<bool, StoreError> {
        Err(unsupported())
    }

    pub async fn highest_auto_number(_: &S3Publish, _: &str, _: Day) -> Result<u64, StoreError> {
        Err(unsupported())
    }

    pub async fn latest(_: &S3Publish, _: &str) -> Option<(String, serde_json::Value)> {
        None
    }
}
