//! The seam between builders and the rest of the build.
//!
//! A builder launches a [`Machine`]; everything after that (provisioners,
//! verify on the build machine, shutdown, keeping it for debugging, the
//! manifest) goes through this trait and the [`Communicator`] it connects,
//! never through a concrete builder. What a builder leaves behind for export
//! is a [`Capture`]; how it boots a throwaway copy of an image for a
//! fresh-boot verify is an [`ImageBooter`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::communicator::{Communicator, MachineWatch, boot_id};

/// A builder's failure, as the generic steps see it: the builder's own error,
/// whose message already says what happened.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct MachineError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl MachineError {
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        MachineError(Box::new(source))
    }
}

/// How a build machine was powered off, recorded in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMethod {
    /// The guest powered itself off (`communicator: none`).
    Guest,
    /// `shutdown_command` over the communicator.
    Command,
    /// ACPI power-down.
    Acpi,
    /// Killed after ignoring both (the disk may be inconsistent).
    Killed,
    /// Stopped through the cloud's API.
    Stopped,
}

impl ShutdownMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMethod::Guest => "guest",
            ShutdownMethod::Command => "command",
            ShutdownMethod::Acpi => "acpi",
            ShutdownMethod::Killed => "killed",
            ShutdownMethod::Stopped => "stopped",
        }
    }
}

/// What the manifest says about the machine that built an image. Builders
/// fill in what they know as they go.
#[derive(Debug, Clone, Default)]
pub struct MachineFacts {
    pub accelerator: Option<String>,
    pub qemu_version: Option<String>,
    pub shutdown: Option<ShutdownMethod>,
    pub host_key_fingerprint: Option<String>,
}

/// What a builder captured from its machine, for export and publish.
pub enum Capture {
    /// A disk image on this host (qcow2), to convert into the export formats.
    Disk(PathBuf),
    /// Images registered in a cloud: the version records them, with no files.
    CloudImages(crate::export::manifest::CloudImages),
}

/// A running build machine.
#[async_trait::async_trait]
pub trait Machine: Send + Sync {
    /// Waits until the machine answers on its communicator (and the
    /// template's `ready_command` succeeds); fails at once if it ends.
    async fn connect(&self, cancel: &CancellationToken) -> Result<Box<dyn Communicator>, MachineError>;

    /// What tells whether the machine still runs, for operations that race
    /// its end; `None` when the builder cannot tell.
    fn watch(&self) -> Option<Arc<dyn MachineWatch>>;

    /// Powers the machine off gracefully (the communicator, if still
    /// connected, is used for a shutdown command) and says how.
    async fn shut_down(&self, communicator: Option<Box<dyn Communicator>>) -> Result<ShutdownMethod, MachineError>;

    /// Ends a throwaway machine at once: nothing on it is kept.
    async fn discard(&self);

    /// `--on-error abort`: leave the machine running past this process.
    fn keep_for_debugging(&self);
}

/// A throwaway boot of an image, connected.
pub struct FreshBoot {
    pub machine: Arc<dyn Machine>,
    pub communicator: Box<dyn Communicator>,
    /// Machine start to communicator ready.
    pub boot_time: Duration,
}

/// Boots a throwaway copy of an image file (for verify on a fresh boot, and
/// `imgbuild test`); the image itself is never modified.
#[async_trait::async_trait]
pub trait ImageBooter: Send + Sync {
    async fn boot(&self, image: &Path, tag: &str, cancel: &CancellationToken) -> Result<FreshBoot, MachineError>;
}

/// How long a machine that is going down may keep answering with its old
/// boot after an expected disconnect.
const REBOOT_SETTLE: Duration = Duration::from_secs(60);

/// Connects again after an expected disconnect. If the machine was
/// rebooting, waits for the new boot (a different boot id), so the next step
/// never talks to a system that is going down.
pub async fn reconnect(
    machine: &dyn Machine,
    previous_boot: Option<&str>,
    cancel: &CancellationToken,
) -> Result<Box<dyn Communicator>, MachineError> {
    let deadline = tokio::time::Instant::now() + REBOOT_SETTLE;
    loop {
        let communicator = machine.connect(cancel).await?;
        let current = boot_id(communicator.as_ref()).await;
        let rebooted = previous_boot.is_none() || current.is_none() || current.as_deref() != previous_boot;
        if rebooted || tokio::time::Instant::now() > deadline {
            return Ok(communicator);
        }
        communicator.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::communicator::{ExecResult, OutputSink, OutputStream, SshError, UploadSource};

    /// A guest that answers `boot_id` with the boot it is in.
    struct FakeSession {
        boot: String,
    }

    #[async_trait::async_trait]
    impl Communicator for FakeSession {
        async fn exec(
            &self,
            _command: &str,
            _env: &[(String, String)],
            _stdin: Option<Vec<u8>>,
            sink: &mut dyn OutputSink,
            _timeout: Option<Duration>,
        ) -> Result<ExecResult, SshError> {
            sink.line(OutputStream::Stdout, &self.boot);
            Ok(ExecResult { exit_status: Some(0), exit_signal: None, tail: Vec::new() })
        }
        async fn upload(&self, _: UploadSource<'_>, _: &str, _: Option<u32>) -> Result<(), SshError> {
            Ok(())
        }
        async fn upload_dir(&self, _: &Path, _: &str) -> Result<u64, SshError> {
            Ok(0)
        }
        async fn download(&self, _: &str, _: &Path) -> Result<u64, SshError> {
            Ok(0)
        }
        fn peer_identity(&self) -> String {
            "fake".into()
        }
        async fn close(self: Box<Self>) {}
    }

    /// A machine whose first `connects` sessions still see the old boot.
    struct Rebooting {
        old_boot_sessions: usize,
        connects: AtomicUsize,
        log: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Machine for Rebooting {
        async fn connect(&self, _: &CancellationToken) -> Result<Box<dyn Communicator>, MachineError> {
            let n = self.connects.fetch_add(1, Ordering::SeqCst);
            let boot = if n < self.old_boot_sessions { "old" } else { "new" };
            self.log.lock().unwrap().push(boot.to_string());
            Ok(Box::new(FakeSession { boot: boot.into() }))
        }
        fn watch(&self) -> Option<Arc<dyn MachineWatch>> {
            None
        }
        async fn shut_down(&self, _: Option<Box<dyn Communicator>>) -> Result<ShutdownMethod, MachineError> {
            Ok(ShutdownMethod::Command)
        }
        async fn discard(&self) {}
        fn keep_for_debugging(&self) {}
    }

    #[tokio::test]
    async fn reconnect_waits_for_the_new_boot() {
        let machine = Rebooting { old_boot_sessions: 2, connects: AtomicUsize::new(0), log: Mutex::default() };
        let session = reconnect(&machine, Some("old"), &CancellationToken::new()).await.unwrap();
        assert_eq!(boot_id(session.as_ref()).await.as_deref(), Some("new"));
        assert_eq!(*machine.log.lock().unwrap(), ["old", "old", "new"]);
    }

    #[tokio::test]
    async fn reconnect_without_a_previous_boot_takes_the_first_session() {
        let machine = Rebooting { old_boot_sessions: 5, connects: AtomicUsize::new(0), log: Mutex::default() };
        reconnect(&machine, None, &CancellationToken::new()).await.unwrap();
        assert_eq!(machine.connects.load(Ordering::SeqCst), 1);
    }
}
