//! External processes (qemu, qemu-img, host shells) that cannot outlive
//! imgbuild: each runs in its own process group, is killed with its group
//! when dropped, and gets SIGKILL from the kernel if imgbuild itself dies.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::report::BuildReporter;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` did not finish within {}s", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    #[error("waiting for `{program}` failed")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status}){}", stderr_tail(.stderr))]
    Failed { program: String, status: ExitStatus, stderr: String },
}

fn stderr_tail(stderr: &str) -> String {
    let tail: Vec<&str> = stderr.trim().lines().rev().take(5).collect();
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
    }
}

/// A child in its own process group; dropping it kills the whole group.
pub struct GroupChild {
    pub child: Child,
    pub program: String,
    pgid: Option<i32>,
    /// Set by `--on-error abort`: leave the process running when dropped.
    keep: Arc<AtomicBool>,
}

/// How a child relates to imgbuild's own lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel if imgbuild dies, even by SIGKILL.
    DiesWithParent,
    /// May be kept after imgbuild exits (`--on-error abort`); still killed on drop unless kept.
    Keepable,
}

impl GroupChild {
    pub fn spawn(cmd: Command) -> Result<Self, ProcessError> {
        Self::spawn_with(cmd, Lifetime::DiesWithParent)
    }

    pub fn spawn_with(mut cmd: Command, lifetime: Lifetime) -> Result<Self, ProcessError> {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        // Our Drop kills the whole group; tokio's kill_on_drop would ignore `keep`.
        cmd.process_group(0).kill_on_drop(false);
        if lifetime == Lifetime::DiesWithParent {
            // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn { program: program.clone(), source })?;
        let pgid = child.id().map(|id| id as i32);
        Ok(GroupChild { child, program, pgid, keep: Arc::default() })
    }

    /// A flag that, once set, leaves the process running when this is dropped.
    pub fn keep_flag(&self) -> Arc<AtomicBool> {
        self.keep.clone()
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the whole group now (idempotent).
    pub fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: plain syscall on a pid we own; ESRCH when already gone is fine.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    /// Marks the group as reaped so Drop does not signal a recycled pgid.
    pub fn forget_group(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::SeqCst) {
            self.kill_group();
        }
    }
}

/// Files the command creates are readable by their owner only (umask 077),
/// whatever imgbuild's own umask: for tools writing into the private work
/// directory (disks, console logs, sockets), whose files hold guest data.
pub fn owner_only_files(cmd: &mut Command) {
    // SAFETY: umask is async-signal-safe and only changes the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
}

/// Runs a command to completion, reporting its output lines under `label`.
/// Returns the status and the last lines of output.
pub async fn run_streaming(
    mut cmd: Command,
    label: &str,
    timeout: Option<Duration>,
    report: &BuildReporter,
) -> Result<(ExitStatus, Vec<String>), ProcessError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = GroupChild::spawn(cmd)?;
    let program = child.program.clone();
    let stdout = child.child.stdout.take();
    let stderr = child.child.stderr.take();
    let tail = std::sync::Arc::new(std::sync::Mutex::new(VecDeque::new()));
    let forward = |s| tokio::spawn(forward_lines(s, label.to_string(), tail.clone(), report.clone()));
    let out_task = stdout.map(|s| forward(Box::new(s) as Box<dyn AsyncRead + Send + Unpin>));
    let err_task = stderr.map(|s| forward(Box::new(s) as Box<dyn AsyncRead + Send + Unpin>));
    let wait = child.child.wait();
    let status = match timeout {
        Some(t) => tokio::time::timeout(t, wait)
            .await
            .map_err(|_| ProcessError::Timeout { program: program.clone(), timeout: t })?,
        None => wait.await,
    }
    .map_err(|source| ProcessError::Wait { program: program.clone(), source })?;
    // The group may still hold background children that keep the pipes open.
    child.kill_group();
    for task in [out_task, err_task].into_iter().flatten() {
        let _ = task.await;
    }
    let tail = tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
    Ok((status, tail))
}

pub const TAIL_LINES: usize = 20;

async fn forward_lines(
    stream: impl AsyncRead + Unpin,
    label: String,
    tail: std::sync::Arc<std::sync::Mutex<VecDeque<String>>>,
    report: BuildReporter,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        report.output(&label, &line);
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    }
}

/// Runs a command and returns its stdout; a non-zero exit is an error with stderr's tail.
pub async fn run_capture(mut cmd: Command, timeout: Duration) -> Result<String, ProcessError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = GroupChild::spawn(cmd)?;
    let program = child.program.clone();
    let mut child = child;
    let output = tokio::time::timeout(timeout, wait_output(&mut child))
        .await
        .map_err(|_| ProcessError::Timeout { program: program.clone(), timeout })?
        .map_err(|source| ProcessError::Wait { program: program.clone(), source })?;
    child.forget_group();
    if !output.status.success() {
        return Err(ProcessError::Failed {
            program,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

async fn wait_output(child: &mut GroupChild) -> std::io::Result<std::process::Output> {
    use tokio::io::AsyncReadExt;
    let mut stdout = child.child.stdout.take();
    let mut stderr = child.child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read_out = async {
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
    };
    let read_err = async {
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
    };
    let (status, _, _) = tokio::join!(child.child.wait(), read_out, read_err);
    Ok(std::process::Output { status: status?, stdout: out, stderr: err })
}

/// Finds a program on PATH.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
