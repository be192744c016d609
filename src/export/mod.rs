//! The exporter: converts the built disk into the requested formats
//! straight into the store's staging directory (no later copy), computes
//! every digest in one read pass per file, and writes the manifest and
//! `SHA256SUMS`-style files.

pub mod hash;
pub mod manifest;

use crate::report::BuildReporter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::process::Command;

use crate::process::ProcessError;
use crate::source::DigestAlgo;
use crate::template::{Compression, DiskFormat, FormatSpec, StreamCompression};

pub use hash::{FileDigests, hash_file};

const CONVERT_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("converting to {format} failed")]
    Convert {
        format: String,
        /// The file being written.
        path: String,
        #[source]
        source: ProcessError,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("compressing {path} failed")]
    Compress {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal task failed: {0}")]
    Task(String),
    /// ENOSPC, whichever tool hit it; says where, and how big that file system is.
    #[error("the disk is full (ENOSPC) writing {path}; {space}")]
    DiskFull {
        path: String,
        space: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ExportError {
    /// The same failure as [`ExportError::DiskFull`] when it was one.
    fn explain_disk_full(self) -> ExportError {
        let (path, full) = match &self {
            ExportError::Write { path, source } | ExportError::Compress { path, source } => {
                (path.clone(), source.raw_os_error() == Some(libc::ENOSPC))
            }
            ExportError::Convert { path, source: ProcessError::Failed { stderr, .. }, .. } => {
                (path.clone(), stderr.contains("No space left on device"))
            }
            _ => return self,
        };
        if !full {
            return self;
        }
        let space = space_report(Path::new(&path));
        ExportError::DiskFull { path, space, source: Box::new(self) }
    }
}

/// `the file system at /srv (8.0 MiB) has 0 B free` for the file system holding `path`.
fn space_report(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let dir = path.parent().unwrap_or(path);
    let Ok(meta) = std::fs::metadata(dir) else { return "cannot tell which file system".into() };
    // The mount point: the last ancestor on the same device.
    let mut mount = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    while let Some(parent) = mount.parent() {
        if !std::fs::metadata(parent).is_ok_and(|m| m.dev() == meta.dev()) {
            break;
        }
        mount = parent.to_path_buf();
    }
    let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return format!("the file system at {}", mount.display());
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_dir.as_ptr(), &mut st) } != 0 {
        return format!("the file system at {}", mount.display());
    }
    format!(
        "the file system at {} ({}) has {} free",
        mount.display(),
        crate::report::human_size(st.f_blocks * st.f_frsize),
        crate::report::human_size(st.f_bavail * st.f_frsize)
    )
}

/// One exported file.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    pub file: String,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    pub virtual_size: u64,
    pub size: u64,
    pub digests: std::collections::BTreeMap<String, String>,
    #[serde(skip)]
    pub path: PathBuf,
}

fn format_name(spec: &FormatSpec) -> &'static str {
    match spec.format {
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Raw => "raw",
        DiskFormat::Vmdk => "vmdk",
        DiskFormat::VmdkStream => "vmdk-stream",
        DiskFormat::Vhdx => "vhdx",
        DiskFormat::Vpc => "vpc",
    }
}

/// The file name of an artifact: `NAME-VERSION.EXT`.
pub fn file_name(base: &str, spec: &FormatSpec) -> String {
    let ext = match spec.format {
        DiskFormat::Qcow2 => "qcow2",
        DiskFormat::Raw => "raw",
        DiskFormat::Vmdk => "vmdk",
        DiskFormat::VmdkStream => "stream.vmdk",
        DiskFormat::Vhdx => "vhdx",
        DiskFormat::Vpc => "vhd",
    };
    let suffix = match spec.compress {
        Some(StreamCompression::Zstd) => ".zst",
        Some(StreamCompression::Xz) => ".xz",
        Some(StreamCompression::Gzip) => ".gz",
        None => "",
    };
    format!("{base}.{ext}{suffix}")
}

/// `qemu-img convert` arguments for one output format.
pub fn convert_args(spec: &FormatSpec) -> Vec<&'static str> {
    let mut args = vec!["-O"];
    match spec.format {
        DiskFormat::Qcow2 => {
            args.push("qcow2");
            match spec.compression {
                Some(Compression::Zlib) => args.extend(["-c", "-o", "compression_type=zlib"]),
                Some(Compression::Zstd) => args.extend(["-c", "-o", "compression_type=zstd"]),
                Some(Compression::None) | None => {}
            }
        }
        DiskFormat::Raw => args.push("raw"),
        DiskFormat::Vmdk => args.extend(["vmdk", "-o", "subformat=monolithicSparse"]),
        DiskFormat::VmdkStream => args.extend(["vmdk", "-o", "subformat=streamOptimized"]),
        DiskFormat::Vhdx => args.extend(["vhdx", "-o", "subformat=dynamic"]),
        DiskFormat::Vpc => args.extend(["vpc", "-o", "subformat=fixed,force_size=on"]),
    }
    args
}

/// Converts `disk` into every format, in parallel up to the number of cores.
pub async fn export_all(
    disk: &Path,
    out_dir: &Path,
    base_name: &str,
    formats: &[FormatSpec],
    algos: &[DigestAlgo],
    report: &BuildReporter,
) -> Result<Vec<Artifact>, ExportError> {
    let virtual_size = crate::diskimage::virtual_size(disk).await.unwrap_or(0);
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
    let algos = &digest_algos(algos);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, spec) in formats.iter().cloned().enumerate() {
        let (disk, out_dir, name, algos, report) =
            (disk.to_path_buf(), out_dir.to_path_buf(), file_name(base_name, &spec), algos.to_vec(), report.clone());
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let artifact = export_one(&disk, &out_dir, &name, &spec, &algos, virtual_size, &report).await;
            (i, artifact.map_err(ExportError::explain_disk_full))
        });
    }
    let mut done: Vec<(usize, Artifact)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, artifact) = joined.map_err(|e| ExportError::Task(e.to_string()))?;
        done.push((i, artifact?));
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, a)| a).collect())
}

async fn export_one(
    disk: &Path,
    out_dir: &Path,
    name: &str,
    spec: &FormatSpec,
    algos: &[DigestAlgo],
    virtual_size: u64,
    report: &BuildReporter,
) -> Result<Artifact, ExportError> {
    let target = out_dir.join(name);
    let converted = match spec.compress {
        Some(_) => out_dir.join(format!(".{name}.raw")),
        None => target.clone(),
    };
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-p"]).args(convert_args(spec)).arg(disk).arg(&converted);
    convert_with_progress(cmd, &format!("convert {name}"), virtual_size, report).await.map_err(|source| {
        ExportError::Convert { format: format_name(spec).into(), path: converted.display().to_string(), source }
    })?;
    let digests = match spec.compress {
        Some(kind) => {
            let d = hash::compress_file(&converted, &target, kind, algos, report).await?;
            let _ = tokio::fs::remove_file(&converted).await;
            d
        }
        None => hash_file(&target, algos, name, report).await?,
    };
    Ok(Artifact {
        file: name.to_string(),
        format: format_name(spec).to_string(),
        compression: spec
            .compression
            .filter(|c| *c != Compression::None)
            .map(|c| format!("{c:?}").to_lowercase())
            .or(spec.compress.map(|c| format!("{c:?}").to_lowercase())),
        virtual_size,
        size: digests.size,
        digests: digests.hex,
        path: target,
    })
}

/// The digests to compute: the template's list, always with sha256 (the
/// store's `SHA256SUMS` and `verify-artifact` rely on it).
pub fn digest_algos(requested: &[DigestAlgo]) -> Vec<DigestAlgo> {
    let mut algos = vec![DigestAlgo::Sha256];
    algos.extend(requested.iter().copied().filter(|a| *a != DigestAlgo::Sha256));
    algos
}

/// Runs `qemu-img convert -p`, turning its `(12.34/100%)` updates into a progress bar.
async fn convert_with_progress(
    mut cmd: Command,
    label: &str,
    virtual_size: u64,
    report: &BuildReporter,
) -> Result<(), ProcessError> {
    use tokio::io::AsyncReadExt;
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = crate::process::GroupChild::spawn(cmd)?;
    let program = child.program.clone();
    let progress = report.progress(label, Some(virtual_size.max(1)));
    let mut stdout = child.child.stdout.take();
    let mut stderr = child.child.stderr.take();
    let read_progress = async {
        let Some(out) = stdout.as_mut() else { return };
        let mut buf = [0u8; 256];
        let mut pending = String::new();
        while let Ok(n) = out.read(&mut buf).await {
            if n == 0 {
                break;
            }
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(end) = pending.find(['\r', '\n']) {
                if let Some(pct) = parse_percent(&pending[..end]) {
                    progress.set_position((virtual_size as f64 * pct / 100.0) as u64);
                }
                pending.drain(..=end);
            }
        }
    };
    let mut err_text = Vec::new();
    let read_err = async {
        if let Some(err) = stderr.as_mut() {
            let _ = err.read_to_end(&mut err_text).await;
        }
    };
    let wait = async {
        let (status, _, _) = tokio::join!(child.child.wait(), read_progress, read_err);
        status
    };
    let status = tokio::time::timeout(CONVERT_TIMEOUT, wait)
        .await
        .map_err(|_| ProcessError::Timeout { program: program.clone(), timeout: CONVERT_TIMEOUT })?
        .map_err(|source| ProcessError::Wait { program: program.clone(), source })?;
    progress.finish();
    child.forget_group();
    if !status.success() {
        return Err(ProcessError::Failed { program, status, stderr: String::from_utf8_lossy(&err_text).into_owned() });
    }
    Ok(())
}

/// `    (45.12/100%)` → 45.12
fn parse_percent(line: &str) -> Option<f64> {
    let inner = line.trim().strip_prefix('(')?.split('/').next()?;
    inner.trim().parse().ok()
}

/// `SHA256SUMS`-style bodies (GNU format), one per algorithm.
pub fn sums_files(artifacts: &[Artifact], algos: &[DigestAlgo]) -> Vec<(DigestAlgo, String)> {
    digest_algos(algos)
        .iter()
        .map(|algo| {
            let entries =
                artifacts.iter().filter_map(|a| a.digests.get(algo.name()).map(|d| (a.file.as_str(), d.as_str())));
            (*algo, crate::store::format_sums(entries))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_img_progress() {
        assert_eq!(parse_percent("    (45.12/100%)"), Some(45.12));
        assert_eq!(parse_percent("garbage"), None);
    }

    #[test]
    fn names_and_args_follow_the_format() {
        let spec = FormatSpec { format: DiskFormat::Raw, compression: None, compress: Some(StreamCompression::Zstd) };
        assert_eq!(file_name("web-1.0.0", &spec), "web-1.0.0.raw.zst");
        let q = FormatSpec { format: DiskFormat::Qcow2, compression: Some(Compression::Zstd), compress: None };
        assert_eq!(convert_args(&q), ["-O", "qcow2", "-c", "-o", "compression_type=zstd"]);
        let vpc = FormatSpec { format: DiskFormat::Vpc, compression: None, compress: None };
        assert_eq!(file_name("a", &vpc), "a.vhd");
    }
}
