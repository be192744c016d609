//! Image names, versions and channels: the store format's rules
//! (`imgbuild-store-format`, shared with the S3 store and the template), with
//! this module's errors.

pub use imgbuild_store_format::compare;

use super::error::StoreError;

pub fn validate_name(name: &str) -> Result<(), StoreError> {
    crate::template::validate_name(name).map_err(|reason| StoreError::InvalidName { name: name.to_string(), reason })
}

pub fn validate_channel(channel: &str) -> Result<(), StoreError> {
    match imgbuild_store_format::is_valid_channel(channel) {
        true => Ok(()),
        false => Err(StoreError::InvalidChannel { channel: channel.to_string() }),
    }
}

pub fn validate_version(version: &str) -> Result<(), StoreError> {
    match imgbuild_store_format::is_valid_version(version) {
        true => Ok(()),
        false => Err(StoreError::InvalidVersion { version: version.to_string() }),
    }
}
