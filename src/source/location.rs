//! Where a source (or checksum list) lives: an HTTP(S) URL or a local file.

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;

use super::error::FetchError;

/// A parsed source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Http(Url),
    File(PathBuf),
}

impl Location {
    /// Parses `https://…`, `http://…`, `file://…`, or a plain path; a relative
    /// path is taken against `base_dir` (the template's directory).
    pub fn parse(s: &str, base_dir: &Path) -> Result<Location, FetchError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid(s, "empty"));
        }
        match url_scheme(s) {
            Some(scheme) => parse_url(s, &scheme),
            None => Ok(Location::File(base_dir.join(s))),
        }
    }

    /// The file name: last URL path segment (percent-decoded) or path component.
    pub fn file_name(&self) -> Option<String> {
        match self {
            Location::Http(url) => url_file_name(url),
            Location::File(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Http(url) => f.write_str(url.as_str()),
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}

fn invalid(given: &str, reason: impl Into<String>) -> FetchError {
    FetchError::InvalidLocation { given: given.to_string(), reason: reason.into() }
}

/// The lowercase scheme if `s` looks like `scheme://…`.
fn url_scheme(s: &str) -> Option<String> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    (first_ok && rest_ok).then(|| scheme.to_ascii_lowercase())
}

fn parse_url(s: &str, scheme: &str) -> Result<Location, FetchError> {
    let url = Url::parse(s).map_err(|e| invalid(s, e.to_string()))?;
    match scheme {
        "http" | "https" => Ok(Location::Http(url)),
        "file" => url
            .to_file_path()
            .map(Location::File)
            .map_err(|()| invalid(s, "not a local file URL (a host other than localhost?)")),
        _ => Err(FetchError::UnsupportedScheme { given: s.to_string(), scheme: scheme.to_string() }),
    }
}

fn url_file_name(url: &Url) -> Option<String> {
    let last = url.path_segments()?.rev().find(|seg| !seg.is_empty())?;
    Some(percent_decode(last))
}

/// Decodes `%XX` escapes; invalid escapes are kept as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], escaped_byte(bytes.get(i + 1..i + 3))) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escaped_byte(hex: Option<&[u8]>) -> Option<u8> {
    let hex = hex.filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_paths() {
        let base = Path::new("/tmpl");
        let l = Location::parse("https://h/a/b%20c.iso", base).unwrap();
        assert!(matches!(l, Location::Http(_)));
        assert_eq!(l.file_name().as_deref(), Some("b c.iso"));
        let l = Location::parse("file:///srv/x.img", base).unwrap();
        assert_eq!(l, Location::File(PathBuf::from("/srv/x.img")));
        let l = Location::parse("img/x.img", base).unwrap();
        assert_eq!(l, Location::File(PathBuf::from("/tmpl/img/x.img")));
        let l = Location::parse("/abs/x.img", base).unwrap();
        assert_eq!(l, Location::File(PathBuf::from("/abs/x.img")));
    }

    #[test]
    fn rejects_other_schemes_and_empty() {
        let base = Path::new("/");
        let err = Location::parse("ftp://h/x", base).unwrap_err();
        assert!(err.to_string().contains("unsupported URL scheme `ftp`"), "{err}");
        assert!(Location::parse("  ", base).is_err());
        assert!(Location::parse("http://", base).is_err());
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%4%+1"), "a/b%zz%4%+1");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
