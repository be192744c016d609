//! Choosing the accelerator. `/dev/kvm` can exist where KVM cannot run a
//! guest (nested virtualisation without vmx/svm hangs in early boot), so
//! `auto` needs both a usable device and the CPU flag before it picks KVM.

use crate::template::Accelerator;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "accelerator `kvm` was requested but KVM cannot run guests here: {reason}; use `\"accelerator\": \"tcg\"` or `auto`"
)]
pub struct KvmUnusable {
    reason: String,
}

/// Why KVM cannot be used here, or `None` when it can.
pub fn kvm_problem() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return Some(format!("/dev/kvm cannot be opened read-write ({e})"));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_flag {
        return Some("the CPU shows no vmx/svm flag (nested virtualisation is off)".into());
    }
    None
}

pub fn choose(requested: Accelerator, report: &crate::report::BuildReporter) -> Result<Accel, KvmUnusable> {
    match requested {
        Accelerator::Tcg => Ok(Accel::Tcg),
        Accelerator::Kvm => match kvm_problem() {
            None => Ok(Accel::Kvm),
            Some(reason) => Err(KvmUnusable { reason }),
        },
        Accelerator::Auto => match kvm_problem() {
            None => Ok(Accel::Kvm),
            Some(reason) => {
                report.info(format!("using TCG (software emulation): {reason}"));
                Ok(Accel::Tcg)
            }
        },
    }
}
