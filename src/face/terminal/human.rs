//! How people see events: one line each on stderr, or nothing.

use console::style;

use crate::report::{Event, Level};

pub fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// The line a person reads on stderr, or `None` for events only machines need.
pub(super) fn line(event: &Event) -> Option<String> {
    Some(match event {
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
