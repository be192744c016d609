//! The step runner: an ordered list of steps over a typed build state, with a
//! cleanup stack that runs in reverse after success, failure, timeout or an
//! interrupt.
//!
//! Unlike Packer's multistep, cleanups return errors (a leaked VM changes the
//! exit code) and run with their own timeout, outside the cancelled context.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::report::{BuildReporter, Event, StepTiming};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type CleanupFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One undo action registered by a step.
pub struct Cleanup {
    label: String,
    timeout: Duration,
    /// Shown with `--on-error abort`: how to reach what was kept.
    keep_note: Option<String>,
    action: Box<dyn FnOnce() -> CleanupFuture + Send>,
}

impl Cleanup {
    pub fn new<F, Fut>(label: impl Into<String>, action: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Cleanup {
            label: label.into(),
            timeout: DEFAULT_CLEANUP_TIMEOUT,
            keep_note: None,
            action: Box::new(move || Box::pin(action())),
        }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn keep_note(mut self, note: impl Into<String>) -> Self {
        self.keep_note = Some(note.into());
        self
    }
}

/// What a step sees besides the build state.
pub struct StepContext {
    pub cancel: CancellationToken,
    /// Where the step reports events, log lines and progress.
    pub report: BuildReporter,
    cleanups: Vec<Cleanup>,
    timings: Vec<StepTiming>,
}

impl StepContext {
    pub fn on_cleanup(&mut self, cleanup: Cleanup) {
        self.cleanups.push(cleanup);
    }

    /// Durations of the steps finished so far (for the manifest).
    pub fn timings(&self) -> &[StepTiming] {
        &self.timings
    }
}

#[async_trait::async_trait]
pub trait Step<S: Send>: Send + Sync {
    fn name(&self) -> String;
    async fn run(&self, state: &mut S, cx: &mut StepContext) -> Result<(), BoxError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Cleanup,
    /// Keep what was created for debugging; print how to reach it.
    Abort,
}

#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    #[error("step {} of {total} ({step}) failed", index + 1)]
    Step {
        index: usize,
        total: usize,
        step: String,
        #[source]
        source: BoxError,
    },
    #[error("interrupted during step `{step}`")]
    Interrupted { step: String },
}

pub struct Outcome {
    pub result: Result<(), RunFailure>,
    pub timings: Vec<StepTiming>,
    /// Cleanups that failed: (label, error). Non-empty means something may be left behind.
    pub cleanup_errors: Vec<(String, String)>,
    /// With `--on-error abort`: what was deliberately kept.
    pub kept: Vec<String>,
}

pub struct Runner {
    pub cancel: CancellationToken,
    pub on_error: OnError,
    /// Step and cleanup events go here; steps get it as `cx.report`.
    pub report: BuildReporter,
}

impl Runner {
    pub async fn run<S: Send>(&self, steps: &[Box<dyn Step<S>>], state: &mut S) -> Outcome {
        let mut cx = StepContext {
            cancel: self.cancel.clone(),
            report: self.report.clone(),
            cleanups: Vec::new(),
            timings: Vec::new(),
        };
        let mut result = Ok(());
        for (index, step) in steps.iter().enumerate() {
            let name = step.name();
            self.report.emit(Event::StepStarted { step: name.clone(), index, total: steps.len() });
            let started = Instant::now();
            let step_result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Err(RunFailure::Interrupted { step: name.clone() }),
                r = step.run(state, &mut cx) => r.map_err(|source| RunFailure::Step {
                    index, total: steps.len(), step: name.clone(), source,
                }),
            };
            let duration_ms = started.elapsed().as_millis() as u64;
            self.report.emit(Event::StepFinished { step: name.clone(), index, ok: step_result.is_ok(), duration_ms });
            cx.timings.push(StepTiming { step: name, duration_ms });
            if let Err(failure) = step_result {
                result = Err(failure);
                break;
            }
        }
        let keep = self.on_error == OnError::Abort && matches!(result, Err(RunFailure::Step { .. }));
        let cleanups = std::mem::take(&mut cx.cleanups);
        let (cleanup_errors, kept) = if keep {
            (Vec::new(), keep_all(cleanups))
        } else {
            (run_cleanups(cleanups, &self.report).await, Vec::new())
        };
        Outcome { result, timings: cx.timings, cleanup_errors, kept }
    }
}

fn keep_all(cleanups: Vec<Cleanup>) -> Vec<String> {
    cleanups.into_iter().rev().map(|c| c.keep_note.unwrap_or(c.label)).collect()
}

/// Runs cleanups last-in-first-out; each gets its own timeout and none is
/// cancelled by a further interrupt.
async fn run_cleanups(cleanups: Vec<Cleanup>, report: &BuildReporter) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for cleanup in cleanups.into_iter().rev() {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(cleanup.timeout, (cleanup.action)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(crate::error::chain(e.as_ref())),
            Err(_) => Err(format!("timed out after {}", crate::template::units::Dur(cleanup.timeout))),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        report.emit(Event::CleanupFinished {
            cleanup: cleanup.label.clone(),
            ok: outcome.is_ok(),
            duration_ms,
            error: outcome.clone().err(),
        });
        if let Err(e) = outcome {
            errors.push((cleanup.label, e));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<String>>>;

    fn runner(cancel: CancellationToken, on_error: OnError) -> Runner {
        Runner { cancel, on_error, report: BuildReporter::discard() }
    }

    struct Push {
        name: &'static str,
        fail: bool,
        log: Log,
    }

    #[async_trait::async_trait]
    impl Step<()> for Push {
        fn name(&self) -> String {
            self.name.to_string()
        }

        async fn run(&self, _: &mut (), cx: &mut StepContext) -> Result<(), BoxError> {
            let log = self.log.clone();
            let name = self.name;
            cx.on_cleanup(Cleanup::new(format!("undo {name}"), move || async move {
                log.lock().unwrap().push(format!("undo {name}"));
                Ok(())
            }));
            if self.fail { Err("boom".into()) } else { Ok(()) }
        }
    }

    fn steps(log: &Log, fail_at: Option<usize>) -> Vec<Box<dyn Step<()>>> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| Box::new(Push { name, fail: fail_at == Some(i), log: log.clone() }) as Box<dyn Step<()>>)
            .collect()
    }

    #[tokio::test]
    async fn cleans_up_in_reverse_after_success() {
        let log = Log::default();
        let runner = runner(CancellationToken::new(), OnError::Cleanup);
        let outcome = runner.run(&steps(&log, None), &mut ()).await;
        assert!(outcome.result.is_ok());
        assert_eq!(*log.lock().unwrap(), ["undo c", "undo b", "undo a"]);
        assert_eq!(outcome.timings.len(), 3);
    }

    #[tokio::test]
    async fn failed_step_stops_the_run_and_its_own_cleanup_runs() {
        let log = Log::default();
        let runner = runner(CancellationToken::new(), OnError::Cleanup);
        let outcome = runner.run(&steps(&log, Some(1)), &mut ()).await;
        assert!(matches!(outcome.result, Err(RunFailure::Step { index: 1, .. })));
        assert_eq!(*log.lock().unwrap(), ["undo b", "undo a"]);
    }

    #[tokio::test]
    async fn abort_keeps_everything() {
        let log = Log::default();
        let runner = runner(CancellationToken::new(), OnError::Abort);
        let outcome = runner.run(&steps(&log, Some(2)), &mut ()).await;
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(outcome.kept, ["undo c", "undo b", "undo a"]);
    }

    struct Hang;

    #[async_trait::async_trait]
    impl Step<()> for Hang {
        fn name(&self) -> String {
            "hang".into()
        }

        async fn run(&self, _: &mut (), cx: &mut StepContext) -> Result<(), BoxError> {
            cx.on_cleanup(
                Cleanup::new("slow", || async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(())
                })
                .timeout(Duration::from_millis(50)),
            );
            std::future::pending::<()>().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn cancel_interrupts_a_step_and_cleanup_timeouts_are_errors() {
        let cancel = CancellationToken::new();
        let runner = runner(cancel.clone(), OnError::Abort);
        let trigger = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let steps: Vec<Box<dyn Step<()>>> = vec![Box::new(Hang)];
        let outcome = runner.run(&steps, &mut ()).await;
        trigger.await.unwrap();
        // An interrupt always cleans up, even with --on-error abort.
        assert!(matches!(outcome.result, Err(RunFailure::Interrupted { .. })));
        assert_eq!(outcome.cleanup_errors.len(), 1);
        assert!(outcome.cleanup_errors[0].1.contains("timed out"));
    }

    #[tokio::test]
    async fn step_and_cleanup_events_carry_the_build_id() {
        let log = Log::default();
        let sink = Arc::new(crate::report::CollectingReporter::default());
        let runner = Runner {
            cancel: CancellationToken::new(),
            on_error: OnError::Cleanup,
            report: BuildReporter::new(Some("build-7"), sink.clone()),
        };
        runner.run(&steps(&log, Some(1)), &mut ()).await;
        let events = sink.events();
        let names: Vec<String> = events
            .iter()
            .map(|(_, e)| match e {
                Event::StepStarted { step, .. } => format!("start {step}"),
                Event::StepFinished { step, ok, .. } => format!("end {step} {ok}"),
                Event::CleanupFinished { cleanup, .. } => format!("cleanup {cleanup}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["start a", "end a true", "start b", "end b false", "cleanup undo b", "cleanup undo a"]);
        assert!(events.iter().all(|(id, _)| id.as_deref() == Some("build-7")), "{events:?}");
    }
}
