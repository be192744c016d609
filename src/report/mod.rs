//! How the library tells the outside world what happens: events, log lines,
//! progress. It prints nothing itself: a [`Reporter`] decides where things
//! go (the command-line face writes to the terminal or emits JSON; tests
//! collect). Each build gets a [`BuildReporter`], so everything it reports
//! carries its build id and two builds can share a process.

pub mod events;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub use events::{Event, Level, Status, StepTiming};

/// Receives what the library reports. Implemented by the face (terminal,
/// JSON) and by tests ([`CollectingReporter`]).
pub trait Reporter: Send + Sync {
    /// A machine event; its human form is the implementation's choice.
    fn event(&self, build_id: Option<&str>, event: Event);
    /// Text only people read (a table, a summary): shown in text mode, never
    /// part of a JSON stream; quiet runs keep only `Warn`/`Error` text.
    fn text(&self, build_id: Option<&str>, level: Level, text: &str);
    /// A byte count that advances (download, conversion, upload).
    fn progress(&self, build_id: Option<&str>, label: &str, total: Option<u64>) -> Box<dyn ProgressSink>;
}

/// One progress indicator. Dropping it without [`ProgressSink::finish`]
/// removes it without a completion line (the work was abandoned).
pub trait ProgressSink: Send + Sync {
    fn set_total(&self, total: Option<u64>);
    fn set_position(&self, position: u64);
    fn inc(&self, delta: u64);
    fn finish(&self);
}

/// A reporter bound to one build (or to none, for commands that are not builds).
#[derive(Clone)]
pub struct BuildReporter {
    build_id: Option<Arc<str>>,
    sink: Arc<dyn Reporter>,
}

impl std::fmt::Debug for BuildReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildReporter").field("build_id", &self.build_id).finish_non_exhaustive()
    }
}

impl BuildReporter {
    pub fn new(build_id: Option<&str>, sink: Arc<dyn Reporter>) -> Self {
        BuildReporter { build_id: build_id.map(Arc::from), sink }
    }

    /// Reports nowhere (library calls whose caller does not care).
    pub fn discard() -> Self {
        BuildReporter::new(None, Arc::new(DiscardReporter))
    }

    /// The same sink, tagged with another build id.
    pub fn for_build(&self, build_id: &str) -> Self {
        BuildReporter::new(Some(build_id), self.sink.clone())
    }

    pub fn build_id(&self) -> Option<&str> {
        self.build_id.as_deref()
    }

    pub fn emit(&self, event: Event) {
        self.sink.event(self.build_id(), event);
    }

    pub fn info(&self, message: impl Into<String>) {
        self.emit(Event::Log { level: Level::Info, source: None, message: message.into() });
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.emit(Event::Warning { message: message.into() });
    }

    pub fn error(&self, message: impl Into<String>) {
        self.emit(Event::Log { level: Level::Error, source: None, message: message.into() });
    }

    /// A line of guest or tool output, attributed to the step that produced it.
    pub fn output(&self, source: &str, line: &str) {
        self.emit(Event::Log { level: Level::Info, source: Some(source.to_string()), message: line.to_string() });
    }

    /// See [`Reporter::text`].
    pub fn text(&self, level: Level, text: &str) {
        self.sink.text(self.build_id(), level, text);
    }

    pub fn progress(&self, label: &str, total: Option<u64>) -> Progress {
        Progress { sink: self.sink.progress(self.build_id(), label, total), finished: AtomicBool::new(false) }
    }
}

/// A progress indicator from [`BuildReporter::progress`]. [`Progress::finish`]
/// marks it complete (once, however often it is called); dropping it without
/// finishing removes it quietly.
pub struct Progress {
    sink: Box<dyn ProgressSink>,
    finished: AtomicBool,
}

impl Progress {
    pub fn set_total(&self, total: Option<u64>) {
        self.sink.set_total(total);
    }

    pub fn set_position(&self, position: u64) {
        self.sink.set_position(position);
    }

    pub fn inc(&self, delta: u64) {
        self.sink.inc(delta);
    }

    pub fn finish(&self) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.sink.finish();
        }
    }
}

struct DiscardReporter;

impl Reporter for DiscardReporter {
    fn event(&self, _: Option<&str>, _: Event) {}
    fn text(&self, _: Option<&str>, _: Level, _: &str) {}
    fn progress(&self, _: Option<&str>, _: &str, _: Option<u64>) -> Box<dyn ProgressSink> {
        Box::new(NoProgress)
    }
}

struct NoProgress;

impl ProgressSink for NoProgress {
    fn set_total(&self, _: Option<u64>) {}
    fn set_position(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn finish(&self) {}
}

/// Keeps every event and text with its build id, for tests.
#[derive(Default)]
pub struct CollectingReporter {
    events: Mutex<Vec<(Option<String>, Event)>>,
    texts: Mutex<Vec<(Option<String>, Level, String)>>,
}

impl CollectingReporter {
    pub fn events(&self) -> Vec<(Option<String>, Event)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn texts(&self) -> Vec<(Option<String>, Level, String)> {
        self.texts.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Reporter for CollectingReporter {
    fn event(&self, build_id: Option<&str>, event: Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push((build_id.map(String::from), event));
        }
    }

    fn text(&self, build_id: Option<&str>, level: Level, text: &str) {
        if let Ok(mut texts) = self.texts.lock() {
            texts.push((build_id.map(String::from), level, text.to_string()));
        }
    }

    fn progress(&self, _: Option<&str>, _: &str, _: Option<u64>) -> Box<dyn ProgressSink> {
        Box::new(NoProgress)
    }
}

/// `512 B`, `1.5 KiB`, `20.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }

    #[test]
    fn a_build_reporter_tags_what_it_reports() {
        let sink = Arc::new(CollectingReporter::default());
        let report = BuildReporter::new(Some("b-1"), sink.clone());
        report.info("hello");
        report.for_build("b-2").warn("careful");
        BuildReporter::new(None, sink.clone()).error("bad");
        report.text(Level::Info, "table");
        let events = sink.events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].0.as_deref(), Some("b-1"));
        assert!(matches!(&events[0].1, Event::Log { level: Level::Info, message, .. } if message == "hello"));
        assert_eq!(events[1].0.as_deref(), Some("b-2"));
        assert!(matches!(&events[1].1, Event::Warning { .. }));
        assert_eq!(events[2].0, None);
        assert!(matches!(&events[2].1, Event::Log { level: Level::Error, .. }));
        assert_eq!(sink.texts(), [(Some("b-1".to_string()), Level::Info, "table".to_string())]);
    }

    struct CountFinish(Arc<std::sync::atomic::AtomicUsize>);

    impl ProgressSink for CountFinish {
        fn set_total(&self, _: Option<u64>) {}
        fn set_position(&self, _: u64) {}
        fn inc(&self, _: u64) {}
        fn finish(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn progress_finishes_once() {
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress = Progress { sink: Box::new(CountFinish(count.clone())), finished: AtomicBool::new(false) };
        progress.finish();
        progress.finish();
        drop(progress);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
}
