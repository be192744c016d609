//! `imgbuild changed`: prints the templates whose build inputs changed
//! since a git revision ([`crate::changed::changed`] finds them).

use std::path::PathBuf;

use super::cli::VarArgs;
use super::{report_error, reporter, terminal};
use crate::changed::{ChangedFormat, ChangedOptions, changed, render};
use crate::error::{ExitCode, chain};
use crate::template::VarInputs;

#[derive(Debug, Clone, clap::Args)]
pub struct ChangedArgs {
    /// Git revision to compare the working tree with, e.g. `origin/main` or `HEAD~1`
    #[arg(long, value_name = "GIT_REF")]
    pub since: String,
    /// Templates to consider (default: every `*.json` in `templates/`)
    pub templates: Vec<PathBuf>,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Output format
    #[arg(long, value_enum, default_value_t = ChangedFormat::Lines)]
    pub format: ChangedFormat,
}

/// `imgbuild changed`: prints the changed templates; exit 0 (also when none
/// changed), 2 for a bad revision, no repository or unreadable templates.
pub fn run(args: &ChangedArgs) -> ExitCode {
    let cli = match VarInputs::parse_cli(&args.vars.vars) {
        Ok(cli) => cli,
        Err(e) => {
            report_error(&e);
            return ExitCode::Usage;
        }
    };
    let options = ChangedOptions {
        since: args.since.clone(),
        templates: args.templates.clone(),
        vars: VarInputs { cli, files: args.vars.var_files.clone(), use_env: true },
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    match changed(&options) {
        Ok(list) => {
            // For people, on stderr; with `--output json` stdout must stay one JSON value.
            if !terminal::is_json() {
                for t in &list {
                    reporter().info(format!("{}: {}", t.path.display(), t.reasons.join(", ")));
                }
            }
            let text = render(&list, args.format, &args.since);
            if !text.is_empty() {
                terminal::print_stdout(&text);
            }
            ExitCode::Success
        }
        Err(e) => {
            report_error(&chain(&e));
            ExitCode::Usage
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ChangedArgs,
    }

    #[test]
    fn parses_arguments() {
        use clap::{CommandFactory, Parser};
        Wrapper::command().debug_assert();
        let w = Wrapper::try_parse_from([
            "changed",
            "--since",
            "origin/main",
            "--format",
            "github-matrix",
            "--var-file",
            "v.json",
            "a.json",
            "b.json",
        ])
        .unwrap();
        assert_eq!(w.args.since, "origin/main");
        assert_eq!(w.args.format, ChangedFormat::GithubMatrix);
        assert_eq!(w.args.templates, [PathBuf::from("a.json"), PathBuf::from("b.json")]);
        assert_eq!(w.args.vars.var_files, [PathBuf::from("v.json")]);
        assert!(Wrapper::try_parse_from(["changed", "a.json"]).is_err(), "--since is required");
        assert_eq!(Wrapper::try_parse_from(["changed", "--since", "x"]).unwrap().args.format, ChangedFormat::Lines);
    }
}
