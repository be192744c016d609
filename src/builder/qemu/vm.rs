//! A running QEMU guest: launched headless with user-mode networking, SSH
//! forwarded on 127.0.0.1, QMP on a unix socket and the serial console in a
//! file. Its exit is observable at any time so no step waits on a dead VM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;

use super::accel::Accel;
use super::qmp::Qmp;
use crate::process::{GroupChild, Lifetime};
use crate::template::{DiskInterface, Firmware};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Spawn(#[from] crate::process::ProcessError),
    #[error("QEMU exited at start-up ({status}): {stderr}")]
    StartFailed { status: String, stderr: String },
    #[error("no free port for SSH forwarding after {0} attempts")]
    NoPort(usize),
    #[error("QEMU did not create its QMP socket within {0:?}")]
    NoQmp(Duration),
    #[error("cannot find UEFI firmware (looked for {0}); install it with `apt-get install -y ovmf`")]
    NoFirmware(String),
    #[error("cannot reserve a local port")]
    Port(#[source] std::io::Error),
    #[error("cannot move the installer CD-ROM behind the disk in the boot order")]
    BootOnce(#[source] super::qmp::QmpError),
    #[error("cannot {what}")]
    Checkpoint {
        what: &'static str,
        #[source]
        source: super::qmp::QmpError,
    },
    #[error("migration {0}")]
    Migration(String),
}

/// How long saving or restoring a machine's state may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu_binary: String,
    pub accel: Accel,
    pub machine: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disk: PathBuf,
    pub disk_interface: DiskInterface,
    pub seed: Option<PathBuf>,
    pub cdrom: Option<PathBuf>,
    pub firmware: Firmware,
    pub extra_args: Vec<String>,
    pub guest_ssh_port: u16,
    pub dir: PathBuf,
    /// Name used in file names inside `dir` (several VMs may share it).
    pub tag: String,
    /// With `--on-error abort` the VM must be able to outlive imgbuild.
    pub keepable: bool,
    /// A VGA device: installers driven by `boot_command` read the keyboard on their console.
    pub vga: bool,
    /// Resume a checkpoint ([`Vm::checkpoint`]) instead of booting: the
    /// machine state comes from this file, `disk` must be an overlay on the
    /// checkpoint's disk layer, and every other device as when it was taken.
    pub incoming: Option<PathBuf>,
}

pub struct Vm {
    pub ssh_port: u16,
    pub qmp_path: PathBuf,
    pub console_path: PathBuf,
    pub pid: Option<u32>,
    pgid: Option<i32>,
    keep: std::sync::Arc<std::sync::atomic::AtomicBool>,
    exit: watch::Receiver<Option<String>>,
    _task: tokio::task::JoinHandle<()>,
}

const START_ATTEMPTS: usize = 5;
/// The installer CD-ROM's device id (its QOM path is /machine/peripheral/ID).
const CDROM_ID: &str = "cdrom0";
/// The CD-ROM's `bootindex` after the first boot: behind the disk (1), still a
/// fallback when the disk cannot boot.
const CDROM_LATER_BOOTINDEX: i64 = 2;
const QMP_WAIT: Duration = Duration::from_secs(20);

impl Vm {
    /// Starts QEMU, retrying with another port if the forward is taken meanwhile.
    pub async fn launch(cfg: &VmConfig) -> Result<Vm, VmError> {
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match Self::start(cfg, port).await {
                Err(VmError::StartFailed { stderr, .. }) if stderr.contains("host forwarding") => {
                    continue;
                }
                other => return other,
            }
        }
        Err(VmError::NoPort(START_ATTEMPTS))
    }

    async fn start(cfg: &VmConfig, port: u16) -> Result<Vm, VmError> {
        let qmp_path = cfg.dir.join(format!("{}.qmp", cfg.tag));
        let console_path = cfg.dir.join(format!("{}-console.log", cfg.tag));
        let stderr_path = cfg.dir.join(format!("{}-qemu.log", cfg.tag));
        let _ = std::fs::remove_file(&qmp_path);
        let args = qemu_args(cfg, port, &qmp_path, &console_path)?;
        tracing::debug!("{} {}", cfg.qemu_binary, args.join(" "));
        let stderr_file = crate::build::create_private_file(&stderr_path).map_err(VmError::Port)?;
        let mut cmd = Command::new(&cfg.qemu_binary);
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr_file);
        crate::process::owner_only_files(&mut cmd);
        let lifetime = if cfg.keepable { Lifetime::Keepable } else { Lifetime::DiesWithParent };
        let child = GroupChild::spawn_with(cmd, lifetime)?;
        let keep = child.keep_flag();
        let pid = child.id();
        let (tx, exit) = watch::channel(None);
        let task = tokio::spawn(watch_exit(child, tx));
        let vm =
            Vm { ssh_port: port, qmp_path, console_path, pid, pgid: pid.map(|p| p as i32), keep, exit, _task: task };
        vm.wait_started(&stderr_path).await?;
        if cfg.cdrom.is_some() && cfg.incoming.is_none() {
            vm.boot_cdrom_once().await?;
        }
        if cfg.incoming.is_some() {
            vm.wait_restored().await?;
        }
        Ok(vm)
    }

    async fn wait_started(&self, stderr_path: &Path) -> Result<(), VmError> {
        let deadline = tokio::time::Instant::now() + QMP_WAIT;
        let mut delay = Duration::from_millis(10);
        loop {
            if let Some(status) = self.exit_status() {
                let stderr = std::fs::read_to_string(stderr_path).unwrap_or_default().trim().to_string();
                return Err(VmError::StartFailed { status, stderr });
            }
            if self.qmp_path.exists() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(VmError::NoQmp(QMP_WAIT));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// The CD-ROM starts first in the boot order (`bootindex=0`) so the
    /// installer boots whatever the disk holds. Moving it behind the disk now
    /// makes every later boot -- the installer's reboot into the installed
    /// system -- start from the disk, like Packer's `-boot once=d`.
    ///
    /// Why this way: QEMU writes the boot order the firmware reads (the
    /// fw_cfg file `bootorder`, made from the devices' `bootindex`) at each
    /// system reset, and QMP commands only run once the start-up reset is
    /// done, so the first boot still sees the CD first. SeaBIOS and OVMF both
    /// read `bootorder` afresh on every boot, so this works for BIOS and UEFI
    /// alike. `-boot once=d` does not: it only changes the legacy CMOS order,
    /// which SeaBIOS ranks below any device with a `bootindex`, and OVMF
    /// ignores. Nor does relying on a blank disk to fall through to the CD,
    /// which breaks as soon as the disk holds a boot sector.
    async fn boot_cdrom_once(&self) -> Result<(), VmError> {
        let mut qmp = Qmp::connect(&self.qmp_path).await.map_err(VmError::BootOnce)?;
        qmp.qom_set(&format!("/machine/peripheral/{CDROM_ID}"), "bootindex", CDROM_LATER_BOOTINDEX.into())
            .await
            .map_err(VmError::BootOnce)
    }

    /// `Some(description)` once QEMU has exited.
    /// Saves the running guest so a later [`Vm::launch`] with `incoming` can
    /// resume it exactly where it was (same boot, same processes): its RAM
    /// and device state go to `state_file` (zstd), and the disk file it was
    /// writing becomes a read-only layer, never written again, because the
    /// guest goes on (when `resume`) on a new overlay `next_overlay` on it.
    pub async fn checkpoint(&self, state_file: &Path, next_overlay: &Path, resume: bool) -> Result<(), VmError> {
        let step = |what| move |source| VmError::Checkpoint { what, source };
        let mut qmp = Qmp::connect(&self.qmp_path).await.map_err(step("connect to QMP"))?;
        qmp.execute("stop", None).await.map_err(step("pause the guest"))?;
        let overlay = serde_json::json!({
            "device": "disk0",
            "snapshot-file": next_overlay.display().to_string(),
            "format": "qcow2",
        });
        qmp.execute("blockdev-snapshot-sync", Some(overlay)).await.map_err(step("move the disk onto a new overlay"))?;
        let target = crate::communicator::shell_quote(&state_file.display().to_string());
        let uri = format!("exec:zstd -q -1 -T0 -o {target}");
        qmp.execute("migrate", Some(serde_json::json!({ "uri": uri }))).await.map_err(step("save the guest state"))?;
        wait_migration(&mut qmp, "query-migrate").await?;
        if resume {
            qmp.execute("cont", None).await.map_err(step("resume the guest"))?;
        }
        Ok(())
    }

    /// Waits until an incoming checkpoint is loaded, then lets the guest
    /// run (a checkpoint is taken from a paused guest, so it arrives paused).
    async fn wait_restored(&self) -> Result<(), VmError> {
        let step = |what| move |source| VmError::Checkpoint { what, source };
        let mut qmp = Qmp::connect(&self.qmp_path).await.map_err(step("connect to QMP"))?;
        wait_migration(&mut qmp, "query-migrate").await?;
        let status = qmp.execute("query-status", None).await.map_err(step("read the guest status"))?;
        if status["status"].as_str() != Some("running") {
            qmp.execute("cont", None).await.map_err(step("resume the guest"))?;
        }
        Ok(())
    }

    pub fn exit_status(&self) -> Option<String> {
        self.exit.borrow().clone()
    }

    /// Resolves when QEMU exits, with its exit status.
    pub async fn exited(&self) -> String {
        let mut rx = self.exit.clone();
        loop {
            if let Some(status) = rx.borrow_and_update().clone() {
                return status;
            }
            if rx.changed().await.is_err() {
                return "unknown status".into();
            }
        }
    }

    /// Waits up to `timeout` for QEMU to exit; true if it did.
    pub async fn wait_exit(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.exited()).await.is_ok()
    }

    pub fn kill(&self) {
        if let Some(pgid) = self.pgid
            && self.exit_status().is_none()
        {
            // SAFETY: a plain syscall on our own child's process group.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    /// Leaves QEMU running after imgbuild exits (`--on-error abort`).
    pub fn keep_running(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The last `lines` lines of the serial console.
    pub fn console_tail(&self, lines: usize) -> String {
        console_tail(&self.console_path, lines)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.keep.load(std::sync::atomic::Ordering::SeqCst) {
            self.kill();
        }
    }
}

pub fn console_tail(path: &Path, lines: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].iter().map(|l| l.trim_end_matches('\r')).collect::<Vec<_>>().join("\n")
}

async fn watch_exit(mut child: GroupChild, tx: watch::Sender<Option<String>>) {
    let status = match child.child.wait().await {
        Ok(s) => s.to_string(),
        Err(e) => format!("unknown status ({e})"),
    };
    child.forget_group();
    let _ = tx.send(Some(status));
}

/// Asks the kernel for a free port. Another process may take it before QEMU
/// binds it; [`Vm::launch`] then retries with a new one.
fn free_port() -> Result<u16, VmError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(VmError::Port)?;
    Ok(listener.local_addr().map_err(VmError::Port)?.port())
}

const OVMF_CODE: [&str; 2] = ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"];
const OVMF_VARS: [&str; 2] = ["/usr/share/OVMF/OVMF_VARS_4M.fd", "/usr/share/OVMF/OVMF_VARS.fd"];

fn qemu_args(cfg: &VmConfig, port: u16, qmp: &Path, console: &Path) -> Result<Vec<String>, VmError> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &format!("imgbuild-{}", cfg.tag), "-nodefaults", "-display", "none"]);
    if cfg.vga {
        push(&["-vga", "std"]);
    }
    push(&["-machine", &format!("{},accel={}", cfg.machine, cfg.accel.as_str())]);
    push(&["-cpu", if cfg.accel == Accel::Kvm { "host" } else { "max" }]);
    push(&["-smp", &cfg.cpus.to_string(), "-m", &format!("{}M", cfg.memory_mib)]);
    push(&["-serial", &format!("file:{}", console.display())]);
    push(&["-qmp", &format!("unix:{},server=on,wait=off", qmp.display())]);
    push(&["-netdev", &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:{}", cfg.guest_ssh_port)]);
    push(&["-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"]);
    if let Some(state) = &cfg.incoming {
        let path = crate::communicator::shell_quote(&state.display().to_string());
        push(&["-incoming", &format!("exec:zstd -dcq {path}")]);
    }
    let disk = format!("file={},format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap", cfg.disk.display());
    push(&["-drive", &disk]);
    match cfg.disk_interface {
        DiskInterface::Virtio => push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]),
        DiskInterface::VirtioScsi => {
            push(&["-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=disk0,bootindex=1"])
        }
        DiskInterface::Ide => push(&["-device", "ide-hd,drive=disk0,bootindex=1"]),
        DiskInterface::Nvme => push(&["-device", "nvme,drive=disk0,serial=imgbuild0,bootindex=1"]),
    }
    if let Some(seed) = &cfg.seed {
        push(&["-drive", &format!("file={},format=raw,if=virtio,readonly=on", seed.display())]);
    }
    if let Some(iso) = &cfg.cdrom {
        push(&["-drive", &format!("file={},media=cdrom,readonly=on,if=none,id=cd0", iso.display())]);
        push(&["-device", &format!("ide-cd,drive=cd0,id={CDROM_ID},bootindex=0")]);
    }
    if cfg.firmware == Firmware::Uefi {
        let (code, vars) = uefi_files(cfg)?;
        push(&["-drive", &format!("if=pflash,format=raw,readonly=on,file={code}")]);
        push(&["-drive", &format!("if=pflash,format=raw,file={}", vars.display())]);
    }
    a.extend(cfg.extra_args.iter().cloned());
    Ok(a)
}

/// OVMF code (read-only, shared) and a private copy of the variable store.
fn uefi_files(cfg: &VmConfig) -> Result<(String, PathBuf), VmError> {
    let find = |c: &[&str]| c.iter().find(|p| Path::new(p).exists()).map(|p| p.to_string());
    let code = find(&OVMF_CODE).ok_or_else(|| VmError::NoFirmware(OVMF_CODE.join(", ")))?;
    let vars_src = find(&OVMF_VARS).ok_or_else(|| VmError::NoFirmware(OVMF_VARS.join(", ")))?;
    let vars = cfg.dir.join(format!("{}-efivars.fd", cfg.tag));
    if !vars.exists() {
        let mut to = crate::build::create_private_file(&vars).map_err(VmError::Port)?;
        std::io::copy(&mut std::fs::File::open(&vars_src).map_err(VmError::Port)?, &mut to).map_err(VmError::Port)?;
    }
    Ok((code, vars))
}

/// Polls the outgoing migration until it completes.
async fn wait_migration(qmp: &mut Qmp, query: &str) -> Result<(), VmError> {
    let deadline = tokio::time::Instant::now() + MIGRATION_TIMEOUT;
    let mut delay = Duration::from_millis(20);
    loop {
        let info = qmp
            .execute(query, None)
            .await
            .map_err(|source| VmError::Checkpoint { what: "read the migration status", source })?;
        match info["status"].as_str().unwrap_or_default() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                let why = info["error-desc"].as_str().unwrap_or("no reason given");
                return Err(VmError::Migration(format!("failed: {why}")));
            }
            _ if tokio::time::Instant::now() > deadline => {
                return Err(VmError::Migration(format!("did not finish within {MIGRATION_TIMEOUT:?}")));
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}
