//! Export overhead: converting a 2 GiB-virtual image to qcow2+zstd with
//! sha256 through imgbuild's exporter, against bare `qemu-img convert`.
//! Target: imgbuild ≤ 1.1× the bare convert. Run: `cargo bench --bench export`.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use imgbuild::source::DigestAlgo;
use imgbuild::template::{Compression, DiskFormat, FormatSpec};

const VIRTUAL: u64 = 2 << 30;
const DATA: u64 = 768 << 20;

/// A sparse raw disk with `DATA` bytes of half-compressible content, as qcow2.
fn make_source(dir: &Path) -> std::path::PathBuf {
    let raw = dir.join("src.raw");
    let mut f = std::fs::File::create(&raw).unwrap();
    f.set_len(VIRTUAL).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..(DATA >> 20) {
        for (i, chunk) in block.chunks_mut(8).enumerate() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Every other word random: compresses about 2:1, like a real root filesystem.
            let word = if i % 2 == 0 { state } else { 0x0101_0101_0101_0101 };
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
    drop(f);
    let qcow = dir.join("src.qcow2");
    let ok = Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&raw).arg(&qcow).status().unwrap();
    assert!(ok.success());
    std::fs::remove_file(raw).unwrap();
    qcow
}

fn main() {
    let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into())).unwrap();
    let source = make_source(dir.path());
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spec = FormatSpec { format: DiskFormat::Qcow2, compression: Some(Compression::Zstd), compress: None };
    let (mut bare, mut ours) = (0.0, 0.0);
    for run in 0..runs {
        let out = dir.path().join(format!("bare-{run}.qcow2"));
        let t = Instant::now();
        let ok = Command::new("qemu-img")
            .args(["convert", "-O", "qcow2", "-c", "-o", "compression_type=zstd"])
            .arg(&source)
            .arg(&out)
            .status()
            .unwrap();
        assert!(ok.success());
        let b = t.elapsed().as_secs_f64();
        std::fs::remove_file(out).unwrap();

        let out_dir = dir.path().join(format!("ours-{run}"));
        std::fs::create_dir(&out_dir).unwrap();
        let t = Instant::now();
        let artifacts = rt
            .block_on(imgbuild::export::export_all(
                &source,
                &out_dir,
                "bench",
                std::slice::from_ref(&spec),
                &[DigestAlgo::Sha256],
                &imgbuild::report::BuildReporter::discard(),
            ))
            .unwrap();
        let o = t.elapsed().as_secs_f64();
        assert_eq!(artifacts.len(), 1);
        std::fs::remove_dir_all(out_dir).unwrap();
        println!("run {run}: qemu-img convert {b:.2}s, imgbuild export (convert + sha256) {o:.2}s, ratio {:.3}", o / b);
        bare += b;
        ours += o;
    }
    println!(
        "mean over {runs} runs: bare {:.2}s, imgbuild {:.2}s, ratio {:.3} (target <= 1.10)",
        bare / runs as f64,
        ours / runs as f64,
        ours / bare
    );
}
