//! Re-hashing a published version in S3 against its `SHA256SUMS`, optional
//! `SHA512SUMS`, the digests in `manifest.json`, and each object's
//! `x-amz-meta-sha256`. Every file is downloaded once and streamed through
//! the hashers (both SHA-256 and, when expected, SHA-512) without being
//! stored.

pub use imgbuild_store_format::Problem;
use imgbuild_store_format::{MultiHasher, Plan};
use serde::Serialize;

use crate::MANIFEST_FILE;
use crate::error::{S3Error, request_error};
use crate::names::{validate_name, validate_version};
use crate::publish::SHA256_METADATA;
use crate::store::S3Store;
use crate::sums::{Algo, SumsEntry, parse_sums};

/// Where a digest was recorded when it came from the object's metadata.
pub const METADATA_SOURCE: &str = "x-amz-meta-sha256";

/// Where an S3 version is: `s3://bucket/prefix/NAME/VERSION/`.
#[derive(Debug, Clone, Serialize)]
pub struct AtUrl {
    pub url: String,
}

/// The outcome of [`S3Store::verify`].
pub type VerifyReport = imgbuild_store_format::VerifyReport<AtUrl>;

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
        let mut plan = Plan::new(&sha256, &sha512, Ok(&manifest_bytes));
        for file in plan.files.clone() {
            self.check_object(name, version, &file, &mut plan).await;
        }
        Ok(VerifyReport::new(AtUrl { url: self.url(&self.version_prefix(name, version)) }, plan))
    }

    async fn read_sums(&self, name: &str, version: &str, algo: Algo) -> Result<Option<Vec<SumsEntry>>, S3Error> {
        let list = algo.sums_file_name();
        let Some((bytes, _)) = self.get_small(&self.object_key(name, version, &list)).await? else {
            return Ok(None);
        };
        let body = String::from_utf8_lossy(&bytes);
        parse_sums(&body, &list, algo).map(Some)
    }

    /// Downloads `file` once through the hashers and checks it against the
    /// plan and the object's own `x-amz-meta-sha256`.
    async fn check_object(&self, name: &str, version: &str, file: &str, plan: &mut Plan) {
        let key = self.object_key(name, version, file);
        let unreadable = |error: String| Problem::Unreadable { file: file.to_string(), error };
        let resp = match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(resp) => resp,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                plan.problems.push(Problem::Missing { file: file.to_string() });
                return;
            }
            Err(e) => {
                let error = crate::error_chain(&request_error("download", &self.bucket, &key, e));
                plan.problems.push(unreadable(error));
                return;
            }
        };
        let recorded = resp.metadata().and_then(|m| m.get(SHA256_METADATA)).map(|h| h.to_ascii_lowercase());
        let mut hasher = MultiHasher::sha256_and(plan.wants_sha512(file));
        let mut body = resp.body;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => hasher.update(&chunk),
                Err(e) => {
                    plan.problems.push(unreadable(crate::error_chain(&self.stream_error("download", &key, e))));
                    return;
                }
            }
        }
        let digests = hasher.finish();
        let sha256 = digests.sha256();
        plan.check(file, &sha256, digests.get(Algo::Sha512));
        if let Some(recorded) = recorded
            && recorded != sha256
        {
            plan.problems.push(Problem::Mismatch {
                file: file.to_string(),
                algo: Algo::Sha256,
                recorded_in: METADATA_SOURCE.to_string(),
                expected: recorded,
                actual: sha256,
            });
        }
    }
}
