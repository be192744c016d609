//! Names, versions and channels of the artifact store, and the order of
//! versions. One set of rules for the local store, the S3 store and the
//! template's `name`, so a template that validates can always be published.
//!
//! Every name that becomes a path component or part of an object key is
//! validated here first, so no caller can smuggle `..`, `/` or a dot-name
//! into a store.
//!
//! Versions are either semantic versions (`1.4.0`, `2.0.0-rc.1`,
//! `1.0.0+build.5`) or date versions `YYYY.MM.DD.N` (zero-padded month and
//! day, `N` without leading zeros). Order: semantic versions by semver
//! precedence (build metadata ignored, then by text so the order is total),
//! date versions numerically, and every date version after every semantic
//! version when a store mixes both.

use std::cmp::Ordering;

const MAX_NAME_LEN: usize = 64;

/// Image names: `[a-z0-9][a-z0-9._-]*`, 1-64 bytes. `Err` holds the message.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name `{name}`: use 1-64 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// Channel names: `[a-z][a-z0-9_-]*`, 1-64 bytes. Starting with a letter keeps
/// them apart from versions, which start with a digit.
pub fn is_valid_channel(channel: &str) -> bool {
    channel.len() <= MAX_NAME_LEN
        && channel.starts_with(|c: char| c.is_ascii_lowercase())
        && channel.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

/// A semantic version or a date version `YYYY.MM.DD.N`.
pub fn is_valid_version(version: &str) -> bool {
    Version::parse(version).is_some()
}

/// A parsed version, ordered as described in the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    // Declared first so that every semantic version sorts before every date.
    Semver(Semver),
    Date(DateVersion),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Semver {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Vec<PreId>,
    /// The whole text, compared last so distinct versions never tie.
    pub text: String,
}

/// A pre-release identifier: numeric ones sort below alphanumeric ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PreId {
    Num(u64),
    Alpha(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateVersion {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub n: u64,
}

/// A day, for the `YYYY.MM.DD.N` versions `version: "auto"` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Day {
    /// The `N`th version of the day: `YYYY.MM.DD.N`.
    pub fn version(self, n: u64) -> String {
        format!("{:04}.{:02}.{:02}.{n}", self.year, self.month, self.day)
    }

    /// The highest `N` among `versions` that are versions of this day (0 when none).
    pub fn highest_n<'a>(self, versions: impl IntoIterator<Item = &'a str>) -> u64 {
        versions
            .into_iter()
            .filter_map(parse_date)
            .filter(|d| (d.year, d.month, d.day) == (self.year, self.month, self.day))
            .map(|d| d.n)
            .max()
            .unwrap_or(0)
    }
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        parse_date(s).map(Version::Date).or_else(|| parse_semver(s).map(Version::Semver))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Version::Semver(a), Version::Semver(b)) => a.cmp(b),
            (Version::Date(a), Version::Date(b)) => a.cmp(b),
            (Version::Semver(_), Version::Date(_)) => Ordering::Less,
            (Version::Date(_), Version::Semver(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Semver {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| compare_pre(&self.pre, &other.pre))
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for Semver {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Semver precedence: a release (no identifiers) is higher than any of its
/// pre-releases; otherwise identifiers compare left to right, and a longer
/// list wins when one is a prefix of the other.
fn compare_pre(a: &[PreId], b: &[PreId]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// Compares two version strings; unparsable ones sort first, by text.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (Version::parse(a), Version::parse(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn parse_date(s: &str) -> Option<DateVersion> {
    let parts: Vec<&str> = s.split('.').collect();
    let [y, m, d, n] = parts.as_slice() else {
        return None;
    };
    let fixed = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_digit());
    if !(fixed(y, 4) && fixed(m, 2) && fixed(d, 2) && is_number(n)) {
        return None;
    }
    let date = DateVersion { year: y.parse().ok()?, month: m.parse().ok()?, day: d.parse().ok()?, n: n.parse().ok()? };
    let valid = (1..=12).contains(&date.month) && (1..=31).contains(&date.day);
    valid.then_some(date)
}

fn parse_semver(s: &str) -> Option<Semver> {
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = nums.as_slice() else {
        return None;
    };
    if !(is_number(major) && is_number(minor) && is_number(patch)) {
        return None;
    }
    if let Some(build) = build
        && !build.split('.').all(is_identifier)
    {
        return None;
    }
    Some(Semver {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        patch: patch.parse().ok()?,
        pre: match pre {
            Some(pre) => parse_pre(pre)?,
            None => Vec::new(),
        },
        text: s.to_string(),
    })
}

fn parse_pre(pre: &str) -> Option<Vec<PreId>> {
    pre.split('.')
        .map(|id| {
            if !is_identifier(id) {
                None
            } else if id.bytes().all(|b| b.is_ascii_digit()) {
                // Numeric identifiers must not have leading zeros (semver 2.0 §9).
                if !is_number(id) {
                    return None;
                }
                id.parse().ok().map(PreId::Num)
            } else {
                Some(PreId::Alpha(id.to_string()))
            }
        })
        .collect()
}

fn is_identifier(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A decimal number without leading zeros.
fn is_number(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_n_of_a_day_ignores_other_days_and_other_versions() {
        let day = Day { year: 2025, month: 3, day: 7 };
        assert_eq!(day.highest_n([]), 0);
        let versions = ["2025.03.07.2", "2025.03.07.10", "2025.03.08.40", "1.2.3", "2025.03.07.x", ".2025.03.07.99"];
        assert_eq!(day.highest_n(versions), 10);
        assert_eq!(day.version(11), "2025.03.07.11");
    }

    fn sorted(mut v: Vec<&str>) -> Vec<&str> {
        v.sort_by(|a, b| compare(a, b));
        v
    }

    #[test]
    fn semver_is_numeric_and_prerelease_is_lower() {
        assert_eq!(
            sorted(vec!["1.10.0", "1.9.0", "1.10.0-rc.1", "1.10.0-beta", "0.1.0"]),
            vec!["0.1.0", "1.9.0", "1.10.0-beta", "1.10.0-rc.1", "1.10.0"]
        );
    }

    #[test]
    fn prerelease_precedence_follows_semver_spec() {
        let order = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
        ];
        for pair in order.windows(2) {
            assert_eq!(compare(pair[0], pair[1]), Ordering::Less, "{pair:?}");
        }
    }

    #[test]
    fn dates_sort_numerically_and_after_semver() {
        assert_eq!(
            sorted(vec!["2025.01.02.10", "2025.01.02.9", "99.0.0", "2024.12.31.1"]),
            vec!["99.0.0", "2024.12.31.1", "2025.01.02.9", "2025.01.02.10"]
        );
    }

    #[test]
    fn validation_rejects_traversal_and_junk() {
        for bad in ["..", ".", "a/b", "", "1.0", "01.0.0", "1.0.0-", "1.0.0+", "2025.13.01.1"] {
            assert!(!is_valid_version(bad), "{bad}");
        }
        for good in ["1.0.0", "1.0.0-rc.1+b.7", "2025.03.07.1", "2025.03.07.0"] {
            assert!(is_valid_version(good), "{good}");
        }
        for bad in ["..", "../x", "A", ".hidden", "a/b", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for bad in ["1stable", "Stable", "st/able", "..", ""] {
            assert!(!is_valid_channel(bad), "{bad}");
        }
        assert!(is_valid_channel("stable-2"));
    }
}
