//! Digests in one pass: every algorithm is fed from the same buffer, while
//! the file is read (or, for stream compression, while it is written).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use imgbuild_store_format::{Digests, MultiHasher, hash_reader};

use super::ExportError;
use crate::report::{BuildReporter, Progress};
use crate::source::DigestAlgo;
use crate::template::StreamCompression;

const BUF: usize = imgbuild_store_format::hash::READ_BUFFER;

#[derive(Debug, Clone, Default)]
pub struct FileDigests {
    pub size: u64,
    /// algorithm name → lowercase hex
    pub hex: BTreeMap<String, String>,
}

impl FileDigests {
    fn from_digests(d: Digests) -> Self {
        FileDigests { size: d.size, hex: d.hex.into_iter().map(|(algo, hex)| (algo.name().to_string(), hex)).collect() }
    }
}

fn hasher(algos: &[DigestAlgo]) -> MultiHasher {
    MultiHasher::new(&algos.iter().map(|a| (*a).into()).collect::<Vec<_>>())
}

/// Hashes a file with every algorithm in one read pass, with progress.
pub async fn hash_file(
    path: &Path,
    algos: &[DigestAlgo],
    label: &str,
    report: &BuildReporter,
) -> Result<FileDigests, ExportError> {
    let (path, algos, label, report) = (path.to_path_buf(), algos.to_vec(), format!("hash {label}"), report.clone());
    tokio::task::spawn_blocking(move || hash_blocking(&path, &algos, &label, &report))
        .await
        .map_err(|e| ExportError::Task(e.to_string()))?
}

fn hash_blocking(
    path: &Path,
    algos: &[DigestAlgo],
    label: &str,
    report: &BuildReporter,
) -> Result<FileDigests, ExportError> {
    let err = |source| ExportError::Read { path: path.display().to_string(), source };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let total = file.metadata().map(|m| m.len()).ok();
    let progress = report.progress(label, total);
    let digests = hash_reader(&mut file, hasher(algos), |n| progress.inc(n)).map_err(err)?;
    progress.finish();
    Ok(FileDigests::from_digests(digests))
}

/// Compresses `src` into `dst`, hashing the compressed bytes as they are written.
pub async fn compress_file(
    src: &Path,
    dst: &Path,
    kind: StreamCompression,
    algos: &[DigestAlgo],
    report: &BuildReporter,
) -> Result<FileDigests, ExportError> {
    let (src, dst, algos, report) = (src.to_path_buf(), dst.to_path_buf(), algos.to_vec(), report.clone());
    tokio::task::spawn_blocking(move || compress_blocking(&src, &dst, kind, &algos, &report))
        .await
        .map_err(|e| ExportError::Task(e.to_string()))?
}

struct HashingWriter<W> {
    inner: W,
    hasher: MultiHasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn compress_blocking(
    src: &Path,
    dst: &Path,
    kind: StreamCompression,
    algos: &[DigestAlgo],
    report: &BuildReporter,
) -> Result<FileDigests, ExportError> {
    let read_err = |source| ExportError::Read { path: src.display().to_string(), source };
    let comp_err = |source| ExportError::Compress { path: dst.display().to_string(), source };
    let mut input = std::fs::File::open(src).map_err(read_err)?;
    let total = input.metadata().map(|m| m.len()).ok();
    let output =
        std::fs::File::create(dst).map_err(|source| ExportError::Write { path: dst.display().to_string(), source })?;
    let writer = HashingWriter { inner: std::io::BufWriter::new(output), hasher: hasher(algos) };
    let progress = report.progress(&format!("compress {}", file_label(dst)), total);
    let mut writer = match kind {
        StreamCompression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(writer, 3).map_err(comp_err)?;
            let _ = enc.multithread(std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
            copy_with_progress(&mut input, &mut enc, &progress).map_err(comp_err)?;
            enc.finish().map_err(comp_err)?
        }
        StreamCompression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(writer, flate2::Compression::default());
            copy_with_progress(&mut input, &mut enc, &progress).map_err(comp_err)?;
            enc.finish().map_err(comp_err)?
        }
        StreamCompression::Xz => {
            // Progress counts compressed output here; its final size is unknown.
            progress.set_total(None);
            return xz_blocking(src, dst, algos, &progress);
        }
    };
    writer.flush().map_err(comp_err)?;
    progress.finish();
    Ok(FileDigests::from_digests(writer.hasher.finish()))
}

/// xz through the `xz` tool (multi-threaded, present on every Debian system).
fn xz_blocking(src: &Path, dst: &Path, algos: &[DigestAlgo], progress: &Progress) -> Result<FileDigests, ExportError> {
    let comp_err = |source| ExportError::Compress { path: dst.display().to_string(), source };
    let input = std::fs::File::open(src).map_err(comp_err)?;
    let mut child = std::process::Command::new("xz")
        .args(["-T0", "-c"])
        .stdin(input)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(comp_err)?;
    let mut stdout = child.stdout.take().ok_or_else(|| comp_err(std::io::Error::other("no stdout")))?;
    let output = std::fs::File::create(dst).map_err(comp_err)?;
    let mut writer = HashingWriter { inner: std::io::BufWriter::new(output), hasher: hasher(algos) };
    copy_with_progress(&mut stdout, &mut writer, progress).map_err(comp_err)?;
    let status = child.wait().map_err(comp_err)?;
    if !status.success() {
        return Err(comp_err(std::io::Error::other(format!("xz exited with {status}"))));
    }
    writer.flush().map_err(comp_err)?;
    Ok(FileDigests::from_digests(writer.hasher.finish()))
}

fn copy_with_progress(input: &mut impl Read, output: &mut impl Write, progress: &Progress) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        output.write_all(&buf[..n])?;
        progress.inc(n as u64);
    }
}

fn file_label(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_pass_gives_both_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let d =
            hash_file(&path, &[DigestAlgo::Sha256, DigestAlgo::Sha512], "f", &BuildReporter::discard()).await.unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(d.hex["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(d.hex["sha512"].starts_with("ddaf35a193617aba"));
    }

    #[tokio::test]
    async fn compressed_output_is_hashed_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("raw"), dir.path().join("raw.zst"));
        std::fs::write(&src, vec![7u8; 100_000]).unwrap();
        let d = compress_file(&src, &dst, StreamCompression::Zstd, &[DigestAlgo::Sha256], &BuildReporter::discard())
            .await
            .unwrap();
        let again = hash_file(&dst, &[DigestAlgo::Sha256], "x", &BuildReporter::discard()).await.unwrap();
        assert_eq!(d.hex, again.hex);
        assert_eq!(zstd::decode_all(std::fs::File::open(&dst).unwrap()).unwrap(), vec![7u8; 100_000]);
    }
}
