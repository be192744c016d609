//! Byte progress for downloads, conversions and uploads: a bar on a
//! terminal, a plain line every few seconds in CI logs, nothing when off.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::{ProgressMode, eprintln_raw, multi, progress_mode};

const LINE_INTERVAL: Duration = Duration::from_secs(5);

pub struct ByteProgress {
    label: String,
    bar: Option<ProgressBar>,
    lines: Option<Mutex<LineState>>,
}

struct LineState {
    total: Option<u64>,
    position: u64,
    started: Instant,
    last_print: Instant,
}

impl ByteProgress {
    pub fn new(label: &str, total: Option<u64>) -> Self {
        let mode = progress_mode();
        let bar = (mode == ProgressMode::Bars).then(|| {
            let bar = multi().add(ProgressBar::new(total.unwrap_or(0)));
            let template = if total.is_some() {
                "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
            } else {
                "{msg:24!} {spinner} {bytes} {bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        let now = Instant::now();
        let lines = (mode == ProgressMode::Lines)
            .then(|| Mutex::new(LineState { total, position: 0, started: now, last_print: now }));
        ByteProgress { label: label.to_string(), bar, lines }
    }

    pub fn set_total(&self, total: Option<u64>) {
        if let (Some(bar), Some(total)) = (&self.bar, total) {
            bar.set_length(total);
        }
        if let Some(state) = &self.lines
            && let Ok(mut s) = state.lock()
        {
            s.total = total;
        }
    }

    pub fn set_position(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
        if let Some(state) = &self.lines
            && let Ok(mut s) = state.lock()
        {
            s.position = position;
            if s.last_print.elapsed() >= LINE_INTERVAL {
                s.last_print = Instant::now();
                eprintln_raw(&format!("    {}: {}", self.label, describe(&s)));
            }
        }
    }

    pub fn inc(&self, bytes: u64) {
        let position = match (&self.bar, &self.lines) {
            (Some(bar), _) => bar.position() + bytes,
            (None, Some(state)) => state.lock().map(|s| s.position + bytes).unwrap_or(0),
            (None, None) => return,
        };
        self.set_position(position);
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(state) = &self.lines
            && let Ok(s) = state.lock()
            && s.started.elapsed() >= LINE_INTERVAL
        {
            eprintln_raw(&format!("    {}: done, {}", self.label, describe(&s)));
        }
    }
}

impl Drop for ByteProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn describe(s: &LineState) -> String {
    let secs = s.started.elapsed().as_secs_f64().max(0.001);
    let rate = HumanBytes((s.position as f64 / secs) as u64);
    match s.total {
        Some(total) if total > 0 => {
            format!("{} / {} ({}%), {rate}/s", HumanBytes(s.position), HumanBytes(total), s.position * 100 / total)
        }
        _ => format!("{}, {rate}/s", HumanBytes(s.position)),
    }
}

impl crate::report::ProgressSink for ByteProgress {
    fn set_total(&self, total: Option<u64>) {
        ByteProgress::set_total(self, total);
    }

    fn set_position(&self, position: u64) {
        ByteProgress::set_position(self, position);
    }

    fn inc(&self, delta: u64) {
        ByteProgress::inc(self, delta);
    }

    fn finish(&self) {
        ByteProgress::finish(self);
    }
}
