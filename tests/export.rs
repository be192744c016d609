//! Every export format from a real image (the test fixture), checked with
//! qemu-img and by decompressing the stream-compressed ones.

mod common;

use imgbuild::report::BuildReporter;
use std::process::Command;

use common::fixture_dir;
use imgbuild::export::{export_all, hash_file};
use imgbuild::source::DigestAlgo;
use imgbuild::template::{Compression, DiskFormat, FormatSpec, StreamCompression};

fn spec(format: DiskFormat, compression: Option<Compression>, compress: Option<StreamCompression>) -> FormatSpec {
    FormatSpec { format, compression, compress }
}

fn qemu_img_format(path: &std::path::Path) -> (String, u64) {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["info", "--output=json"]);
    // A fixed VHD has only a footer, which qemu-img's format probe does not look at.
    if path.extension().is_some_and(|e| e == "vhd") {
        cmd.args(["-f", "vpc"]);
    }
    let out = cmd.arg(path).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (info["format"].as_str().unwrap().to_string(), info["virtual-size"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_converts_and_digests_match() {
    let base = fixture_dir().join("base.qcow2");
    let out = tempfile::tempdir().unwrap();
    let formats = vec![
        spec(DiskFormat::Qcow2, Some(Compression::Zstd), None),
        spec(DiskFormat::Raw, None, Some(StreamCompression::Zstd)),
        spec(DiskFormat::Vmdk, None, None),
        spec(DiskFormat::VmdkStream, None, None),
        spec(DiskFormat::Vhdx, None, None),
        spec(DiskFormat::Vpc, None, None),
    ];
    let algos = [DigestAlgo::Sha256, DigestAlgo::Sha512];
    let artifacts =
        export_all(&base, out.path(), "img-1.0.0", &formats, &algos, &BuildReporter::discard()).await.unwrap();
    let names: Vec<&str> = artifacts.iter().map(|a| a.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "img-1.0.0.qcow2",
            "img-1.0.0.raw.zst",
            "img-1.0.0.vmdk",
            "img-1.0.0.stream.vmdk",
            "img-1.0.0.vhdx",
            "img-1.0.0.vhd"
        ]
    );
    let (_, base_size) = qemu_img_format(&base);
    for (artifact, expected) in artifacts.iter().zip(["qcow2", "", "vmdk", "vmdk", "vhdx", "vpc"]) {
        // Digests computed in one pass equal a fresh read of the file.
        let again = hash_file(&artifact.path, &algos, "check", &BuildReporter::discard()).await.unwrap();
        assert_eq!(artifact.digests, again.hex, "{}", artifact.file);
        assert_eq!(artifact.size, std::fs::metadata(&artifact.path).unwrap().len());
        if !expected.is_empty() {
            let (format, size) = qemu_img_format(&artifact.path);
            assert_eq!(format, expected, "{}", artifact.file);
            assert!(size >= base_size, "{}: virtual size {size} < {base_size}", artifact.file);
        }
    }
    // The fixed VHD keeps a 1 MiB-aligned size, as Azure requires.
    let (_, vhd_size) = qemu_img_format(&out.path().join("img-1.0.0.vhd"));
    assert_eq!(vhd_size % (1 << 20), 0);
    // raw.zst decompresses to exactly the raw disk.
    let raw = out.path().join("check.raw");
    assert!(Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&base).arg(&raw).status().unwrap().success());
    let decompressed = zstd::decode_all(std::fs::File::open(out.path().join("img-1.0.0.raw.zst")).unwrap()).unwrap();
    assert!(decompressed == std::fs::read(&raw).unwrap(), "raw.zst content differs from the disk");
}

#[tokio::test]
async fn gzip_and_xz_stream_compression() {
    let out = tempfile::tempdir().unwrap();
    // A small disk keeps xz quick; the formats above use the real fixture.
    let base = out.path().join("small.qcow2");
    assert!(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .unwrap()
            .success()
    );
    let formats = vec![spec(DiskFormat::Raw, None, Some(StreamCompression::Gzip))];
    let artifacts =
        export_all(&base, out.path(), "g", &formats, &[DigestAlgo::Sha256], &BuildReporter::discard()).await.unwrap();
    assert_eq!(artifacts[0].file, "g.raw.gz");
    let ok = Command::new("gzip").args(["-t"]).arg(&artifacts[0].path).status().unwrap();
    assert!(ok.success());
    let formats = vec![spec(DiskFormat::Raw, None, Some(StreamCompression::Xz))];
    let artifacts =
        export_all(&base, out.path(), "x", &formats, &[DigestAlgo::Sha256], &BuildReporter::discard()).await.unwrap();
    let ok = Command::new("xz").args(["-t"]).arg(&artifacts[0].path).status().unwrap();
    assert!(ok.success());
    // No temporary raw file is left beside the artifacts.
    let left: Vec<String> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "{left:?}");
}
