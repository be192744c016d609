//! Runs the template's `verify` checks before anything is published: by
//! default on a fresh boot of the exported artifact, or on the build VM
//! (`export.verify_on: build-vm`), or on an already published artifact
//! (`imgbuild test`).

use std::path::PathBuf;
use std::time::Duration;

use super::BuildState;
use crate::communicator::{Communicator, Raced};
use crate::report::Event;
use crate::runner::{BoxError, Step, StepContext};
use crate::verify::{self, CheckResult};

#[derive(Debug, thiserror::Error)]
pub enum VerifyStepError {
    #[error("{failed} of {total} verify checks failed: {}", names.join(", "))]
    Failed { failed: usize, total: usize, names: Vec<String> },
    #[error("no exported image can be booted for verify (formats: {0})")]
    NothingBootable(String),
    #[error("cannot write the JUnit report {path}")]
    Junit {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Which machine the checks run on.
pub enum Target {
    /// The build VM, before shutdown.
    BuildVm,
    /// A fresh boot of the artifact just exported.
    Exported,
    /// A fresh boot of a published image file.
    Published(PathBuf),
}

pub struct Verify {
    pub target: Target,
}

#[async_trait::async_trait]
impl Step<BuildState> for Verify {
    fn name(&self) -> String {
        match self.target {
            Target::BuildVm => "verify (build VM)".into(),
            _ => "verify (fresh boot)".into(),
        }
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let results = match &self.target {
            Target::BuildVm => {
                let client = BuildState::require(&state.communicator, "the SSH connection")?.as_ref();
                // A machine that dies mid-check fails the step with its end,
                // not with checks failing on a lost connection. A failed check
                // may be the first sign of that end, hence the grace period.
                let watch = state.machine.as_ref().and_then(|m| m.watch());
                let checks = async {
                    let results = run(state, client, state.boot_time).await;
                    if results.iter().all(|r| r.passed) { Ok(results) } else { Err(results) }
                };
                match crate::communicator::unless_gone(watch.as_deref(), checks, |_| true).await {
                    Ok(results) | Err(Raced::Failed(results)) => results,
                    Err(Raced::Gone(gone)) => return Err(Box::new(gone)),
                }
            }
            Target::Exported => {
                let image = bootable_artifact(state)?;
                fresh(state, &image, &cx.cancel).await?
            }
            Target::Published(image) => fresh(state, image, &cx.cancel).await?,
        };
        record(state, &results)
    }
}

async fn fresh(
    state: &BuildState,
    image: &std::path::Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<Vec<CheckResult>, BoxError> {
    let booter = BuildState::require(&state.image_booter, "a builder that boots images")?;
    let boot = booter.boot(image, "verify", cancel).await?;
    state.report.info(format!("verify VM answered SSH after {:.1}s", boot.boot_time.as_secs_f64()));
    let results = run(state, boot.communicator.as_ref(), Some(boot.boot_time)).await;
    // A throwaway overlay: nothing to keep, so no graceful shutdown is needed.
    boot.communicator.close().await;
    boot.machine.discard().await;
    Ok(results)
}

async fn run(state: &BuildState, client: &dyn Communicator, boot_time: Option<Duration>) -> Vec<CheckResult> {
    let results = verify::run_checks(&verify::Guest(client), &state.loaded.template.verify, boot_time).await;
    for r in &results {
        state.report.emit(Event::CheckFinished {
            check: r.name.clone(),
            kind: r.kind.to_string(),
            passed: r.passed,
            expected: r.expected.clone(),
            actual: r.actual.clone(),
            duration_ms: r.duration_ms,
        });
    }
    verify::report_table(&state.report, &results);
    results
}

/// The first exported file QEMU can boot directly (not stream-compressed).
fn bootable_artifact(state: &BuildState) -> Result<PathBuf, VerifyStepError> {
    let exported = state.export.as_ref().map(|e| e.artifacts.as_slice()).unwrap_or_default();
    exported
        .iter()
        .find(|a| !a.file.ends_with(".zst") && !a.file.ends_with(".xz") && !a.file.ends_with(".gz"))
        .map(|a| a.path.clone())
        .ok_or_else(|| {
            VerifyStepError::NothingBootable(exported.iter().map(|a| a.format.clone()).collect::<Vec<_>>().join(", "))
        })
}

/// Keeps the results for the manifest and the JUnit report; fails on any failed check.
fn record(state: &mut BuildState, results: &[CheckResult]) -> Result<(), BoxError> {
    if let Some(path) = &state.settings.junit {
        let xml = verify::junit_xml(&state.loaded.template.name, results);
        std::fs::write(path, xml)
            .map_err(|source| VerifyStepError::Junit { path: path.display().to_string(), source })?;
    }
    state.verify_results = serde_json::to_value(results).ok();
    let (passed, failed) = verify::summary(results);
    if failed > 0 {
        let names = results.iter().filter(|r| !r.passed).map(|r| r.name.clone()).collect();
        return Err(VerifyStepError::Failed { failed, total: passed + failed, names }.into());
    }
    state.report.info(format!("verify: all {passed} checks passed"));
    Ok(())
}
