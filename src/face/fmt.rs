//! `imgbuild fmt`: rewrites templates with [`crate::fmt::format_text`], or
//! with `--check` prints a diff.

use std::io::Write as _;
use std::path::PathBuf;

use super::terminal;
use crate::error::ExitCode;
use crate::fmt::{FmtError, format_text, unified_diff, write_atomic};
use crate::template::diag::{Diagnostic, SourceFile, display_path};

#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Template files
    #[arg(required = true)]
    pub templates: Vec<PathBuf>,
    /// Change nothing: print a diff of what would change and exit 1 if any file is not formatted
    #[arg(long)]
    pub check: bool,
}

/// `imgbuild fmt`: exit 2 if a file cannot be read or parsed; with
/// `--check`, 1 if any file is not formatted; else 0.
pub fn run(args: &FmtArgs) -> ExitCode {
    let mut unreadable = false;
    let mut write_failed = false;
    let mut changed = 0;
    for path in &args.templates {
        let shown = display_path(path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                terminal::eprintln_raw(&format!("error: cannot read {shown}: {e}"));
                unreadable = true;
                continue;
            }
        };
        let formatted = match format_text(&text) {
            Ok(f) => f,
            Err(FmtError::Syntax { span, message }) => {
                let file = SourceFile::new(path.clone(), text);
                let d = Diagnostic { file, span, path: String::new(), message, help: None };
                terminal::eprintln_raw(&format!("error: {d}"));
                unreadable = true;
                continue;
            }
            Err(e @ FmtError::Internal(_)) => {
                terminal::eprintln_raw(&format!(
                    "error: {shown}: {e} (the file was left unchanged; please report this)"
                ));
                unreadable = true;
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        changed += 1;
        if args.check {
            let name = shown.replace('\\', "/");
            let diff = unified_diff(&text, &formatted, &format!("a/{name}"), &format!("b/{name}"));
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(diff.as_bytes());
            let _ = out.flush();
        } else {
            match write_atomic(path, &formatted) {
                Ok(()) => println!("formatted {shown}"),
                Err(e) => {
                    terminal::eprintln_raw(&format!("error: cannot write {shown}: {e}"));
                    write_failed = true;
                }
            }
        }
    }
    let total = args.templates.len();
    if args.check && changed > 0 {
        terminal::eprintln_raw(&format!("{changed} of {total} file(s) not formatted; run `imgbuild fmt` to fix"));
    }
    if unreadable {
        ExitCode::Usage
    } else if write_failed || (args.check && changed > 0) {
        ExitCode::BuildFailed
    } else {
        ExitCode::Success
    }
}
