//! Checksum lists (`SHA256SUMS`): the store format's (`imgbuild-store-format`),
//! with this crate's errors.

pub use imgbuild_store_format::{Algo, SumsEntry, format_sums, is_safe_file_name};

use crate::error::S3Error;

/// Parses a checksum list; `list` (its file name) is only used in errors.
pub fn parse_sums(body: &str, list: &str, algo: Algo) -> Result<Vec<SumsEntry>, S3Error> {
    imgbuild_store_format::parse_sums(body, algo).map_err(|bad| S3Error::InvalidSums {
        list: list.to_string(),
        line: bad.line,
        reason: bad.reason,
    })
}
