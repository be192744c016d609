//! [`AnyStore`]: the store a store command names with `--store`, a directory
//! or `s3://BUCKET/PREFIX`, as one backend of the store policy, so that every
//! command is written once.

use std::collections::BTreeMap;
use std::path::Path;

use imgbuild_store_format::policy::{Backend, Listed, Refusal};

use super::error::StoreError;
use super::local::{Claimed, LocalStore, StoreLock};
use super::s3::StoreLocation;

/// A local store or an S3 store.
#[derive(Debug)]
pub enum AnyStore {
    Local(LocalStore),
    #[cfg(feature = "aws")]
    S3(imgbuild_aws::S3Store),
}

impl AnyStore {
    /// Opens an existing store: a directory that must exist, or an S3
    /// location (region, endpoint and credentials from the AWS chain).
    pub async fn open_existing(location: &Path) -> Result<Self, StoreError> {
        match StoreLocation::parse(location)? {
            StoreLocation::Local(root) => Ok(AnyStore::Local(LocalStore::open_existing(root)?)),
            #[cfg(feature = "aws")]
            StoreLocation::S3 { bucket, prefix } => Ok(AnyStore::S3(super::s3::open_url(&bucket, &prefix).await?)),
            #[cfg(not(feature = "aws"))]
            StoreLocation::S3 { .. } => Err(StoreError::NoAwsSupport { what: "an s3:// store".to_string() }),
        }
    }

    /// Where a version is, as `(field, value)` of a listing: the local
    /// version directory (`path`), or its `s3://` URL (`url`).
    pub fn version_location(&self, name: &str, version: &str) -> (&'static str, String) {
        match self {
            AnyStore::Local(store) => ("path", store.version_dir(name, version).display().to_string()),
            #[cfg(feature = "aws")]
            AnyStore::S3(store) => ("url", store.url(&store.version_prefix(name, version))),
        }
    }
}

/// Runs the same primitive on whichever store it is; errors become
/// [`StoreError`] (S3 errors as [`StoreError::S3`]).
macro_rules! on_store {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Local($store) => $call.await,
            #[cfg(feature = "aws")]
            AnyStore::S3($store) => $call.await.map_err(StoreError::from),
        }
    };
}

#[async_trait::async_trait]
impl Backend for AnyStore {
    type Error = StoreError;
    /// The local store's lock; nothing on S3.
    type Guard = Option<StoreLock>;
    /// The local store's claimed trash directories; none on S3.
    type Removed = Vec<Claimed>;

    fn refuse(&self, refusal: Refusal) -> StoreError {
        match self {
            AnyStore::Local(store) => store.refuse(refusal),
            #[cfg(feature = "aws")]
            AnyStore::S3(store) => store.refuse(refusal).into(),
        }
    }

    async fn lock(&self) -> Result<Option<StoreLock>, StoreError> {
        match self {
            AnyStore::Local(store) => store.lock().await.map(Some),
            #[cfg(feature = "aws")]
            AnyStore::S3(_) => Ok(None),
        }
    }

    async fn complete_versions(&self, name: &str, details: bool) -> Result<Vec<Listed>, StoreError> {
        on_store!(self, store => store.complete_versions(name, details))
    }

    async fn taken_versions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        on_store!(self, store => store.taken_versions(name))
    }

    async fn has_manifest(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        on_store!(self, store => store.has_manifest(name, version))
    }

    async fn read_manifest(&self, name: &str, version: &str) -> Result<Option<serde_json::Value>, StoreError> {
        on_store!(self, store => store.read_manifest(name, version))
    }

    async fn read_channels(&self, name: &str) -> Result<BTreeMap<String, String>, StoreError> {
        on_store!(self, store => store.read_channels(name))
    }

    async fn write_channel(&self, name: &str, channel: &str, version: &str) -> Result<Option<String>, StoreError> {
        on_store!(self, store => store.write_channel(name, channel, version))
    }

    async fn remove_versions(&self, name: &str, versions: &[String]) -> Result<Vec<Claimed>, StoreError> {
        match self {
            AnyStore::Local(store) => store.remove_versions(name, versions).await,
            #[cfg(feature = "aws")]
            AnyStore::S3(store) => store.remove_versions(name, versions).await.map(|()| Vec::new()).map_err(Into::into),
        }
    }

    async fn purge(&self, removed: Vec<Claimed>) {
        match self {
            AnyStore::Local(store) => store.purge(removed).await,
            #[cfg(feature = "aws")]
            AnyStore::S3(_) => {}
        }
    }
}
