//! `verify`: ServerSpec-style checks run against the finished guest.
//!
//! Every check in the template's `verify` list is evaluated, even after a
//! failure, and becomes one [`CheckResult`] with the expectation and the
//! observed value side by side. [`render_table`] prints them for humans,
//! [`junit_xml`] writes them for CI.
//!
//! How each kind is evaluated:
//!
//! * `service` — with systemd (`/run/systemd/system` exists):
//!   `systemctl is-enabled` / `systemctl is-active`. Otherwise (busybox init,
//!   sysvinit, OpenRC) `running` means a process whose command name is NAME
//!   or NAME + `d` exists (`pidof`, then `/proc/*/comm`), so `ssh` matches
//!   `sshd`; `enabled` means an executable `/etc/init.d/NAME`,
//!   `/etc/init.d/S??NAME`, `/etc/rc?.d/S??NAME` or `/etc/runlevels/*/NAME`
//!   (each also with NAME + `d`), or an active `/etc/inittab` entry whose
//!   command mentions NAME or NAME + `d`. With neither `enabled` nor
//!   `running` given, `running: true` is checked.
//! * `port` — `/proc/net/tcp{,6}` (state `0A`, LISTEN) or `/proc/net/udp{,6}`
//!   (unconnected sockets), parsed here, so no `ss`/`netstat` is needed.
//! * `file` — one command prints `stat`, `sha256sum` and the first 1 MiB of
//!   the content; `contains` and `matches` are evaluated here. Content is
//!   received line by line: `\r\n` reads as `\n`, and every line (including
//!   an unterminated last one) ends with `\n`. `sha256` is computed in the
//!   guest over the exact bytes.
//! * `package` — `dpkg-query`, else `rpm`, else `apk`, whichever exists.
//! * `command` — run as written; `exit_code` defaults to 0.
//! * `user` — `getent passwd` (or `/etc/passwd`), `id -Gn`; `groups` must
//!   all be present (others may be too).
//! * `boot_time_max` — the measured QEMU-start → SSH-ready time.
//!
//! Regular expressions (`matches`, `stdout_matches`) use Rust `regex` syntax
//! in multi-line mode (`^`/`$` match at line boundaries).
//!
//! Every template value that reaches the guest shell is passed through
//! [`shell_quote`](crate::communicator::shell_quote) and assigned to a shell
//! variable first; regular expressions and expected contents never leave the
//! host. Only `command` checks run text from the template as a command.

mod checks;
mod proc_net;
mod report;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::communicator::{CollectSink, Communicator, OutputStream, SshError};
use crate::template::{Check, CheckKind};

pub use report::{junit_xml, render_table};

/// How long one check command may run in the guest.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What a guest command printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// `None` when the command ended without an exit status (e.g. killed by a signal).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Why a check command could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("could not run the check command in the guest")]
    Ssh(#[from] SshError),
    #[error("{0}")]
    Guest(String),
}

/// Runs commands in the guest; [`Guest`] does it through a communicator, unit tests fake it.
#[async_trait::async_trait]
pub trait GuestExec: Send + Sync {
    async fn run(&self, command: &str) -> Result<CommandOutput, VerifyError>;
}

/// The machine under test, reached through its communicator.
pub struct Guest<'a>(pub &'a dyn Communicator);

#[async_trait::async_trait]
impl GuestExec for Guest<'_> {
    async fn run(&self, command: &str) -> Result<CommandOutput, VerifyError> {
        let mut sink = CollectSink::default();
        let result = self.0.exec(command, &[], None, &mut sink, Some(COMMAND_TIMEOUT)).await?;
        if let Some(signal) = &result.exit_signal {
            tracing::debug!(%signal, "verify command killed by a signal");
        }
        Ok(CommandOutput {
            exit_code: result.exit_status.map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
            stdout: stream_text(&sink, OutputStream::Stdout),
            stderr: stream_text(&sink, OutputStream::Stderr),
        })
    }
}

/// The lines of one stream, each terminated by `\n`.
fn stream_text(sink: &CollectSink, stream: OutputStream) -> String {
    let mut out = String::new();
    for (s, line) in &sink.lines {
        if *s == stream {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// The check's `name`, or one generated from it like `service ssh running`.
    pub name: String,
    /// `service`, `port`, `file`, `package`, `command`, `user` or `boot_time_max`.
    pub kind: &'static str,
    /// Every checked property, e.g. `running=true, enabled=true`.
    pub expected: String,
    /// What was found, same order, e.g. `running=true (process sshd, pid 212), enabled=false (…)`,
    /// or `error: …` when the check could not be run.
    pub actual: String,
    pub passed: bool,
    pub duration_ms: u64,
}

/// Runs every check (never stopping at a failure), in order.
///
/// `boot_time` is the measured QEMU-start → SSH-ready time, used by
/// `boot_time_max` checks.
pub async fn run_checks(guest: &dyn GuestExec, checks: &[Check], boot_time: Option<Duration>) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let result = run_one(guest, check, boot_time).await;
        tracing::debug!(
            check = %result.name,
            passed = result.passed,
            expected = %result.expected,
            actual = %result.actual,
            "verify check finished"
        );
        results.push(result);
    }
    results
}

async fn run_one(guest: &dyn GuestExec, check: &Check, boot_time: Option<Duration>) -> CheckResult {
    let start = Instant::now();
    let expected = checks::expectations(&check.kind);
    let outcome = checks::evaluate(guest, &check.kind, boot_time).await;
    let (actual, passed) = match outcome {
        Ok(props) => {
            debug_assert_eq!(
                props.iter().map(|p| p.expected.as_str()).collect::<Vec<_>>(),
                expected.iter().map(String::as_str).collect::<Vec<_>>(),
                "evaluator and expectations disagree"
            );
            let passed = !props.is_empty() && props.iter().all(|p| p.ok);
            let actual: Vec<&str> = props.iter().map(|p| p.actual.as_str()).collect();
            (actual.join(", "), passed)
        }
        Err(message) => (format!("error: {message}"), false),
    };
    let name = check.name.clone().unwrap_or_else(|| checks::default_name(&check.kind));
    CheckResult {
        name: crate::redact::scrub(&name),
        kind: kind_name(&check.kind),
        expected: crate::redact::scrub(&expected.join(", ")),
        actual: crate::redact::scrub(&actual),
        passed,
        duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// The template key of a check kind.
pub fn kind_name(kind: &CheckKind) -> &'static str {
    match kind {
        CheckKind::Service { .. } => "service",
        CheckKind::Port { .. } => "port",
        CheckKind::File { .. } => "file",
        CheckKind::Package { .. } => "package",
        CheckKind::Command { .. } => "command",
        CheckKind::User { .. } => "user",
        CheckKind::BootTimeMax { .. } => "boot_time_max",
    }
}

/// `(passed, failed)`.
pub fn summary(results: &[CheckResult]) -> (usize, usize) {
    let passed = results.iter().filter(|r| r.passed).count();
    (passed, results.len() - passed)
}

/// Reports [`render_table`] as text for people: JSON runs get
/// `check_finished` events instead; `-q` shows the table only on a failure.
pub fn report_table(report: &crate::report::BuildReporter, results: &[CheckResult]) {
    let level = if results.iter().all(|r| r.passed) { crate::report::Level::Info } else { crate::report::Level::Error };
    report.text(level, &render_table(results));
}
