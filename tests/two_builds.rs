//! Two builds of two different templates run concurrently in one process,
//! through the library (no `imgbuild` subprocess): each has its own SSH key,
//! work directory, events tagged with its build id, and cleanups. Real QEMU
//! guests booted from the Debian-package test fixture.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use imgbuild::build::{self, BuildSettings, BuildState};
use imgbuild::communicator::KeyPair;
use imgbuild::report::{BuildReporter, CollectingReporter, Event};
use imgbuild::runner::{OnError, Outcome, Runner};
use imgbuild::template::{self, LoadOptions, VarInputs};
use tokio_util::sync::CancellationToken;

fn template_text(name: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "version": "1.0.0",
  "variables": {{ "fixture_dir": {{ "required": true }} }},
  "source": {{ "type": "cloud-image", "url": "{{{{ var.fixture_dir }}}}/base.qcow2", "checksum": "file:{{{{ var.fixture_dir }}}}/SHA256SUMS" }},
  "builder": {{
    "type": "qemu", "accelerator": "tcg", "memory": "512M",
    "ssh": {{ "username": "root", "timeout": "3m" }},
    "shutdown_command": "poweroff", "shutdown_timeout": "1m"
  }},
  "provisioners": [
    {{ "type": "shell", "inline": ["cat /root/.ssh/authorized_keys", "echo {name} > /etc/imgbuild-which"] }}
  ]
}}"#
    )
}

/// What one in-process build left to check.
struct Finished {
    build_id: String,
    public_key: String,
    work_dir: Option<PathBuf>,
    outcome: Outcome,
}

async fn build_in_process(dir: &Path, name: &str, id_suffix: &str, sink: Arc<CollectingReporter>) -> Finished {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, template_text(name)).unwrap();
    let key = Arc::new(KeyPair::generate().unwrap());
    let build_id = format!("20261208T000000Z-{id_suffix}");
    let public_key = key.public_openssh(&format!("imgbuild-{build_id}"));
    let options = LoadOptions {
        vars: VarInputs {
            cli: vec![("fixture_dir".into(), fixture_dir().display().to_string())],
            files: Vec::new(),
            use_env: false,
        },
        build_id: build_id.clone(),
        version_override: None,
        ssh_public_key: public_key.clone(),
    };
    let loaded = Arc::new(template::load(&path, &options).expect("template loads"));
    let steps = build::plan(&loaded).expect("plan");
    let report = BuildReporter::new(Some(&build_id), sink);
    let mut settings = BuildSettings::new(dir.join("store"));
    settings.work_root = dir.join("work");
    let mut state = BuildState::new(loaded, settings, "1.0.0".into(), report.clone());
    state.ssh_key = Some(key);
    let runner = Runner { cancel: CancellationToken::new(), on_error: OnError::Cleanup, report };
    let outcome = runner.run(&steps, &mut state).await;
    Finished { build_id, public_key, work_dir: state.work_dir.clone(), outcome }
}

/// The key's base64 body, which is what `authorized_keys` shows whatever the comment.
fn key_body(public_key: &str) -> &str {
    public_key.split_whitespace().nth(1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_templates_build_concurrently_in_one_process() {
    if !imgbuild::testing::require_command("qemu-system-x86_64", "apt-get install -y qemu-system-x86 qemu-utils") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("work")).unwrap();
    let sink = Arc::new(CollectingReporter::default());
    let (left, right) = tokio::join!(
        build_in_process(tmp.path(), "left", "00000a", sink.clone()),
        build_in_process(tmp.path(), "right", "00000b", sink.clone()),
    );
    let events = sink.events();

    for (this, other) in [(&left, &right), (&right, &left)] {
        let mine: Vec<&Event> =
            events.iter().filter(|(id, _)| id.as_deref() == Some(this.build_id.as_str())).map(|(_, e)| e).collect();
        let failure = this.outcome.result.as_ref().err().map(|e| imgbuild::error::chain(e));
        assert!(failure.is_none(), "{} failed: {failure:?}\nits events: {mine:#?}", this.build_id);
        assert!(this.outcome.cleanup_errors.is_empty(), "{:?}", this.outcome.cleanup_errors);

        // Its own key, and only its own, is what the guest trusted.
        let guest_output: Vec<&str> = mine
            .iter()
            .filter_map(|e| match e {
                Event::Log { source: Some(s), message, .. } if s == "provisioners[0]" => Some(message.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            guest_output.iter().any(|l| l.contains(key_body(&this.public_key))),
            "{}: its key is not in the guest's authorized_keys: {guest_output:?}",
            this.build_id
        );
        assert!(!guest_output.iter().any(|l| l.contains(key_body(&other.public_key))), "keys crossed");

        // Its own private work directory, removed by its own cleanup.
        let work = this.work_dir.as_ref().expect("work dir");
        assert!(work.to_string_lossy().contains(&this.build_id), "{work:?}");
        assert!(!work.exists(), "work dir left: {work:?}");
        let cleanups: Vec<(&str, bool)> = mine
            .iter()
            .filter_map(|e| match e {
                Event::CleanupFinished { cleanup, ok, .. } => Some((cleanup.as_str(), *ok)),
                _ => None,
            })
            .collect();
        assert!(cleanups.contains(&("stop QEMU", true)), "{cleanups:?}");
        assert!(cleanups.iter().any(|(c, ok)| *ok && c.contains(&this.build_id)), "{cleanups:?}");
        assert!(
            mine.iter().any(|e| matches!(e, Event::StepFinished { step, ok: true, .. } if step == "publish")),
            "{} never published",
            this.build_id
        );
    }
    assert_ne!(left.public_key, right.public_key);
    // Every event belongs to one of the two builds.
    assert!(
        events.iter().all(|(id, _)| id.as_deref() == Some(&left.build_id) || id.as_deref() == Some(&right.build_id))
    );
    for name in ["left", "right"] {
        assert!(
            tmp.path().join("store").join(name).join("1.0.0").join("manifest.json").is_file(),
            "{name} not published"
        );
    }
    let needle = tmp.path().to_string_lossy().into_owned();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || qemu_processes_mentioning(&needle).is_empty()),
        "QEMU left running"
    );
}
