//! The `qemu` builder: boots the source in a local QEMU guest, provisions it
//! over SSH, shuts it down and captures its disk.
//!
//! Steps, in order: preflight → overlay disk → SSH key + cloud-init seed →
//! launch → wait for SSH → (provisioners) → shutdown → capture.

pub mod accel;
pub mod http;
pub mod iso;
pub mod keys;
pub mod qmp;
pub mod seed;
pub mod vm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::ReadyError;
use crate::build::BuildState;
use crate::communicator::{KeyPair, SshAuth, SshClient, SshTarget, WaitError};
use crate::process::{ProcessError, run_capture};
use crate::runner::{BoxError, Cleanup, Step, StepContext};
use crate::template::{QemuBuilder, Source};
use crate::ui;

pub use vm::{Vm, VmConfig};

const CONSOLE_TAIL: usize = 25;
const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(
        "`{program}` was not found on PATH; install QEMU with `apt-get install -y qemu-system-x86 qemu-utils` (in one command)"
    )]
    MissingTool { program: String },
    #[error(transparent)]
    Kvm(#[from] accel::KvmUnusable),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    #[error(transparent)]
    Ssh(#[from] crate::communicator::SshError),
    #[error("{source} (forwarded to guest port {guest_port})\n--- serial console (last lines) ---\n{console}")]
    SshWait {
        #[source]
        source: Box<WaitError>,
        guest_port: u16,
        console: String,
    },
    /// A machine not run by QEMU (an EC2 instance) did not answer.
    #[error(transparent)]
    RemoteSshWait(Box<WaitError>),
    #[error("QEMU exited ({status}) while waiting for SSH\n--- serial console (last lines) ---\n{console}")]
    ExitedEarly { status: String, console: String },
    #[error("`ready_command` did not succeed within the SSH timeout; last exit status: {status}")]
    NotReady { status: String },
    #[error("the guest did not power off: {0}")]
    Shutdown(String),
    #[error(transparent)]
    Missing(#[from] crate::build::MissingState),
    #[error(transparent)]
    Qmp(#[from] qmp::QmpError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
}

fn qemu_cfg(state: &BuildState) -> Result<&QemuBuilder, crate::build::MissingState> {
    match &state.loaded.template.builder {
        crate::template::Builder::Qemu(q) => Ok(q),
        _ => BuildState::require(&None, "the qemu builder settings"),
    }
}

/// Checks tools and picks the accelerator before anything is downloaded.
pub struct Preflight;

#[async_trait::async_trait]
impl Step<BuildState> for Preflight {
    fn name(&self) -> String {
        "preflight".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?;
        for program in [q.qemu_binary.as_str(), "qemu-img"] {
            if crate::process::which(program).is_none() {
                return Err(QemuError::MissingTool { program: program.into() }.into());
            }
        }
        let accel = accel::choose(q.accelerator).map_err(QemuError::from)?;
        let version = run_capture(
            {
                let mut c = Command::new(&q.qemu_binary);
                c.arg("--version");
                c
            },
            Duration::from_secs(10),
        )
        .await
        .map_err(QemuError::from)?;
        state.machine.accel = Some(accel);
        state.machine.qemu_version = version.lines().next().map(str::to_string);
        Ok(())
    }
}

/// A qcow2 overlay on the cached base (never copied, never modified), grown to `disk_size`.
pub struct CreateDisk;

#[async_trait::async_trait]
impl Step<BuildState> for CreateDisk {
    fn name(&self) -> String {
        "create disk".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?;
        let work = BuildState::require(&state.work_dir, "the work directory")?;
        let source = BuildState::require(&state.source, "the source image")?;
        let disk = work.join("disk.qcow2");
        let mut cmd = Command::new("qemu-img");
        if matches!(state.loaded.template.source, Some(Source::Iso { .. })) {
            // An installer writes a blank disk; the ISO is attached as a CD-ROM.
            let size = q.disk_size.map_or(8 << 30, |s| s.bytes());
            cmd.args(["create", "-q", "-f", "qcow2"]).arg(&disk).arg(size.to_string());
        } else {
            let base_format = image_format(&source.path).await?;
            cmd.args(["create", "-q", "-f", "qcow2", "-F", &base_format, "-b"]).arg(&source.path).arg(&disk);
            if let Some(size) = q.disk_size {
                let base_size = virtual_size(&source.path).await?;
                cmd.arg(size.bytes().max(base_size).to_string());
            }
        }
        crate::process::owner_only_files(&mut cmd);
        run_capture(cmd, QEMU_IMG_TIMEOUT).await?;
        state.machine.disk = Some(disk);
        Ok(())
    }
}

async fn qemu_img_info(path: &Path) -> Result<serde_json::Value, ProcessError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "--output=json", "-U"]).arg(path);
    let out = run_capture(cmd, Duration::from_secs(60)).await?;
    Ok(serde_json::from_str(&out).unwrap_or_default())
}

pub async fn image_format(path: &Path) -> Result<String, ProcessError> {
    let info = qemu_img_info(path).await?;
    Ok(info["format"].as_str().unwrap_or("raw").to_string())
}

pub async fn virtual_size(path: &Path) -> Result<u64, ProcessError> {
    Ok(qemu_img_info(path).await?["virtual-size"].as_u64().unwrap_or(0))
}

/// The per-build SSH key and the cloud-init seed that installs it.
pub struct CreateSeed;

#[async_trait::async_trait]
impl Step<BuildState> for CreateSeed {
    fn name(&self) -> String {
        "create SSH key and cloud-init seed".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?;
        let work = BuildState::require(&state.work_dir, "the work directory")?.clone();
        // The key may exist already: `{{ build.ssh_public_key }}` needs it when the template is read.
        let key = match &state.machine.key {
            Some(k) => k.clone(),
            None => Arc::new(KeyPair::generate().map_err(QemuError::from)?),
        };
        let key_path = work.join("id_ed25519");
        let private = key.private_openssh_pem().map_err(QemuError::from)?;
        // The private key only goes to a 0600 file; should it ever reach a log, it is masked.
        crate::redact::register(&private);
        seed::write_private(&key_path, private.as_bytes()).map_err(QemuError::from)?;
        if wants_seed(state, q) {
            let seed_path = work.join("seed.img");
            write_seed(state, q, &key, &seed_path, "build")?;
            state.machine.seed = Some(seed_path);
        }
        state.machine.key = Some(key);
        state.machine.key_path = Some(key_path);
        Ok(())
    }
}

/// The seed is for cloud images (cloud-init reads it) unless the template turns it off.
fn wants_seed(state: &BuildState, q: &QemuBuilder) -> bool {
    q.cloud_init.enabled && matches!(state.loaded.template.source, Some(Source::CloudImage { .. }))
}

/// Writes a NoCloud seed; `purpose` makes the instance-id unique per boot kind.
pub fn write_seed(
    state: &BuildState,
    q: &QemuBuilder,
    key: &KeyPair,
    path: &Path,
    purpose: &str,
) -> Result<(), QemuError> {
    let build_id = state.build_id();
    let spec = seed::SeedSpec {
        instance_id: &format!("imgbuild-{build_id}-{purpose}"),
        hostname: &state.loaded.template.name,
        username: &q.ssh.username,
        authorized_key: &key.public_openssh(&format!("imgbuild-{build_id}")),
        password: q.ssh.password.as_ref().map(|p| p.expose()),
        extra_user_data: q.cloud_init.user_data.as_deref(),
    };
    let user_data = seed::user_data(&spec)?;
    seed::write_seed_image(path, &seed::meta_data(&spec), &user_data)?;
    Ok(())
}

/// Starts QEMU; its cleanup kills it if it is still running.
pub struct Launch;

#[async_trait::async_trait]
impl Step<BuildState> for Launch {
    fn name(&self) -> String {
        "launch VM".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?.clone();
        let cfg = VmConfig {
            qemu_binary: q.qemu_binary.clone(),
            accel: *BuildState::require(&state.machine.accel, "the accelerator")?,
            machine: q.machine.clone(),
            cpus: q.cpus,
            memory_mib: q.memory.mib(),
            disk: BuildState::require(&state.machine.disk, "the disk")?.clone(),
            disk_interface: q.disk_interface,
            seed: state.machine.seed.clone(),
            cdrom: match &state.loaded.template.source {
                Some(Source::Iso { .. }) => state.source.as_ref().map(|s| s.path.clone()),
                _ => None,
            },
            firmware: q.firmware,
            extra_args: q.qemu_args.clone(),
            guest_ssh_port: q.ssh.port,
            dir: BuildState::require(&state.work_dir, "the work directory")?.clone(),
            tag: "build".into(),
            keepable: state.settings.keep_on_error,
            vga: !q.boot_command.is_empty(),
        };
        state.machine.launched_at = Some(std::time::Instant::now());
        let vm = Arc::new(Vm::launch(&cfg).await.map_err(QemuError::from)?);
        ui::info(format!("QEMU started (pid {}, SSH on 127.0.0.1:{})", vm.pid.unwrap_or(0), vm.ssh_port));
        let note = abort_note(state, &vm, &q.ssh.username);
        let killed = vm.clone();
        cx.on_cleanup(
            Cleanup::new("stop QEMU", move || async move {
                killed.kill();
                if killed.wait_exit(Duration::from_secs(10)).await {
                    Ok(())
                } else {
                    Err(format!("QEMU (pid {}) did not exit after SIGKILL", killed.pid.unwrap_or(0)).into())
                }
            })
            .keep_note(note),
        );
        state.machine.vm = Some(vm);
        Ok(())
    }
}

fn abort_note(state: &BuildState, vm: &Vm, user: &str) -> String {
    let key = state.machine.key_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    format!(
        "VM still running (pid {}): ssh -i {key} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {user}@127.0.0.1  (QMP: {}; stop it with `kill {}`)",
        vm.pid.unwrap_or(0),
        vm.ssh_port,
        vm.qmp_path.display(),
        vm.pid.unwrap_or(0)
    )
}

/// The SSH target of a VM booted with `key` (and the template's password).
pub fn ssh_target(q: &QemuBuilder, vm: &Vm, key: Option<&Arc<KeyPair>>) -> SshTarget {
    let mut auth = Vec::new();
    if let Some(key) = key {
        auth.push(SshAuth::Key(key.clone()));
    }
    if let Some(password) = &q.ssh.password {
        auth.push(SshAuth::Password(password.expose().to_string()));
    }
    SshTarget { host: "127.0.0.1".into(), port: vm.ssh_port, username: q.ssh.username.clone(), auth }
}

/// Waits for SSH on the build VM (and `ready_command`), failing at once if QEMU exits.
pub async fn connect(state: &BuildState, cancel: &CancellationToken) -> Result<SshClient, QemuError> {
    if let Some(remote) = &state.machine.remote {
        return super::wait_until_ready(&remote.target, &remote.settings, cancel).await.map_err(|e| match e {
            ReadyError::Wait(source) => QemuError::RemoteSshWait(Box::new(source)),
            ReadyError::NotReady(status) => QemuError::NotReady { status },
        });
    }
    let q = qemu_cfg(state)?;
    let vm = BuildState::require(&state.machine.vm, "the VM")?;
    connect_to(q, vm, state.machine.key.as_ref(), cancel).await
}

pub async fn connect_to(
    q: &QemuBuilder,
    vm: &Vm,
    key: Option<&Arc<KeyPair>>,
    cancel: &CancellationToken,
) -> Result<SshClient, QemuError> {
    let target = ssh_target(q, vm, key);
    let wait = super::wait_until_ready(&target, &q.ssh, cancel);
    tokio::select! {
        status = vm.exited() => Err(QemuError::ExitedEarly { status, console: vm.console_tail(CONSOLE_TAIL) }),
        r = wait => r.map_err(|e| match e {
            ReadyError::Wait(source) => QemuError::SshWait {
                source: Box::new(source),
                guest_port: q.ssh.port,
                console: vm.console_tail(CONSOLE_TAIL),
            },
            ReadyError::NotReady(status) => QemuError::NotReady { status },
        }),
    }
}

/// A throwaway boot of an image (for verify): an overlay on it, a fresh
/// seed with a new instance-id so first-boot logic runs as a user sees it.
pub struct FreshBoot {
    pub vm: Arc<Vm>,
    pub client: SshClient,
    /// QEMU start to SSH ready.
    pub boot_time: Duration,
}

pub async fn boot_fresh(
    state: &BuildState,
    image: &Path,
    tag: &str,
    cancel: &CancellationToken,
) -> Result<FreshBoot, QemuError> {
    let q = qemu_cfg(state)?;
    let work = BuildState::require(&state.work_dir, "the work directory")?;
    let accel = match state.machine.accel {
        Some(a) => a,
        None => accel::choose(q.accelerator)?,
    };
    let disk = work.join(format!("{tag}-disk.qcow2"));
    let format = image_format(image).await?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", &format, "-b"]).arg(image).arg(&disk);
    crate::process::owner_only_files(&mut cmd);
    run_capture(cmd, QEMU_IMG_TIMEOUT).await?;
    let seed_path = work.join(format!("{tag}-seed.img"));
    // A cloud image gets a fresh seed and key; an installed image already holds the build key.
    let (key, seed) = match (wants_seed(state, q), &state.machine.key) {
        (false, Some(key)) => (key.clone(), None),
        _ => {
            let key = Arc::new(KeyPair::generate()?);
            write_seed(state, q, &key, &seed_path, tag)?;
            (key, Some(seed_path))
        }
    };
    let cfg = VmConfig {
        qemu_binary: q.qemu_binary.clone(),
        accel,
        machine: q.machine.clone(),
        cpus: q.cpus,
        memory_mib: q.memory.mib(),
        disk,
        disk_interface: q.disk_interface,
        seed,
        cdrom: None,
        firmware: q.firmware,
        extra_args: q.qemu_args.clone(),
        guest_ssh_port: q.ssh.port,
        dir: work.clone(),
        tag: tag.to_string(),
        keepable: false,
        vga: false,
    };
    let started = std::time::Instant::now();
    let vm = Arc::new(Vm::launch(&cfg).await?);
    let client = connect_to(q, &vm, Some(&key), cancel).await?;
    Ok(FreshBoot { vm, client, boot_time: started.elapsed() })
}

pub struct WaitSsh;

#[async_trait::async_trait]
impl Step<BuildState> for WaitSsh {
    fn name(&self) -> String {
        "wait for SSH".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let started = std::time::Instant::now();
        let client = connect(state, &cx.cancel).await?;
        super::ssh_ready(state, client, started);
        Ok(())
    }
}

/// Reads the guest's boot id, which changes on every boot.
pub async fn boot_id(client: &SshClient) -> Option<String> {
    let mut sink = crate::communicator::CollectSink::default();
    let r = client
        .exec("cat /proc/sys/kernel/random/boot_id", &[], None, &mut sink, Some(Duration::from_secs(10)))
        .await
        .ok()?;
    r.success().then(|| sink.text(crate::communicator::OutputStream::Stdout).trim().to_string())
}

const REBOOT_SETTLE: Duration = Duration::from_secs(60);

/// Connects again after an expected disconnect. If the guest was rebooting,
/// waits for the new boot (a different boot id), so the next step never talks
/// to a system that is going down.
pub async fn reconnect(
    state: &BuildState,
    previous_boot: Option<&str>,
    cancel: &CancellationToken,
) -> Result<SshClient, QemuError> {
    let deadline = tokio::time::Instant::now() + REBOOT_SETTLE;
    loop {
        let client = connect(state, cancel).await?;
        let current = boot_id(&client).await;
        let rebooted = previous_boot.is_none() || current.is_none() || current.as_deref() != previous_boot;
        if rebooted || tokio::time::Instant::now() > deadline {
            return Ok(client);
        }
        client.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `shutdown_command`, then ACPI power-down, then kill — and says which worked.
pub struct Shutdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMethod {
    /// The guest powered itself off (`communicator: none`).
    Guest,
    Command,
    Acpi,
    Killed,
}

#[async_trait::async_trait]
impl Step<BuildState> for Shutdown {
    fn name(&self) -> String {
        "shut down".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let q = qemu_cfg(state)?.clone();
        let vm = BuildState::require(&state.machine.vm, "the VM")?.clone();
        let client = state.machine.ssh.take();
        let method = shut_down(&vm, client, q.shutdown_command.as_deref(), q.shutdown_timeout.0).await?;
        match method {
            ShutdownMethod::Killed => {
                return Err(QemuError::Shutdown(format!(
                    "it ignored `shutdown_command` and ACPI power-down for {}; QEMU was killed, so the disk may be inconsistent",
                    q.shutdown_timeout
                ))
                .into());
            }
            ShutdownMethod::Command | ShutdownMethod::Guest => ui::info("guest powered off (shutdown_command)"),
            ShutdownMethod::Acpi => ui::info("guest powered off (ACPI power-down)"),
        }
        state.machine.shutdown = Some(method);
        Ok(())
    }
}

const ACPI_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn shut_down(
    vm: &Vm,
    client: Option<SshClient>,
    command: Option<&str>,
    timeout: Duration,
) -> Result<ShutdownMethod, QemuError> {
    if let (Some(command), Some(client)) = (command, client) {
        let mut sink = |_: crate::communicator::OutputStream, line: &str| ui::output("shutdown", line);
        // The connection usually drops as the guest goes down; that is success here.
        let _ = tokio::time::timeout(timeout, client.exec(command, &[], None, &mut sink, Some(timeout))).await;
        if vm.wait_exit(timeout).await {
            return Ok(ShutdownMethod::Command);
        }
        ui::warn(format!(
            "guest still running {} after `shutdown_command`; trying ACPI power-down",
            crate::template::units::Dur(timeout)
        ));
    }
    let budget = if command.is_some() { ACPI_TIMEOUT.min(timeout) } else { timeout };
    if let Ok(mut qmp) = qmp::Qmp::connect(&vm.qmp_path).await
        && qmp.system_powerdown().await.is_ok()
        && vm.wait_exit(budget).await
    {
        return Ok(ShutdownMethod::Acpi);
    }
    vm.kill();
    vm.wait_exit(Duration::from_secs(10)).await;
    Ok(ShutdownMethod::Killed)
}

/// QEMU's exit, for SSH operations racing against it.
#[async_trait::async_trait]
impl crate::communicator::MachineWatch for Vm {
    async fn gone(&self) -> crate::communicator::MachineGone {
        let status = self.exited().await;
        crate::communicator::MachineGone {
            what: format!("QEMU exited ({status})"),
            details: format!("\n--- serial console (last lines) ---\n{}", self.console_tail(CONSOLE_TAIL)),
        }
    }
}

impl MachineState {
    /// What tells whether the build machine still runs (none for a machine QEMU does not run).
    pub fn watch(&self) -> Option<Arc<dyn crate::communicator::MachineWatch>> {
        self.vm.clone().map(|vm| vm as Arc<dyn crate::communicator::MachineWatch>)
    }
}

/// What the qemu steps hand to later steps.
#[derive(Default)]
pub struct MachineState {
    pub accel: Option<accel::Accel>,
    pub qemu_version: Option<String>,
    pub disk: Option<PathBuf>,
    pub seed: Option<PathBuf>,
    pub key: Option<Arc<KeyPair>>,
    pub key_path: Option<PathBuf>,
    pub vm: Option<Arc<Vm>>,
    pub ssh: Option<SshClient>,
    pub host_key: Option<String>,
    pub shutdown: Option<ShutdownMethod>,
    pub http: Option<Arc<http::HttpServer>>,
    pub launched_at: Option<std::time::Instant>,
    /// QEMU start to SSH ready on the build VM.
    pub boot_time: Option<Duration>,
    /// A build machine reached over the network rather than through QEMU's
    /// port forward (an EC2 instance): reconnects after a reboot go here.
    pub remote: Option<super::RemoteSsh>,
}
