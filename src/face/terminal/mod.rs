//! The one place that writes to the terminal, and [`TerminalReporter`], the
//! [`Reporter`] every build and command of the command line reports through.
//!
//! With `--output json`, stdout carries one JSON event per line and nothing
//! else; human text always goes to stderr. Every line passes through
//! [`crate::redact::scrub`] on its way out.

mod human;
mod logging;
mod progress;

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

pub use human::secs;
pub use logging::init_tracing;
pub use progress::ByteProgress;

use crate::redact;
use crate::report::{Event, Level, ProgressSink, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy)]
pub struct UiOptions {
    pub format: OutputFormat,
    pub color: ColorChoice,
    pub no_progress: bool,
    /// -1 quiet, 0 normal, 1 debug, 2 trace.
    pub verbosity: i8,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions { format: OutputFormat::Text, color: ColorChoice::Auto, no_progress: false, verbosity: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// indicatif bars on an interactive stderr.
    Bars,
    /// A plain line every few seconds (CI logs).
    Lines,
    Off,
}

struct Ui {
    format: OutputFormat,
    progress: ProgressMode,
    quiet: bool,
    multi: indicatif::MultiProgress,
}

static UI: OnceLock<Ui> = OnceLock::new();

fn ui() -> &'static Ui {
    UI.get_or_init(|| Ui::new(UiOptions::default()))
}

impl Ui {
    fn new(options: UiOptions) -> Self {
        let tty = std::io::stderr().is_terminal();
        // Order as in uv: --color, then NO_COLOR, then FORCE_COLOR, then the terminal.
        let color = match options.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) => false,
            ColorChoice::Auto if std::env::var_os("FORCE_COLOR").is_some_and(|v| !v.is_empty()) => true,
            ColorChoice::Auto => tty,
        };
        console::set_colors_enabled(color);
        console::set_colors_enabled_stderr(color);
        let progress = match (options.no_progress || options.verbosity < 0, tty && options.verbosity <= 0) {
            (true, _) => ProgressMode::Off,
            (false, true) => ProgressMode::Bars,
            (false, false) => ProgressMode::Lines,
        };
        let multi = indicatif::MultiProgress::new();
        if progress != ProgressMode::Bars {
            multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Ui { format: options.format, progress, quiet: options.verbosity < 0, multi }
    }
}

/// Sets the output options once, at start-up.
pub fn init(options: UiOptions) {
    let _ = UI.set(Ui::new(options));
}

pub fn is_quiet() -> bool {
    ui().quiet
}

pub fn is_json() -> bool {
    ui().format == OutputFormat::Json
}

/// Emits a machine event (JSON mode, with `build_id` when there is one) and
/// its human form (stderr).
pub fn emit(build_id: Option<&str>, event: Event) {
    let ui = ui();
    if ui.format == OutputFormat::Json {
        if let Ok(mut value) = serde_json::to_value(&event) {
            if let (Some(id), Some(object)) = (build_id, value.as_object_mut()) {
                object.entry("build_id").or_insert_with(|| id.into());
            }
            redact::scrub_json(&mut value);
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{value}");
            let _ = out.flush();
        }
        // Humans watching a JSON run still get warnings and errors on stderr.
        if !matches!(event.level(), Level::Warn | Level::Error) {
            return;
        }
    }
    if let Some(line) = human::line(&event) {
        if ui.quiet && !matches!(event.level(), Level::Warn | Level::Error) {
            return;
        }
        eprintln_raw(&line);
    }
}

/// Text for people: stderr in text mode, nothing in JSON mode; quiet keeps
/// warnings and errors.
pub fn human_text(level: Level, text: &str) {
    let ui = ui();
    if ui.format == OutputFormat::Json || (ui.quiet && !matches!(level, Level::Warn | Level::Error)) {
        return;
    }
    text.lines().for_each(eprintln_raw);
}

/// Writes one already-formatted line to stderr without tearing progress bars.
pub fn eprintln_raw(line: &str) {
    let line = redact::scrub(line);
    let ui = ui();
    ui.multi.suspend(|| {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    });
}

/// Writes data to stdout, masked; a closed pipe (`imgbuild inspect | head`) is not an error.
pub fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", redact::scrub(text));
    let _ = out.flush();
}

pub fn progress_mode() -> ProgressMode {
    ui().progress
}

pub(crate) fn multi() -> &'static indicatif::MultiProgress {
    &ui().multi
}

/// The command line's [`Reporter`]: the terminal, or the JSON event stream.
pub struct TerminalReporter;

impl Reporter for TerminalReporter {
    fn event(&self, build_id: Option<&str>, event: Event) {
        emit(build_id, event);
    }

    fn text(&self, _: Option<&str>, level: Level, text: &str) {
        human_text(level, text);
    }

    fn progress(&self, _: Option<&str>, label: &str, total: Option<u64>) -> Box<dyn ProgressSink> {
        Box::new(ByteProgress::new(label, total))
    }
}
