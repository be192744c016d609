//! Re-hashing a version directory against its `SHA256SUMS`, optional
//! `SHA512SUMS`, and the digests in `manifest.json`.
//!
//! Every file is read once; when a SHA-512 is expected too, both hashers are
//! fed from the same buffer (images are large, and reading them twice would
//! double the time).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::Digest as _;

use super::MANIFEST_FILE;
use super::error::StoreError;
use super::sums::{SumsEntry, is_safe_file_name, parse_sums, sums_file_name};
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
        let mut out: Vec<&str> = Vec::new();
        for file in self.problems.iter().filter_map(Problem::file) {
            if !out.contains(&file) {
                out.push(file);
            }
        }
        out
    }
}

/// One thing wrong with a version directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// Listed in `SHA256SUMS` but not in the directory.
    Missing { file: String },
    /// The content does not match a recorded digest.
    Mismatch {
        file: String,
        algo: DigestAlgo,
        /// `SHA256SUMS`, `SHA512SUMS` or `manifest.json`.
        recorded_in: String,
        expected: String,
        actual: String,
    },
    /// The file exists but could not be read.
    Unreadable { file: String, error: String },
    /// Listed elsewhere (manifest, `SHA512SUMS`) but not in `SHA256SUMS`.
    NotInSha256Sums { file: String, listed_in: String },
    /// `manifest.json` is missing or has no usable `artifacts`.
    Manifest { reason: String },
}

impl Problem {
    pub fn file(&self) -> Option<&str> {
        match self {
            Problem::Missing { file }
            | Problem::Mismatch { file, .. }
            | Problem::Unreadable { file, .. }
            | Problem::NotInSha256Sums { file, .. } => Some(file),
            Problem::Manifest { .. } => None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { file } => write!(f, "{file}: missing"),
            Problem::Mismatch { file, algo, recorded_in, expected, actual } => {
                write!(f, "{file}: {algo} mismatch (expected {expected} from {recorded_in}, got {actual})")
            }
            Problem::Unreadable { file, error } => write!(f, "{file}: cannot read: {error}"),
            Problem::NotInSha256Sums { file, listed_in } => {
                write!(f, "{file}: listed in {listed_in} but not in SHA256SUMS")
            }
            Problem::Manifest { reason } => write!(f, "{MANIFEST_FILE}: {reason}"),
        }
    }
}

/// A digest some file is expected to have, and where it was recorded.
struct Expected {
    file: String,
    algo: DigestAlgo,
    hex: String,
    recorded_in: String,
}

pub(crate) fn verify_dir(dir: &Path) -> Result<VerifyReport, StoreError> {
    let sha256 =
        read_sums(dir, DigestAlgo::Sha256)?.ok_or_else(|| StoreError::MissingSha256Sums { dir: dir.to_path_buf() })?;
    let sha512 = read_sums(dir, DigestAlgo::Sha512)?.unwrap_or_default();
    let files: Vec<String> = sha256.iter().map(|e| e.file.clone()).collect();
    let mut problems = Vec::new();
    let mut expected = from_sums(&sha256, DigestAlgo::Sha256);
    for entry in from_sums(&sha512, DigestAlgo::Sha512) {
        keep_if_listed(entry, &files, &mut expected, &mut problems);
    }
    match manifest_digests(dir) {
        Ok((artifacts, digests)) => {
            for file in artifacts.into_iter().filter(|f| !files.contains(f)) {
                flag_unlisted(file, MANIFEST_FILE.to_string(), &mut problems);
            }
            for entry in digests {
                keep_if_listed(entry, &files, &mut expected, &mut problems);
            }
        }
        Err(reason) => problems.push(Problem::Manifest { reason }),
    }
    for file in &files {
        let wanted: Vec<&Expected> = expected.iter().filter(|e| &e.file == file).collect();
        check_file(dir, file, &wanted, &mut problems);
    }
    Ok(VerifyReport { dir: dir.to_path_buf(), files, problems })
}

fn read_sums(dir: &Path, algo: DigestAlgo) -> Result<Option<Vec<SumsEntry>>, StoreError> {
    let path = dir.join(sums_file_name(algo));
    match std::fs::read_to_string(&path) {
        Ok(body) => parse_sums(&body, &path, algo).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read", path, e)),
    }
}

fn from_sums(entries: &[SumsEntry], algo: DigestAlgo) -> Vec<Expected> {
    entries
        .iter()
        .map(|e| Expected { file: e.file.clone(), algo, hex: e.hex.clone(), recorded_in: sums_file_name(algo) })
        .collect()
}

/// SHA256SUMS defines the file set; anything recorded only elsewhere is
/// flagged rather than hashed.
fn keep_if_listed(entry: Expected, files: &[String], expected: &mut Vec<Expected>, problems: &mut Vec<Problem>) {
    if files.contains(&entry.file) {
        expected.push(entry);
    } else {
        flag_unlisted(entry.file, entry.recorded_in, problems);
    }
}

fn flag_unlisted(file: String, listed_in: String, problems: &mut Vec<Problem>) {
    let problem = Problem::NotInSha256Sums { file, listed_in };
    if !problems.contains(&problem) {
        problems.push(problem);
    }
}

fn check_file(dir: &Path, file: &str, wanted: &[&Expected], problems: &mut Vec<Problem>) {
    let want_512 = wanted.iter().any(|e| e.algo == DigestAlgo::Sha512);
    let (sha256, sha512) = match hash_file(&dir.join(file), want_512) {
        Ok(digests) => digests,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            problems.push(Problem::Missing { file: file.to_string() });
            return;
        }
        Err(e) => {
            problems.push(Problem::Unreadable { file: file.to_string(), error: e.to_string() });
            return;
        }
    };
    for e in wanted {
        let actual = match (e.algo, &sha512) {
            (DigestAlgo::Sha256, _) => &sha256,
            (DigestAlgo::Sha512, Some(h)) => h,
            // Not computed: cannot happen, `want_512` asked for it.
            (DigestAlgo::Sha512, None) => continue,
        };
        if *actual != e.hex {
            problems.push(Problem::Mismatch {
                file: file.to_string(),
                algo: e.algo,
                recorded_in: e.recorded_in.clone(),
                expected: e.hex.clone(),
                actual: actual.clone(),
            });
        }
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

/// The digests recorded in `manifest.json`: `artifacts[].file` (or `name`)
/// with `digests` either `{"sha256": "<hex>"}` (values may also be
/// `sha256:<hex>`) or `["sha256:<hex>", ...]`. Other algorithms are ignored.
/// Returns the artifact file names and the digests.
fn manifest_digests(dir: &Path) -> Result<(Vec<String>, Vec<Expected>), String> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "missing".to_string(),
        _ => format!("cannot read: {e}"),
    })?;
    let manifest: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let artifacts =
        manifest.get("artifacts").and_then(Value::as_array).ok_or_else(|| "has no `artifacts` array".to_string())?;
    let mut files = Vec::new();
    let mut digests = Vec::new();
    for (index, artifact) in artifacts.iter().enumerate() {
        let (file, list) = artifact_digests(index, artifact)?;
        files.push(file);
        digests.extend(list);
    }
    Ok((files, digests))
}

fn artifact_digests(index: usize, artifact: &Value) -> Result<(String, Vec<Expected>), String> {
    let file = artifact
        .get("file")
        .or_else(|| artifact.get("name"))
        .and_then(Value::as_str)
        .filter(|f| is_safe_file_name(f))
        .ok_or_else(|| format!("artifacts[{index}] has no plain `file` name"))?;
    let pairs: Vec<(Option<&str>, &Value)> = match artifact.get("digests") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (Some(k.as_str()), v)).collect(),
        Some(Value::Array(list)) => list.iter().map(|v| (None, v)).collect(),
        _ => return Err(format!("artifacts[{index}] (`{file}`) has no `digests`")),
    };
    let mut out = Vec::new();
    for (key, value) in pairs {
        let bad = || format!("artifacts[{index}] (`{file}`) has an invalid digest {value}");
        let text = value.as_str().ok_or_else(bad)?;
        if let Some((algo, hex)) = parse_digest(key, text).map_err(|()| bad())? {
            out.push(Expected { file: file.to_string(), algo, hex, recorded_in: MANIFEST_FILE.to_string() });
        }
    }
    Ok((file.to_string(), out))
}

/// `Ok(None)` for algorithms this store does not check (e.g. `md5`).
fn parse_digest(key: Option<&str>, text: &str) -> Result<Option<(DigestAlgo, String)>, ()> {
    let (name, hex) = match (key, text.split_once(':')) {
        (Some(key), Some((prefix, hex))) if prefix.eq_ignore_ascii_case(key) => (key, hex),
        (Some(_), Some(_)) => return Err(()),
        (Some(key), None) => (key, text),
        (None, Some((prefix, hex))) => (prefix, hex),
        (None, None) => return Err(()),
    };
    let Some(algo) = DigestAlgo::from_name(name) else {
        return Ok(None);
    };
    if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(());
    }
    Ok(Some((algo, hex.to_ascii_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_forms() {
        let h = "ab".repeat(32);
        assert_eq!(parse_digest(Some("sha256"), &h), Ok(Some((DigestAlgo::Sha256, h.clone()))));
        assert_eq!(parse_digest(None, &format!("sha256:{h}")), Ok(Some((DigestAlgo::Sha256, h.clone()))));
        assert_eq!(parse_digest(Some("md5"), "x"), Ok(None));
        assert_eq!(parse_digest(Some("sha512"), &h), Err(()));
        assert_eq!(parse_digest(Some("sha512"), &format!("sha256:{h}")), Err(()));
    }
}
