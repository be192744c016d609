//! The command-line face: everything that prints and every exit code. It
//! parses arguments ([`cli`]), runs a command ([`app`]) through the library,
//! and shows what the library returns and reports ([`terminal`]). Nothing
//! outside this module prints (checked by `tests/layering.rs`).

pub mod app;
pub mod changed;
pub mod cli;
pub mod fmt;
pub mod gc;
pub mod lint;
pub mod signals;
pub mod store;
pub mod terminal;

use std::sync::Arc;

use crate::report::BuildReporter;

/// The terminal as a reporter, bound to no build.
pub fn reporter() -> BuildReporter {
    BuildReporter::new(None, Arc::new(terminal::TerminalReporter))
}

/// An error line on stderr (a `log` event with `--output json`).
pub fn report_error(message: &str) {
    reporter().error(message);
}
