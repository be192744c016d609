//! Template variables and where their values come from.
//!
//! Precedence, lowest to highest (later wins, as in Packer):
//! 1. `default` in the template
//! 2. environment `IMGBUILD_VAR_<name>`
//! 3. `--var-file FILE` (in the order given)
//! 4. `--var name=value` (in the order given)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::TemplateError;
use super::decode::Cx;
use super::diag::{Diagnostics, did_you_mean};
use super::interp::{Interpolator, VarValue};
use super::jsonc::{Node, NodeKind};
use super::model::{VarShown, Variable};
use crate::redact;

/// Where variable values come from besides the template's defaults.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `--var name=value`, in order.
    pub cli: Vec<(String, String)>,
    /// `--var-file`, in order.
    pub files: Vec<PathBuf>,
    /// Read `IMGBUILD_VAR_<name>` from the process environment.
    pub use_env: bool,
}

impl VarInputs {
    /// Splits `--var` arguments of the form `name=value`.
    pub fn parse_cli(args: &[String]) -> Result<Vec<(String, String)>, String> {
        args.iter()
            .map(|arg| match arg.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(format!("invalid --var `{arg}`: expected NAME=VALUE")),
            })
            .collect()
    }
}

pub const ENV_PREFIX: &str = "IMGBUILD_VAR_";

/// A declared variable as read from the template.
pub(super) struct Declared {
    pub name: String,
    pub node: Node,
    pub default: Option<String>,
    pub description: Option<String>,
    pub required: bool,
    pub sensitive: bool,
}

pub(super) fn read_declarations(node: &Node, cx: &mut Cx) -> Vec<Declared> {
    let NodeKind::Object(members) = &node.kind else {
        cx.type_error(node, "an object");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in members {
        if let Some(d) = cx.in_field(&key.name, |cx| read_declaration(&key.name, value, cx)) {
            out.push(d);
        }
    }
    out
}

fn read_declaration(name: &str, node: &Node, cx: &mut Cx) -> Option<Declared> {
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        cx.error(node.span, format!("invalid variable name `{name}` (use letters, digits and `_`)"));
    }
    let mut o = cx.object(node)?;
    let default = o.node("default").and_then(|n| cx.in_field("default", |cx| scalar_string(n, cx)));
    let description = o.opt(cx, "description");
    let required = o.or(cx, "required", false);
    let sensitive = o.or(cx, "sensitive", false);
    o.finish(cx);
    if required && default.is_some() {
        cx.error(node.span, format!("variable `{name}` is `required` and also has a `default`; use one"));
    }
    Some(Declared { name: name.to_string(), node: node.clone(), default, description, required, sensitive })
}

/// Variable values are strings; numbers and booleans are accepted and written as JSON prints them.
fn scalar_string(node: &Node, cx: &mut Cx) -> Option<String> {
    match &node.kind {
        NodeKind::String(s) => Some(s.clone()),
        NodeKind::Number(n) => Some(n.to_string()),
        NodeKind::Bool(b) => Some(b.to_string()),
        _ => {
            cx.type_error(node, "a string, number or boolean");
            None
        }
    }
}

/// Resolves every declared variable's value, in precedence order.
pub(super) fn resolve(
    declared: &[Declared],
    inputs: &VarInputs,
    base_interp: &Interpolator,
) -> Result<BTreeMap<String, Option<String>>, TemplateError> {
    let mut values: BTreeMap<String, Option<String>> =
        declared.iter().map(|d| (d.name.clone(), d.default.clone())).collect();
    if inputs.use_env {
        for d in declared {
            if let Ok(v) = std::env::var(format!("{ENV_PREFIX}{}", d.name)) {
                values.insert(d.name.clone(), Some(v));
            }
        }
    }
    for file in &inputs.files {
        for (name, value) in read_var_file(file, &values, base_interp)? {
            values.insert(name, Some(value));
        }
    }
    for (name, value) in &inputs.cli {
        if !values.contains_key(name) {
            let help = did_you_mean(name, values.keys().map(String::as_str))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            return Err(TemplateError::Usage(format!(
                "--var {name}=...: the template declares no variable `{name}`{help}"
            )));
        }
        values.insert(name.clone(), Some(value.clone()));
    }
    for d in declared.iter().filter(|d| d.sensitive) {
        if let Some(Some(v)) = values.get(&d.name) {
            redact::register(v);
        }
    }
    Ok(values)
}

fn read_var_file(
    path: &Path,
    declared: &BTreeMap<String, Option<String>>,
    base_interp: &Interpolator,
) -> Result<Vec<(String, String)>, TemplateError> {
    let (file, node) = super::read_json_file(path)?;
    let mut cx = Cx::new(file.clone(), base_interp);
    let mut out = Vec::new();
    match &node.kind {
        NodeKind::Object(members) => {
            for (key, value) in members {
                if !declared.contains_key(&key.name) {
                    let help = did_you_mean(&key.name, declared.keys().map(String::as_str))
                        .map(|n| format!("did you mean `{n}`?"));
                    cx.in_field(&key.name, |cx| {
                        cx.error_with_help(key.span, format!("the template declares no variable `{}`", key.name), help)
                    });
                    continue;
                }
                if let Some(v) = cx.in_field(&key.name, |cx| scalar_string(value, cx)) {
                    out.push((key.name.clone(), v));
                }
            }
        }
        _ => cx.type_error(&node, "an object of variable names to values"),
    }
    if cx.errors.is_empty() { Ok(out) } else { Err(TemplateError::Invalid(Diagnostics(cx.errors))) }
}

/// Builds the interpolation table and the `variables` view shown by `inspect`.
pub(super) fn finish(
    declared: &[Declared],
    values: &BTreeMap<String, Option<String>>,
) -> (BTreeMap<String, VarValue>, BTreeMap<String, Variable>) {
    let mut table = BTreeMap::new();
    let mut shown = BTreeMap::new();
    for d in declared {
        let value = values.get(&d.name).cloned().flatten();
        table.insert(
            d.name.clone(),
            match &value {
                Some(v) => VarValue::Set(v.clone()),
                None if d.required => VarValue::RequiredUnset,
                None => VarValue::Set(String::new()),
            },
        );
        let value = value.map(|v| if d.sensitive { VarShown::Sensitive } else { VarShown::Plain(v) });
        shown.insert(
            d.name.clone(),
            Variable { description: d.description.clone(), required: d.required, sensitive: d.sensitive, value },
        );
    }
    (table, shown)
}

/// A required variable with no value is an error even where it is not used yet.
pub(super) fn check_required(declared: &[Declared], values: &BTreeMap<String, Option<String>>, cx: &mut Cx) {
    for d in declared.iter().filter(|d| d.required) {
        if values.get(&d.name).is_none_or(|v| v.is_none()) {
            let name = d.name.clone();
            cx.in_field("variables", |cx| {
                cx.in_field(&name, |cx| {
                    cx.error_with_help(
                        d.node.span,
                        format!("required variable `{name}` is not set"),
                        Some(format!(
                            "set it with `--var {name}=...`, a `--var-file`, or the environment variable {ENV_PREFIX}{name}"
                        )),
                    )
                })
            });
        }
    }
    for d in declared.iter().filter(|d| d.sensitive) {
        if let Some(Some(v)) = values.get(&d.name)
            && !v.is_empty()
            && v.chars().count() < redact::MIN_LEN
        {
            let name = d.name.clone();
            cx.in_field("variables", |cx| {
                cx.in_field(&name, |cx| {
                    cx.error(
                        d.node.span,
                        format!(
                            "sensitive variable `{name}` is shorter than {} characters and could not be redacted reliably",
                            redact::MIN_LEN
                        ),
                    )
                })
            });
        }
    }
}
