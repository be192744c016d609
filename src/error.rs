//! Exit codes and the one function that prints an error's cause chain.

use std::fmt::Write as _;

/// Exit codes users and CI can rely on (documented in `docs/cli.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Success = 0,
    /// The build failed and everything it created was cleaned up.
    BuildFailed = 1,
    /// Bad command line or template.
    Usage = 2,
    /// A cleanup failed: something may be left behind (listed on stderr).
    CleanupFailed = 3,
    /// Interrupted by SIGINT or SIGTERM; cleanups ran.
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Renders an error and its sources once each: `a: b: c`, skipping a cause
/// whose text the previous message already contains.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if !text.is_empty() && !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        current = cause.source();
    }
    crate::redact::scrub(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_causes() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
