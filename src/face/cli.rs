//! Command-line interface (clap). `imgbuild TEMPLATE` is short for
//! `imgbuild build TEMPLATE`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::terminal::{ColorChoice, OutputFormat};

const AFTER_HELP: &str = "\
Exit codes:
  0    success
  1    the build failed (everything it created was cleaned up)
  2    usage or template error
  3    a cleanup failed: something may be left behind (listed on stderr)
  130  interrupted (SIGINT/SIGTERM); cleanups ran

Environment:
  IMGBUILD_VAR_<name>  value of template variable <name>
  IMGBUILD_CACHE_DIR   download cache (default: $XDG_CACHE_HOME/imgbuild)
  IMGBUILD_WORK_DIR    parent of per-build work directories, each private (default: $TMPDIR)
  IMGBUILD_RUNTIME_DIR lock files of running builds (default: $XDG_RUNTIME_DIR/imgbuild)
  IMGBUILD_STORE       local artifact store (default: the template's `local` publish path, ./artifacts)
  IMGBUILD_LOG         log filter, e.g. `imgbuild=debug`
  NO_COLOR             disable colours (FORCE_COLOR forces them; --color wins over both)";

#[derive(Debug, Parser)]
#[command(
    name = "imgbuild",
    version,
    about = "Build, verify and publish golden machine images from JSON templates",
    long_about = "Build, verify and publish golden machine images from JSON templates.\n\n\
        `imgbuild TEMPLATE` is short for `imgbuild build TEMPLATE`.",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More output (-v debug, -vv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// When to use colours (NO_COLOR is respected with `auto`)
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// Never draw progress bars
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// `json`: one JSON event per line on stdout; human text goes to stderr
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, global = true)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a template
    Build(BuildArgs),
    /// Check templates without building (exit 2 if any is invalid)
    Validate(ValidateArgs),
    /// Show the resolved template (secrets masked) and the steps a build runs
    Inspect(InspectArgs),
    /// Run the template's verify checks against a published artifact (no rebuild)
    Test(TestArgs),
    /// List the published versions of an image
    Versions(super::store::VersionsArgs),
    /// Print the manifest of NAME[@VERSION|@CHANNEL]
    Show(super::store::ShowArgs),
    /// Point a channel (e.g. `stable`) at a published version
    Promote(super::store::PromoteArgs),
    /// Recompute an artifact's digests against SHA256SUMS and its manifest
    VerifyArtifact(super::store::VerifyArtifactArgs),
    /// Remove old versions, keeping the newest N and every channel's target
    Prune(super::store::PruneArgs),
    /// Check templates for mistakes and risky practice (rules IB001…; see docs/lint/)
    Lint(super::lint::LintArgs),
    /// Rewrite templates in the canonical layout, keeping comments (--check: diff, exit 1)
    Fmt(super::fmt::FmtArgs),
    /// Print the template JSON Schema (2020-12), for editors and validators
    Schema,
    /// List the templates whose build inputs changed since a git ref (for CI matrices)
    Changed(super::changed::ChangedArgs),
    /// Delete EC2 resources left by dead or expired ec2 builds (tagged imgbuild:build-id)
    Gc(GcArgs),
}

/// `imgbuild gc [--region R]… [--older-than 2h] [--dry-run]`
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Region to clean (repeatable); default: the AWS chain's region
    #[arg(long, value_name = "REGION")]
    pub region: Vec<String>,
    /// Also delete resources created longer ago than this (e.g. `2h`), whatever their
    /// expiry tag says; resources of builds still running on this machine are never touched
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<crate::template::units::Dur>,
    /// List what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// An EC2-compatible endpoint (default: AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL)
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct VarArgs {
    /// Set a template variable (repeatable): --var name=value
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a JSON file (repeatable; later files win)
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Template file (JSON with comments)
    pub template: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// What to do when a step fails: clean up everything, or keep the VM and work dir for debugging
    #[arg(long, value_enum, default_value_t = OnErrorArg::Cleanup)]
    pub on_error: OnErrorArg,
    /// Use this version instead of the template's `version`
    #[arg(long, value_name = "VERSION")]
    pub set_version: Option<String>,
    /// Local artifact store (default: IMGBUILD_STORE, the template's `local` publish path, ./artifacts)
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Write the verify results as JUnit XML to this file
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Skip the build (exit 0) when the inputs equal those of the latest published version
    #[arg(long)]
    pub if_changed: bool,
    /// With --if-changed: build even when nothing changed
    #[arg(long, requires = "if_changed")]
    pub force: bool,
    /// Write Prometheus textfile-collector metrics (durations, success, size) to this file
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Template whose `verify` block and machine settings are used
    pub template: PathBuf,
    /// The published artifact: NAME@VERSION, NAME@CHANNEL, or @CHANNEL / @VERSION for the template's name
    #[arg(long, value_name = "NAME@VERSION|@CHANNEL")]
    pub artifact: String,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Local artifact store (default: IMGBUILD_STORE, the template's `local` publish path, ./artifacts)
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Write the results as JUnit XML to this file
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnErrorArg {
    Cleanup,
    Abort,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Template files
    #[arg(required = true)]
    pub templates: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Template file
    pub template: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Print the digest over all build inputs (template, referenced files, var-files, source digest)
    #[arg(long)]
    pub digest: bool,
}

/// Parses arguments, turning `imgbuild [OPTIONS] FILE ...` into `imgbuild build FILE ...`.
pub fn parse_from(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if let Some(pos) = first_positional(&args) {
        let word = args[pos].to_string_lossy();
        if !is_subcommand(&word) && !word.starts_with('-') {
            args.insert(pos, "build".into());
        }
    }
    Cli::try_parse_from(args)
}

/// Asks clap itself, so a new subcommand needs no second list here.
fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help" || Cli::command().get_subcommands().any(|c| c.get_name() == word)
}

/// The first argument that is neither an option nor an option's value.
fn first_positional(args: &[OsString]) -> Option<usize> {
    const TAKES_VALUE: [&str; 2] = ["--color", "--output"];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if TAKES_VALUE.contains(&a.as_ref()) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        parse_from(args.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn template_alone_means_build() {
        assert!(matches!(parse(&["imgbuild", "t.json"]).command, Command::Build(_)));
        assert!(matches!(parse(&["imgbuild", "--output", "json", "t.json"]).command, Command::Build(_)));
        assert!(matches!(parse(&["imgbuild", "validate", "t.json"]).command, Command::Validate(_)));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
