//! The `s3` publish target and `--store s3://` through the real binary,
//! against a real moto server (one per test).
//!
//! The builds are real `qemu` builds that need no guest OS: the source is a
//! raw disk of random data that is not bootable, and QEMU is told to give up
//! (`-boot strict=on,reboot-timeout=3000 -no-reboot`): SeaBIOS finds no boot
//! device, waits 3 s and resets, which ends QEMU. With `communicator: none`
//! that is the guest "powering off", and the disk is exported and published:
//! a real qcow2 artifact of about 16 MiB, more than two 5 MiB parts.
//!
//! S3 is inspected from the outside with boto3 (installed with moto), the
//! way any other consumer of the bucket would.
#![cfg(feature = "aws")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::moto::Moto;
use common::*;
use rand::{RngCore, SeedableRng};
use sha2::Digest as _;

const BUCKET: &str = "golden-images";
const PREFIX: &str = "images/";
const NAME: &str = "s3img";
const MIB: usize = 1 << 20;

/// A test directory with a source disk and a template publishing to `moto`.
struct Setup {
    dir: tempfile::TempDir,
    template: PathBuf,
}

impl Setup {
    fn new(moto: &Moto) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { template: dir.path().join("s3img.json"), dir };
        setup.write_template(moto, 7);
        // Empty AWS config files: nothing from the host's ~/.aws is used.
        for file in ["aws-config", "aws-credentials"] {
            std::fs::write(setup.work().join(file), "").unwrap();
        }
        moto.s3py("s3.create_bucket(Bucket=a[0])", &[BUCKET]);
        setup
    }

    /// The template, on a source disk of random data from `seed`.
    fn write_template(&self, moto: &Moto, seed: u64) {
        let (source, sha256) = random_disk(self.work(), 16 * MIB, seed);
        let template = serde_json::json!({
            "name": NAME,
            "version": "1.0.0",
            "source": { "type": "cloud-image", "url": source.display().to_string(), "checksum": format!("sha256:{sha256}") },
            "builder": {
                "type": "qemu",
                "memory": "256M",
                "communicator": "none",
                "cloud_init": false,
                "shutdown_timeout": "2m",
                "qemu_args": ["-boot", "strict=on,reboot-timeout=3000", "-no-reboot"]
            },
            "export": {
                "publish": [{
                    "type": "s3", "bucket": BUCKET, "prefix": PREFIX, "region": "us-east-1",
                    "endpoint_url": moto.url(), "part_size": "5M"
                }]
            }
        });
        std::fs::write(&self.template, serde_json::to_string_pretty(&template).unwrap()).unwrap();
    }

    /// Starts a build that pauses at `stage` of its S3 publish, and SIGKILLs
    /// it there: no cleanup, no abort.
    fn build_killed_at(&self, moto: &Moto, stage: &str) {
        let _vm = vm_lock();
        let mut cmd = self.imgbuild(moto);
        cmd.args(["--no-progress", "build"])
            .arg(&self.template)
            .env("IMGBUILD_TEST_PAUSE_AT", stage)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut log = String::new();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            log.push_str(&line);
            if line.contains(&format!("IMGBUILD_PAUSED {stage}")) {
                break;
            }
            line.clear();
        }
        assert!(log.contains("IMGBUILD_PAUSED"), "the build never reached {stage}:\n{log}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with dummy credentials and nothing from the host's AWS setup.
    fn imgbuild(&self, moto: &Moto) -> Command {
        let mut cmd = imgbuild(self.work());
        cmd.current_dir(self.work())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.work().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.work().join("aws-credentials"))
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("IMGBUILD_STORE")
            .env_remove("IMGBUILD_TEST_PAUSE_AT");
        cmd
    }

    fn build(&self, moto: &Moto, extra: &[&str]) -> Run {
        self.build_with_env(moto, extra, &[])
    }

    fn build_with_env(&self, moto: &Moto, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let _vm = vm_lock();
        let mut cmd = self.imgbuild(moto);
        cmd.args(["--no-progress", "build"]).arg(&self.template).args(extra).envs(env.iter().copied());
        run(cmd)
    }

    fn store_cmd(&self, moto: &Moto, args: &[&str]) -> Run {
        let mut cmd = self.imgbuild(moto);
        cmd.args(args).args(["--store", &format!("s3://{BUCKET}/{PREFIX}")]);
        run(cmd)
    }
}

/// A raw disk of seeded random data whose first sector is zero (no boot
/// signature, so SeaBIOS never tries to run it).
fn random_disk(dir: &Path, size: usize, seed: u64) -> (PathBuf, String) {
    let mut data = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data[512..]);
    let path = dir.join(format!("source-{seed}.raw"));
    std::fs::write(&path, &data).unwrap();
    (path, hex::encode(sha2::Sha256::digest(&data)))
}

/// Open multipart uploads in the bucket.
fn multipart_uploads(moto: &Moto) -> Vec<String> {
    let out = moto.s3py(
        "print(json.dumps([u['Key'] for u in s3.list_multipart_uploads(Bucket=a[0]).get('Uploads', [])]))",
        &[BUCKET],
    );
    serde_json::from_str(&out).unwrap()
}

/// Every object of `NAME/VERSION/`, downloaded into `dest`.
fn download(moto: &Moto, version: &str, dest: &Path) -> Vec<String> {
    let code = "import os\n\
        keys = [o['Key'] for o in s3.list_objects_v2(Bucket=a[0], Prefix=a[1]).get('Contents', [])]\n\
        for k in keys: s3.download_file(a[0], k, os.path.join(a[2], k.rsplit('/', 1)[1]))\n\
        print(json.dumps([k.rsplit('/', 1)[1] for k in keys]))";
    std::fs::create_dir_all(dest).unwrap();
    let prefix = format!("{PREFIX}{NAME}/{version}/");
    serde_json::from_str(&moto.s3py(code, &[BUCKET, &prefix, dest.to_str().unwrap()])).unwrap()
}

fn sha256sum_check(dir: &Path) {
    let out = Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn artifact_key(version: &str) -> String {
    format!("{PREFIX}{NAME}/{version}/{NAME}-{version}.qcow2")
}

fn versions(setup: &Setup, moto: &Moto) -> Vec<serde_json::Value> {
    let out = setup.store_cmd(moto, &["--output", "json", "versions", NAME]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn listed(setup: &Setup, moto: &Moto) -> Vec<String> {
    versions(setup, moto).iter().map(|v| v["version"].as_str().unwrap().to_string()).collect()
}

#[test]
fn publishes_a_multipart_artifact_that_downloads_and_checks_and_the_store_commands_work() {
    let moto = Moto::start();
    let setup = Setup::new(&moto);

    let out = setup.build(&moto, &["--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let url = format!("s3://{BUCKET}/{PREFIX}{NAME}/1.0.0/");
    let events: Vec<serde_json::Value> = out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let published = events.iter().find(|e| e["event"] == "published").expect("a published event");
    assert_eq!((&published["target"], &published["location"]), (&"s3".into(), &url.clone().into()));
    let result = events.last().unwrap();
    assert_eq!(result["published"], serde_json::json!([url]), "{result}");
    // S3 only: nothing was published locally.
    assert!(!setup.work().join("artifacts").exists());

    // A real consumer: download, `sha256sum -c`, and the digest recorded as object metadata.
    let dest = setup.work().join("download");
    let files = download(&moto, "1.0.0", &dest);
    for f in ["SHA256SUMS", "manifest.json", "s3img-1.0.0.qcow2"] {
        assert!(files.contains(&f.to_string()), "{files:?}");
    }
    sha256sum_check(&dest);
    let artifact = std::fs::read(dest.join("s3img-1.0.0.qcow2")).unwrap();
    assert!(artifact.len() > 2 * 5 * MIB, "{} bytes: not more than two parts", artifact.len());
    let meta = moto
        .s3py("print(s3.head_object(Bucket=a[0], Key=a[1])['Metadata']['sha256'])", &[BUCKET, &artifact_key("1.0.0")]);
    assert_eq!(meta.trim(), hex::encode(sha2::Sha256::digest(&artifact)));
    assert!(multipart_uploads(&moto).is_empty());

    // Published versions are immutable: refused before the build starts.
    let again = setup.build(&moto, &[]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("already published in s3://golden-images/images/"), "{}", again.stderr);

    let out = setup.build(&moto, &["--set-version", "1.1.0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // versions / show / promote / verify-artifact / prune on `--store s3://`.
    let list = versions(&setup, &moto);
    assert_eq!(list.iter().map(|v| v["version"].as_str().unwrap()).collect::<Vec<_>>(), ["1.0.0", "1.1.0"]);
    assert_eq!(list[1]["channels"], serde_json::json!(["latest"]));
    let text = setup.store_cmd(&moto, &["versions", NAME]);
    assert!(text.stdout.starts_with("VERSION") && text.stdout.contains("1.1.0"), "{}", text.stdout);
    let show = setup.store_cmd(&moto, &["show", &format!("{NAME}@1.0.0")]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&show.stdout).unwrap()["version"], "1.0.0");
    let promote = setup.store_cmd(&moto, &["promote", NAME, "1.0.0", "stable"]);
    assert_eq!(promote.code, 0, "{}", promote.stderr);
    let show = setup.store_cmd(&moto, &["show", &format!("{NAME}@stable")]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&show.stdout).unwrap()["version"], "1.0.0");
    let ok = setup.store_cmd(&moto, &["verify-artifact", &format!("{NAME}@1.0.0")]);
    assert_eq!((ok.code, ok.stdout.trim()), (0, "ok"), "{}", ok.stderr);

    // One object replaced behind imgbuild's back: verify-artifact names it.
    moto.s3py("s3.put_object(Bucket=a[0], Key=a[1], Body=b'tampered')", &[BUCKET, &artifact_key("1.1.0")]);
    let bad = setup.store_cmd(&moto, &["verify-artifact", &format!("{NAME}@1.1.0")]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("s3img-1.1.0.qcow2") && bad.stderr.contains("mismatch"), "{}", bad.stderr);

    let promote = setup.store_cmd(&moto, &["promote", NAME, "1.1.0", "stable"]);
    assert!(promote.stdout.contains("(was 1.0.0)"), "{}", promote.stdout);
    let prune = setup.store_cmd(&moto, &["prune", NAME, "--keep", "1"]);
    assert_eq!((prune.code, prune.stdout.trim()), (0, "removed s3img@1.0.0"), "{}", prune.stderr);
    assert_eq!(listed(&setup, &moto), ["1.1.0"]);
    let gone = setup.store_cmd(&moto, &["show", &format!("{NAME}@1.0.0")]);
    assert_eq!(gone.code, 1, "{}", gone.stderr);
}

#[test]
fn a_publisher_killed_mid_upload_leaves_no_version_and_the_next_run_cleans_up() {
    let moto = Moto::start();
    let setup = Setup::new(&moto);
    setup.build_killed_at(&moto, "s3-uploading");
    // Mid-upload: a multipart upload is open, and no version is visible.
    assert_eq!(multipart_uploads(&moto), [artifact_key("1.0.0")]);
    let out = setup.store_cmd(&moto, &["versions", NAME]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);

    // The next run of that version sweeps the dead upload and publishes.
    let out = setup.build(&moto, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("removed 1 unfinished upload(s)"), "{}", out.stderr);
    assert!(multipart_uploads(&moto).is_empty());
    assert_eq!(listed(&setup, &moto), ["1.0.0"]);
    let dest = setup.work().join("download");
    download(&moto, "1.0.0", &dest);
    sha256sum_check(&dest);
}

#[test]
fn the_same_version_published_twice_at_once_has_exactly_one_winner() {
    let moto = Moto::start();
    let setup = Setup::new(&moto);
    let runs: Vec<Run> = {
        let _vm = vm_lock();
        let children: Vec<_> = (0..2)
            .map(|_| {
                let mut cmd = setup.imgbuild(&moto);
                cmd.args(["--no-progress", "build"]).arg(&setup.template).stdout(Stdio::piped()).stderr(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                Run {
                    code: out.status.code().unwrap_or(-1),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                }
            })
            .collect()
    };
    let winners = runs.iter().filter(|r| r.code == 0).count();
    let all = runs.iter().map(|r| format!("exit {}:\n{}", r.code, r.stderr)).collect::<Vec<_>>().join("\n---\n");
    assert_eq!(winners, 1, "{all}");
    let loser = runs.iter().find(|r| r.code != 0).unwrap();
    // Lost at the manifest, on a file, to the pre-check, or its upload was swept by the winner.
    let lost = [
        "already exists in s3://",
        "already published in s3://",
        "another build publishing the same version",
        "from another build publishing this version",
    ];
    assert!(lost.iter().any(|m| loser.stderr.contains(m)), "{all}");
    assert_eq!(listed(&setup, &moto), ["1.0.0"]);
    assert!(multipart_uploads(&moto).is_empty());
    let dest = setup.work().join("download");
    download(&moto, "1.0.0", &dest);
    sha256sum_check(&dest);
    let verify = setup.store_cmd(&moto, &["verify-artifact", &format!("{NAME}@1.0.0")]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

#[test]
fn files_of_a_publisher_killed_before_its_manifest_are_kept_until_stale() {
    let moto = Moto::start();
    let setup = Setup::new(&moto);
    setup.build_killed_at(&moto, "s3-before-manifest");
    // The artifact and SHA256SUMS are complete, the version invisible.
    assert!(multipart_uploads(&moto).is_empty());
    let keys = moto
        .s3py("print(json.dumps([o['Key'] for o in s3.list_objects_v2(Bucket=a[0]).get('Contents', [])]))", &[BUCKET]);
    let sums_key = format!("{PREFIX}{NAME}/1.0.0/SHA256SUMS");
    assert_eq!(serde_json::from_str::<Vec<String>>(&keys).unwrap(), [sums_key, artifact_key("1.0.0")]);
    let out = setup.store_cmd(&moto, &["versions", NAME]);
    assert_eq!(out.code, 1, "{}", out.stdout);

    // Other content for that version: the leftover could be a live build's
    // (it is not stale yet), so it stays and the build says what to do.
    setup.write_template(&moto, 8);
    let out = setup.build(&moto, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("IMGBUILD_S3_STALE_AFTER=0s"), "{}", out.stderr);
    assert!(out.stderr.contains(&artifact_key("1.0.0")), "{}", out.stderr);
    assert!(multipart_uploads(&moto).is_empty());

    // Nobody else is publishing: with a zero stale age the leftover goes.
    let out = setup.build_with_env(&moto, &[], &[("IMGBUILD_S3_STALE_AFTER", "0s")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(listed(&setup, &moto), ["1.0.0"]);
    let dest = setup.work().join("download");
    download(&moto, "1.0.0", &dest);
    sha256sum_check(&dest);
    let verify = setup.store_cmd(&moto, &["verify-artifact", &format!("{NAME}@1.0.0")]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}
