//! Progress events, throttled so a consumer sees a few updates per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a fetch reports while it runs.
///
/// `Started` may come again for the same fetch (a retry, or a restart from
/// zero when the server ignored a range request); a consumer should then reset
/// its position to `resumed_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A transfer or hashing pass begins. `total` is the full size when known;
    /// `resumed_from` bytes are already done.
    Started { label: String, total: Option<u64>, resumed_from: u64 },
    /// This many more bytes are done (a delta, not a position).
    Advanced { bytes: u64 },
    /// The pass is complete.
    Finished,
    /// A one-line note (waiting for a lock, retrying, cache hit …).
    Message(String),
}

/// Receives progress events; must be cheap and must not block.
pub type ProgressFn = Arc<dyn Fn(ProgressEvent) + Send + Sync>;

const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MIN_BYTES: u64 = 1024 * 1024;

/// Batches `Advanced` events: one at most every 50 ms, or per MiB.
pub(crate) struct Throttle {
    sink: ProgressFn,
    pending: u64,
    last: Instant,
}

impl Throttle {
    pub(crate) fn new(sink: ProgressFn) -> Self {
        Throttle { sink, pending: 0, last: Instant::now() }
    }

    /// A new throttle reporting to the same sink (e.g. for a blocking thread).
    pub(crate) fn fork(&self) -> Throttle {
        Throttle::new(self.sink.clone())
    }

    pub(crate) fn started(&mut self, label: &str, total: Option<u64>, resumed_from: u64) {
        self.pending = 0;
        self.last = Instant::now();
        (self.sink)(ProgressEvent::Started { label: label.to_string(), total, resumed_from });
    }

    pub(crate) fn advance(&mut self, bytes: u64) {
        self.pending += bytes;
        if self.pending >= MIN_BYTES || self.last.elapsed() >= MIN_INTERVAL {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.pending > 0 {
            (self.sink)(ProgressEvent::Advanced { bytes: self.pending });
            self.pending = 0;
        }
        self.last = Instant::now();
    }

    pub(crate) fn finished(&mut self) {
        self.flush();
        (self.sink)(ProgressEvent::Finished);
    }

    pub(crate) fn message(&self, text: String) {
        (self.sink)(ProgressEvent::Message(text));
    }
}
