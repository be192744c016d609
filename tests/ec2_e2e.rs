//! The `ec2` builder end to end, against a real EC2 API (moto server on
//! 127.0.0.1). moto's instances have fake addresses, so the builder's
//! `ssh.host`/`ssh.port` override points SSH at a local QEMU guest made from
//! the test fixture, which plays the instance: provisioners and verify run
//! for real. After every build, moto is asked what is still tagged with the
//! build id: nothing but the finished AMIs may remain.
#![cfg(feature = "aws")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::moto::Moto;
use imgbuild_aws::ec2::{Ec2, ResourceKind, TAG_BUILD_ID, TAG_STATUS, TaggedResource};
use serde_json::Value;

const REGION: &str = "eu-west-1";
const COPY_REGION: &str = "eu-central-1";
const PASSWORD: &str = "stand-in p4ss 'q' $x";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn ec2(moto: &Moto, region: &str) -> Ec2 {
    let sdk = imgbuild_aws::sdk_loader()
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(moto.url())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await;
    Ec2::from_sdk_config(sdk).unwrap()
}

/// Two candidate source AMIs; the filter with `most_recent` must pick the second.
fn register_sources(moto: &Moto) -> String {
    runtime().block_on(async {
        let api = ec2(moto, REGION).await;
        let mut newest = String::new();
        for name in ["debian-12-amd64-20261101", "debian-12-amd64-20261120"] {
            let out = api.client().register_image().name(name).send().await.unwrap();
            newest = out.image_id().unwrap().to_string();
            // CreationDate has millisecond resolution in moto.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        newest
    })
}

/// Everything tagged by imgbuild in `region` (terminated instances excluded).
fn tagged(moto: &Moto, region: &str) -> Vec<TaggedResource> {
    runtime().block_on(async { ec2(moto, region).await.tagged(None).await.unwrap().resources })
}

/// What is left that is not a finished AMI or its snapshot.
fn leftovers(moto: &Moto) -> Vec<String> {
    [REGION, COPY_REGION]
        .iter()
        .flat_map(|region| {
            tagged(moto, region)
                .into_iter()
                .filter(|r| !r.is_protected())
                .map(move |r| format!("{} {} in {region} (build {})", r.kind.as_str(), r.id, r.build_id()))
        })
        .collect()
}

// ----------------------------------------------------------- stand-in guest

/// A QEMU guest from the fixture image that accepts root with PASSWORD on a
/// forwarded port: the machine SSH really reaches when the builder
/// "connects to the instance".
struct StandIn {
    child: Child,
    port: u16,
}

impl StandIn {
    fn boot(dir: &Path) -> StandIn {
        let base = common::fixture_dir().join("base.qcow2");
        let overlay = dir.join("stand-in.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&overlay)
            .status()
            .unwrap();
        assert!(status.success());
        let yaml_password = PASSWORD.replace('\\', "\\\\").replace('"', "\\\"");
        std::fs::write(
            dir.join("user-data"),
            format!(
                "#cloud-config\ndisable_root: false\nssh_pwauth: true\nusers:\n  - name: root\n    lock_passwd: false\n    shell: /bin/sh\nchpasswd:\n  expire: false\n  users:\n    - name: root\n      password: \"{yaml_password}\"\n      type: text\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("meta-data"), "instance-id: iid-ec2-stand-in\nlocal-hostname: stand-in\n").unwrap();
        let seed = dir.join("seed.img");
        let status = Command::new("bash")
            .arg(common::repo_root().join("tests/fixtures/make-seed.sh"))
            .arg(&seed)
            .arg(dir.join("user-data"))
            .arg(dir.join("meta-data"))
            .status()
            .unwrap();
        assert!(status.success());
        let port = free_port();
        let child = Command::new("qemu-system-x86_64")
            .args(["-nodefaults", "-display", "none", "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "256M"])
            .arg("-serial")
            .arg(format!("file:{}", dir.join("stand-in-console.log").display()))
            .args(["-netdev", &format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22")])
            .args(["-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"])
            .arg("-drive")
            .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio,readonly=on", seed.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        StandIn { child, port }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------- builds

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    moto: Moto,
}

impl Setup {
    fn new() -> Setup {
        Setup::with_moto(Moto::start())
    }

    /// moto whose captured AMIs stay `pending`, like a slow real one.
    fn slow_amis() -> Setup {
        Setup::with_moto(Moto::start_with_env(&[("IMGBUILD_MOTO_PENDING_AMIS", "1")]))
    }

    fn with_moto(moto: Moto) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Setup { _tmp: tmp, dir, moto }
    }

    fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// A template for `ssh_host:ssh_port`, with `extra` builder fields and
    /// the given provisioners and checks.
    fn template(&self, ssh_port: u16, extra: &str, provisioners: &str, verify: &str) -> PathBuf {
        let text = format!(
            r#"{{
  "name": "golden-web",
  "version": "1.0.0",
  "variables": {{ "root_password": {{ "sensitive": true }} }},
  "source": {{ "type": "ami", "filter": {{ "name": "debian-12-amd64-*", "owners": ["self"], "most_recent": true }} }},
  "builder": {{
    "type": "ec2", "region": "{REGION}", "endpoint_url": "{url}", "instance_type": "t3.micro",
    "temporary_sg_cidrs": ["127.0.0.1/32"],
    "ssh": {{ "username": "root", "password": "{{{{ var.root_password }}}}", "host": "127.0.0.1", "port": {ssh_port}, "timeout": "3m" }},
    "ami_name": "{{{{ build.name }}}}-{{{{ build.version }}}}",
    "tags": {{ "team": "platform" }}{extra}
  }},
  "provisioners": [{provisioners}],
  "verify": [{verify}]
}}"#,
            url = self.moto.url(),
        );
        let path = self.dir.join("ec2.json");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, template: &Path) -> Command {
        let mut cmd = common::imgbuild(&self.dir);
        cmd.arg("build")
            .arg(template)
            .arg("--store")
            .arg(self.store())
            .env("IMGBUILD_VAR_root_password", PASSWORD)
            .env("IMGBUILD_RUNTIME_DIR", self.dir.join("runtime"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL");
        cmd
    }

    fn gc(&self, extra: &[&str]) -> common::Run {
        let mut cmd = common::imgbuild(&self.dir);
        cmd.args(["gc", "--region", REGION, "--region", COPY_REGION, "--endpoint-url", &self.moto.url()])
            .args(extra)
            .env("IMGBUILD_RUNTIME_DIR", self.dir.join("runtime"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        common::run(cmd)
    }
}

const PROVISION: &str = r#"
    { "type": "shell", "inline": ["echo built-in-ec2 > /etc/golden-marker", "mkdir -p /opt/app"] },
    { "type": "file", "content": "port=8080\n", "destination": "/opt/app/app.conf" }"#;
/// PROVISION plus a reboot: the reconnect goes to the instance address again.
const PROVISION_WITH_REBOOT: &str = r#"
    { "type": "shell", "inline": ["echo built-in-ec2 > /etc/golden-marker", "mkdir -p /opt/app"] },
    { "type": "shell", "inline": ["reboot"], "expect_disconnect": true },
    { "type": "file", "content": "port=8080\n", "destination": "/opt/app/app.conf" }"#;
const CHECKS: &str = r#"
    { "name": "marker", "file": "/etc/golden-marker", "contains": "built-in-ec2" },
    { "name": "config", "command": "cat /opt/app/app.conf", "stdout_matches": "^port=8080$" }"#;

#[test]
fn ec2_build_provisions_verifies_captures_copies_and_leaves_nothing_behind() {
    let _vm = common::vm_lock();
    let setup = Setup::new();
    let newest = register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let extra = format!(r#", "ami_regions": ["{COPY_REGION}"], "ami_description": "golden web""#);
    let template = setup.template(guest.port, &extra, PROVISION_WITH_REBOOT, CHECKS);
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains(PASSWORD), "password leaked:\n{}", out.stderr);
    assert!(out.stderr.contains(&format!("source AMI {newest}")), "{}", out.stderr);

    // The store holds a metadata-only version naming both AMIs.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(setup.store().join("golden-web/1.0.0/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["builder"]["type"], "ec2");
    let amis = manifest["amis"].as_array().expect("amis in manifest");
    let regions: Vec<&str> = amis.iter().map(|a| a["region"].as_str().unwrap()).collect();
    assert_eq!(regions, [REGION, COPY_REGION]);
    // A failing check would have failed the build; both ran on the instance.
    assert_eq!(manifest["verify"].as_array().map(Vec::len), Some(2), "{}", manifest["verify"]);
    let build_id = manifest["build_id"].as_str().unwrap().to_string();
    assert!(!manifest.to_string().contains(PASSWORD));
    assert_eq!(manifest["source_ami"]["id"], newest.as_str());
    // The manifest validates against its documented JSON Schema (a real validator).
    let check = Command::new(common::venv_python().with_file_name("check-jsonschema"))
        .arg("--schemafile")
        .arg(common::repo_root().join("docs/manifest.schema.json"))
        .arg(setup.store().join("golden-web/1.0.0/manifest.json"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // Both AMIs exist, are available, named and tagged; the instance was launched from the newest source.
    runtime().block_on(async {
        for ami in amis {
            let region = ami["region"].as_str().unwrap();
            let api = ec2(&setup.moto, region).await;
            let image = api.describe_image(ami["id"].as_str().unwrap()).await.unwrap().expect("AMI exists");
            assert_eq!(image.state, "available");
            assert_eq!(image.name, "golden-web-1.0.0");
            let out = api.client().describe_images().image_ids(&image.id).send().await.unwrap();
            let tags: Vec<(String, String)> = out.images()[0]
                .tags()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                .collect();
            for (k, v) in [("team", "platform"), (TAG_STATUS, "complete"), (TAG_BUILD_ID, build_id.as_str())] {
                assert!(tags.contains(&(k.to_string(), v.to_string())), "{region} {k}={v} missing in {tags:?}");
            }
            assert!(tags.iter().any(|(k, v)| k == "imgbuild:version" && v == "1.0.0"), "{tags:?}");
        }
        let api = ec2(&setup.moto, REGION).await;
        let out = api
            .client()
            .describe_instances()
            .filters(
                aws_sdk_ec2::types::Filter::builder().name(format!("tag:{TAG_BUILD_ID}")).values(&build_id).build(),
            )
            .send()
            .await
            .unwrap();
        let instances: Vec<_> = out.reservations().iter().flat_map(|r| r.instances()).collect();
        assert_eq!(instances.len(), 1, "one instance per build");
        assert_eq!(instances[0].image_id(), Some(newest.as_str()));
        assert_eq!(instances[0].state().and_then(|s| s.name()).map(|n| n.as_str()), Some("terminated"));
    });
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
}

/// Runs a build with `--output json` and calls `at_step` once the named step
/// has started; returns the exit code, the build id and stderr + the events.
fn run_until_step(cmd: &mut Command, step: &str, at_step: impl FnOnce(&mut Child)) -> (i32, String, String) {
    let mut child =
        cmd.args(["--output", "json", "--no-progress"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut build_id = String::new();
    let mut at_step = Some(at_step);
    let mut events = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        events.push_str(&line);
        events.push('\n');
        let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
        if let Some(id) = event["build_id"].as_str() {
            build_id = id.to_string();
        }
        if event["event"] == "step_started"
            && event["step"] == step
            && let Some(f) = at_step.take()
        {
            f(&mut child);
        }
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    let output = format!("{}\n{events}", errors.join().unwrap());
    assert!(at_step.is_none(), "step `{step}` never started:\n{output}");
    (code, build_id, output)
}

fn interrupt(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// Polls (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    assert!(common::wait_until(Duration::from_secs(60), &mut cond), "timed out waiting for {what}");
}

#[test]
fn a_failing_provisioner_leaves_nothing_tagged() {
    let _vm = common::vm_lock();
    let setup = Setup::new();
    register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let failing = r#"{ "type": "shell", "inline": ["echo about to fail", "exit 3"] }"#;
    let template = setup.template(guest.port, "", failing, "");
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("provisioners[0] (shell)"), "{}", out.stderr);
    assert!(!setup.store().join("golden-web/1.0.0").exists());
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
    assert!(tagged(&setup.moto, REGION).is_empty(), "not even an AMI: {:?}", tagged(&setup.moto, REGION));
}

const BUCKET: &str = "golden-records";

/// The template publishing to the local store and to an S3 bucket of moto.
fn publish_locally_and_to_s3(setup: &Setup, template: &Path) {
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(template).unwrap()).unwrap();
    t["export"] = serde_json::json!({ "publish": [
        { "type": "local", "path": "store" },
        { "type": "s3", "bucket": BUCKET, "prefix": "amis", "region": "us-east-1", "endpoint_url": setup.moto.url() }
    ]});
    std::fs::write(template, serde_json::to_string_pretty(&t).unwrap()).unwrap();
    setup.moto.s3py("s3.create_bucket(Bucket=a[0])", &[BUCKET]);
}

/// The manifest of golden-web@1.0.0 in the bucket, if it is there.
fn s3_manifest(setup: &Setup) -> Option<Value> {
    let code = "try:\n    print(s3.get_object(Bucket=a[0], Key=a[1])['Body'].read().decode())\n\
                except s3.exceptions.NoSuchKey:\n    print('null')";
    serde_json::from_str(&setup.moto.s3py(code, &[BUCKET, "amis/golden-web/1.0.0/manifest.json"])).unwrap()
}

/// An ec2 build publishes like any other: its version, the record of its
/// AMIs, lands in every target the template lists.
#[test]
fn an_ec2_build_records_its_amis_in_every_publish_target() {
    let _vm = common::vm_lock();
    let setup = Setup::new();
    register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let template = setup.template(guest.port, "", PROVISION, "");
    publish_locally_and_to_s3(&setup, &template);
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let local: Value =
        serde_json::from_str(&std::fs::read_to_string(setup.store().join("golden-web/1.0.0/manifest.json")).unwrap())
            .unwrap();
    let remote = s3_manifest(&setup).expect("the version is in the bucket");
    let ami = local["amis"][0]["id"].as_str().expect("the AMI in the local record").to_string();
    assert_eq!(remote["amis"], local["amis"], "both records name the same AMIs");
    assert_eq!(remote["build_id"], local["build_id"]);
    // The store commands read the S3 record like the local one.
    let mut versions = common::imgbuild(&setup.dir);
    versions
        .args(["versions", "golden-web", "--store", &format!("s3://{BUCKET}/amis")])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", setup.moto.url());
    let listed = common::run(versions);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("1.0.0"), "{}", listed.stdout);
    assert!(out.stderr.contains(&format!("s3://{BUCKET}/amis/golden-web/1.0.0")), "{}", out.stderr);
    assert!(out.stderr.contains(&ami), "the published line names the AMI:\n{}", out.stderr);
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
}

/// When the record cannot be published, the AMIs it would have named are
/// not kept as complete: the build's sweep removes them with everything else.
#[test]
fn a_failed_publish_of_an_ec2_build_leaves_no_ami() {
    let _vm = common::vm_lock();
    let setup = Setup::new();
    register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let template = setup.template(guest.port, "", PROVISION, "");
    publish_locally_and_to_s3(&setup, &template);
    // A leftover of another publisher of this version, with other content and
    // no manifest: the pre-check passes (no version there), the upload fails.
    let leftover = "amis/golden-web/1.0.0/SHA256SUMS";
    setup.moto.s3py("s3.put_object(Bucket=a[0], Key=a[1], Body=b'other content')", &[BUCKET, leftover]);
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("s3://{BUCKET}/{leftover} holds other content")), "{}", out.stderr);
    assert!(!setup.store().join("golden-web/1.0.0").exists(), "no local record of an unpublished version");
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
    assert!(tagged(&setup.moto, REGION).is_empty(), "no AMI left: {:?}", tagged(&setup.moto, REGION));
}

#[test]
fn an_existing_ami_name_is_refused_before_anything_is_launched() {
    let setup = Setup::new();
    register_sources(&setup.moto);
    runtime().block_on(async {
        let api = ec2(&setup.moto, COPY_REGION).await;
        api.client().register_image().name("golden-web-1.0.0").send().await.unwrap();
    });
    let extra = format!(r#", "ami_regions": ["{COPY_REGION}"]"#);
    let template = setup.template(free_port(), &extra, PROVISION, "");
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("an AMI named `golden-web-1.0.0` already exists in eu-central-1"), "{}", out.stderr);
    assert!(tagged(&setup.moto, REGION).is_empty(), "nothing created: {:?}", tagged(&setup.moto, REGION));
}

#[test]
fn sigint_while_waiting_for_ssh_cleans_up_and_exits_130() {
    let setup = Setup::new();
    register_sources(&setup.moto);
    // Nothing listens there: the SSH wait goes on until the interrupt. On the spot market.
    let template = setup.template(free_port(), r#", "spot": true"#, PROVISION, "");
    let (code, build_id, stderr) = run_until_step(&mut setup.command(&template), "wait for SSH", |child| {
        eventually("the instance", || tagged(&setup.moto, REGION).iter().any(|r| r.kind == ResourceKind::Instance));
        interrupt(child);
    });
    assert_eq!(code, 130, "{stderr}");
    assert!(!build_id.is_empty());
    assert!(stderr.contains(", spot) launched"), "{stderr}");
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new(), "{stderr}");
}

#[test]
fn kill_9_leaves_tagged_resources_that_gc_removes() {
    let setup = Setup::new();
    register_sources(&setup.moto);
    let template = setup.template(free_port(), "", PROVISION, "");
    let (code, _, _) = run_until_step(&mut setup.command(&template), "wait for SSH", |child| {
        eventually("the instance", || tagged(&setup.moto, REGION).iter().any(|r| r.kind == ResourceKind::Instance));
        child.kill().unwrap(); // SIGKILL: no cleanup can run
    });
    assert_eq!(code, -1, "killed by a signal");
    let kinds: Vec<ResourceKind> = tagged(&setup.moto, REGION).iter().map(|r| r.kind).collect();
    for kind in [ResourceKind::Instance, ResourceKind::SecurityGroup, ResourceKind::KeyPair] {
        assert!(kinds.contains(&kind), "{kind:?} should be left by the killed build: {kinds:?}");
    }

    let dry = setup.gc(&["--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stderr.contains("would delete instance"), "{}", dry.stderr);
    assert!(dry.stderr.contains("build no longer running"), "{}", dry.stderr);
    assert_eq!(tagged(&setup.moto, REGION).len(), kinds.len(), "a dry run deletes nothing");

    let gc = setup.gc(&[]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new(), "{}", gc.stderr);
}

#[test]
fn gc_spares_the_resources_of_a_running_build() {
    let setup = Setup::new();
    register_sources(&setup.moto);
    let template = setup.template(free_port(), "", PROVISION, "");
    let (code, _, stderr) = run_until_step(&mut setup.command(&template), "wait for SSH", |child| {
        eventually("the instance", || tagged(&setup.moto, REGION).iter().any(|r| r.kind == ResourceKind::Instance));
        let gc = setup.gc(&["--older-than", "0s"]);
        assert_eq!(gc.code, 0, "{}", gc.stderr);
        assert!(gc.stderr.contains("build still running"), "{}", gc.stderr);
        assert!(!gc.stderr.contains("deleting"), "{}", gc.stderr);
        interrupt(child);
    });
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
}

#[test]
fn sigint_while_waiting_for_the_ami_deregisters_it_and_exits_130() {
    let _vm = common::vm_lock();
    let setup = Setup::slow_amis();
    register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let template = setup.template(guest.port, "", PROVISION, "");
    let (code, _, stderr) = run_until_step(&mut setup.command(&template), "create AMI", |child| {
        eventually("the pending AMI", || tagged(&setup.moto, REGION).iter().any(|r| r.kind == ResourceKind::Image));
        interrupt(child);
    });
    assert_eq!(code, 130, "{stderr}");
    assert!(tagged(&setup.moto, REGION).is_empty(), "{:?}\n{stderr}", tagged(&setup.moto, REGION));
}

#[test]
fn an_ami_wait_timeout_keeps_the_ami_and_reports_it() {
    let _vm = common::vm_lock();
    let setup = Setup::slow_amis();
    register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let template = setup.template(guest.port, r#", "ami_wait_timeout": "3s""#, PROVISION, "");
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("it is kept (tagged imgbuild:status=kept), not deregistered"), "{}", out.stderr);
    let left = tagged(&setup.moto, REGION);
    let images: Vec<&TaggedResource> = left.iter().filter(|r| r.kind == ResourceKind::Image).collect();
    assert_eq!(images.len(), 1, "{left:?}");
    assert_eq!(images[0].tag(TAG_STATUS), Some("kept"));
    // Everything else went; `gc` leaves the kept AMI alone too.
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
    let gc = setup.gc(&["--older-than", "0s"]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert_eq!(tagged(&setup.moto, REGION).iter().filter(|r| r.kind == ResourceKind::Image).count(), 1);
    assert!(!setup.store().join("golden-web/1.0.0").exists());
}

#[test]
fn refused_spot_capacity_falls_back_to_on_demand_or_fails_when_told_not_to() {
    let setup = Setup::with_moto(Moto::start_with_env(&[("IMGBUILD_MOTO_NO_SPOT_CAPACITY", "1")]));
    register_sources(&setup.moto);
    let template = setup.template(free_port(), r#", "spot": true"#, PROVISION, "");
    let (code, _, output) = run_until_step(&mut setup.command(&template), "wait for SSH", interrupt);
    assert_eq!(code, 130, "{output}");
    assert!(output.contains("spot request refused (InsufficientInstanceCapacity); launching on-demand"), "{output}");
    assert!(output.contains(", on-demand) launched"), "{output}");
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());

    let template = setup.template(free_port(), r#", "spot": true, "spot_fallback": false"#, PROVISION, "");
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("EC2 RunInstances failed in eu-west-1 (InsufficientInstanceCapacity)"),
        "{}",
        out.stderr
    );
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
}

#[test]
fn an_ssh_timeout_shows_the_tail_of_the_instance_console() {
    let setup = Setup::new();
    register_sources(&setup.moto);
    let template = setup.template(free_port(), "", PROVISION, "");
    let text = std::fs::read_to_string(&template).unwrap().replace(r#""timeout": "3m""#, r#""timeout": "2s""#);
    std::fs::write(&template, text).unwrap();
    let out = common::run(setup.command(&template));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("timed out after"), "{}", out.stderr);
    assert!(out.stderr.contains("--- instance console output (last lines) ---"), "{}", out.stderr);
    // moto's sample console output (GetConsoleOutput, base64-decoded).
    assert!(out.stderr.contains("Enabling fast FPU save and restore... done."), "{}", out.stderr);
    assert_eq!(leftovers(&setup.moto), Vec::<String>::new());
}

#[test]
fn kill_9_while_the_ami_is_pending_then_gc_removes_the_ami_and_its_snapshot() {
    let _vm = common::vm_lock();
    let setup = Setup::slow_amis();
    register_sources(&setup.moto);
    let guest = StandIn::boot(&setup.dir);
    let template = setup.template(guest.port, "", PROVISION, "");
    let (code, _, _) = run_until_step(&mut setup.command(&template), "create AMI", |child| {
        eventually("the pending AMI", || tagged(&setup.moto, REGION).iter().any(|r| r.kind == ResourceKind::Image));
        child.kill().unwrap();
    });
    assert_eq!(code, -1, "killed by a signal");
    let kinds: Vec<ResourceKind> = tagged(&setup.moto, REGION).iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&ResourceKind::Image) && kinds.contains(&ResourceKind::Instance), "{kinds:?}");
    let gc = setup.gc(&[]);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(gc.stderr.contains("deleted image"), "{}", gc.stderr);
    assert!(tagged(&setup.moto, REGION).is_empty(), "{:?}\n{}", tagged(&setup.moto, REGION), gc.stderr);
}
