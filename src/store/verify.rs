//! Re-hashing a version directory against its `SHA256SUMS`, optional
//! `SHA512SUMS`, and the digests in `manifest.json` (what is checked is the
//! store format's [`Plan`], shared with the S3 store).
//!
//! Every file is read once; when a SHA-512 is expected too, both hashers are
//! fed from the same buffer (images are large, and reading them twice would
//! double the time).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub use imgbuild_store_format::Problem;
use imgbuild_store_format::{Algo, MultiHasher, Plan, hash_reader};
use serde::Serialize;

use super::MANIFEST_FILE;
use super::error::StoreError;
use super::sums::{SumsEntry, parse_sums, sums_file_name};
use crate::source::DigestAlgo;

/// Where a verified directory is.
#[derive(Debug, Clone, Serialize)]
pub struct InDir {
    pub dir: PathBuf,
}

/// The outcome of [`crate::store::LocalStore::verify`].
pub type VerifyReport = imgbuild_store_format::VerifyReport<InDir>;

pub(crate) fn verify_dir(dir: &Path) -> Result<VerifyReport, StoreError> {
    let sha256 =
        read_sums(dir, DigestAlgo::Sha256)?.ok_or_else(|| StoreError::MissingSha256Sums { dir: dir.to_path_buf() })?;
    let sha512 = read_sums(dir, DigestAlgo::Sha512)?.unwrap_or_default();
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "missing".to_string(),
        _ => format!("cannot read: {e}"),
    });
    let mut plan = Plan::new(&sha256, &sha512, manifest.as_deref().map_err(Clone::clone));
    for file in plan.files.clone() {
        match hash_file(&dir.join(&file), plan.wants_sha512(&file)) {
            Ok((sha256, sha512)) => plan.check(&file, &sha256, sha512.as_deref()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => plan.problems.push(Problem::Missing { file }),
            Err(e) => plan.problems.push(Problem::Unreadable { file, error: e.to_string() }),
        }
    }
    Ok(VerifyReport::new(InDir { dir: dir.to_path_buf() }, plan))
}

fn read_sums(dir: &Path, algo: DigestAlgo) -> Result<Option<Vec<SumsEntry>>, StoreError> {
    let path = dir.join(sums_file_name(algo));
    match std::fs::read_to_string(&path) {
        Ok(body) => parse_sums(&body, &path, algo).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path, e)),
    }
}

/// Lowercase hex SHA-256 and, if asked, SHA-512, from one read pass.
pub(crate) fn hash_file(path: &Path, with_sha512: bool) -> io::Result<(String, Option<String>)> {
    let mut file = File::open(path)?;
    let digests = hash_reader(&mut file, MultiHasher::sha256_and(with_sha512), |_| ())?;
    Ok((digests.sha256(), digests.get(Algo::Sha512).map(String::from)))
}
