//! One contract, every store backend: the store policy
//! (`imgbuild_store_format::policy`) must behave the same on the local
//! directory store and on the S3 store (a real moto server). Each case is
//! written once, generic over the backend; only publishing a version, which
//! is each store's own atomic primitive, differs.

mod common;

use std::collections::BTreeMap;
use std::fmt::Display;

use imgbuild::store::LocalStore;
use imgbuild_store_format::policy::{self, Backend, ChannelError, InvalidInput, Refusal};
use imgbuild_store_format::{Algo, Day, format_sums, sha256_hex};
use serde_json::{Value, json};

/// A backend the contract can publish into.
#[async_trait::async_trait]
trait Publishable: Backend<Error: Display + Send> {
    /// Publishes `name@version` with one small file and moves `latest`.
    async fn put(&self, name: &str, version: &str);
}

#[async_trait::async_trait]
impl Publishable for LocalStore {
    async fn put(&self, name: &str, version: &str) {
        let staging = self.begin(name, version).unwrap();
        let (file, body) = artifact(name, version);
        std::fs::write(staging.dir.join(&file), &body).unwrap();
        staging
            .commit(
                &manifest(name, version, &file, &body),
                &[(imgbuild::source::DigestAlgo::Sha256, sums(&file, &body))],
            )
            .unwrap();
    }
}

fn artifact(name: &str, version: &str) -> (String, Vec<u8>) {
    (format!("{name}-{version}.img"), format!("disk of {name}@{version}").into_bytes())
}

fn manifest(name: &str, version: &str, file: &str, body: &[u8]) -> Value {
    json!({
        "name": name,
        "version": version,
        "created_at": "2026-12-08T00:00:00Z",
        "artifacts": [{"file": file, "size": body.len(), "digests": {"sha256": sha256_hex(body)}}],
    })
}

fn sums(file: &str, body: &[u8]) -> String {
    format_sums([(file, sha256_hex(body).as_str())])
}

/// `err` is exactly the backend's error for `refusal`.
fn assert_refused<B: Publishable, T: std::fmt::Debug>(b: &B, result: Result<T, B::Error>, refusal: Refusal) {
    let expected = b.refuse(refusal).to_string();
    match result {
        Err(e) => assert_eq!(e.to_string(), expected),
        Ok(v) => panic!("expected `{expected}`, got {v:?}"),
    }
}

fn names(list: &[policy::Listing]) -> Vec<&str> {
    list.iter().map(|v| v.version.as_str()).collect()
}

async fn empty_store_has_nothing<B: Publishable>(b: &B) {
    let image = || Refusal::ImageNotFound { name: "web".into() };
    assert_refused(b, policy::versions(b, "web").await, image());
    assert_refused(b, policy::resolve(b, "web").await, image());
    assert_refused(b, policy::prune(b, "web", 1).await, image());
    assert!(!policy::exists(b, "web", "1.0.0").await.map_err(|e| e.to_string()).unwrap());
    assert!(policy::channels(b, "web").await.map_err(|e| e.to_string()).unwrap().is_empty());
    let today = Day { year: 2026, month: 12, day: 8 };
    assert_eq!(policy::highest_auto_number(b, "web", today).await.map_err(|e| e.to_string()).unwrap(), 0);
}

async fn versions_sort_and_resolve<B: Publishable>(b: &B) {
    for v in ["1.2.0", "1.10.0", "1.0.0-rc.1", "1.0.0"] {
        b.put("web", v).await;
    }
    let list = policy::versions(b, "web").await.map_err(|e| e.to_string()).unwrap();
    assert_eq!(names(&list), ["1.0.0-rc.1", "1.0.0", "1.2.0", "1.10.0"]);
    let latest: Vec<&str> = list.iter().filter(|v| v.channels == ["latest"]).map(|v| v.version.as_str()).collect();
    assert_eq!(latest, ["1.0.0"], "latest is the last one published, not the highest");
    assert!(list.iter().all(|v| v.size > 0 && v.created_at.is_some()), "{list:?}");

    let resolved =
        |spec: &'static str| async move { policy::resolve(b, spec).await.map_err(|e| e.to_string()).unwrap() };
    assert_eq!(resolved("web").await, ("web".to_string(), "1.0.0".to_string()));
    assert_eq!(resolved("web@latest").await.1, "1.0.0");
    assert_eq!(resolved("web@1.10.0").await.1, "1.10.0");
    assert_refused(
        b,
        policy::resolve(b, "web@stable").await,
        Refusal::Channel(ChannelError::NotSet {
            name: "web".into(),
            channel: "stable".into(),
            available: vec!["latest".into()],
        }),
    );
    assert_refused(
        b,
        policy::resolve(b, "web@3.0.0").await,
        Refusal::VersionNotFound { name: "web".into(), version: "3.0.0".into() },
    );
    for bad in ["Web", "web@", "web@x/y", "../web", "web@1.0.0@2"] {
        assert_refused(b, policy::resolve(b, bad).await, Refusal::Invalid(InvalidInput::Spec { spec: bad.into() }));
    }
    let manifest = policy::manifest(b, "web", "1.2.0").await.map_err(|e| e.to_string()).unwrap();
    assert_eq!(manifest["version"], "1.2.0");
    assert_refused(
        b,
        policy::manifest(b, "web", "9.0.0").await,
        Refusal::VersionNotFound { name: "web".into(), version: "9.0.0".into() },
    );
}

async fn promote_moves_channels<B: Publishable>(b: &B) {
    for v in ["1.0.0", "2.0.0"] {
        b.put("web", v).await;
    }
    let promote = |v: &'static str, c: &'static str| async move {
        policy::promote(b, "web", v, c).await.map_err(|e| e.to_string()).unwrap()
    };
    assert_eq!(promote("1.0.0", "stable").await, None);
    assert_eq!(promote("1.0.0", "stable").await, Some("1.0.0".into()));
    assert_eq!(promote("2.0.0", "stable").await, Some("1.0.0".into()));
    let channels = policy::channels(b, "web").await.map_err(|e| e.to_string()).unwrap();
    assert_eq!(channels, BTreeMap::from([("latest".into(), "2.0.0".into()), ("stable".into(), "2.0.0".into())]));
    assert_refused(
        b,
        policy::promote(b, "web", "9.9.9", "stable").await,
        Refusal::VersionNotFound { name: "web".into(), version: "9.9.9".into() },
    );
    assert_refused(
        b,
        policy::promote(b, "web", "1.0.0", "Bad").await,
        Refusal::Invalid(InvalidInput::Channel { channel: "Bad".into() }),
    );
    assert_refused(
        b,
        policy::promote(b, "web", "1", "beta").await,
        Refusal::Invalid(InvalidInput::Version { version: "1".into() }),
    );
}

async fn prune_keeps_newest_and_channel_targets<B: Publishable>(b: &B) {
    for v in ["1.0.0", "1.1.0", "1.2.0", "1.10.0"] {
        b.put("web", v).await;
    }
    policy::promote(b, "web", "1.0.0", "stable").await.map_err(|e| e.to_string()).unwrap();
    let removed = policy::prune(b, "web", 1).await.map_err(|e| e.to_string()).unwrap();
    assert_eq!(removed, ["1.1.0", "1.2.0"]);
    let list = policy::versions(b, "web").await.map_err(|e| e.to_string()).unwrap();
    assert_eq!(names(&list), ["1.0.0", "1.10.0"]);
    assert!(!policy::exists(b, "web", "1.1.0").await.map_err(|e| e.to_string()).unwrap());
    assert!(policy::prune(b, "web", 0).await.map_err(|e| e.to_string()).unwrap().is_empty(), "channel targets stay");
    assert_refused(
        b,
        policy::prune(b, "../web", 1).await,
        Refusal::Invalid(InvalidInput::Name {
            name: "../web".into(),
            reason: imgbuild_store_format::check_name("../web").unwrap_err(),
        }),
    );
}

async fn auto_numbers_count_the_day<B: Publishable>(b: &B) {
    for v in ["2026.12.07.9", "2026.12.08.1", "2026.12.08.3", "1.0.0"] {
        b.put("web", v).await;
    }
    let today = Day { year: 2026, month: 12, day: 8 };
    assert_eq!(policy::highest_auto_number(b, "web", today).await.map_err(|e| e.to_string()).unwrap(), 3);
    let list = policy::versions(b, "web").await.map_err(|e| e.to_string()).unwrap();
    assert_eq!(names(&list), ["1.0.0", "2026.12.07.9", "2026.12.08.1", "2026.12.08.3"], "dates sort after semver");
}

/// Every case, each on a fresh store from `fresh`.
macro_rules! contract {
    ($fresh:expr) => {
        empty_store_has_nothing(&$fresh.await.store).await;
        versions_sort_and_resolve(&$fresh.await.store).await;
        promote_moves_channels(&$fresh.await.store).await;
        prune_keeps_newest_and_channel_targets(&$fresh.await.store).await;
        auto_numbers_count_the_day(&$fresh.await.store).await;
    };
}

struct Fresh<S> {
    store: S,
    _keep: Box<dyn std::any::Any>,
}

async fn fresh_local() -> Fresh<LocalStore> {
    let tmp = tempfile::tempdir().unwrap();
    Fresh { store: LocalStore::open(&tmp.path().join("store")).unwrap(), _keep: Box::new(tmp) }
}

#[tokio::test]
async fn local_store_keeps_the_contract() {
    contract!(fresh_local());
}

#[cfg(feature = "aws")]
mod s3 {
    use super::*;
    use crate::common::moto::Moto;
    use aws_config::Region;
    use aws_sdk_ec2::config::Credentials;
    use imgbuild_aws::{ArtifactFile, S3Store};

    #[async_trait::async_trait]
    impl Publishable for S3Store {
        async fn put(&self, name: &str, version: &str) {
            let tmp = tempfile::tempdir().unwrap();
            let (file, body) = artifact(name, version);
            std::fs::write(tmp.path().join(&file), &body).unwrap();
            let files = [ArtifactFile::new(tmp.path().join(&file), file.clone(), sha256_hex(&body))];
            let lists = [(Algo::Sha256, sums(&file, &body))];
            self.publish(name, version, &files, &manifest(name, version, &file, &body), &lists).await.unwrap();
        }
    }

    /// A bucket of its own on one moto server.
    async fn fresh_s3(moto: &Moto, bucket: String) -> Fresh<S3Store> {
        moto.s3py("s3.create_bucket(Bucket=a[0])", &[&bucket]);
        let sdk = imgbuild_aws::sdk_loader()
            .region(Region::new("us-east-1"))
            .endpoint_url(moto.url())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "store-contract"))
            .load()
            .await;
        Fresh { store: S3Store::from_sdk_config(&sdk, &bucket, "images/", true).unwrap(), _keep: Box::new(()) }
    }

    #[tokio::test]
    async fn s3_store_keeps_the_contract() {
        let moto = Moto::start();
        let buckets = std::cell::Cell::new(0);
        let next = || {
            buckets.set(buckets.get() + 1);
            fresh_s3(&moto, format!("contract-{}", buckets.get()))
        };
        contract!(next());
    }
}
