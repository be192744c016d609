//! Disk images through `qemu-img`: what the qemu builder and export share.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

use crate::process::{ProcessError, run_capture};

/// Creating or converting an image may copy gigabytes.
pub const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(3600);

async fn info(path: &Path) -> Result<serde_json::Value, ProcessError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "--output=json", "-U"]).arg(path);
    let out = run_capture(cmd, Duration::from_secs(60)).await?;
    Ok(serde_json::from_str(&out).unwrap_or_default())
}

/// The image's format as `qemu-img` detects it (`raw` when it cannot tell).
pub async fn format(path: &Path) -> Result<String, ProcessError> {
    Ok(info(path).await?["format"].as_str().unwrap_or("raw").to_string())
}

/// The size of the disk the image holds, in bytes.
pub async fn virtual_size(path: &Path) -> Result<u64, ProcessError> {
    Ok(info(path).await?["virtual-size"].as_u64().unwrap_or(0))
}

/// A new owner-only qcow2 image at `path`: an overlay on `base` (which is
/// never written to) or, without one, a blank disk. `size` in bytes; an
/// overlay without one is as large as its base.
pub async fn create_qcow2(path: &Path, base: Option<&Path>, size: Option<u64>) -> Result<(), ProcessError> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2"]);
    if let Some(base) = base {
        cmd.arg("-F").arg(format(base).await?).arg("-b").arg(base);
    }
    cmd.arg(path);
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    crate::process::owner_only_files(&mut cmd);
    run_capture(cmd, QEMU_IMG_TIMEOUT).await?;
    Ok(())
}
