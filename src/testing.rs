//! Test support shared by the unit tests and the integration tests: the rule
//! for a test whose external tool is missing.
//!
//! A green run must mean the test ran. Under CI (`CI` set, as every CI
//! system does) a missing tool fails the test with what to install; on a
//! developer's machine the test is skipped loudly and counted: each skip is
//! appended to the file named by `IMGBUILD_SKIP_LOG`, which
//! `scripts/test.sh` totals at the end of the run.

use std::io::Write;

/// True when the test may go on. `missing` says what is absent, `install`
/// how to get it. Panics under CI when it is absent.
pub fn require(available: bool, missing: &str, install: &str) -> bool {
    if available {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    if under_ci() {
        panic!("{test} needs {missing}, which is missing on this CI machine: {install}");
    }
    eprintln!("SKIPPED {test}: {missing} is missing ({install}); under CI=true this fails");
    if let Some(log) = std::env::var_os("IMGBUILD_SKIP_LOG")
        && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log)
    {
        let _ = writeln!(file, "{test}: {missing}");
    }
    false
}

/// [`require`] for a program that must be on `PATH`.
pub fn require_command(program: &str, install: &str) -> bool {
    require(crate::process::which(program).is_some(), &format!("`{program}`"), install)
}

/// `CI` set to anything but an explicit no.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false" | "no"))
}

/// A program of the test virtualenv that `scripts/setup.sh` makes
/// (`IMGBUILD_VENV`, default `~/.cache/imgbuild-venv`): moto, check-jsonschema,
/// junitparser, prometheus-client. Panics with the fix when it is missing:
/// setup.sh always installs the venv, so its absence is a broken setup.
pub fn venv_program(name: &str) -> std::path::PathBuf {
    let venv = std::env::var_os("IMGBUILD_VENV").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/imgbuild-venv")
    });
    let program = venv.join("bin").join(name);
    assert!(program.exists(), "{} is missing: run scripts/setup.sh", program.display());
    program
}
