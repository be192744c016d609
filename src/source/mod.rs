//! Temporary: replaced by the full fetcher.
use std::fmt;
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    Sha256,
    Sha512,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algo: DigestAlgo,
    pub hex: String,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    Digest(Digest),
    File(String),
    None,
}
#[derive(Debug, thiserror::Error)]
#[error("invalid checksum `{0}`")]
pub struct ChecksumParseError(String);
impl std::str::FromStr for Checksum {
    type Err = ChecksumParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "none" {
            return Ok(Checksum::None);
        }
        if let Some(f) = s.strip_prefix("file:") {
            return Ok(Checksum::File(f.into()));
        }
        if let Some(h) = s.strip_prefix("sha256:") {
            return Ok(Checksum::Digest(Digest {
                algo: DigestAlgo::Sha256,
                hex: h.into(),
            }));
        }
        Err(ChecksumParseError(s.into()))
    }
}
impl fmt::Display for DigestAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DigestAlgo::Sha256 => "sha256",
            DigestAlgo::Sha512 => "sha512",
        })
    }
}
impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Digest(d) => write!(f, "{}:{}", d.algo, d.hex),
            Checksum::File(u) => write!(f, "file:{u}"),
            Checksum::None => f.write_str("none"),
        }
    }
}
use std::path::{Path, PathBuf};
use std::sync::Arc;
impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}
pub enum ProgressEvent {
    Started {
        label: String,
        total: Option<u64>,
        resumed_from: u64,
    },
    Advanced {
        bytes: u64,
    },
    Finished,
    Message(String),
}
pub type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;
pub struct Fetcher;
pub struct Fetched {
    pub path: PathBuf,
    pub digest: Digest,
    pub cache_hit: bool,
}
#[derive(Debug, thiserror::Error)]
#[error("fetch not implemented")]
pub struct FetchError;
impl Fetcher {
    pub fn new(_c: PathBuf, _p: ProgressFn) -> Result<Self, FetchError> {
        Ok(Fetcher)
    }
    pub fn default_cache_dir() -> PathBuf {
        PathBuf::from("/tmp")
    }
    pub async fn fetch(
        &self,
        _u: &str,
        _c: &Checksum,
        _b: &Path,
        _t: &tokio_util::sync::CancellationToken,
    ) -> Result<Fetched, FetchError> {
        Err(FetchError)
    }
}
