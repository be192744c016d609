//! Checksum lists in the GNU coreutils format (`sha256sum -c` reads them):
//! one `<hex>  <file name>` line per file (`<hex> *<file name>` also read).

use std::path::Path;

use super::error::StoreError;
use crate::source::DigestAlgo;

/// One line of a checksum list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumsEntry {
    /// Lowercase hex digest.
    pub hex: String,
    pub file: String,
}

/// `SHA256SUMS` / `SHA512SUMS`.
pub fn sums_file_name(algo: DigestAlgo) -> String {
    format!("{}SUMS", algo.name().to_ascii_uppercase())
}

/// Renders `(file name, hex digest)` pairs as a checksum list body.
pub fn format_sums<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    entries.into_iter().map(|(file, hex)| format!("{}  {file}\n", hex.to_ascii_lowercase())).collect()
}

/// A file name that stays inside the directory it is listed in.
pub(crate) fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0', '\n'])
}

/// Parses a checksum list; `path` is only used in error messages.
pub(crate) fn parse_sums(body: &str, path: &Path, algo: DigestAlgo) -> Result<Vec<SumsEntry>, StoreError> {
    let mut entries: Vec<SumsEntry> = Vec::new();
    for (index, line) in body.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |reason: String| StoreError::InvalidSums { path: path.to_path_buf(), line: index + 1, reason };
        let entry = parse_line(line, algo).map_err(invalid)?;
        if entries.iter().any(|e| e.file == entry.file) {
            return Err(invalid(format!("`{}` is listed twice", entry.file)));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str, algo: DigestAlgo) -> Result<SumsEntry, String> {
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
        let body = format!("{a}  disk.qcow2\n{}\n{a} *other.img\n", "");
        let entries = parse_sums(&body, Path::new("SUMS"), DigestAlgo::Sha256).unwrap();
        let files: Vec<&str> = entries.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(files, ["disk.qcow2", "other.img"]);
    }

    #[test]
    fn rejects_traversal_short_digests_and_duplicates() {
        let a = "a".repeat(64);
        for body in [
            format!("{a}  ../etc/passwd"),
            format!("{a}  dir/file"),
            "abc  file".to_string(),
            format!("{a}  f\n{a}  f"),
        ] {
            assert!(parse_sums(&body, Path::new("SUMS"), DigestAlgo::Sha256).is_err(), "{body}");
        }
    }

    #[test]
    fn format_round_trips() {
        let a = "A".repeat(64);
        let body = format_sums([("x.img", a.as_str())]);
        let entries = parse_sums(&body, Path::new("SUMS"), DigestAlgo::Sha256).unwrap();
        assert_eq!(entries[0].hex, "a".repeat(64));
        assert_eq!(entries[0].file, "x.img");
    }
}
