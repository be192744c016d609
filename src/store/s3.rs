//! S3 stores for the build and the store commands: `--store s3://BUCKET/PREFIX`,
//! opening a template's `type: s3` target, the sweep of a dead publisher's
//! leftovers before a publish, and the next `auto` version.
//!
//! The store itself (layout, conditional writes, multipart uploads) is the
//! `imgbuild-aws` crate's `S3Store`; this module only adapts it.

use std::path::Path;
use std::time::Duration;

use super::error::StoreError;

/// Where a store command looks: a local directory or an S3 location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation<'a> {
    Local(&'a Path),
    /// `s3://bucket/prefix`: the prefix as written (the S3 store normalises it).
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl<'a> StoreLocation<'a> {
    /// `s3://bucket[/prefix]` is an S3 store; anything else a directory.
    pub fn parse(value: &'a Path) -> Result<Self, StoreError> {
        let Some(rest) = value.to_str().and_then(|v| v.strip_prefix("s3://")) else {
            return Ok(StoreLocation::Local(value));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::InvalidStoreUrl { value: value.display().to_string() });
        }
        Ok(StoreLocation::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
    }
}

/// How old a dead publisher's leftovers (open multipart uploads, files of a
/// version without `manifest.json`) must be before any publish removes them.
/// A live publisher's uploads are always younger; see docs/store.md.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Overrides [`DEFAULT_STALE_AFTER`] (a duration such as `6h`; `0s` when no
/// other publisher can be running).
pub const STALE_AFTER_ENV: &str = "IMGBUILD_S3_STALE_AFTER";

/// [`DEFAULT_STALE_AFTER`], or `IMGBUILD_S3_STALE_AFTER`.
pub fn stale_after() -> Result<Duration, String> {
    match std::env::var(STALE_AFTER_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            v.parse::<crate::template::units::Dur>().map(|d| d.0).map_err(|e| format!("{STALE_AFTER_ENV}: {e}"))
        }
        _ => Ok(DEFAULT_STALE_AFTER),
    }
}

#[cfg(feature = "aws")]
pub use aws::*;

#[cfg(feature = "aws")]
mod aws {
    use std::time::Duration;

    use imgbuild_aws::{CleanupReport, S3Store};
    use imgbuild_store_format::Day;

    use super::StoreError;
    use crate::template::S3Publish;

    /// `--store s3://bucket/prefix`: region and endpoint from the standard
    /// chain (`AWS_REGION`, profiles, `AWS_ENDPOINT_URL[_S3]`).
    pub async fn open_url(bucket: &str, prefix: &str) -> Result<S3Store, StoreError> {
        Ok(S3Store::new(bucket, prefix, None, None).await?)
    }

    /// A template's `type: s3` publish target.
    pub async fn open_target(target: &S3Publish) -> Result<S3Store, StoreError> {
        let store =
            S3Store::new(&target.bucket, &target.prefix, target.region.as_deref(), target.endpoint_url.as_deref())
                .await?;
        Ok(match target.part_size {
            Some(size) => store.with_part_size(size.bytes())?,
            None => store,
        })
    }

    /// What [`sweep_before_publish`] removed.
    #[derive(Debug, Default)]
    pub struct Sweep {
        /// Open multipart uploads of the version about to be published.
        pub aborted_same_version: Vec<String>,
        /// Everything older than the stale age.
        pub stale: CleanupReport,
    }

    /// Before publishing `name@version`: removes what dead publishers left.
    ///
    /// * Every open multipart upload under `NAME/VERSION/`, whatever its
    ///   age. Its owner is either dead (a killed build of this version), or
    ///   a live publisher of the same version, which could not both win:
    ///   aborting its upload makes it fail, but can never make a version
    ///   visible incomplete (an aborted upload cannot be completed). Of
    ///   several racing publishers the last to sweep keeps its uploads, so
    ///   one of them still wins.
    /// * Uploads and manifest-less versions older than `stale_after`
    ///   anywhere under the prefix (a live publisher's are younger).
    ///
    /// Completed files of this version without a manifest are *not* removed
    /// while younger than `stale_after`: a live publisher may be about to
    /// write its manifest, and removing a file under it would publish an
    /// incomplete version. A publish of other content then fails with a
    /// conflict that names the key.
    pub async fn sweep_before_publish(
        store: &S3Store,
        name: &str,
        version: &str,
        stale_after: Duration,
    ) -> Result<Sweep, StoreError> {
        let mut sweep = Sweep::default();
        let version_prefix = store.version_prefix(name, version);
        for (key, upload_id) in store.list_multipart_uploads().await? {
            if !key.starts_with(&version_prefix) {
                continue;
            }
            abort_upload(store, &key, &upload_id).await?;
            tracing::info!(key = %key, "aborted an unfinished upload of the version being published");
            sweep.aborted_same_version.push(key);
        }
        sweep.stale = store.cleanup_stale_uploads(stale_after).await?;
        Ok(sweep)
    }

    async fn abort_upload(store: &S3Store, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let result =
            store.client().abort_multipart_upload().bucket(store.bucket()).key(key).upload_id(upload_id).send().await;
        match result {
            Ok(_) => Ok(()),
            // Gone meanwhile (its owner finished or aborted it): fine.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
            Err(e) => Err(StoreError::S3(imgbuild_aws::S3Error::Request {
                action: "abort the multipart upload of".to_string(),
                bucket: store.bucket().to_string(),
                key: key.to_string(),
                code: None,
                status: e.raw_response().map(|r| r.status().as_u16()),
                source: Box::new(e),
            })),
        }
    }

    /// The highest `N` of a `YYYY.MM.DD.N` version of `name` for `today`
    /// published in `store` (0 when none).
    pub async fn highest_auto_number(store: &S3Store, name: &str, today: Day) -> Result<u64, StoreError> {
        Ok(imgbuild_store_format::policy::highest_auto_number(store, name, today).await?)
    }
}
