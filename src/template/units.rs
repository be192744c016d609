//! Durations (`90s`, `5m`, `1h30m`) and sizes (`512M`, `8G`) as written in templates.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::decode::{Cx, Decode, parse_string};
use super::jsonc::Node;

/// A duration that prints back the way a user would write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

#[derive(Debug, thiserror::Error)]
#[error("invalid duration `{input}`: {reason}; expected a duration like `90s`, `5m`, `1h30m` or `500ms`")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// The longest duration a template may give.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

impl FromStr for Dur {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError { input: input.to_string(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(err("each part must start with a number"));
            }
            let value: u64 = rest[..digits].parse().map_err(|_| err("the number is too large"))?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(value),
                "s" => Duration::from_secs(value),
                "m" => Duration::from_secs(value.saturating_mul(60)),
                "h" => Duration::from_secs(value.saturating_mul(3600)),
                "d" => Duration::from_secs(value.saturating_mul(86400)),
                "" => return Err(err("a unit is missing (ms, s, m, h or d)")),
                _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
            };
            total = total.saturating_add(part);
            rest = &rest[unit_len..];
        }
        // Deadlines are `now + duration`: an absurd one would overflow `Instant`.
        if total > MAX_DURATION {
            return Err(err("it is longer than 365 days"));
        }
        Ok(Dur(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) || ms == 0 {
            return write!(f, "{ms}ms");
        }
        let mut secs = self.0.as_secs();
        for (unit, len) in [("h", 3600), ("m", 60)] {
            if secs >= len {
                write!(f, "{}{unit}", secs / len)?;
                secs %= len;
            }
        }
        if secs > 0 {
            write!(f, "{secs}s")?;
        }
        Ok(())
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Decode for Dur {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        parse_string(node, cx, str::parse)
    }
}

/// A size in bytes, written with a binary unit: `512M` = 512 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(pub u64);

#[derive(Debug, thiserror::Error)]
#[error("invalid size `{input}`: {reason}; expected a size like `512M`, `8G` or `20GiB`")]
pub struct SizeError {
    input: String,
    reason: &'static str,
}

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn mib(self) -> u64 {
        self.0 / (1 << 20)
    }
}

impl FromStr for Size {
    type Err = SizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| SizeError { input: input.to_string(), reason };
        let s = input.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        if digits == 0 {
            return Err(err("it must start with a whole number"));
        }
        let value: u64 = s[..digits].parse().map_err(|_| err("the number is too large"))?;
        let shift = match s[digits..].trim() {
            "K" | "KiB" | "k" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            "" => return Err(err("a unit is missing (K, M, G or T)")),
            _ => return Err(err("unknown unit (use K, M, G or T, optionally with `iB`)")),
        };
        let bytes = value.checked_mul(1u64 << shift).ok_or_else(|| err("it is too large"))?;
        if bytes == 0 {
            return Err(err("it must be larger than zero"));
        }
        Ok(Size(bytes))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Decode for Size {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        parse_string(node, cx, str::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_durations() {
        assert_eq!("90s".parse::<Dur>().unwrap().0, Duration::from_secs(90));
        assert_eq!("1h30m".parse::<Dur>().unwrap().0, Duration::from_secs(5400));
        assert_eq!("250ms".parse::<Dur>().unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur(Duration::from_secs(5400)).to_string(), "1h30m");
        for bad in ["", "5", "m5", "5 minutes", "5x"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad}");
        }
        assert_eq!("365d".parse::<Dur>().unwrap().0, MAX_DURATION);
        // Found by tests/fuzz.rs: it printed as `18446744073709551615999ms`,
        // which does not read back, and `now + timeout` would overflow.
        let err = "213503983346001d1d".parse::<Dur>().unwrap_err();
        assert!(err.to_string().contains("longer than 365 days"), "{err}");
        assert!("365d1ms".parse::<Dur>().is_err());
    }

    #[test]
    fn parses_and_prints_sizes() {
        assert_eq!("512M".parse::<Size>().unwrap().0, 512 << 20);
        assert_eq!("8GiB".parse::<Size>().unwrap().0, 8 << 30);
        assert_eq!(Size(8 << 30).to_string(), "8G");
        for bad in ["", "8", "G8", "8X", "0M", "99999999999T"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }
}
