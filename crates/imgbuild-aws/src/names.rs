//! Image names, versions and channels: the store format's rules
//! (`imgbuild-store-format`, shared with the local store and the template),
//! with this crate's errors.

pub use imgbuild_store_format::compare;

use crate::error::S3Error;

pub fn validate_name(name: &str) -> Result<(), S3Error> {
    imgbuild_store_format::check_name(name).map_err(|reason| S3Error::InvalidName { name: name.to_string(), reason })
}

pub fn validate_channel(channel: &str) -> Result<(), S3Error> {
    match imgbuild_store_format::is_valid_channel(channel) {
        true => Ok(()),
        false => Err(S3Error::InvalidChannel { channel: channel.to_string() }),
    }
}

pub fn validate_version(version: &str) -> Result<(), S3Error> {
    match imgbuild_store_format::is_valid_version(version) {
        true => Ok(()),
        false => Err(S3Error::InvalidVersion { version: version.to_string() }),
    }
}
