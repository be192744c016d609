//! `imgbuild versions|show|promote|verify-artifact|prune`: store commands,
//! on a local store or, with `--store s3://BUCKET/PREFIX`, an S3 store.
//!
//! Data goes to stdout (`terminal::print_stdout`); with `--output json` it is one JSON
//! value. Errors go through [`crate::face::report_error`].

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{ExitCode, chain};
use crate::face::terminal;
use crate::store::s3::StoreLocation;
use crate::store::{LocalStore, StoreError};

/// `--store`, shared by every store command.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Artifact store: a directory, or s3://BUCKET[/PREFIX] (region, endpoint and credentials from the AWS chain)
    #[arg(
        long = "store",
        env = "IMGBUILD_STORE",
        default_value = "./artifacts",
        value_name = "PATH|s3://BUCKET/PREFIX"
    )]
    pub store: PathBuf,
}

impl StoreArgs {
    /// `Some((bucket, prefix))` for `s3://BUCKET/PREFIX`, `None` for a directory.
    fn s3(&self) -> Result<Option<(String, String)>, StoreError> {
        Ok(match StoreLocation::parse(&self.store)? {
            StoreLocation::S3 { bucket, prefix } => Some((bucket, prefix)),
            StoreLocation::Local(_) => None,
        })
    }
}

/// `imgbuild versions NAME`
#[derive(Debug, Clone, Args)]
pub struct VersionsArgs {
    /// Image name
    pub name: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `imgbuild show NAME[@VERSION|@CHANNEL]`
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// NAME (latest), NAME@VERSION or NAME@CHANNEL
    #[arg(value_name = "NAME[@VERSION|@CHANNEL]")]
    pub image: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `imgbuild promote NAME VERSION CHANNEL`
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// Image name
    pub name: String,
    /// Published version to point the channel at
    #[arg(id = "target_version", value_name = "VERSION")]
    pub version: String,
    /// Channel name, e.g. `stable`
    pub channel: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `imgbuild verify-artifact NAME@VERSION|PATH`
#[derive(Debug, Clone, Args)]
pub struct VerifyArtifactArgs {
    /// NAME@VERSION, NAME@CHANNEL, NAME, or a directory with SHA256SUMS
    /// (anything containing `/`, or an existing directory without `@`)
    #[arg(value_name = "NAME@VERSION|PATH")]
    pub target: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `imgbuild prune NAME --keep N`
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// Image name
    pub name: String,
    /// How many of the newest versions to keep (channel targets are always kept)
    #[arg(long, value_name = "N")]
    pub keep: usize,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub async fn versions(args: &VersionsArgs) -> ExitCode {
    match args.store.s3() {
        Err(e) => return finish(Err(e)),
        Ok(Some((bucket, prefix))) => return finish(remote::versions(&bucket, &prefix, &args.name).await),
        Ok(None) => {}
    }
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let list = store.versions(&args.name)?;
        if terminal::is_json() {
            print_json(&serde_json::to_value(&list).unwrap_or_default());
        } else {
            let rows = list.iter().map(|v| row(&v.version, v.created_at.as_deref(), v.size, &v.channels)).collect();
            print_table(rows);
        }
        Ok(ExitCode::Success)
    })
}

pub async fn show(args: &ShowArgs) -> ExitCode {
    match args.store.s3() {
        Err(e) => return finish(Err(e)),
        Ok(Some((bucket, prefix))) => return finish(remote::show(&bucket, &prefix, &args.image).await),
        Ok(None) => {}
    }
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let (name, version) = store.resolve(&args.image)?;
        print_manifest(&store.manifest(&name, &version)?);
        Ok(ExitCode::Success)
    })
}

fn print_manifest(manifest: &serde_json::Value) {
    if terminal::is_json() {
        print_json(manifest);
    } else {
        let text = serde_json::to_string_pretty(manifest).unwrap_or_default();
        terminal::print_stdout(&text);
    }
}

pub async fn promote(args: &PromoteArgs) -> ExitCode {
    match args.store.s3() {
        Err(e) => return finish(Err(e)),
        Ok(Some((bucket, prefix))) => return finish(remote::promote(&bucket, &prefix, args).await),
        Ok(None) => {}
    }
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let previous = store.promote(&args.name, &args.version, &args.channel)?;
        print_promoted(args, previous);
        Ok(ExitCode::Success)
    })
}

fn print_promoted(args: &PromoteArgs, previous: Option<String>) {
    {
        if terminal::is_json() {
            print_json(&serde_json::json!({
                "name": args.name,
                "version": args.version,
                "channel": args.channel,
                "previous": previous,
            }));
        } else {
            let was = previous.map(|p| format!(" (was {p})")).unwrap_or_default();
            terminal::print_stdout(&format!("{}: {} -> {}{was}", args.name, args.channel, args.version));
        }
    }
}

pub async fn verify_artifact(args: &VerifyArtifactArgs) -> ExitCode {
    // A path is always local; a reference is looked up in the store.
    if !looks_like_path(&args.target) {
        match args.store.s3() {
            Err(e) => return finish(Err(e)),
            Ok(Some((bucket, prefix))) => return finish(remote::verify(&bucket, &prefix, &args.target).await),
            Ok(None) => {}
        }
    }
    run(|| {
        let dir = target_dir(&args.target, &args.store.store)?;
        // Verifying a plain directory needs no store, and must not create one.
        let report = crate::store::verify_dir(&dir)?;
        Ok(print_report(&report, &report.dir.display().to_string(), &report.problems))
    })
}

pub async fn prune(args: &PruneArgs) -> ExitCode {
    match args.store.s3() {
        Err(e) => return finish(Err(e)),
        Ok(Some((bucket, prefix))) => return finish(remote::prune(&bucket, &prefix, args).await),
        Ok(None) => {}
    }
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let removed = store.prune(&args.name, args.keep)?;
        print_pruned(&args.name, &removed);
        Ok(ExitCode::Success)
    })
}

fn print_pruned(name: &str, removed: &[String]) {
    if terminal::is_json() {
        print_json(&serde_json::json!({ "name": name, "removed": removed }));
    } else {
        for version in removed {
            terminal::print_stdout(&format!("removed {name}@{version}"));
        }
    }
}

/// Reports an error and maps it to an exit code: bad names and references
/// are usage errors (2), everything else a failure (1).
fn run(f: impl FnOnce() -> Result<ExitCode, StoreError>) -> ExitCode {
    finish(f())
}

fn finish(result: Result<ExitCode, StoreError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::face::report_error(&chain(&e));
            if is_usage_error(&e) { ExitCode::Usage } else { ExitCode::BuildFailed }
        }
    }
}

fn is_usage_error(e: &StoreError) -> bool {
    match e {
        StoreError::InvalidName { .. }
        | StoreError::InvalidVersion { .. }
        | StoreError::InvalidChannel { .. }
        | StoreError::InvalidSpec { .. }
        | StoreError::InvalidStoreUrl { .. }
        | StoreError::NoAwsSupport { .. } => true,
        #[cfg(feature = "aws")]
        StoreError::S3(e) => matches!(
            e,
            imgbuild_aws::S3Error::InvalidName { .. }
                | imgbuild_aws::S3Error::InvalidVersion { .. }
                | imgbuild_aws::S3Error::InvalidChannel { .. }
                | imgbuild_aws::S3Error::InvalidSpec { .. }
                | imgbuild_aws::S3Error::InvalidConfig { .. }
        ),
        _ => false,
    }
}

fn looks_like_path(target: &str) -> bool {
    target.contains('/') || (!target.contains('@') && Path::new(target).is_dir())
}

/// A path if it looks like one (contains `/`, or names an existing directory
/// and has no `@`); otherwise an image reference resolved in the store.
fn target_dir(target: &str, store_root: &Path) -> Result<PathBuf, StoreError> {
    let path = Path::new(target);
    if looks_like_path(target) {
        return Ok(path.to_path_buf());
    }
    let store = match StoreLocation::parse(store_root)? {
        StoreLocation::Local(root) => LocalStore::open_existing(root)?,
        // Handled by the caller; only an unusable `s3://` gets here.
        StoreLocation::S3 { .. } => {
            return Err(StoreError::InvalidStoreUrl { value: store_root.display().to_string() });
        }
    };
    let (name, version) = store.resolve(target)?;
    Ok(store.version_dir(&name, &version))
}

/// Prints a verification report of either store; `location` prefixes each problem.
fn print_report(report: &impl serde::Serialize, location: &str, problems: &[crate::store::Problem]) -> ExitCode {
    let ok = problems.is_empty();
    if terminal::is_json() {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("ok".into(), ok.into());
        }
        print_json(&value);
    }
    if ok {
        if !terminal::is_json() {
            terminal::print_stdout("ok");
        }
        return ExitCode::Success;
    }
    for problem in problems {
        crate::face::report_error(&format!("{location}: {problem}"));
    }
    let bad = imgbuild_store_format::bad_files(problems);
    crate::face::report_error(&format!("verification failed: {}", bad.join(", ")));
    ExitCode::BuildFailed
}

fn print_json(value: &serde_json::Value) {
    terminal::print_stdout(&value.to_string());
}

fn row(version: &str, created_at: Option<&str>, size: u64, channels: &[String]) -> [String; 4] {
    [version.to_string(), created_at.unwrap_or("-").to_string(), crate::report::human_size(size), channels.join(",")]
}

fn print_table(rows: Vec<[String; 4]>) {
    let header = ["VERSION", "CREATED", "SIZE", "CHANNELS"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        terminal::print_stdout(line.trim_end());
    }
}

/// The store commands on `--store s3://BUCKET/PREFIX`.
#[cfg(feature = "aws")]
mod remote {
    use super::{PromoteArgs, PruneArgs, print_json, print_manifest, print_promoted, print_pruned, print_table, row};
    use crate::error::ExitCode;
    use crate::face::terminal;
    use crate::store::StoreError;
    use crate::store::s3::open_url;

    pub async fn versions(bucket: &str, prefix: &str, name: &str) -> Result<ExitCode, StoreError> {
        let list = open_url(bucket, prefix).await?.list_versions(name).await?;
        if terminal::is_json() {
            // The local store's fields, with `url` where a local listing has `path`.
            let items: Vec<serde_json::Value> = list
                .iter()
                .map(|v| {
                    serde_json::json!({
                        "version": v.version,
                        "created_at": v.published_at,
                        "size": v.size,
                        "channels": v.channels,
                        "url": v.url,
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(items));
        } else {
            print_table(list.iter().map(|v| row(&v.version, v.published_at.as_deref(), v.size, &v.channels)).collect());
        }
        Ok(ExitCode::Success)
    }

    pub async fn show(bucket: &str, prefix: &str, spec: &str) -> Result<ExitCode, StoreError> {
        let store = open_url(bucket, prefix).await?;
        let (name, version) = store.resolve(spec).await?;
        print_manifest(&store.manifest(&name, &version).await?);
        Ok(ExitCode::Success)
    }

    pub async fn promote(bucket: &str, prefix: &str, args: &PromoteArgs) -> Result<ExitCode, StoreError> {
        let store = open_url(bucket, prefix).await?;
        let previous = store.promote(&args.name, &args.version, &args.channel).await?;
        print_promoted(args, previous);
        Ok(ExitCode::Success)
    }

    pub async fn prune(bucket: &str, prefix: &str, args: &PruneArgs) -> Result<ExitCode, StoreError> {
        let removed = open_url(bucket, prefix).await?.prune(&args.name, args.keep).await?;
        print_pruned(&args.name, &removed);
        Ok(ExitCode::Success)
    }

    /// Downloads every file once and re-hashes it (nothing is stored).
    pub async fn verify(bucket: &str, prefix: &str, spec: &str) -> Result<ExitCode, StoreError> {
        let store = open_url(bucket, prefix).await?;
        let (name, version) = store.resolve(spec).await?;
        let report = store.verify(&name, &version).await?;
        Ok(super::print_report(&report, &report.url, &report.problems))
    }
}

/// Without the `aws` feature an `s3://` store is a clear usage error.
#[cfg(not(feature = "aws"))]
mod remote {
    use super::{PromoteArgs, PruneArgs};
    use crate::error::ExitCode;
    use crate::store::StoreError;

    fn unsupported() -> Result<ExitCode, StoreError> {
        Err(StoreError::NoAwsSupport { what: "an s3:// store".to_string() })
    }

    pub async fn versions(_: &str, _: &str, _: &str) -> Result<ExitCode, StoreError> {
        unsupported()
    }

    pub async fn show(_: &str, _: &str, _: &str) -> Result<ExitCode, StoreError> {
        unsupported()
    }

    pub async fn promote(_: &str, _: &str, _: &PromoteArgs) -> Result<ExitCode, StoreError> {
        unsupported()
    }

    pub async fn prune(_: &str, _: &str, _: &PruneArgs) -> Result<ExitCode, StoreError> {
        unsupported()
    }

    pub async fn verify(_: &str, _: &str, _: &str) -> Result<ExitCode, StoreError> {
        unsupported()
    }
}
