//! Digests, the `checksum` template value, and checksum lists (`SHA256SUMS`).

use std::fmt;
use std::str::FromStr;

use imgbuild_store_format::{Algo, MultiHasher};
use serde::{Deserialize, Serialize};

/// A supported hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgo {
    Sha256,
    Sha512,
}

impl From<DigestAlgo> for Algo {
    fn from(algo: DigestAlgo) -> Algo {
        match algo {
            DigestAlgo::Sha256 => Algo::Sha256,
            DigestAlgo::Sha512 => Algo::Sha512,
        }
    }
}

impl DigestAlgo {
    /// The lowercase name used in `sha256:<hex>` and in cache paths.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgo::Sha256 => "sha256",
            DigestAlgo::Sha512 => "sha512",
        }
    }

    /// Number of hex digits in a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            DigestAlgo::Sha256 => 64,
            DigestAlgo::Sha512 => 128,
        }
    }

    /// The algorithm whose digests have `len` hex digits.
    pub fn from_hex_len(len: usize) -> Option<Self> {
        match len {
            64 => Some(DigestAlgo::Sha256),
            128 => Some(DigestAlgo::Sha512),
            _ => None,
        }
    }

    /// Parses `sha256` / `sha512` (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(DigestAlgo::Sha256),
            "sha512" => Some(DigestAlgo::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for DigestAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest: algorithm plus lowercase hex.
///
/// Serialises as the string `sha256:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    pub algo: DigestAlgo,
    pub hex: String,
}

impl Digest {
    /// Builds a digest from hex of the right length (any case; stored lowercase).
    pub fn new(algo: DigestAlgo, hex: &str) -> Result<Self, ChecksumParseError> {
        let given = format!("{algo}:{hex}");
        check_hex(&given, algo, hex)?;
        Ok(Digest { algo, hex: hex.to_ascii_lowercase() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

impl FromStr for Digest {
    type Err = ChecksumParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Checksum>()? {
            Checksum::Digest(d) => Ok(d),
            _ => Err(ChecksumParseError::new(s, "a digest is required here")),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `checksum` of a source, as written in a template.
///
/// Serialises as its string form (`sha256:<hex>`, `file:<list>`, `none`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// The expected digest itself.
    Digest(Digest),
    /// A checksum list (`SHA256SUMS` style) at this URL or path.
    File(String),
    /// No verification (the caller should warn).
    None,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Digest(d) => d.fmt(f),
            Checksum::File(loc) if has_prefix(loc, "file://") => f.write_str(loc),
            Checksum::File(loc) => write!(f, "file:{loc}"),
            Checksum::None => f.write_str("none"),
        }
    }
}

/// Why a `checksum` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected `sha256:<64 hex digits>`, `sha512:<128 hex digits>`, `file:<url or path>` or `none`; got `{given}` ({reason})"
)]
pub struct ChecksumParseError {
    /// The text that was given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ChecksumParseError {
    fn new(given: &str, reason: impl Into<String>) -> Self {
        ChecksumParseError { given: given.to_string(), reason: reason.into() }
    }
}

impl FromStr for Checksum {
    type Err = ChecksumParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ChecksumParseError::new(input, "empty"));
        }
        if s.eq_ignore_ascii_case("none") {
            return Ok(Checksum::None);
        }
        if has_prefix(s, "file://") {
            return Ok(Checksum::File(s.to_string()));
        }
        if has_prefix(s, "file:") {
            return parse_file(input, &s[5..]);
        }
        match s.split_once(':') {
            Some((algo, hex)) => parse_digest(input, algo, hex).map(Checksum::Digest),
            None => Err(bare_value_error(input, s)),
        }
    }
}

impl Serialize for Checksum {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn has_prefix(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

fn parse_file(input: &str, location: &str) -> Result<Checksum, ChecksumParseError> {
    let location = location.trim();
    if location.is_empty() {
        return Err(ChecksumParseError::new(input, "`file:` needs the URL or path of a checksum list"));
    }
    Ok(Checksum::File(location.to_string()))
}

fn parse_digest(input: &str, algo: &str, hex: &str) -> Result<Digest, ChecksumParseError> {
    let Some(algo) = DigestAlgo::from_name(algo) else {
        let reason = format!("unsupported algorithm `{algo}`; use sha256 or sha512");
        return Err(ChecksumParseError::new(input, reason));
    };
    check_hex(input, algo, hex)?;
    Ok(Digest { algo, hex: hex.to_ascii_lowercase() })
}

fn check_hex(input: &str, algo: DigestAlgo, hex: &str) -> Result<(), ChecksumParseError> {
    if let Some((pos, c)) = hex.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        let reason = format!("`{c}` at position {} is not a hex digit", pos + 1);
        return Err(ChecksumParseError::new(input, reason));
    }
    let (len, need) = (hex.len(), algo.hex_len());
    if len != need {
        let reason = format!("{len} hex digits, need {need}");
        return Err(ChecksumParseError::new(input, reason));
    }
    Ok(())
}

fn bare_value_error(input: &str, s: &str) -> ChecksumParseError {
    let all_hex = s.chars().all(|c| c.is_ascii_hexdigit());
    let reason = match DigestAlgo::from_hex_len(s.len()) {
        Some(algo) if all_hex => format!("no algorithm; did you mean `{algo}:{s}`?"),
        _ => "no `algorithm:` prefix".to_string(),
    };
    ChecksumParseError::new(input, reason)
}

/// Incremental hasher for either algorithm (the store format's one hasher).
#[derive(Clone)]
pub(crate) struct Hasher {
    algo: DigestAlgo,
    inner: MultiHasher,
}

impl Hasher {
    pub(crate) fn new(algo: DigestAlgo) -> Self {
        Hasher { algo, inner: MultiHasher::new(&[algo.into()]) }
    }

    pub(crate) fn algo(&self) -> DigestAlgo {
        self.algo
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    pub(crate) fn finish(self) -> Digest {
        let hex = self.inner.finish().get(self.algo.into()).unwrap_or_default().to_string();
        Digest { algo: self.algo, hex }
    }
}

/// Lowercase hex SHA-256 of `data` (used for cache key file names).
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    imgbuild_store_format::sha256_hex(data)
}

/// One usable line of a checksum list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListEntry {
    /// File name as written, without a leading `*` or `./`; empty for a bare digest.
    pub name: String,
    pub digest: Digest,
}

/// Result of looking a file up in a checksum list.
#[derive(Debug, PartialEq, Eq)]
pub enum ListLookup {
    Found(Digest),
    /// Not listed: up to five names the list does contain, and how many it has.
    Missing {
        names: Vec<String>,
        listed: usize,
    },
}

/// Finds the digest for `file_name` in a GNU (`HEX  name`, `HEX *name`) or
/// BSD (`SHA256 (name) = HEX`) checksum list. A list holding one bare digest
/// (no name) applies to any file.
pub fn lookup_in_list(text: &str, file_name: &str) -> ListLookup {
    let entries: Vec<ListEntry> = text.lines().filter_map(parse_list_line).collect();
    let exact = entries.iter().find(|e| e.name == file_name);
    let suffix = format!("/{file_name}");
    let nested = || entries.iter().find(|e| e.name.ends_with(&suffix));
    if let Some(e) = exact.or_else(nested) {
        return ListLookup::Found(e.digest.clone());
    }
    if let [only] = entries.as_slice()
        && only.name.is_empty()
    {
        return ListLookup::Found(only.digest.clone());
    }
    let named: Vec<&ListEntry> = entries.iter().filter(|e| !e.name.is_empty()).collect();
    ListLookup::Missing { names: named.iter().take(5).map(|e| e.name.clone()).collect(), listed: named.len() }
}

fn parse_list_line(line: &str) -> Option<ListEntry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    parse_bsd_line(line).or_else(|| parse_gnu_line(line))
}

/// `SHA256 (name) = HEX`
fn parse_bsd_line(line: &str) -> Option<ListEntry> {
    let (tag, rest) = line.split_once(" (")?;
    let (name, hex) = rest.rsplit_once(") = ")?;
    let algo = DigestAlgo::from_name(tag.trim())?;
    let digest = Digest::new(algo, hex.trim()).ok()?;
    Some(ListEntry { name: normalise_name(name), digest })
}

/// `HEX  name`, `HEX *name`, or a bare `HEX`.
fn parse_gnu_line(line: &str) -> Option<ListEntry> {
    let (hex, name) = match line.split_once(char::is_whitespace) {
        Some((hex, name)) => (hex, name.trim()),
        None => (line, ""),
    };
    let algo = DigestAlgo::from_hex_len(hex.len())?;
    let digest = Digest::new(algo, hex).ok()?;
    Some(ListEntry { name: normalise_name(name), digest })
}

fn normalise_name(name: &str) -> String {
    let name = name.strip_prefix('*').unwrap_or(name);
    let name = name.strip_prefix("./").unwrap_or(name);
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn h128() -> String {
        "ab".repeat(64)
    }

    #[test]
    fn parses_sha256_and_lowercases() {
        let upper = H64.to_ascii_uppercase();
        let c: Checksum = format!("SHA256:{upper}").parse().unwrap();
        let Checksum::Digest(d) = c else { panic!("not a digest: {c:?}") };
        assert_eq!(d.algo, DigestAlgo::Sha256);
        assert_eq!(d.hex, H64);
        assert_eq!(d.to_string(), format!("sha256:{H64}"));
    }

    #[test]
    fn parses_sha512() {
        let c: Checksum = format!("sha512:{}", h128()).parse().unwrap();
        assert_eq!(c, Checksum::Digest(Digest { algo: DigestAlgo::Sha512, hex: h128() }));
    }

    #[test]
    fn parses_file_and_none() {
        let c: Checksum = "file:https://example.com/SHA256SUMS".parse().unwrap();
        assert_eq!(c, Checksum::File("https://example.com/SHA256SUMS".to_string()));
        let c: Checksum = "file:./SHA256SUMS".parse().unwrap();
        assert_eq!(c, Checksum::File("./SHA256SUMS".to_string()));
        let c: Checksum = "file:///srv/SHA256SUMS".parse().unwrap();
        assert_eq!(c, Checksum::File("file:///srv/SHA256SUMS".to_string()));
        assert_eq!(c.to_string(), "file:///srv/SHA256SUMS");
        assert_eq!("NONE".parse::<Checksum>().unwrap(), Checksum::None);
        assert_eq!(" none ".parse::<Checksum>().unwrap(), Checksum::None);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            format!("sha256:{H64}"),
            format!("sha512:{}", h128()),
            "file:https://x/SUMS".to_string(),
            "none".to_string(),
        ] {
            let c: Checksum = s.parse().unwrap();
            assert_eq!(c.to_string(), s);
        }
    }

    #[test]
    fn short_hex_error_says_count_and_need() {
        let err = "sha256:abc".parse::<Checksum>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "expected `sha256:<64 hex digits>`, `sha512:<128 hex digits>`, \
             `file:<url or path>` or `none`; got `sha256:abc` (3 hex digits, need 64)"
        );
    }

    #[test]
    fn sha512_with_sha256_length_is_rejected() {
        let err = format!("sha512:{H64}").parse::<Checksum>().unwrap_err();
        assert!(err.to_string().contains("64 hex digits, need 128"), "{err}");
    }

    #[test]
    fn non_hex_is_rejected() {
        let bad = format!("sha256:{}g", &H64[..63]);
        let err = bad.parse::<Checksum>().unwrap_err();
        assert!(err.to_string().contains("`g` at position 64"), "{err}");
        assert_eq!(err.given, bad);
    }

    #[test]
    fn unknown_algorithm_is_rejected() {
        let err = "md5:d41d8cd98f00b204e9800998ecf8427e".parse::<Checksum>().unwrap_err();
        assert!(err.to_string().contains("unsupported algorithm `md5`"), "{err}");
    }

    #[test]
    fn bare_hex_suggests_prefix() {
        let err = H64.parse::<Checksum>().unwrap_err();
        assert!(err.to_string().contains(&format!("did you mean `sha256:{H64}`")), "{err}");
    }

    #[test]
    fn empty_and_empty_file_are_rejected() {
        let err = "".parse::<Checksum>().unwrap_err();
        assert!(err.to_string().ends_with("got `` (empty)"), "{err}");
        let err = "file:".parse::<Checksum>().unwrap_err();
        assert!(err.to_string().contains("needs the URL or path"), "{err}");
        assert!("garbage".parse::<Checksum>().is_err());
    }

    #[test]
    fn serde_uses_strings() {
        let c: Checksum = serde_json::from_str(&format!("\"sha256:{H64}\"")).unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"sha256:{H64}\""));
        let err = serde_json::from_str::<Checksum>("\"sha256:12\"").unwrap_err();
        assert!(err.to_string().contains("2 hex digits, need 64"), "{err}");
        let algo = serde_json::to_string(&DigestAlgo::Sha512).unwrap();
        assert_eq!(algo, "\"sha512\"");
    }

    #[test]
    fn gnu_list_lookup() {
        let text = format!("# comment\n{H64}  other.iso\n{h}  ./disk.qcow2\n", h = h128());
        let found = lookup_in_list(&text, "disk.qcow2");
        let want = Digest::new(DigestAlgo::Sha512, &h128()).unwrap();
        assert_eq!(found, ListLookup::Found(want));
        let text = format!("{}  *image.iso\r\n", H64.to_ascii_uppercase());
        let want = Digest::new(DigestAlgo::Sha256, H64).unwrap();
        assert_eq!(lookup_in_list(&text, "image.iso"), ListLookup::Found(want));
    }

    #[test]
    fn bsd_list_lookup() {
        let text = format!("SHA256 (a b.iso) = {H64}\nSHA512 (x.img) = {}\n", h128());
        let want = Digest::new(DigestAlgo::Sha256, H64).unwrap();
        assert_eq!(lookup_in_list(&text, "a b.iso"), ListLookup::Found(want));
    }

    #[test]
    fn missing_lists_up_to_five_names() {
        let text: String = (0..8).map(|i| format!("{H64}  f{i}\n")).collect();
        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let want = ListLookup::Missing { names, listed: 8 };
        assert_eq!(lookup_in_list(&text, "nope"), want);
    }

    #[test]
    fn single_bare_digest_applies() {
        let want = Digest::new(DigestAlgo::Sha256, H64).unwrap();
        assert_eq!(lookup_in_list(&format!("{H64}\n"), "x.iso"), ListLookup::Found(want));
    }
}
