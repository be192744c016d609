//! Publishes one big sparse-random file to S3, to measure throughput and the
//! peak memory of a multipart publish:
//!
//! ```sh
//! eval "$(scripts/moto-server.sh start)"
//! cargo build --release --example publish_big
//! /usr/bin/time -v target/release/examples/publish_big --size-mib 2048
//! scripts/moto-server.sh stop
//! ```
//!
//! Options: `--size-mib N` (default 2048), `--part-mib N` (default 8),
//! `--concurrency N` (default 4), `--bucket NAME` (default
//! `imgbuild-bench`, created if missing), `--file PATH` (reuse a file
//! instead of creating one in a temporary directory). Credentials, region
//! and endpoint come from the standard AWS chain / `AWS_ENDPOINT_URL`.
//!
//! The file is sparse: 1 MiB of random data every 32 MiB, holes elsewhere,
//! so it costs little disk while every byte still goes through the upload.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use imgbuild_aws::{Algo, ArtifactFile, S3Store, format_sums};
use imgbuild_store_format::{MultiHasher, hash_reader};

const MIB: u64 = 1 << 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut size_mib = 2048u64;
    let mut part_mib = 8u64;
    let mut concurrency = 4usize;
    let mut bucket = "imgbuild-bench".to_string();
    let mut file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--size-mib" => size_mib = value()?.parse()?,
            "--part-mib" => part_mib = value()?.parse()?,
            "--concurrency" => concurrency = value()?.parse()?,
            "--bucket" => bucket = value()?,
            "--file" => file = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }

    let tmp = tempfile::tempdir()?;
    let path = match file {
        Some(path) => path,
        None => {
            let path = tmp.path().join("big.img");
            let started = Instant::now();
            make_sparse_random(&path, size_mib * MIB)?;
            eprintln!("created {} ({size_mib} MiB) in {:.1?}", path.display(), started.elapsed());
            path
        }
    };
    let started = Instant::now();
    let (size, sha256) = hash_file(&path)?;
    eprintln!("sha256 {sha256} ({size} bytes) in {:.1?}", started.elapsed());

    let store = S3Store::new(&bucket, "bench/", None, None)
        .await?
        .with_part_size(part_mib * MIB)?
        .with_concurrency(concurrency)?;
    if store.client().head_bucket().bucket(&bucket).send().await.is_err() {
        let region = store.client().config().region().map(|r| r.to_string()).unwrap_or_default();
        let mut create = store.client().create_bucket().bucket(&bucket);
        if region != "us-east-1" {
            let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region.as_str()))
                .build();
            create = create.create_bucket_configuration(location);
        }
        create.send().await?;
    }

    let version = format!("1.0.{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    let files = [ArtifactFile::new(&path, "big.img", &sha256)];
    let manifest = serde_json::json!({
        "name": "bench", "version": version,
        "artifacts": [{"file": "big.img", "size": size, "digests": {"sha256": sha256}}],
    });
    let sums = [(Algo::Sha256, format_sums([("big.img", sha256.as_str())]))];
    let last_tenth = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress: imgbuild_aws::Progress = Arc::new(move |done, total| {
        let tenth = done * 10 / total.max(1);
        if tenth > last_tenth.swap(tenth, std::sync::atomic::Ordering::Relaxed) {
            eprintln!("{:>3}% ({} / {} MiB)", tenth * 10, done / MIB, total / MIB);
        }
    });
    let started = Instant::now();
    let published = store.publish_with_progress("bench", &version, &files, &manifest, &sums, Some(progress)).await?;
    let elapsed = started.elapsed();
    println!(
        "published {} ({} MiB, part {} MiB x {} in parallel) in {:.1?}: {:.0} MiB/s",
        published.url,
        size / MIB,
        store.part_size() / MIB,
        store.concurrency(),
        elapsed,
        size as f64 / MIB as f64 / elapsed.as_secs_f64()
    );
    let uploads = store.list_multipart_uploads().await?;
    println!("open multipart uploads afterwards: {}", uploads.len());
    Ok(())
}

/// `size` bytes: 1 MiB of random data at every 32 MiB, holes in between.
fn make_sparse_random(path: &Path, size: u64) -> std::io::Result<()> {
    let mut out = std::fs::File::create(path)?;
    out.set_len(size)?;
    let mut block = vec![0u8; MIB as usize];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut offset = 0;
    while offset < size {
        for chunk in block.chunks_mut(8) {
            // xorshift64*: fast, and enough to defeat any compression.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        let n = MIB.min(size - offset) as usize;
        out.seek(SeekFrom::Start(offset))?;
        out.write_all(&block[..n])?;
        offset += 32 * MIB;
    }
    out.sync_all()
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let digests = hash_reader(&mut file, MultiHasher::sha256_and(false), |_| ())?;
    Ok((digests.size, digests.sha256()))
}
