//! Routes `tracing` records through the terminal, so logs are redacted, do not
//! tear progress bars, and become `log` events in JSON mode.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use super::emit;
use crate::report::{Event, Level};

struct UiLayer;

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for UiLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => Level::Error,
            tracing::Level::WARN => Level::Warn,
            tracing::Level::INFO => Level::Info,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::TRACE => Level::Trace,
        };
        let message = format!("{}{}", visitor.message, visitor.fields);
        match level {
            Level::Warn => emit(None, Event::Warning { message }),
            _ => emit(None, Event::Log { level, source: None, message }),
        }
    }
}

/// Installs the subscriber. `IMGBUILD_LOG` (an env-filter spec) overrides -v/-q.
pub fn init_tracing(verbosity: i8) {
    let default = match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "imgbuild=info,warn",
        1 => "imgbuild=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("IMGBUILD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::registry().with(filter).with(UiLayer).try_init();
}
