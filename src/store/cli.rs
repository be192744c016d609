//! `imgbuild versions|show|promote|verify-artifact|prune`: store commands.
//!
//! Data goes to stdout (`ui::print_stdout`); with `--output json` it is one JSON
//! value. Errors go through [`crate::app::report_error`].

use std::path::{Path, PathBuf};

use clap::Args;

use super::{LocalStore, StoreError, VerifyReport};
use crate::error::{ExitCode, chain};

/// `--store`, shared by every store command.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Artifact store directory
    #[arg(long = "store", env = "IMGBUILD_STORE", default_value = "./artifacts", value_name = "PATH")]
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

pub fn versions(args: &VersionsArgs) -> ExitCode {
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let list = store.versions(&args.name)?;
        if crate::ui::is_json() {
            print_json(&serde_json::to_value(&list).unwrap_or_default());
        } else {
            print_table(&list);
        }
        Ok(ExitCode::Success)
    })
}

pub fn show(args: &ShowArgs) -> ExitCode {
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let (name, version) = store.resolve(&args.image)?;
        let manifest = store.manifest(&name, &version)?;
        if crate::ui::is_json() {
            print_json(&manifest);
        } else {
            let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
            crate::ui::print_stdout(&text);
        }
        Ok(ExitCode::Success)
    })
}

pub fn promote(args: &PromoteArgs) -> ExitCode {
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let previous = store.promote(&args.name, &args.version, &args.channel)?;
        if crate::ui::is_json() {
            print_json(&serde_json::json!({
                "name": args.name,
                "version": args.version,
                "channel": args.channel,
                "previous": previous,
            }));
        } else {
            let was = previous.map(|p| format!(" (was {p})")).unwrap_or_default();
            crate::ui::print_stdout(&format!("{}: {} -> {}{was}", args.name, args.channel, args.version));
        }
        Ok(ExitCode::Success)
    })
}

pub fn verify_artifact(args: &VerifyArtifactArgs) -> ExitCode {
    run(|| {
        let dir = target_dir(&args.target, &args.store.store)?;
        // Verifying a plain directory needs no store, and must not create one.
        let report = super::verify::verify_dir(&dir)?;
        print_report(&report);
        Ok(if report.is_ok() { ExitCode::Success } else { ExitCode::BuildFailed })
    })
}

pub fn prune(args: &PruneArgs) -> ExitCode {
    run(|| {
        let store = LocalStore::open_existing(&args.store.store)?;
        let removed = store.prune(&args.name, args.keep)?;
        if crate::ui::is_json() {
            print_json(&serde_json::json!({ "name": args.name, "removed": removed }));
        } else {
            for version in &removed {
                crate::ui::print_stdout(&format!("removed {}@{version}", args.name));
            }
        }
        Ok(ExitCode::Success)
    })
}

/// Reports an error and maps it to an exit code: bad names and references
/// are usage errors (2), everything else a failure (1).
fn run(f: impl FnOnce() -> Result<ExitCode, StoreError>) -> ExitCode {
    match f() {
        Ok(code) => code,
        Err(e) => {
            crate::app::report_error(&chain(&e));
            match e {
                StoreError::InvalidName { .. }
                | StoreError::InvalidVersion { .. }
                | StoreError::InvalidChannel { .. }
                | StoreError::InvalidSpec { .. } => ExitCode::Usage,
                _ => ExitCode::BuildFailed,
            }
        }
    }
}

/// A path if it looks like one (contains `/`, or names an existing directory
/// and has no `@`); otherwise an image reference resolved in the store.
fn target_dir(target: &str, store_root: &Path) -> Result<PathBuf, StoreError> {
    let path = Path::new(target);
    if target.contains('/') || (!target.contains('@') && path.is_dir()) {
        return Ok(path.to_path_buf());
    }
    let store = LocalStore::open_existing(store_root)?;
    let (name, version) = store.resolve(target)?;
    Ok(store.version_dir(&name, &version))
}

fn print_report(report: &VerifyReport) {
    if crate::ui::is_json() {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("ok".into(), report.is_ok().into());
        }
        print_json(&value);
    }
    if report.is_ok() {
        if !crate::ui::is_json() {
            crate::ui::print_stdout("ok");
        }
        return;
    }
    for problem in &report.problems {
        crate::app::report_error(&format!("{}: {problem}", report.dir.display()));
    }
    crate::app::report_error(&format!("verification failed: {}", report.bad_files().join(", ")));
}

fn print_json(value: &serde_json::Value) {
    crate::ui::print_stdout(&value.to_string());
}

fn print_table(list: &[super::VersionInfo]) {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|v| {
            [
                v.version.clone(),
                v.created_at.clone().unwrap_or_else(|| "-".into()),
                human_size(v.size),
                v.channels.join(","),
            ]
        })
        .collect();
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
        crate::ui::print_stdout(line.trim_end());
    }
}

/// `512 B`, `1.5 KiB`, `20.0 GiB`.
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(20 * 1024 * 1024 * 1024), "20.0 GiB");
    }
}
