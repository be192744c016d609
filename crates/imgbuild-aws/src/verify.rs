//! Re-hashing a published version in S3 against its `SHA256SUMS`, optional
//! `SHA512SUMS`, the digests in `manifest.json`, and each object's
//! `x-amz-meta-sha256`. Every file is downloaded once and streamed through
//! the hashers (both SHA-256 and, when expected, SHA-512) without being
//! stored.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use sha2::Digest as _;

use crate::MANIFEST_FILE;
use crate::error::{S3Error, request_error};
use crate::names::{validate_name, validate_version};
use crate::publish::SHA256_METADATA;
use crate::store::S3Store;
use crate::sums::{Algo, SumsEntry, is_safe_file_name, parse_sums};

/// Where a digest was recorded when it came from the object's metadata.
pub const METADATA_SOURCE: &str = "x-amz-meta-sha256";

/// The outcome of [`S3Store::verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// `s3://bucket/prefix/NAME/VERSION/`.
    pub url: String,
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

/// One thing wrong with a version (the same kinds as the local store's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// Listed in `SHA256SUMS` but not in the bucket.
    Missing { file: String },
    /// The content does not match a recorded digest.
    Mismatch {
        file: String,
        algo: Algo,
        /// `SHA256SUMS`, `SHA512SUMS`, `manifest.json` or `x-amz-meta-sha256`.
        recorded_in: String,
        expected: String,
        actual: String,
    },
    /// The object exists but could not be downloaded.
    Unreadable { file: String, error: String },
    /// Listed elsewhere (manifest, `SHA512SUMS`) but not in `SHA256SUMS`.
    NotInSha256Sums { file: String, listed_in: String },
    /// `manifest.json` has no usable `artifacts`.
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
    algo: Algo,
    hex: String,
    recorded_in: String,
}

impl S3Store {
    /// Downloads and re-hashes every file of `name@version` (one pass per
    /// file) and compares it with `SHA256SUMS`, `SHA512SUMS` (if present),
    /// the manifest's digests and the object's `x-amz-meta-sha256`.
    /// Mismatches are in the report (naming the file), not errors.
    pub async fn verify(&self, name: &str, version: &str) -> Result<VerifyReport, S3Error> {
        validate_name(name)?;
        validate_version(version)?;
        let manifest_key = self.object_key(name, version, MANIFEST_FILE);
        let Some((manifest_bytes, _)) = self.get_small(&manifest_key).await? else {
            return Err(self.version_not_found(name, version));
        };
        let sha256 = self
            .read_sums(name, version, Algo::Sha256)
            .await?
            .ok_or_else(|| S3Error::MissingSha256Sums { name: name.to_string(), version: version.to_string() })?;
        let sha512 = self.read_sums(name, version, Algo::Sha512).await?.unwrap_or_default();
        let files: Vec<String> = sha256.iter().map(|e| e.file.clone()).collect();
        let mut problems = Vec::new();
        let mut expected = from_sums(&sha256, Algo::Sha256);
        for entry in from_sums(&sha512, Algo::Sha512) {
            keep_if_listed(entry, &files, &mut expected, &mut problems);
        }
        match manifest_digests(&manifest_bytes) {
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
            self.check_object(name, version, file, &wanted, &mut problems).await;
        }
        Ok(VerifyReport { url: self.url(&self.version_prefix(name, version)), files, problems })
    }

    async fn read_sums(&self, name: &str, version: &str, algo: Algo) -> Result<Option<Vec<SumsEntry>>, S3Error> {
        let list = algo.sums_file_name();
        let Some((bytes, _)) = self.get_small(&self.object_key(name, version, &list)).await? else {
            return Ok(None);
        };
        let body = String::from_utf8_lossy(&bytes);
        parse_sums(&body, &list, algo).map(Some)
    }

    async fn check_object(
        &self,
        name: &str,
        version: &str,
        file: &str,
        wanted: &[&Expected],
        problems: &mut Vec<Problem>,
    ) {
        let key = self.object_key(name, version, file);
        let want_512 = wanted.iter().any(|e| e.algo == Algo::Sha512);
        let resp = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(resp) => resp,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                problems.push(Problem::Missing { file: file.to_string() });
                return;
            }
            Err(e) => {
                let error = crate::error_chain(&request_error("download", &self.bucket, &key, e));
                problems.push(Problem::Unreadable { file: file.to_string(), error });
                return;
            }
        };
        let recorded = resp.metadata().and_then(|m| m.get(SHA256_METADATA)).map(|h| h.to_ascii_lowercase());
        let mut sha256 = sha2::Sha256::new();
        let mut sha512 = want_512.then(sha2::Sha512::new);
        let mut body = resp.body;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    sha256.update(&chunk);
                    if let Some(h) = sha512.as_mut() {
                        h.update(&chunk);
                    }
                }
                Err(e) => {
                    let error = crate::error_chain(&self.stream_error("download", &key, e));
                    problems.push(Problem::Unreadable { file: file.to_string(), error });
                    return;
                }
            }
        }
        let sha256 = hex::encode(sha256.finalize());
        let sha512 = sha512.map(|h| hex::encode(h.finalize()));
        for e in wanted {
            let actual = match (e.algo, &sha512) {
                (Algo::Sha256, _) => &sha256,
                (Algo::Sha512, Some(h)) => h,
                (Algo::Sha512, None) => continue,
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
        if let Some(recorded) = recorded
            && recorded != sha256
        {
            problems.push(Problem::Mismatch {
                file: file.to_string(),
                algo: Algo::Sha256,
                recorded_in: METADATA_SOURCE.to_string(),
                expected: recorded,
                actual: sha256,
            });
        }
    }
}

fn from_sums(entries: &[SumsEntry], algo: Algo) -> Vec<Expected> {
    entries
        .iter()
        .map(|e| Expected { file: e.file.clone(), algo, hex: e.hex.clone(), recorded_in: algo.sums_file_name() })
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

/// The digests recorded in `manifest.json`: `artifacts[].file` (or `name`)
/// with `digests` either `{"sha256": "<hex>"}` (values may also be
/// `sha256:<hex>`) or `["sha256:<hex>", ...]`. Other algorithms are ignored.
fn manifest_digests(bytes: &[u8]) -> Result<(Vec<String>, Vec<Expected>), String> {
    let manifest: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
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
fn parse_digest(key: Option<&str>, text: &str) -> Result<Option<(Algo, String)>, ()> {
    let (name, hex) = match (key, text.split_once(':')) {
        (Some(key), Some((prefix, hex))) if prefix.eq_ignore_ascii_case(key) => (key, hex),
        (Some(_), Some(_)) => return Err(()),
        (Some(key), None) => (key, text),
        (None, Some((prefix, hex))) => (prefix, hex),
        (None, None) => return Err(()),
    };
    let Some(algo) = Algo::from_name(name) else {
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
        assert_eq!(parse_digest(Some("sha256"), &h), Ok(Some((Algo::Sha256, h.clone()))));
        assert_eq!(parse_digest(None, &format!("sha256:{h}")), Ok(Some((Algo::Sha256, h.clone()))));
        assert_eq!(parse_digest(Some("md5"), "x"), Ok(None));
        assert_eq!(parse_digest(Some("sha512"), &h), Err(()));
    }

    #[test]
    fn manifest_artifacts() {
        let h = "cd".repeat(32);
        let m = serde_json::json!({"artifacts": [{"file": "a.img", "digests": {"sha256": format!("sha256:{h}")}}]});
        let (files, digests) = manifest_digests(m.to_string().as_bytes()).unwrap();
        assert_eq!(files, ["a.img"]);
        assert_eq!(digests[0].hex, h);
        assert!(manifest_digests(b"{}").is_err());
    }
}
