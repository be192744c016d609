//! Steps shared by every builder.

use std::sync::Arc;
use std::time::Duration;

use super::{BuildState, liveness};
use crate::provision;
use crate::report::{BuildReporter, Progress};
use crate::runner::{BoxError, Cleanup, Step, StepContext};
use crate::source::{Fetcher, ProgressEvent};

/// Creates the per-build work directory and removes it at the end. It is
/// private (0700): the disk and console log in it hold whatever the
/// provisioners put into the guest, secrets included. Before that, the work
/// directories of builds that died here (`kill -9`) are swept.
pub struct WorkDir;

#[derive(Debug, thiserror::Error)]
#[error("cannot create the work directory {}", path.display())]
pub struct WorkDirError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

#[async_trait::async_trait]
impl Step<BuildState> for WorkDir {
    fn name(&self) -> String {
        "prepare work directory".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        // Taken before the directory exists, so a sweep never sees a live build's directory without its lock.
        state.lock = Some(liveness::BuildLock::acquire(state.build_id())?);
        let root = state.settings.work_root.clone();
        for dead in tokio::task::spawn_blocking(move || liveness::sweep_dead_work_dirs(&root)).await? {
            state.report.info(format!("removed the work directory of a build that no longer runs: {}", dead.display()));
        }
        let dir = state.settings.work_root.join(format!("{}{}", liveness::WORK_DIR_PREFIX, state.build_id()));
        create_private_dir(&dir).map_err(|source| WorkDirError { path: dir.clone(), source })?;
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

/// A new directory only its owner can enter, whatever the umask (the
/// parents are made as usual).
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    // The umask can only take bits away; this makes it exactly 0700.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates (or truncates) a file only its owner can read or write, for
/// what imgbuild itself writes into the work directory.
pub fn create_private_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
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
            state.report.warn(format!("source {url} has checksum `none`: its content is not verified"));
        }
        let fetcher = Fetcher::new(state.settings.cache_dir.clone(), download_progress(state.report.clone()))?;
        let fetched = fetcher.fetch(url, checksum, &state.loaded.dir, &cx.cancel).await?;
        let how = if fetched.cache_hit { "cached" } else { "verified" };
        state.report.info(format!("source {how}: {} ({})", fetched.path.display(), fetched.digest));
        state.source = Some(fetched);
        Ok(())
    }
}

fn download_progress(report: BuildReporter) -> crate::source::ProgressFn {
    let bar: Arc<std::sync::Mutex<Option<Progress>>> = Arc::default();
    Arc::new(move |event| {
        let Ok(mut slot) = bar.lock() else { return };
        match event {
            ProgressEvent::Started { label, total, resumed_from } => {
                let p = report.progress(&label, total);
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
            ProgressEvent::Message(m) => report.info(m),
        }
    })
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
            let run = provision::run(self.index, provisioner, state, cx);
            let result = match provisioner.timeout {
                Some(t) => tokio::time::timeout(t.0, run)
                    .await
                    .unwrap_or(Err(provision::ProvisionError::Timeout { timeout: t })),
                None => run.await,
            };
            match result {
                Ok(()) => return Ok(()),
                // A machine that is gone stays gone: no retry.
                Err(e)
                    if attempt < provisioner.max_retries && !matches!(e, provision::ProvisionError::MachineGone(_)) =>
                {
                    attempt += 1;
                    state.report.warn(format!(
                        "{}; retrying ({attempt}/{})",
                        crate::error::chain(&e),
                        provisioner.max_retries
                    ));
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
