//! The events a build produces. With `--output json` the face writes one
//! object per line on stdout, each with an `event` field (and `build_id`
//! when the reporter belongs to a build). Documented in `docs/cli.md`; add
//! fields, never rename them. How people see them is the face's business
//! (`face::terminal`).

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
}
