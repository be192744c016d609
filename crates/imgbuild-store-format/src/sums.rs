//! Checksum lists in the GNU coreutils format (`sha256sum -c` reads them):
//! one `<hex>  <file name>` line per file (`<hex> *<file name>` also read).

use std::fmt;

use serde::Serialize;

/// The digest algorithms a store records and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    pub fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }

    pub fn from_name(name: &str) -> Option<Algo> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(Algo::Sha256),
            "sha512" => Some(Algo::Sha512),
            _ => None,
        }
    }

    /// `SHA256SUMS` / `SHA512SUMS`.
    pub fn sums_file_name(self) -> String {
        format!("{}SUMS", self.name().to_ascii_uppercase())
    }

    /// The algorithm of a checksum list file name.
    pub fn from_sums_file_name(list: &str) -> Option<Algo> {
        [Algo::Sha256, Algo::Sha512].into_iter().find(|a| a.sums_file_name() == list)
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of a checksum list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumsEntry {
    /// Lowercase hex digest.
    pub hex: String,
    pub file: String,
}

/// A line of a checksum list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// Renders `(file name, hex digest)` pairs as a checksum list body.
pub fn format_sums<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    entries.into_iter().map(|(file, hex)| format!("{}  {file}\n", hex.to_ascii_lowercase())).collect()
}

/// A file name that stays inside the directory (key prefix) it is listed in.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0', '\n', '\r'])
}

/// Parses a checksum list: blank lines and `#` comments are skipped; a
/// malformed line, an unsafe file name or a file listed twice is an error.
pub fn parse_sums(body: &str, algo: Algo) -> Result<Vec<SumsEntry>, BadLine> {
    let mut entries: Vec<SumsEntry> = Vec::new();
    for (index, line) in body.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |reason: String| BadLine { line: index + 1, reason };
        let entry = parse_line(line, algo).map_err(invalid)?;
        if entries.iter().any(|e| e.file == entry.file) {
            return Err(invalid(format!("`{}` is listed twice", entry.file)));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str, algo: Algo) -> Result<SumsEntry, String> {
    let (hex, rest) = line.split_once(' ').ok_or_else(|| "expected `<hex>  <file name>`".to_string())?;
    // GNU format: a space, then ` ` (text mode) or `*` (binary mode).
    let file = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*')).unwrap_or(rest);
    if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("expected a {}-digit {algo} digest, got `{hex}`", algo.hex_len()));
    }
    if !is_safe_file_name(file) {
        return Err(format!("`{file}` is not a plain file name"));
    }
    Ok(SumsEntry { hex: hex.to_ascii_lowercase(), file: file.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_binary_mode_lines() {
        let a = "a".repeat(64);
        let body = format!("{a}  disk.qcow2\n\n# comment\n{a} *other.img\n");
        let entries = parse_sums(&body, Algo::Sha256).unwrap();
        let files: Vec<&str> = entries.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(files, ["disk.qcow2", "other.img"]);
    }

    #[test]
    fn rejects_traversal_short_digests_and_duplicates() {
        let a = "a".repeat(64);
        for body in [
            format!("{a}  ../etc/passwd"),
            format!("{a}  dir/file"),
            format!("{a}  .hidden"),
            "abc  file".to_string(),
            format!("{a}  f\n{a}  f"),
        ] {
            assert!(parse_sums(&body, Algo::Sha256).is_err(), "{body}");
        }
        assert_eq!(parse_sums(&format!("{a}  f\n{a}  f"), Algo::Sha256).unwrap_err().line, 2);
    }

    #[test]
    fn list_names_and_round_trip() {
        assert_eq!(Algo::from_sums_file_name("SHA512SUMS"), Some(Algo::Sha512));
        assert_eq!(Algo::from_sums_file_name("MD5SUMS"), None);
        let a = "A".repeat(64);
        let body = format_sums([("x.img", a.as_str())]);
        assert_eq!(body, format!("{}  x.img\n", "a".repeat(64)));
        assert_eq!(parse_sums(&body, Algo::Sha256).unwrap()[0].file, "x.img");
    }
}
