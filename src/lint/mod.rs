//! `imgbuild lint`: finds mistakes and risky practice in templates that load
//! fine (unverified sources, secrets in the file, reboots that fail the
//! build, …). Rules have stable ids (`IB001`…) and a page each under
//! `docs/lint/`; see `docs/lint/README.md`.
//!
//! A template that does not load is reported with the loader's diagnostics
//! and exit code 2. Required variables nobody set get a placeholder value,
//! so a template can be linted without its inputs; checks that need such a
//! value (does this path exist?) skip it.

mod checks;
pub mod rules;
mod sarif;
mod walk;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use rules::{RULES, Rule, Severity, rule};

use crate::template::diag::display_path;
use crate::template::jsonc::{self, Span};
use crate::template::{self, LoadOptions, Loaded, SourceFile, TemplateError, VarInputs};

/// One problem found in a template.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: &'static Rule,
    pub file: Arc<SourceFile>,
    /// The offending value (or key) in the file.
    pub span: Span,
    /// JSON path such as `builder.ssh.password`; empty for the document root.
    pub path: String,
    pub message: String,
}

impl Finding {
    pub fn severity(&self) -> Severity {
        self.rule.severity
    }

    /// 1-based line and column (in characters).
    pub fn line_col(&self) -> (usize, usize) {
        self.file.line_col(self.span.start)
    }

    /// `file:line:col: severity[IBnnn]: message (fix: ...)`
    pub fn to_text(&self) -> String {
        let (line, col) = self.line_col();
        format!(
            "{}:{line}:{col}: {}[{}]: {} (fix: {})",
            display_path(&self.file.path),
            self.rule.severity,
            self.rule.id,
            self.message,
            self.rule.fix
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (line, column) = self.line_col();
        serde_json::to_value(JsonFinding {
            rule: self.rule.id,
            severity: self.rule.severity,
            title: self.rule.title,
            message: &self.message,
            fix: self.rule.fix,
            file: display_path(&self.file.path),
            line,
            column,
            path: &self.path,
            doc: self.rule.doc_path(),
        })
        .unwrap_or_default()
    }
}

#[derive(Serialize)]
struct JsonFinding<'a> {
    rule: &'static str,
    severity: Severity,
    title: &'static str,
    message: &'a str,
    fix: &'static str,
    file: String,
    line: usize,
    column: usize,
    path: &'a str,
    doc: String,
}

/// What lint found in one template.
#[derive(Debug, Clone)]
pub struct Report {
    pub file: Arc<SourceFile>,
    /// Findings after `lint.ignore`, in file order.
    pub findings: Vec<Finding>,
    /// Findings silenced by `lint.ignore`.
    pub ignored: Vec<Finding>,
    /// Ids in `lint.ignore` that name no rule.
    pub unknown_ignores: Vec<String>,
    /// Required variables that had no value and were linted with a placeholder.
    pub unset_variables: Vec<String>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.rule.severity == Severity::Error)
    }

    /// The rule ids found (after ignores), sorted and deduplicated.
    pub fn rule_ids(&self) -> Vec<&'static str> {
        self.findings.iter().map(|f| f.rule.id).collect::<BTreeSet<_>>().into_iter().collect()
    }
}

/// What lint needs besides the template.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    pub vars: VarInputs,
    /// `--store`, for IB007.
    pub store: Option<PathBuf>,
}

/// Loads and lints one template. A template that does not load is an error
/// carrying the loader's diagnostics.
pub fn lint_path(path: &Path, options: &LintOptions) -> Result<Report, TemplateError> {
    let load = LoadOptions { vars: options.vars.clone(), build_id: "lint".into(), ..Default::default() };
    let (loaded, unset) = match template::load(path, &load) {
        Ok(loaded) => (loaded, Vec::new()),
        Err(first @ TemplateError::Invalid(_)) => {
            let unset = unset_required(path, &options.vars);
            if unset.is_empty() {
                return Err(first);
            }
            let mut with_placeholders = load.clone();
            with_placeholders
                .vars
                .cli
                .extend(unset.iter().map(|name| (name.clone(), format!("{}{name}>", checks::UNSET_PREFIX))));
            match template::load(path, &with_placeholders) {
                Ok(loaded) => (loaded, unset),
                // The placeholders did not help: report what is really wrong.
                Err(_) => return Err(first),
            }
        }
        Err(other) => return Err(other),
    };
    let mut report = lint_loaded(&loaded, options.store.as_ref());
    report.unset_variables = unset;
    Ok(report)
}

/// Lints a loaded template, applying its `lint.ignore`.
pub fn lint_loaded(loaded: &Loaded, store: Option<&PathBuf>) -> Report {
    let mut checker = checks::Checker::new(loaded, store);
    checker.run_all();
    let mut all = checker.findings;
    all.sort_by(|a, b| a.span.start.cmp(&b.span.start).then(a.rule.id.cmp(b.rule.id)));
    let ignore = &loaded.template.lint.ignore;
    let (ignored, findings) = all.into_iter().partition(|f| ignore.iter().any(|id| id == f.rule.id));
    let unknown_ignores = ignore.iter().filter(|id| rule(id).is_none()).cloned().collect();
    Report { file: loaded.file.clone(), findings, ignored, unknown_ignores, unset_variables: Vec::new() }
}

/// Required variables without a value from `--var`, a var-file or the environment.
fn unset_required(path: &Path, vars: &VarInputs) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let Ok(raw) = jsonc::parse(&text) else { return Vec::new() };
    let mut given: BTreeSet<String> = vars.cli.iter().map(|(k, _)| k.clone()).collect();
    for file in &vars.files {
        let parsed = std::fs::read_to_string(file).ok().and_then(|t| jsonc::parse(&t).ok());
        given.extend(walk::members(parsed.as_ref()).iter().map(|(k, _)| k.name.clone()));
    }
    walk::members(raw.get("variables"))
        .iter()
        .filter(|(_, decl)| walk::as_bool(decl.get("required")) == Some(true))
        .map(|(k, _)| k.name.clone())
        .filter(|name| !given.contains(name))
        .filter(|name| !(vars.use_env && std::env::var_os(format!("{}{name}", template::vars::ENV_PREFIX)).is_some()))
        .collect()
}

/// Renders findings as SARIF 2.1.0 (for tests and other front ends).
pub fn to_sarif(reports: &[Report]) -> serde_json::Value {
    sarif::log(reports, &[])
}

/// SARIF 2.1.0 with the templates that could not be loaded (path, error) as
/// tool notifications.
pub fn to_sarif_with_failures(reports: &[Report], failures: &[(PathBuf, String)]) -> serde_json::Value {
    sarif::log(reports, failures)
}
