//! Builders: what boots the source. `qemu` runs a local guest, `ec2` an
//! instance in EC2.

#[cfg(feature = "aws")]
pub mod ec2;
pub mod qemu;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::communicator::{Communicator, SshClient, SshTarget, WaitError, wait_for_ssh};
use crate::template::SshSettings;

/// Records the first SSH session with the build machine for later steps.
pub fn ssh_ready(
    state: &mut crate::build::BuildState,
    communicator: Box<dyn Communicator>,
    started: std::time::Instant,
) {
    state.report.info(format!(
        "SSH ready after {:.1}s (host key {})",
        started.elapsed().as_secs_f64(),
        communicator.peer_identity()
    ));
    state.machine_answered(communicator);
}

/// Waits for SSH on `target`, then for `ready_command` (if any) to succeed,
/// all within `ssh.timeout`.
pub async fn wait_until_ready(
    target: &SshTarget,
    ssh: &SshSettings,
    cancel: &CancellationToken,
) -> Result<SshClient, ReadyError> {
    let timeout = ssh.timeout.0;
    let client = wait_for_ssh(target, timeout, cancel, |_| {}).await?;
    match &ssh.ready_command {
        Some(ready) => wait_ready(client, ready, target, timeout, cancel).await,
        None => Ok(client),
    }
}

pub enum ReadyError {
    Wait(WaitError),
    NotReady(String),
}

impl From<WaitError> for ReadyError {
    fn from(e: WaitError) -> Self {
        ReadyError::Wait(e)
    }
}

/// Runs `ready_command` until it exits 0: the system (not an installer or a
/// half-booted guest) is the one answering.
async fn wait_ready(
    mut client: SshClient,
    ready: &str,
    target: &SshTarget,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<SshClient, ReadyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(250);
    loop {
        let mut sink = crate::communicator::NullSink;
        let status = match client.exec(ready, &[], None, &mut sink, Some(Duration::from_secs(30))).await {
            Ok(r) if r.success() => return Ok(client),
            Ok(r) => format!("{:?}", r.exit_status),
            Err(e) => {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                client = wait_for_ssh(target, remaining, cancel, |_| {}).await?;
                e.to_string()
            }
        };
        if tokio::time::Instant::now() + delay > deadline {
            return Err(ReadyError::NotReady(status));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
