//! The `--output json` event stream: one object per line on stdout, each
//! with an `event` field. Documented in `docs/cli.md`; add fields, never
//! rename them.

use console::style;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BuildStarted {
        build_id: String,
        name: String,
        version: String,
        template: String,
    },
    StepStarted {
        step: String,
        index: usize,
        total: usize,
    },
    StepFinished {
        step: String,
        index: usize,
        ok: bool,
        duration_ms: u64,
    },
    CleanupFinished {
        cleanup: String,
        ok: bool,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    CheckFinished {
        check: String,
        kind: String,
        passed: bool,
        expected: String,
        actual: String,
        duration_ms: u64,
    },
    Log {
        level: Level,
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        message: String,
    },
    Warning {
        message: String,
    },
    /// One per publish target a version went to.
    Published {
        name: String,
        version: String,
        /// `local` or `s3`.
        target: String,
        /// The version directory, or `s3://bucket/prefix/NAME/VERSION/`.
        location: String,
    },
    Result {
        status: Status,
        exit_code: i32,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        steps: Vec<StepTiming>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        left_behind: Vec<String>,
        /// Where the build published: the local version directory and/or `s3://` URLs.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        published: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    Failed,
    Interrupted,
    CleanupFailed,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub step: String,
    pub duration_ms: u64,
}

pub fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl Event {
    pub fn level(&self) -> Level {
        match self {
            Event::Log { level, .. } => *level,
            Event::Warning { .. } => Level::Warn,
            Event::CleanupFinished { ok: false, .. } | Event::StepFinished { ok: false, .. } => Level::Error,
            Event::Result { status, .. } if *status != Status::Success => Level::Error,
            _ => Level::Info,
        }
    }

    /// The line a person reads on stderr, or `None` for events only machines need.
    pub fn human(&self) -> Option<String> {
        Some(match self {
            Event::BuildStarted { name, version, build_id, .. } => {
                format!("{} {name} {version} (build {build_id})", style("==>").bold().cyan())
            }
            Event::StepStarted { step, index, total } => {
                format!("{} [{}/{total}] {step}", style("==>").bold().cyan(), index + 1)
            }
            Event::StepFinished { ok: true, .. } => return None,
            Event::StepFinished { step, duration_ms, .. } => {
                format!("{} {step} failed after {}", style("!!").red().bold(), secs(*duration_ms))
            }
            Event::CleanupFinished { cleanup, ok: true, .. } => format!("    cleaned up: {cleanup}"),
            Event::CleanupFinished { cleanup, error, .. } => format!(
                "{} cleanup failed: {cleanup}: {}",
                style("!!").red().bold(),
                error.as_deref().unwrap_or("unknown error")
            ),
            Event::Log { source: Some(source), message, .. } => {
                format!("    {} {message}", style(format!("{source}:")).dim())
            }
            Event::Log { level: Level::Error, message, .. } => format!("{} {message}", style("error:").red().bold()),
            Event::Log { message, .. } => format!("    {message}"),
            Event::Warning { message } => {
                format!("{} {message}", style("warning:").yellow().bold())
            }
            // The publish step logs the human line itself.
            Event::Result { .. } | Event::CheckFinished { .. } | Event::Published { .. } => return None,
        })
    }
}
