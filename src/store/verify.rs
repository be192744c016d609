//! Re-hashing a version directory against its `SHA256SUMS`, optional
//! `SHA512SUMS`, and the digests in `manifest.json` (what is checked is the
//! store format's [`Plan`], shared with the S3 store).
//!
//! Every file is read once; when a SHA-512 is expected too, both hashers are
//! fed from the same buffer (images are large, and reading them twice would
//! double the time).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use imgbuild_store_format::Plan;
pub use imgbuild_store_format::Problem;
use serde::Serialize;
use sha2::Digest as _;

use super::MANIFEST_FILE;
use super::error::StoreError;
use super::sums::{SumsEntry, parse_sums, sums_file_name};
use crate::source::DigestAlgo;

const READ_BUFFER: usize = 1 << 20;

/// The outcome of [`crate::store::LocalStore::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    /// Files listed in `SHA256SUMS`, in list order.
    pub files: Vec<String>,
    /// Empty when everything matched.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The files with a problem, each once, in the order found.
    pub fn bad_files(&self) -> Vec<&str> {
        imgbuild_store_format::bad_files(&self.problems)
    }
}

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
    Ok(VerifyReport { dir: dir.to_path_buf(), files: plan.files, problems: plan.problems })
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
    let mut sha256 = sha2::Sha256::new();
    let mut sha512 = with_sha512.then(sha2::Sha512::new);
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        sha256.update(chunk);
        if let Some(h) = sha512.as_mut() {
            h.update(chunk);
        }
    }
    Ok((hex::encode(sha256.finalize()), sha512.map(|h| hex::encode(h.finalize()))))
}
