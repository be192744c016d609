//! SIGINT/SIGTERM: the first one cancels the build (cleanups still run); later
//! ones only say that cleanup is under way, so it is never cut short.

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::report::BuildReporter;

pub fn watch(cancel: CancellationToken, report: BuildReporter) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            tracing::warn!("cannot install signal handlers; Ctrl-C will not clean up");
            return;
        };
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if cancel.is_cancelled() {
                report.warn(format!("{name} received again: cleanup is in progress and will finish first"));
            } else {
                report.warn(format!("{name} received: stopping and cleaning up"));
                cancel.cancel();
            }
        }
    })
}
