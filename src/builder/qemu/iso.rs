//! Installer builds: a blank disk, the ISO as a CD-ROM, an HTTP server for
//! answer files, `boot_command` typed over QMP, and — with
//! `communicator: none` — waiting for the installer to power the guest off.

use std::sync::Arc;
use std::time::Duration;

use super::http::{GUEST_HOST_IP, HttpServer};
use super::keys::{self, Action};
use super::qmp::Qmp;
use super::{QemuError, qemu_cfg};
use crate::build::BuildState;
use crate::machine::ShutdownMethod;
use crate::runner::{BoxError, Cleanup, Step, StepContext};

/// Serves `http_directory` and `http_content` for the length of the build.
pub struct StartHttp;

#[async_trait::async_trait]
impl Step<BuildState> for StartHttp {
    fn name(&self) -> String {
        "start HTTP server".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?;
        let root = q.http_directory.as_ref().map(|p| p.resolved.clone());
        let server = HttpServer::start(root.as_deref(), &q.http_content)
            .await
            .map_err(|e| format!("cannot start the HTTP server: {e}"))?;
        let server = Arc::new(server);
        state.report.info(format!("serving answer files at http://{GUEST_HOST_IP}:{} (host 127.0.0.1)", server.port));
        let stopped = server.clone();
        cx.on_cleanup(Cleanup::new("stop HTTP server", move || async move {
            stopped.stop();
            Ok(())
        }));
        state.qemu.http = Some(server);
        Ok(())
    }
}

/// Waits `boot_wait`, then types every `boot_command` line.
pub struct TypeBootCommand;

#[async_trait::async_trait]
impl Step<BuildState> for TypeBootCommand {
    fn name(&self) -> String {
        "type boot command".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?;
        let vm = BuildState::require(&state.qemu.vm, "the VM")?;
        let port = state.qemu.http.as_ref().map_or(0, |h| h.port);
        tokio::time::sleep(q.boot_wait.0).await;
        let mut qmp = Qmp::connect(&vm.qmp_path).await.map_err(QemuError::from)?;
        for line in &q.boot_command {
            let line = crate::template::interp::render_http(line, GUEST_HOST_IP, port);
            tracing::debug!("typing {line:?}");
            let actions = keys::parse(&line)?;
            type_actions(&mut qmp, &actions, q.boot_key_interval.0).await?;
        }
        Ok(())
    }
}

/// Types `actions` as explicit key-down and key-up events. A key goes down,
/// stays down for `interval`, goes up, and the next event follows `interval`
/// later: no two presses overlap, whatever the guest's speed, so its keyboard
/// controller never sees rollover (a repeated letter merged into one, Shift
/// still down for the next character). A character's Shift goes down just
/// before its key and up just after it. Modifiers held with `<leftCtrlOn>`
/// stay down until their `Off` (or the end of the line, so no key is left
/// stuck in the guest).
pub async fn type_actions(qmp: &mut Qmp, actions: &[Action], interval: Duration) -> Result<(), QemuError> {
    let mut held: Vec<&'static str> = Vec::new();
    for action in actions {
        match action {
            Action::Press(keys) => {
                let mut pressed: Vec<&str> = keys.iter().copied().filter(|k| !held.contains(k)).collect();
                qmp.key_events(&pressed, true).await?;
                tokio::time::sleep(interval).await;
                pressed.reverse();
                qmp.key_events(&pressed, false).await?;
                tokio::time::sleep(interval).await;
            }
            Action::Hold(key) if !held.contains(key) => {
                qmp.key_events(&[key], true).await?;
                held.push(key);
                tokio::time::sleep(interval).await;
            }
            Action::Release(key) if held.contains(key) => {
                qmp.key_events(&[key], false).await?;
                held.retain(|k| k != key);
                tokio::time::sleep(interval).await;
            }
            Action::Hold(_) | Action::Release(_) => {}
            Action::Wait(d) => tokio::time::sleep(*d).await,
        }
    }
    held.reverse();
    qmp.key_events(&held, false).await?;
    Ok(())
}

/// `communicator: none`: the installer powers the guest off when it is done.
pub struct WaitForPowerOff;

#[async_trait::async_trait]
impl Step<BuildState> for WaitForPowerOff {
    fn name(&self) -> String {
        "wait for the installer to power off".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?;
        let vm = BuildState::require(&state.qemu.vm, "the VM")?;
        if vm.wait_exit(q.shutdown_timeout.0).await {
            state.report.info("the guest powered itself off");
            super::powered_off(state, ShutdownMethod::Guest)?;
            return Ok(());
        }
        Err(QemuError::Shutdown(format!(
            "it did not power off within shutdown_timeout ({}); console:\n{}",
            q.shutdown_timeout,
            vm.console_tail(25)
        ))
        .into())
    }
}
