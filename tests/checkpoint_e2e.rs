//! Machine checkpoints on a real QEMU guest (the Debian-package fixture):
//! a running guest is saved (RAM and devices to a zstd file, its disk frozen
//! as a read-only layer), killed, and resumed from the checkpoint on a new
//! overlay: the same boot goes on, with what it had on disk and in memory.
//! The first piece of the layer cache (issue 14).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use imgbuild::builder::qemu::seed;
use imgbuild::builder::qemu::vm::{Vm, VmConfig};
use imgbuild::communicator::{CollectSink, KeyPair, OutputStream, SshAuth, SshClient, SshTarget, wait_for_ssh};

fn overlay(base: &Path, overlay: &Path) {
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(overlay)
        .status()
        .unwrap();
    assert!(status.success());
}

async fn connect(vm: &Vm, key: &Arc<KeyPair>) -> SshClient {
    let target = SshTarget {
        host: "127.0.0.1".into(),
        port: vm.ssh_port,
        username: "root".into(),
        auth: vec![SshAuth::Key(key.clone())],
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    match wait_for_ssh(&target, Duration::from_secs(180), &cancel, |_| {}).await {
        Ok(client) => client,
        Err(e) => panic!("no SSH: {e}\n{}", vm.console_tail(30)),
    }
}

async fn run(client: &SshClient, command: &str) -> String {
    let mut sink = CollectSink::default();
    let r = client.exec(command, &[], None, &mut sink, Some(Duration::from_secs(30))).await.unwrap();
    assert!(r.success(), "{command}: {r:?} {}", sink.text(OutputStream::Stderr));
    sink.text(OutputStream::Stdout)
}

#[test]
fn a_checkpointed_guest_resumes_the_same_boot_with_its_disk_and_memory() {
    if !imgbuild::testing::require_command("zstd", "apt-get install -y zstd") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(checkpoint_and_resume());
}

async fn checkpoint_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let base = fixture_dir().join("base.qcow2");
    let first = work.join("first.qcow2");
    overlay(&base, &first);
    let key = Arc::new(KeyPair::generate().unwrap());
    let spec = seed::SeedSpec {
        instance_id: "checkpoint-test",
        hostname: "checkpoint",
        username: "root",
        authorized_key: &key.public_openssh("checkpoint-test"),
        password: None,
        extra_user_data: None,
    };
    let seed_path = work.join("seed.img");
    seed::write_seed_image(&seed_path, &seed::meta_data(&spec), &seed::user_data(&spec).unwrap()).unwrap();
    let cfg = VmConfig { seed: Some(seed_path), ..test_vm(work, first.clone(), "original") };
    let vm = Vm::launch(&cfg).await.unwrap();
    let client = connect(&vm, &key).await;
    // On disk, and only in memory: a process that has run since before the checkpoint.
    run(&client, "echo on-disk > /root/marker && sync").await;
    let sleeper = run(&client, "sleep 100000 >/dev/null 2>&1 & echo $!").await.trim().to_string();
    let boot = run(&client, "cat /proc/sys/kernel/random/boot_id").await;
    client.close().await;

    let state = work.join("state.zst");
    let second = work.join("second.qcow2");
    let started = Instant::now();
    vm.checkpoint(&state, &second, false).await.unwrap();
    let saved_in = started.elapsed();
    vm.kill();
    assert!(vm.wait_exit(Duration::from_secs(10)).await);
    // The frozen layer is what the checkpoint's disk is; the new overlay got nothing yet.
    let frozen = std::fs::metadata(&first).unwrap().modified().unwrap();

    let resumed_disk = work.join("resumed.qcow2");
    overlay(&first, &resumed_disk);
    let started = Instant::now();
    let resumed = Vm::launch(&VmConfig {
        disk: resumed_disk,
        tag: "resumed".into(),
        incoming: Some(state.clone()),
        ..cfg.clone()
    })
    .await
    .unwrap();
    let client = connect(&resumed, &key).await;
    let restored_in = started.elapsed();
    assert_eq!(
        run(&client, "cat /proc/sys/kernel/random/boot_id").await,
        boot,
        "the guest rebooted instead of resuming"
    );
    assert_eq!(run(&client, "cat /root/marker").await.trim(), "on-disk");
    assert_eq!(run(&client, &format!("test -d /proc/{sleeper} && echo alive")).await.trim(), "alive");
    run(&client, "echo after > /root/after && sync").await;
    client.close().await;
    resumed.kill();
    resumed.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(std::fs::metadata(&first).unwrap().modified().unwrap(), frozen, "the checkpoint's layer was written to");
    let size = std::fs::metadata(&state).unwrap().len();
    eprintln!(
        "checkpoint: saved in {:.2}s ({} KiB state), resumed to SSH in {:.2}s",
        saved_in.as_secs_f64(),
        size / 1024,
        restored_in.as_secs_f64()
    );
}
