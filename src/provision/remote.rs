//! `shell` and `file` provisioners: run over the SSH communicator.

use std::time::Duration;

use super::ProvisionError;
use crate::build::BuildState;
use crate::communicator::{Communicator, OutputStream, SshError, UploadSource, boot_id, shell_quote};
use crate::template::{Commands, Direction, FileTransfer, Shell};

/// Packer-compatible default: make the script executable, then run it with the variables set.
pub const DEFAULT_EXECUTE_COMMAND: &str = "chmod +x {{ .Path }}; {{ .Vars }} {{ .Path }}";

fn client(state: &BuildState) -> Result<&dyn Communicator, ProvisionError> {
    Ok(BuildState::require(&state.communicator, "the SSH connection")?.as_ref())
}

pub async fn run_shell(label: &str, index: usize, step: &Shell, state: &mut BuildState) -> Result<(), ProvisionError> {
    let scripts = script_bodies(step).await?;
    for (n, (name, body)) in scripts.into_iter().enumerate() {
        let remote =
            format!("{}/imgbuild-{}-{index}-{n}.sh", step.remote_folder.trim_end_matches('/'), short_id(state));
        client(state)?.upload(UploadSource::Bytes(&body), &remote, Some(0o755)).await?;
        let command = render_execute_command(step.execute_command.as_deref(), &remote, &step.env);
        let previous_boot = match step.expect_disconnect {
            true => boot_id(client(state)?).await,
            false => None,
        };
        let report = state.report.clone();
        let mut sink = |_: OutputStream, line: &str| report.output(label, line);
        let result = client(state)?.exec(&command, &[], None, &mut sink, None).await;
        let finished = match result {
            Err(SshError::Disconnected) if step.expect_disconnect => None,
            Err(e) => return Err(e.into()),
            Ok(r) => Some(r),
        };
        if step.expect_disconnect {
            reconnect(label, state, previous_boot.as_deref()).await?;
        }
        if let Some(r) = finished {
            check_exit(step, &name, r.exit_status, r.exit_signal.as_deref(), r.tail)?;
        }
        remove_quietly(client(state)?, &remote).await;
    }
    Ok(())
}

fn check_exit(
    step: &Shell,
    name: &str,
    status: Option<u32>,
    signal: Option<&str>,
    tail: Vec<String>,
) -> Result<(), ProvisionError> {
    match status {
        Some(code) if step.valid_exit_codes.contains(&(code as i32)) => Ok(()),
        // A reboot kills the script's session; with expect_disconnect that is the plan.
        None if step.expect_disconnect => Ok(()),
        _ => Err(ProvisionError::ExitStatus {
            what: name.to_string(),
            status: match (status, signal) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                (None, None) => "no exit status".into(),
            },
            tail,
        }),
    }
}

/// The scripts to upload: (name for messages, content).
async fn script_bodies(step: &Shell) -> Result<Vec<(String, Vec<u8>)>, ProvisionError> {
    match &step.commands {
        Commands::Inline(lines) => {
            Ok(vec![("inline commands".into(), format!("#!/bin/sh\nset -e\n{}\n", lines.join("\n")).into_bytes())])
        }
        other => {
            let mut out = Vec::new();
            for path in other.files() {
                let body = tokio::fs::read(&path.resolved)
                    .await
                    .map_err(|source| ProvisionError::ReadScript { path: path.written.clone(), source })?;
                out.push((format!("script {}", path.written), body));
            }
            Ok(out)
        }
    }
}

/// Fills `{{ .Path }}` and `{{ .Vars }}`; every value is single-quoted, so
/// quotes, `$()` and `;` in a value arrive verbatim.
pub fn render_execute_command(
    template: Option<&str>,
    path: &str,
    env: &std::collections::BTreeMap<String, String>,
) -> String {
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={}", shell_quote(v))).collect();
    let vars = vars.join(" ");
    let mut out = template.unwrap_or(DEFAULT_EXECUTE_COMMAND).to_string();
    for (name, value) in [(".Path", shell_quote(path)), (".Vars", vars)] {
        for form in [format!("{{{{ {name} }}}}"), format!("{{{{{name}}}}}")] {
            out = out.replace(&form, &value);
        }
    }
    out
}

fn short_id(state: &BuildState) -> String {
    state.build_id().rsplit('-').next().unwrap_or("b").to_string()
}

async fn remove_quietly(client: &dyn Communicator, remote: &str) {
    let mut sink = crate::communicator::NullSink;
    let command = format!("rm -f {}", shell_quote(remote));
    if let Err(e) = client.exec(&command, &[], None, &mut sink, Some(Duration::from_secs(30))).await {
        tracing::debug!("could not remove {remote}: {e}");
    }
}

/// After an expected disconnect (reboot): wait for the old session to drop,
/// then for SSH to come back.
async fn reconnect(label: &str, state: &mut BuildState, previous_boot: Option<&str>) -> Result<(), ProvisionError> {
    if let Some(old) = state.communicator.take() {
        old.close().await;
    }
    state.report.output(label, "waiting for the machine to come back after the expected disconnect");
    // Interrupts cancel the whole provisioner future; this wait needs no token of its own.
    let never = tokio_util::sync::CancellationToken::new();
    let machine = BuildState::require(&state.machine, "the machine")?.clone();
    let communicator = crate::machine::reconnect(machine.as_ref(), previous_boot, &never).await?;
    state.communicator = Some(communicator);
    Ok(())
}

pub async fn run_file(step: &FileTransfer, state: &BuildState) -> Result<(), ProvisionError> {
    let client = client(state)?;
    match (step.direction, &step.source, &step.content) {
        (Direction::Upload, _, Some(content)) => {
            client.upload(UploadSource::Bytes(content.as_bytes()), &step.destination, step.mode.map(|m| m.0)).await?;
        }
        (Direction::Upload, Some(source), None) if source.resolved.is_dir() => {
            let files = client.upload_dir(&source.resolved, &step.destination).await?;
            tracing::debug!("uploaded {files} files from {}", source.written);
        }
        (Direction::Upload, Some(source), None) => {
            if !source.resolved.exists() {
                return Err(ProvisionError::ReadScript {
                    path: source.written.clone(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                });
            }
            client.upload(UploadSource::File(&source.resolved), &step.destination, step.mode.map(|m| m.0)).await?;
        }
        (Direction::Download, Some(source), _) => {
            client.download(&source.written, std::path::Path::new(&step.destination)).await?;
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_command_quotes_values() {
        let env = [("A".to_string(), "it's $(x);".to_string())].into_iter().collect();
        let cmd = render_execute_command(None, "/tmp/s.sh", &env);
        assert_eq!(cmd, "chmod +x '/tmp/s.sh'; A='it'\\''s $(x);' '/tmp/s.sh'");
        let sudo = render_execute_command(Some("sudo -E sh {{.Path}}"), "/tmp/s.sh", &env);
        assert_eq!(sudo, "sudo -E sh '/tmp/s.sh'");
    }
}
