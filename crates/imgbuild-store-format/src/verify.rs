//! What verifying a published version checks, independent of where its files
//! are (a directory, a bucket): `SHA256SUMS` defines the file set; every
//! digest recorded for a file (`SHA256SUMS`, `SHA512SUMS`, `manifest.json`)
//! must match the file's content. A store reads the lists and the manifest,
//! hashes each file once ([`Plan::wants_sha512`] says whether SHA-512 is
//! needed too) and hands the digests to [`Plan::check`].

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::sums::{Algo, SumsEntry, is_safe_file_name};

/// The manifest object of every version.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One thing wrong with a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// Listed in `SHA256SUMS` but not in the store.
    Missing { file: String },
    /// The content does not match a recorded digest.
    Mismatch {
        file: String,
        algo: Algo,
        /// `SHA256SUMS`, `SHA512SUMS`, `manifest.json` (or a store's own record, e.g. object metadata).
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

/// The outcome of verifying a version. `W` says where it is, as fields
/// serialised in place: `{"dir": ..}` for a directory, `{"url": ..}` for S3.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport<W> {
    #[serde(flatten)]
    pub at: W,
    /// Files listed in `SHA256SUMS`, in list order.
    pub files: Vec<String>,
    /// Empty when everything matched.
    pub problems: Vec<Problem>,
}

impl<W> VerifyReport<W> {
    pub fn new(at: W, plan: Plan) -> Self {
        VerifyReport { at, files: plan.files, problems: plan.problems }
    }

    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The files with a problem, each once, in the order found.
    pub fn bad_files(&self) -> Vec<&str> {
        bad_files(&self.problems)
    }
}

/// The files with a problem, each once, in the order found.
pub fn bad_files(problems: &[Problem]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for file in problems.iter().filter_map(Problem::file) {
        if !out.contains(&file) {
            out.push(file);
        }
    }
    out
}

/// A digest some file is expected to have, and where it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub file: String,
    pub algo: Algo,
    pub hex: String,
    pub recorded_in: String,
}

/// What to hash and what to expect, from a version's lists and manifest.
#[derive(Debug, Default)]
pub struct Plan {
    /// Files listed in `SHA256SUMS`, in list order: the files to hash.
    pub files: Vec<String>,
    expected: Vec<Expected>,
    /// Problems found before any file is read.
    pub problems: Vec<Problem>,
}

impl Plan {
    /// `manifest` is the manifest's bytes, or why it could not be read.
    pub fn new(sha256: &[SumsEntry], sha512: &[SumsEntry], manifest: Result<&[u8], String>) -> Plan {
        let mut plan = Plan { files: sha256.iter().map(|e| e.file.clone()).collect(), ..Plan::default() };
        plan.expected = from_sums(sha256, Algo::Sha256);
        for entry in from_sums(sha512, Algo::Sha512) {
            plan.keep_if_listed(entry);
        }
        match manifest.and_then(manifest_digests) {
            Ok((artifacts, digests)) => {
                let unlisted: Vec<String> = artifacts.into_iter().filter(|f| !plan.files.contains(f)).collect();
                for file in unlisted {
                    plan.flag_unlisted(file, MANIFEST_FILE.to_string());
                }
                for entry in digests {
                    plan.keep_if_listed(entry);
                }
            }
            Err(reason) => plan.problems.push(Problem::Manifest { reason }),
        }
        plan
    }

    /// Whether `file` needs a SHA-512 as well as its SHA-256.
    pub fn wants_sha512(&self, file: &str) -> bool {
        self.expected.iter().any(|e| e.file == file && e.algo == Algo::Sha512)
    }

    /// Compares `file`'s digests with everything recorded for it.
    pub fn check(&mut self, file: &str, sha256: &str, sha512: Option<&str>) {
        for e in self.expected.iter().filter(|e| e.file == file) {
            let actual = match (e.algo, sha512) {
                (Algo::Sha256, _) => sha256,
                (Algo::Sha512, Some(h)) => h,
                // Not computed: the caller did not ask `wants_sha512`.
                (Algo::Sha512, None) => continue,
            };
            if actual != e.hex {
                self.problems.push(Problem::Mismatch {
                    file: file.to_string(),
                    algo: e.algo,
                    recorded_in: e.recorded_in.clone(),
                    expected: e.hex.clone(),
                    actual: actual.to_string(),
                });
            }
        }
    }

    /// SHA256SUMS defines the file set; anything recorded only elsewhere is
    /// flagged rather than hashed.
    fn keep_if_listed(&mut self, entry: Expected) {
        if self.files.contains(&entry.file) {
            self.expected.push(entry);
        } else {
            self.flag_unlisted(entry.file, entry.recorded_in);
        }
    }

    fn flag_unlisted(&mut self, file: String, listed_in: String) {
        let problem = Problem::NotInSha256Sums { file, listed_in };
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }
}

fn from_sums(entries: &[SumsEntry], algo: Algo) -> Vec<Expected> {
    entries
        .iter()
        .map(|e| Expected { file: e.file.clone(), algo, hex: e.hex.clone(), recorded_in: algo.sums_file_name() })
        .collect()
}

/// The digests recorded in `manifest.json`: `artifacts[].file` (or `name`)
/// with `digests` either `{"sha256": "<hex>"}` (values may also be
/// `sha256:<hex>`) or `["sha256:<hex>", ...]`. Other algorithms are ignored.
/// Returns the artifact file names and the digests.
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

/// `Ok(None)` for algorithms the stores do not check (e.g. `md5`).
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
        assert_eq!(parse_digest(Some("sha512"), &format!("sha256:{h}")), Err(()));
    }

    #[test]
    fn a_plan_checks_every_record_and_flags_unlisted_files() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let sha256 = vec![SumsEntry { hex: a.clone(), file: "x.img".into() }];
        let manifest = serde_json::json!({"artifacts": [
            {"file": "x.img", "digests": {"sha256": format!("sha256:{b}")}},
            {"file": "y.img", "digests": {"sha256": a.clone()}}
        ]})
        .to_string();
        let mut plan = Plan::new(&sha256, &[], Ok(manifest.as_bytes()));
        assert_eq!(plan.files, ["x.img"]);
        assert!(!plan.wants_sha512("x.img"));
        assert_eq!(plan.problems, [Problem::NotInSha256Sums { file: "y.img".into(), listed_in: MANIFEST_FILE.into() }]);
        plan.check("x.img", &a, None);
        // SHA256SUMS matches, the manifest's record does not.
        assert_eq!(plan.problems.len(), 2);
        assert!(matches!(&plan.problems[1], Problem::Mismatch { recorded_in, .. } if recorded_in == MANIFEST_FILE));
        assert_eq!(bad_files(&plan.problems), ["y.img", "x.img"]);
        let plan = Plan::new(&sha256, &[], Err("missing".into()));
        assert_eq!(plan.problems, [Problem::Manifest { reason: "missing".into() }]);
    }
}
