//! SARIF 2.1.0 output (the format GitHub code scanning and other services
//! read). One run; every rule is listed in `tool.driver.rules`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::rules::{RULES, Severity};
use super::{Finding, Report};
use crate::template::diag::display_path;

const SCHEMA: &str = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// A URI reference for a file: relative (to the current directory) when the
/// file is below it, else a `file://` URI.
pub(super) fn file_uri(path: &Path) -> String {
    let shown = PathBuf::from(display_path(path));
    let text = shown.to_string_lossy().replace('\\', "/");
    let encoded = percent_encode(&text);
    if shown.is_absolute() { format!("file://{encoded}") } else { encoded }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn result(f: &Finding) -> Value {
    let (start_line, start_column) = f.line_col();
    let (end_line, end_column) = f.file.line_col(f.span.end.max(f.span.start));
    let rule_index = RULES.iter().position(|r| r.id == f.rule.id).unwrap_or(0);
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": file_uri(&f.file.path) },
            "region": {
                "startLine": start_line,
                "startColumn": start_column,
                "endLine": end_line,
                "endColumn": end_column,
            }
        }
    });
    if !f.path.is_empty() {
        location["logicalLocations"] = json!([{ "fullyQualifiedName": f.path, "kind": "member" }]);
    }
    json!({
        "ruleId": f.rule.id,
        "ruleIndex": rule_index,
        "level": level(f.rule.severity),
        "message": { "text": format!("{} (fix: {})", f.message, f.rule.fix) },
        "locations": [location],
    })
}

/// The whole SARIF log. `failures` are templates that did not load: they
/// become error notifications of the invocation.
pub(super) fn log(reports: &[Report], failures: &[(PathBuf, String)]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "shortDescription": { "text": r.title },
                "help": { "text": r.fix },
                "helpUri": r.doc_path(),
                "defaultConfiguration": { "level": level(r.severity) },
            })
        })
        .collect();
    let results: Vec<Value> = reports.iter().flat_map(|r| &r.findings).map(result).collect();
    let notifications: Vec<Value> = failures
        .iter()
        .map(|(path, message)| {
            json!({
                "level": "error",
                "message": { "text": message },
                "locations": [{ "physicalLocation": { "artifactLocation": { "uri": file_uri(path) } } }],
            })
        })
        .collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "imgbuild",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "invocations": [{
                "executionSuccessful": failures.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_uris() {
        assert_eq!(percent_encode("a b/ü.json"), "a%20b/%C3%BC.json");
        assert_eq!(percent_encode("templates/x-1_2.json"), "templates/x-1_2.json");
    }
}
