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
use crate::communicator::{Communicator, KeyPair, MachineWatch, SshAuth, SshClient, SshTarget, WaitError};
use crate::diskimage;
use crate::machine::{Capture, FreshBoot, ImageBooter, Machine, MachineError, ShutdownMethod};
use crate::process::{ProcessError, run_capture};
use crate::report::BuildReporter;
use crate::runner::{BoxError, Cleanup, Step, StepContext};
use crate::template::{QemuBuilder, Source};

pub use vm::{Vm, VmConfig};

const CONSOLE_TAIL: usize = 25;

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
        let q = qemu_cfg(state)?.clone();
        for program in [q.qemu_binary.as_str(), "qemu-img"] {
            if crate::process::which(program).is_none() {
                return Err(QemuError::MissingTool { program: program.into() }.into());
            }
        }
        let accel = accel::choose(q.accelerator, &state.report).map_err(QemuError::from)?;
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
        state.qemu.accel = Some(accel);
        state.facts.accelerator = Some(accel.as_str().to_string());
        state.facts.qemu_version = version.lines().next().map(str::to_string);
        state.image_booter = Some(Arc::new(QemuBooter {
            cfg: q.clone(),
            accel,
            work_dir: BuildState::require(&state.work_dir, "the work directory")?.clone(),
            identity: SeedIdentity::of(state),
            report: state.report.clone(),
            build_key: state.ssh_key.clone(),
            wants_seed: wants_seed(state, &q),
        }));
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
        if matches!(state.loaded.template.source, Some(Source::Iso { .. })) {
            // An installer writes a blank disk; the ISO is attached as a CD-ROM.
            let size = q.disk_size.map_or(8 << 30, |s| s.bytes());
            diskimage::create_qcow2(&disk, None, Some(size)).await?;
        } else {
            // Grown to `disk_size`, never shrunk below the base.
            let size = match q.disk_size {
                Some(size) => Some(size.bytes().max(diskimage::virtual_size(&source.path).await?)),
                None => None,
            };
            diskimage::create_qcow2(&disk, Some(&source.path), size).await?;
        }
        state.qemu.disk = Some(disk);
        Ok(())
    }
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
        let key = match &state.ssh_key {
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
            write_seed(&SeedIdentity::of(state), q, &key, &seed_path, "build")?;
            state.qemu.seed = Some(seed_path);
        }
        state.ssh_key = Some(key);
        state.qemu.key_path = Some(key_path);
        Ok(())
    }
}

/// The seed is for cloud images (cloud-init reads it) unless the template turns it off.
fn wants_seed(state: &BuildState, q: &QemuBuilder) -> bool {
    q.cloud_init.enabled && matches!(state.loaded.template.source, Some(Source::CloudImage { .. }))
}

/// Who a seed introduces the guest as.
#[derive(Clone)]
pub struct SeedIdentity {
    pub build_id: String,
    pub hostname: String,
}

impl SeedIdentity {
    fn of(state: &BuildState) -> Self {
        SeedIdentity { build_id: state.build_id().to_string(), hostname: state.loaded.template.name.clone() }
    }
}

/// Writes a NoCloud seed; `purpose` makes the instance-id unique per boot kind.
pub fn write_seed(
    identity: &SeedIdentity,
    q: &QemuBuilder,
    key: &KeyPair,
    path: &Path,
    purpose: &str,
) -> Result<(), QemuError> {
    let build_id = &identity.build_id;
    let spec = seed::SeedSpec {
        instance_id: &format!("imgbuild-{build_id}-{purpose}"),
        hostname: &identity.hostname,
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
            disk: BuildState::require(&state.qemu.disk, "the disk")?.clone(),
            seed: state.qemu.seed.clone(),
            cdrom: match &state.loaded.template.source {
                Some(Source::Iso { .. }) => state.source.as_ref().map(|s| s.path.clone()),
                _ => None,
            },
            keepable: state.settings.keep_on_error,
            vga: !q.boot_command.is_empty(),
            ..vm_config(
                &q,
                *BuildState::require(&state.qemu.accel, "the accelerator")?,
                BuildState::require(&state.work_dir, "the work directory")?,
                "build",
            )
        };
        state.launched_at = Some(std::time::Instant::now());
        let vm = Arc::new(Vm::launch(&cfg).await.map_err(QemuError::from)?);
        state.report.info(format!("QEMU started (pid {}, SSH on 127.0.0.1:{})", vm.pid.unwrap_or(0), vm.ssh_port));
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
        state.machine = Some(Arc::new(QemuMachine {
            vm: vm.clone(),
            cfg: q,
            key: state.ssh_key.clone(),
            report: state.report.clone(),
        }));
        state.qemu.vm = Some(vm);
        Ok(())
    }
}

/// The VM settings every boot of this template shares; a boot fills in its disk and devices.
fn vm_config(q: &QemuBuilder, accel: accel::Accel, work_dir: &Path, tag: &str) -> VmConfig {
    VmConfig {
        qemu_binary: q.qemu_binary.clone(),
        accel,
        machine: q.machine.clone(),
        cpus: q.cpus,
        memory_mib: q.memory.mib(),
        disk: PathBuf::new(),
        disk_interface: q.disk_interface,
        seed: None,
        cdrom: None,
        firmware: q.firmware,
        extra_args: q.qemu_args.clone(),
        guest_ssh_port: q.ssh.port,
        dir: work_dir.to_path_buf(),
        tag: tag.to_string(),
        keepable: false,
        vga: false,
        incoming: None,
    }
}

fn abort_note(state: &BuildState, vm: &Vm, user: &str) -> String {
    let key = state.qemu.key_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
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

/// A guest QEMU runs: reached over SSH through QEMU's port forward.
pub struct QemuMachine {
    vm: Arc<Vm>,
    cfg: QemuBuilder,
    key: Option<Arc<KeyPair>>,
    report: BuildReporter,
}

impl QemuMachine {
    /// Waits for SSH (and `ready_command`), failing at once if QEMU exits.
    async fn wait_for_ssh(&self, cancel: &CancellationToken) -> Result<SshClient, QemuError> {
        let (q, vm) = (&self.cfg, &self.vm);
        let target = ssh_target(q, vm, self.key.as_ref());
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
}

#[async_trait::async_trait]
impl Machine for QemuMachine {
    async fn connect(&self, cancel: &CancellationToken) -> Result<Box<dyn Communicator>, MachineError> {
        let client = self.wait_for_ssh(cancel).await.map_err(MachineError::new)?;
        Ok(Box::new(client))
    }

    fn watch(&self) -> Option<Arc<dyn MachineWatch>> {
        Some(self.vm.clone())
    }

    async fn shut_down(&self, communicator: Option<Box<dyn Communicator>>) -> Result<ShutdownMethod, MachineError> {
        let q = &self.cfg;
        let method =
            shut_down(&self.vm, communicator, q.shutdown_command.as_deref(), q.shutdown_timeout.0, &self.report).await;
        if method == ShutdownMethod::Killed {
            return Err(MachineError::new(QemuError::Shutdown(format!(
                "it ignored `shutdown_command` and ACPI power-down for {}; QEMU was killed, so the disk may be inconsistent",
                q.shutdown_timeout
            ))));
        }
        Ok(method)
    }

    async fn discard(&self) {
        self.vm.kill();
        self.vm.wait_exit(Duration::from_secs(10)).await;
    }

    fn keep_for_debugging(&self) {
        self.vm.keep_running();
    }
}

/// Boots throwaway overlays of image files with the template's VM settings.
pub struct QemuBooter {
    cfg: QemuBuilder,
    accel: accel::Accel,
    work_dir: PathBuf,
    identity: SeedIdentity,
    report: BuildReporter,
    /// The build's key: an installed image already trusts it.
    build_key: Option<Arc<KeyPair>>,
    /// A cloud image gets a fresh seed (new instance-id and key), so its
    /// first-boot logic runs as a user sees it.
    wants_seed: bool,
}

#[async_trait::async_trait]
impl ImageBooter for QemuBooter {
    async fn boot(&self, image: &Path, tag: &str, cancel: &CancellationToken) -> Result<FreshBoot, MachineError> {
        self.boot_overlay(image, tag, cancel).await.map_err(MachineError::new)
    }
}

impl QemuBooter {
    async fn boot_overlay(&self, image: &Path, tag: &str, cancel: &CancellationToken) -> Result<FreshBoot, QemuError> {
        let q = &self.cfg;
        let disk = self.work_dir.join(format!("{tag}-disk.qcow2"));
        diskimage::create_qcow2(&disk, Some(image), None).await?;
        let seed_path = self.work_dir.join(format!("{tag}-seed.img"));
        let (key, seed) = match (self.wants_seed, &self.build_key) {
            (false, Some(key)) => (key.clone(), None),
            _ => {
                let key = Arc::new(KeyPair::generate()?);
                write_seed(&self.identity, q, &key, &seed_path, tag)?;
                (key, Some(seed_path))
            }
        };
        let cfg = VmConfig { disk, seed, ..vm_config(q, self.accel, &self.work_dir, tag) };
        let started = std::time::Instant::now();
        let vm = Arc::new(Vm::launch(&cfg).await?);
        let machine = QemuMachine { vm, cfg: q.clone(), key: Some(key), report: self.report.clone() };
        let client = match machine.wait_for_ssh(cancel).await {
            Ok(client) => client,
            Err(e) => {
                machine.discard().await;
                return Err(e);
            }
        };
        Ok(FreshBoot { machine: Arc::new(machine), communicator: Box::new(client), boot_time: started.elapsed() })
    }
}

pub struct WaitSsh;

#[async_trait::async_trait]
impl Step<BuildState> for WaitSsh {
    fn name(&self) -> String {
        "wait for SSH".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let started = std::time::Instant::now();
        let machine = BuildState::require(&state.machine, "the VM")?.clone();
        let communicator = machine.connect(&cx.cancel).await?;
        super::ssh_ready(state, communicator, started);
        Ok(())
    }
}

/// Records the captured disk once the guest is off.
fn powered_off(state: &mut BuildState, method: ShutdownMethod) -> Result<(), crate::build::MissingState> {
    state.facts.shutdown = Some(method);
    state.captured = Some(Capture::Disk(BuildState::require(&state.qemu.disk, "the disk")?.clone()));
    Ok(())
}

/// `shutdown_command`, then ACPI power-down, then kill — and says which worked.
pub struct Shutdown;

#[async_trait::async_trait]
impl Step<BuildState> for Shutdown {
    fn name(&self) -> String {
        "shut down".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let machine = BuildState::require(&state.machine, "the VM")?.clone();
        let method = machine.shut_down(state.communicator.take()).await?;
        match method {
            ShutdownMethod::Acpi => state.report.info("guest powered off (ACPI power-down)"),
            _ => state.report.info("guest powered off (shutdown_command)"),
        }
        powered_off(state, method)?;
        Ok(())
    }
}

const ACPI_TIMEOUT: Duration = Duration::from_secs(60);

async fn shut_down(
    vm: &Vm,
    communicator: Option<Box<dyn Communicator>>,
    command: Option<&str>,
    timeout: Duration,
    report: &BuildReporter,
) -> ShutdownMethod {
    if let (Some(command), Some(communicator)) = (command, communicator) {
        let mut sink = |_: crate::communicator::OutputStream, line: &str| report.output("shutdown", line);
        // The connection usually drops as the guest goes down; that is success here.
        let _ = tokio::time::timeout(timeout, communicator.exec(command, &[], None, &mut sink, Some(timeout))).await;
        if vm.wait_exit(timeout).await {
            return ShutdownMethod::Command;
        }
        report.warn(format!(
            "guest still running {} after `shutdown_command`; trying ACPI power-down",
            crate::template::units::Dur(timeout)
        ));
    }
    let budget = if command.is_some() { ACPI_TIMEOUT.min(timeout) } else { timeout };
    if let Ok(mut qmp) = qmp::Qmp::connect(&vm.qmp_path).await
        && qmp.system_powerdown().await.is_ok()
        && vm.wait_exit(budget).await
    {
        return ShutdownMethod::Acpi;
    }
    vm.kill();
    vm.wait_exit(Duration::from_secs(10)).await;
    ShutdownMethod::Killed
}

/// QEMU's exit, for SSH operations racing against it.
#[async_trait::async_trait]
impl MachineWatch for Vm {
    async fn gone(&self) -> crate::communicator::MachineGone {
        let status = self.exited().await;
        crate::communicator::MachineGone {
            what: format!("QEMU exited ({status})"),
            details: format!("\n--- serial console (last lines) ---\n{}", self.console_tail(CONSOLE_TAIL)),
        }
    }
}

/// What the qemu steps hand to later qemu steps.
#[derive(Default)]
pub struct QemuState {
    pub accel: Option<accel::Accel>,
    pub disk: Option<PathBuf>,
    pub seed: Option<PathBuf>,
    /// The build key's private half, for `--on-error abort` notes.
    pub key_path: Option<PathBuf>,
    pub vm: Option<Arc<Vm>>,
    pub http: Option<Arc<http::HttpServer>>,
}
