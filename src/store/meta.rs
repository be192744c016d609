//! `NAME/channels.json` and the store-wide `index.json`.
//!
//! Both are only written under the store lock, each with an atomic replace.
//! The index is derived data: every write rebuilds it from the version
//! directories on disk, so an index left stale by a crash heals on the next
//! publish or prune (a promote changes no version list, so it leaves the index alone). Readers in this crate never trust it; it exists
//! for outside tools (web listings, sync jobs).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use imgbuild_store_format::Index;
use serde::Serialize;

use super::error::StoreError;
use super::fsio::write_atomic;

pub(crate) const CHANNELS_FILE: &str = "channels.json";
pub(crate) const INDEX_FILE: &str = "index.json";
pub(crate) const INDEX_SCHEMA_VERSION: u32 = 1;

/// Channel name → version. A missing file means no channels.
pub(crate) fn read_channels(path: &Path) -> Result<BTreeMap<String, String>, StoreError> {
    match read_optional(path)? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { path: path.to_path_buf(), source })
        }
        None => Ok(BTreeMap::new()),
    }
}

pub(crate) fn write_channels(path: &Path, channels: &BTreeMap<String, String>) -> Result<(), StoreError> {
    write_json(path, channels)
}

/// The previous index, or `None` if it is missing or unreadable (it is about
/// to be rebuilt anyway, so a damaged one is only worth a warning).
pub(crate) fn read_index(path: &Path) -> Option<Index> {
    let bytes = match read_optional(path) {
        Ok(bytes) => bytes?,
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "ignoring the old store index");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(index) => Some(index),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged store index");
            None
        }
    }
}

pub(crate) fn write_index(path: &Path, index: &Index) -> Result<(), StoreError> {
    write_json(path, index)
}

fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| StoreError::Serialize { path: path.to_path_buf(), source })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path, e)),
    }
}
