//! `imgbuild versions|show|promote|verify-artifact|prune`: store commands,
//! on a local store or, with `--store s3://BUCKET/PREFIX`, an S3 store.
//!
//! Data goes to stdout (`terminal::print_stdout`); with `--output json` it is one JSON
//! value. Errors go through [`crate::face::report_error`].

use std::path::{Path, PathBuf};

use clap::Args;
use imgbuild_store_format::policy;

use crate::error::{ExitCode, chain};
use crate::face::terminal;
use crate::store::StoreError;
use crate::store::any::AnyStore;

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
    finish(print_versions(args).await)
}

async fn print_versions(args: &VersionsArgs) -> Result<ExitCode, StoreError> {
    let store = AnyStore::open_existing(&args.store.store).await?;
    let list = policy::versions(&store, &args.name).await?;
    if terminal::is_json() {
        let items = list
            .iter()
            .map(|v| {
                let (field, location) = store.version_location(&args.name, &v.version);
                let mut item = serde_json::Map::new();
                item.insert("version".into(), v.version.clone().into());
                item.insert("created_at".into(), v.created_at.clone().into());
                item.insert("size".into(), v.size.into());
                item.insert("channels".into(), v.channels.clone().into());
                item.insert(field.into(), location.into());
                serde_json::Value::Object(item)
            })
            .collect();
        print_json(&serde_json::Value::Array(items));
    } else {
        print_table(list.iter().map(|v| row(&v.version, v.created_at.as_deref(), v.size, &v.channels)).collect());
    }
    Ok(ExitCode::Success)
}

pub async fn show(args: &ShowArgs) -> ExitCode {
    let shown = async {
        let store = AnyStore::open_existing(&args.store.store).await?;
        let (name, version) = policy::resolve(&store, &args.image).await?;
        print_manifest(&policy::manifest(&store, &name, &version).await?);
        Ok(ExitCode::Success)
    };
    finish(shown.await)
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
    let promoted = async {
        let store = AnyStore::open_existing(&args.store.store).await?;
        let previous = policy::promote(&store, &args.name, &args.version, &args.channel).await?;
        print_promoted(args, previous);
        Ok(ExitCode::Success)
    };
    finish(promoted.await)
}

fn print_promoted(args: &PromoteArgs, previous: Option<String>) {
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

pub async fn verify_artifact(args: &VerifyArtifactArgs) -> ExitCode {
    finish(verify_target(args).await)
}

/// A path is always a local directory (verifying it needs no store, and
/// must not create one); a reference is looked up in the store. An S3
/// version is downloaded once through the hashers, nothing is stored.
async fn verify_target(args: &VerifyArtifactArgs) -> Result<ExitCode, StoreError> {
    let dir = if looks_like_path(&args.target) {
        PathBuf::from(&args.target)
    } else {
        let store = AnyStore::open_existing(&args.store.store).await?;
        let (name, version) = policy::resolve(&store, &args.target).await?;
        match store {
            AnyStore::Local(local) => local.version_dir(&name, &version),
            #[cfg(feature = "aws")]
            AnyStore::S3(s3) => {
                let report = s3.verify(&name, &version).await?;
                return Ok(print_report(&report, &report.at.url, &report.problems));
            }
        }
    };
    let report = crate::store::verify_dir(&dir)?;
    Ok(print_report(&report, &report.at.dir.display().to_string(), &report.problems))
}

pub async fn prune(args: &PruneArgs) -> ExitCode {
    let pruned = async {
        let store = AnyStore::open_existing(&args.store.store).await?;
        let removed = policy::prune(&store, &args.name, args.keep).await?;
        print_pruned(&args.name, &removed);
        Ok(ExitCode::Success)
    };
    finish(pruned.await)
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
        StoreError::Invalid(_) | StoreError::InvalidStoreUrl { .. } | StoreError::NoAwsSupport { .. } => true,
        #[cfg(feature = "aws")]
        StoreError::S3(e) => {
            matches!(e, imgbuild_aws::S3Error::Invalid(_) | imgbuild_aws::S3Error::InvalidConfig { .. })
        }
        _ => false,
    }
}

fn looks_like_path(target: &str) -> bool {
    target.contains('/') || (!target.contains('@') && Path::new(target).is_dir())
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
