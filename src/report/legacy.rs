//! Transitional: removed once call sites take a BuildReporter (lead converts
//! builder/, build/, provision/, communicator/, export/, source/).
//!
//! The free functions that used to print through the global `ui` module,
//! routed to a process-wide fallback [`BuildReporter`] that the face
//! installs at start-up (and, during a build, replaces with the build's
//! reporter, so these lines carry its build id too). Reachable as
//! `crate::ui` (an alias in `lib.rs`) so the old call sites compile as they
//! are. Before [`install`], everything goes nowhere.

use std::sync::RwLock;

pub use super::events::{self, Event, Level};
use super::{BuildReporter, Progress};

static FALLBACK: RwLock<Option<BuildReporter>> = RwLock::new(None);

/// Sets the reporter the free functions below use, replacing the previous one.
pub fn install(reporter: BuildReporter) {
    if let Ok(mut slot) = FALLBACK.write() {
        *slot = Some(reporter);
    }
}

/// The installed fallback reporter (a discarding one before [`install`]).
pub fn reporter() -> BuildReporter {
    FALLBACK.read().ok().and_then(|slot| slot.clone()).unwrap_or_else(BuildReporter::discard)
}

pub fn emit(event: Event) {
    reporter().emit(event);
}

pub fn info(message: impl Into<String>) {
    reporter().info(message);
}

pub fn warn(message: impl Into<String>) {
    reporter().warn(message);
}

/// A line of guest or tool output, attributed to the step that produced it.
pub fn output(source: &str, line: &str) {
    reporter().output(source, line);
}

/// Byte progress on the fallback reporter.
pub struct ByteProgress(Progress);

impl ByteProgress {
    pub fn new(label: &str, total: Option<u64>) -> Self {
        ByteProgress(reporter().progress(label, total))
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.0.set_total(total);
    }

    pub fn set_position(&self, position: u64) {
        self.0.set_position(position);
    }

    pub fn inc(&self, delta: u64) {
        self.0.inc(delta);
    }

    pub fn finish(&self) {
        self.0.finish();
    }
}
