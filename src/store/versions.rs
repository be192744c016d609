//! Image names, versions and channels: the store format's rules
//! (`imgbuild-store-format`, shared with the S3 store and the template), with
//! this module's errors.

pub use imgbuild_store_format::compare;

use super::error::StoreError;

use std::path::Path;

use imgbuild_store_format::policy;

// The refusals below name no store, so any path does.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    policy::valid_name(name).map_err(|r| StoreError::refused(r, Path::new("")))
}

pub fn validate_channel(channel: &str) -> Result<(), StoreError> {
    policy::valid_channel(channel).map_err(|r| StoreError::refused(r, Path::new("")))
}

pub fn validate_version(version: &str) -> Result<(), StoreError> {
    policy::valid_version(version).map_err(|r| StoreError::refused(r, Path::new("")))
}
