//! Helpers shared by the integration tests: they run the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgbuild"))
}

/// A command for the real binary with a clean, isolated environment.
pub fn imgbuild(work: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.env("IMGBUILD_CACHE_DIR", work.join("cache"))
        .env("IMGBUILD_WORK_DIR", work.join("work"))
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
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
