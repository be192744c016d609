//! The store commands through the real binary: versions, show, promote,
//! verify-artifact and prune, on a store filled by real publishes.

mod common;

use std::path::Path;

use common::*;
use imgbuild::source::DigestAlgo;
use imgbuild::store::{LocalStore, format_sums};
use sha2::Digest as _;

fn publish(store: &LocalStore, name: &str, version: &str, content: &[u8]) {
    let staging = store.begin(name, version).unwrap();
    let file = format!("{name}-{version}.qcow2");
    std::fs::write(staging.dir.join(&file), content).unwrap();
    let hex = hex::encode(sha2::Sha256::digest(content));
    let manifest = serde_json::json!({
        "schema_version": 1, "name": name, "version": version, "created_at": "2026-11-27T10:00:00Z",
        "artifacts": [ { "file": file, "format": "qcow2", "size": content.len(), "digests": { "sha256": hex } } ]
    });
    let sums = format_sums([(file.as_str(), hex.as_str())]);
    staging.commit(&manifest, &[(DigestAlgo::Sha256, sums)]).unwrap();
}

fn cli(store: &Path, args: &[&str]) -> Run {
    let mut c = imgbuild(store.parent().unwrap());
    c.args(args).arg("--store").arg(store);
    run(c)
}

#[test]
fn versions_show_promote_prune_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = LocalStore::open(&root).unwrap();
    for (i, v) in ["1.0.0", "1.1.0", "1.2.0", "2.0.0"].iter().enumerate() {
        publish(&store, "web", v, format!("image {i}").as_bytes());
    }

    let out = cli(&root, &["versions", "web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for v in ["1.0.0", "1.1.0", "1.2.0", "2.0.0"] {
        assert!(out.stdout.contains(v), "{}", out.stdout);
    }
    let out = cli(&root, &["--output", "json", "versions", "web"]);
    let listed: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);

    let out = cli(&root, &["promote", "web", "1.1.0", "stable"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli(&root, &["show", "web@stable"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let manifest: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(manifest["version"], "1.1.0");
    let out = cli(&root, &["show", "web"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["version"], "2.0.0");

    let out = cli(&root, &["verify-artifact", "web@1.2.0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Keep the newest two; `stable` (1.1.0) survives, 1.0.0 goes.
    let out = cli(&root, &["prune", "web", "--keep", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let remaining: Vec<String> = store.versions("web").unwrap().into_iter().map(|v| v.version).collect();
    assert_eq!(remaining, ["1.1.0", "1.2.0", "2.0.0"]);

    let out = cli(&root, &["promote", "web", "9.9.9", "stable"]);
    assert_ne!(out.code, 0);
}

#[test]
fn one_flipped_byte_fails_verify_artifact_and_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = LocalStore::open(&root).unwrap();
    publish(&store, "db", "1.0.0", &vec![0x5a; 64 * 1024]);
    let file = store.version_dir("db", "1.0.0").join("db-1.0.0.qcow2");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4096] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let out = cli(&root, &["verify-artifact", "db@1.0.0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("db-1.0.0.qcow2"), "{}", out.stderr);
    // The same through a path, as a user holding a downloaded copy would.
    let dir = store.version_dir("db", "1.0.0");
    let out = cli(&root, &["verify-artifact", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
}
