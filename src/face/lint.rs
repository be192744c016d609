//! `imgbuild lint`: prints the findings of [`crate::lint`] as text, JSON or
//! SARIF, and the summary.

use std::path::PathBuf;

use super::cli::VarArgs;
use super::terminal;
use crate::error::{ExitCode, chain};
use crate::lint::{self, Finding, LintOptions, Report, Severity, lint_path};
use crate::template::diag::display_path;
use crate::template::{TemplateError, VarInputs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LintFormat {
    /// `file:line:col: severity[IBnnn]: message (fix: ...)`, one finding per line
    Text,
    /// A JSON array of findings
    Json,
    /// SARIF 2.1.0, for code-scanning services
    Sarif,
}

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Template files
    #[arg(required = true)]
    pub templates: Vec<PathBuf>,
    /// Output format (default: `text`; `json` with `--output json`)
    #[arg(long, value_enum)]
    pub format: Option<LintFormat>,
    /// Local artifact store, for IB007 (default: IMGBUILD_STORE, the template's `local` publish path, ./artifacts)
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `imgbuild lint`: exit 2 if a template does not load, 1 if any
/// error-severity finding remains after `lint.ignore`, else 0.
pub fn run(args: &LintArgs) -> ExitCode {
    let format = args.format.unwrap_or(if terminal::is_json() { LintFormat::Json } else { LintFormat::Text });
    let cli = match VarInputs::parse_cli(&args.vars.vars) {
        Ok(cli) => cli,
        Err(e) => {
            terminal::eprintln_raw(&format!("error: {e}"));
            return ExitCode::Usage;
        }
    };
    let options = LintOptions {
        vars: VarInputs { cli, files: args.vars.var_files.clone(), use_env: true },
        store: args.store.clone(),
    };
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for path in &args.templates {
        match lint_path(path, &options) {
            Ok(report) => reports.push(report),
            Err(e) => {
                report_load_error(&e);
                failures.push((path.clone(), chain(&e)));
            }
        }
    }
    for report in &reports {
        let shown = display_path(&report.file.path);
        for id in &report.unknown_ignores {
            terminal::eprintln_raw(&format!("warning: {shown}: `lint.ignore` names `{id}`, which is not a lint rule"));
        }
        if !report.unset_variables.is_empty() {
            terminal::eprintln_raw(&format!(
                "note: {shown}: required variable(s) {} not set; checks that need their value were skipped",
                report.unset_variables.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let output = match format {
        LintFormat::Text => reports.iter().flat_map(|r| &r.findings).map(|f| f.to_text() + "\n").collect(),
        LintFormat::Json => {
            let all: Vec<_> = reports.iter().flat_map(|r| &r.findings).map(Finding::to_json).collect();
            serde_json::to_string_pretty(&all).unwrap_or_default() + "\n"
        }
        LintFormat::Sarif => {
            serde_json::to_string_pretty(&lint::to_sarif_with_failures(&reports, &failures)).unwrap_or_default() + "\n"
        }
    };
    print_stdout(&output);
    if format == LintFormat::Text {
        terminal::eprintln_raw(&summary(&reports, failures.len()));
    }
    if !failures.is_empty() {
        ExitCode::Usage
    } else if reports.iter().any(Report::has_errors) {
        ExitCode::BuildFailed
    } else {
        ExitCode::Success
    }
}

fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(crate::redact::scrub(text).as_bytes());
    let _ = out.flush();
}

fn report_load_error(e: &TemplateError) {
    match e {
        // Complete diagnostics with file:line:column: printed as they are.
        TemplateError::Invalid(d) => terminal::eprintln_raw(&d.to_string()),
        other => terminal::eprintln_raw(&format!("error: {}", chain(other))),
    }
}

/// `lint: 1 error, 2 warnings, 0 notes in 3 templates (1 ignored)`.
fn summary(reports: &[Report], failed: usize) -> String {
    let count = |s: Severity| reports.iter().flat_map(|r| &r.findings).filter(|f| f.rule.severity == s).count();
    let plural = |n: usize, word: &str| if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") };
    let mut text = format!(
        "lint: {}, {}, {} in {}",
        plural(count(Severity::Error), "error"),
        plural(count(Severity::Warning), "warning"),
        plural(count(Severity::Note), "note"),
        plural(reports.len(), "template")
    );
    let ignored: usize = reports.iter().map(|r| r.ignored.len()).sum();
    if ignored > 0 {
        text.push_str(&format!(" ({ignored} ignored by `lint.ignore`)"));
    }
    if failed > 0 {
        text.push_str(&format!("; {} could not be loaded", plural(failed, "template")));
    }
    text
}
