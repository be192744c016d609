//! Helpers shared by the integration tests: they run the real binary.
#![allow(dead_code)]

pub mod moto;

use std::path::{Path, PathBuf};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgbuild"))
}

/// A command for the real binary with a clean, isolated environment.
pub fn imgbuild(work: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.env("IMGBUILD_CACHE_DIR", work.join("cache"))
        .env("IMGBUILD_WORK_DIR", work.join("work"))
        // Build locks (which tell a running build from a dead one) stay inside the test too.
        .env("IMGBUILD_RUNTIME_DIR", work.join("run"))
        .env("NO_COLOR", "1")
        .env_remove("IMGBUILD_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("IMGBUILD_VAR_") {
            cmd.env_remove(key);
        }
    }
    std::fs::create_dir_all(work.join("work")).unwrap();
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut cmd: std::process::Command) -> Run {
    let out = cmd.output().expect("run imgbuild");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Entries left in the work root (per-build directories).
pub fn leftover_work_dirs(work: &Path) -> Vec<String> {
    std::fs::read_dir(work.join("work"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// The test base image directory (base.qcow2 + SHA256SUMS), built once per
/// test process by the repository's fixture script (cached by content hash).
pub fn fixture_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("tests/fixtures/build-base-image.sh");
        let out = std::process::Command::new("bash").arg(&script).output().expect("run fixture script");
        assert!(out.status.success(), "fixture build failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let image = PathBuf::from(stdout.lines().last().expect("fixture path").trim());
        image.parent().expect("fixture dir").to_path_buf()
    })
    .clone()
}

/// QEMU processes whose command line mentions `needle` (e.g. a test's temp dir).
pub fn qemu_processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("qemu-system") && cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

/// A private directory for one test's builds: work root, cache, runtime
/// dir and store inside it, so leftovers are easy to see.
pub struct BuildEnv {
    pub tmp: tempfile::TempDir,
    /// Pass `--var fixture_dir=…` (the base image) to every build.
    pub fixture_var: bool,
}

impl BuildEnv {
    pub fn new() -> Self {
        BuildEnv { tmp: tempfile::tempdir().unwrap(), fixture_var: false }
    }

    /// A build environment whose builds get `--var fixture_dir=…`.
    pub fn with_fixture_var() -> Self {
        BuildEnv { fixture_var: true, ..BuildEnv::new() }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// `imgbuild build TEMPLATE` with a private store and work root.
    pub fn build_cmd(&self, template: &Path, extra: &[&str]) -> std::process::Command {
        let mut c = imgbuild(self.path());
        c.arg("build").arg(template).arg("--no-progress").arg("--store").arg(self.store());
        if self.fixture_var {
            c.arg("--var").arg(format!("fixture_dir={}", fixture_dir().display()));
        }
        c.args(extra);
        c
    }

    /// The build in the background, its output piped.
    pub fn spawn(&self, template: &Path, extra: &[&str]) -> std::process::Child {
        let mut c = self.build_cmd(template, extra);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    }

    pub fn write_template(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// No QEMU of this environment runs and no work directory is left.
    pub fn assert_clean(&self) {
        let needle = self.path().to_string_lossy().into_owned();
        assert!(
            wait_until(std::time::Duration::from_secs(10), || qemu_processes_mentioning(&needle).is_empty()),
            "QEMU left running: {:?}",
            qemu_processes_mentioning(&needle)
        );
        assert!(leftover_work_dirs(self.path()).is_empty(), "work dirs left: {:?}", leftover_work_dirs(self.path()));
    }
}

/// Waits (bounded) until `cond` holds; returns whether it did.
pub fn wait_until(limit: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cond()
}

/// Serialises tests that boot VMs: the machine has two cores.
pub fn vm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Python of the test virtualenv made by scripts/setup.sh (junitparser, check-jsonschema, moto).
pub fn venv_python() -> PathBuf {
    imgbuild::testing::venv_program("python")
}

/// The installer ISO fixture directory (installer.iso + SHA256SUMS), built once per test process.
pub fn installer_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("tests/fixtures/build-installer-iso.sh");
        let out = std::process::Command::new("bash").arg(&script).output().expect("run installer fixture script");
        assert!(out.status.success(), "installer ISO build failed:\n{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(stdout.lines().last().expect("iso path").trim()).parent().expect("iso dir").to_path_buf()
    })
    .clone()
}

/// A small TCG guest with `disk` in `dir`: what the tests that drive `Vm`
/// directly share; each sets its seed, CD-ROM or display on top.
pub fn test_vm(dir: &Path, disk: PathBuf, tag: &str) -> imgbuild::builder::qemu::vm::VmConfig {
    imgbuild::builder::qemu::vm::VmConfig {
        qemu_binary: "qemu-system-x86_64".into(),
        accel: imgbuild::builder::qemu::accel::Accel::Tcg,
        machine: "q35".into(),
        cpus: 1,
        memory_mib: 512,
        disk,
        disk_interface: imgbuild::template::DiskInterface::Virtio,
        seed: None,
        cdrom: None,
        firmware: imgbuild::template::Firmware::Bios,
        extra_args: Vec::new(),
        guest_ssh_port: 22,
        dir: dir.to_path_buf(),
        tag: tag.into(),
        keepable: false,
        vga: false,
        incoming: None,
    }
}
