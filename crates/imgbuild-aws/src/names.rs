//! Image names, versions and channels: the store format's rules
//! (`imgbuild-store-format`, shared with the local store and the template),
//! with this crate's errors.

pub use imgbuild_store_format::compare;

use crate::error::S3Error;

use imgbuild_store_format::policy;

// The refusals below name no bucket.
pub fn validate_name(name: &str) -> Result<(), S3Error> {
    policy::valid_name(name).map_err(|r| S3Error::refused(r, "", ""))
}

pub fn validate_channel(channel: &str) -> Result<(), S3Error> {
    policy::valid_channel(channel).map_err(|r| S3Error::refused(r, "", ""))
}

pub fn validate_version(version: &str) -> Result<(), S3Error> {
    policy::valid_version(version).map_err(|r| S3Error::refused(r, "", ""))
}
