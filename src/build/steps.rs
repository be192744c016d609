//! Steps shared by every builder.

use std::sync::Arc;
use std::time::Duration;

use super::BuildState;
use crate::provision;
use crate::runner::{BoxError, Cleanup, Step, StepContext};
use crate::source::{Fetcher, ProgressEvent};
use crate::ui::{self, ByteProgress};

/// Creates the per-build work directory and removes it at the end.
pub struct WorkDir;

#[async_trait::async_trait]
impl Step<BuildState> for WorkDir {
    fn name(&self) -> String {
        "prepare work directory".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let dir = state.settings.work_root.join(format!("imgbuild-{}", state.build_id()));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create work directory {}: {e}", dir.display()))?;
        tracing::debug!("work directory {}", dir.display());
        let removed = dir.clone();
        cx.on_cleanup(
            Cleanup::new(format!("remove work directory {}", dir.display()), move || async move {
                match tokio::fs::remove_dir_all(&removed).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                    _ => Ok(()),
                }
            })
            .keep_note(format!("work directory kept: {}", dir.display())),
        );
        state.work_dir = Some(dir);
        Ok(())
    }
}

/// Downloads (or finds in the cache) and verifies the source image.
pub struct FetchSource;

#[async_trait::async_trait]
impl Step<BuildState> for FetchSource {
    fn name(&self) -> String {
        "fetch source".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let source = BuildState::require(&state.loaded.template.source, "the source")?;
        let download = source.download();
        let (url, checksum) = BuildState::require(&download, "a source file to fetch")?;
        if matches!(checksum, crate::source::Checksum::None) {
            ui::warn(format!("source {url} has checksum `none`: its content is not verified"));
        }
        let fetcher = Fetcher::new(state.settings.cache_dir.clone(), progress_reporter())?;
        let fetched = fetcher.fetch(url, checksum, &state.loaded.dir, &cx.cancel).await?;
        let how = if fetched.cache_hit { "cached" } else { "verified" };
        ui::info(format!("source {how}: {} ({})", fetched.path.display(), fetched.digest));
        state.source = Some(fetched);
        Ok(())
    }
}

fn progress_reporter() -> crate::source::ProgressFn {
    let bar: Arc<std::sync::Mutex<Option<ByteProgress>>> = Arc::default();
    Arc::new(move |event| {
        let Ok(mut slot) = bar.lock() else { return };
        match event {
            ProgressEvent::Started { label, total, resumed_from } => {
                let p = ByteProgress::new(&label, total);
                p.set_position(resumed_from);
                *slot = Some(p);
            }
            ProgressEvent::Advanced { bytes } => {
                if let Some(p) = slot.as_ref() {
                    p.set_position(bytes);
                }
            }
            ProgressEvent::Finished => {
                if let Some(p) = slot.take() {
                    p.finish();
                }
            }
            ProgressEvent::Message(m) => ui::info(m),
        }
    })
}

/// The SSH connection usually drops a moment before QEMU's exit is reaped;
/// when the VM is gone, that (not "disconnected") is the cause to report.
async fn explain_by_vm_exit(
    result: Result<(), provision::ProvisionError>,
    vm: &crate::builder::qemu::Vm,
) -> Result<(), provision::ProvisionError> {
    match result {
        Err(e) if !matches!(e, provision::ProvisionError::VmExited { .. }) => {
            match tokio::time::timeout(Duration::from_secs(2), vm.exited()).await {
                Ok(status) => Err(provision::ProvisionError::VmExited { status, console: vm.console_tail(25) }),
                Err(_) => Err(e),
            }
        }
        other => other,
    }
}

/// Runs one provisioner, with its `pause_before`, `timeout` and `max_retries`.
pub struct Provision {
    pub index: usize,
    pub kind: &'static str,
}

#[async_trait::async_trait]
impl Step<BuildState> for Provision {
    fn name(&self) -> String {
        format!("provisioners[{}] ({})", self.index, self.kind)
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let loaded = state.loaded.clone();
        let provisioner = &loaded.template.provisioners[self.index];
        if let Some(pause) = provisioner.pause_before {
            tokio::time::sleep(pause.0).await;
        }
        let mut attempt = 0;
        loop {
            let vm = state.machine.vm.clone();
            let run = provision::run(self.index, provisioner, state, cx);
            let limited = async {
                match provisioner.timeout {
                    Some(t) => tokio::time::timeout(t.0, run)
                        .await
                        .unwrap_or(Err(provision::ProvisionError::Timeout { timeout: t })),
                    None => run.await,
                }
            };
            // A VM that dies mid-provision fails the step at once, not at a timeout.
            let result = match vm {
                Some(vm) => {
                    let r = tokio::select! {
                        status = vm.exited() => Err(provision::ProvisionError::VmExited {
                            status, console: vm.console_tail(25),
                        }),
                        r = limited => r,
                    };
                    explain_by_vm_exit(r, &vm).await
                }
                None => limited.await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < provisioner.max_retries => {
                    attempt += 1;
                    ui::warn(format!("{}; retrying ({attempt}/{})", crate::error::chain(&e), provisioner.max_retries));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    return Err(Box::new(provision::StepFailed {
                        index: self.index,
                        kind: provisioner.kind.type_name(),
                        source: e,
                    }));
                }
            }
        }
    }
}
