//! Checksum lists (`SHA256SUMS`): the store format's (`imgbuild-store-format`),
//! with this module's errors.

use std::path::Path;

pub use imgbuild_store_format::{SumsEntry, format_sums};

use super::error::StoreError;
use crate::source::DigestAlgo;

/// `SHA256SUMS` / `SHA512SUMS`.
pub fn sums_file_name(algo: DigestAlgo) -> String {
    format_algo(algo).sums_file_name()
}

/// Parses a checksum list; `path` is only used in error messages.
pub(crate) fn parse_sums(body: &str, path: &Path, algo: DigestAlgo) -> Result<Vec<SumsEntry>, StoreError> {
    imgbuild_store_format::parse_sums(body, format_algo(algo)).map_err(|bad| StoreError::InvalidSums {
        path: path.to_path_buf(),
        line: bad.line,
        reason: bad.reason,
    })
}

fn format_algo(algo: DigestAlgo) -> imgbuild_store_format::Algo {
    algo.into()
}
