//! The template language: JSON with comments, strict typed decoding,
//! variables and interpolation. See `docs/template.md`.

pub mod decode;
pub mod diag;
pub mod ec2;
pub mod interp;
pub mod jsonc;
pub mod keys;
pub mod model;
pub mod schema;
pub mod units;
pub mod vars;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diag::{Diagnostic, Diagnostics, SourceFile};
pub use ec2::{AmiFilter, AmiSource, Ec2Builder, Ec2Ssh, SshInterface};
pub use model::*;
pub use vars::VarInputs;

use decode::{Cx, parse_string};
use interp::{BuildVars, Interpolator};
use jsonc::Node;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {}", diag::display_path(path))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("{0}")]
    Usage(String),
}

/// What the caller knows before the template is read.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub vars: VarInputs,
    pub build_id: String,
    /// `--set-version`: replaces the template's `version`.
    pub version_override: Option<String>,
    /// The per-build SSH public key (`{{ build.ssh_public_key }}`).
    pub ssh_public_key: String,
}

/// A template read, validated and interpolated.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub template: Template,
    pub path: PathBuf,
    pub dir: PathBuf,
    pub file: Arc<SourceFile>,
    /// The document as parsed, before interpolation (for `fmt` and digests).
    pub raw: Node,
    pub build_id: String,
    /// Every variable's value (secrets included: never print these).
    pub variable_values: std::collections::BTreeMap<String, String>,
}

const TOP_LEVEL_REQUIRED: [&str; 2] = ["name", "builder"];

pub fn load(path: &Path, options: &LoadOptions) -> Result<Loaded, TemplateError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let bytes = std::fs::read(&path).map_err(|source| TemplateError::Read { path: path.clone(), source })?;
    load_bytes(&path, bytes, options)
}

/// [`load`] for a template whose content is already in memory; `path` names
/// it in diagnostics and its directory is `template_dir`.
pub fn load_bytes(path: &Path, bytes: Vec<u8>, options: &LoadOptions) -> Result<Loaded, TemplateError> {
    let path = path.to_path_buf();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let (file, raw) = parse_json_bytes(&path, bytes)?;
    let (template, variable_values) = decode_template(&raw, &file, &dir, options)?;
    Ok(Loaded { template, path, dir, file, raw, build_id: options.build_id.clone(), variable_values })
}

/// Reads and parses a JSON-with-comments file; a syntax error becomes a diagnostic.
pub(crate) fn read_json_file(path: &Path) -> Result<(Arc<SourceFile>, Node), TemplateError> {
    let bytes = std::fs::read(path).map_err(|source| TemplateError::Read { path: path.to_path_buf(), source })?;
    parse_json_bytes(path, bytes)
}

/// Parses a JSON-with-comments document; text that is not UTF-8 or not
/// valid JSONC becomes a diagnostic at the offending position.
fn parse_json_bytes(path: &Path, bytes: Vec<u8>) -> Result<(Arc<SourceFile>, Node), TemplateError> {
    let invalid = |file: &Arc<SourceFile>, span, message| {
        TemplateError::Invalid(Diagnostics(vec![Diagnostic {
            file: file.clone(),
            span,
            path: String::new(),
            message,
            help: None,
        }]))
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // The valid prefix, so that the line and column point at the first bad byte.
            let at = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let file = SourceFile::new(path.to_path_buf(), text);
            let message = format!("invalid UTF-8 at byte {at}: a template must be UTF-8 text");
            return Err(invalid(&file, jsonc::Span::new(at, at + char::REPLACEMENT_CHARACTER.len_utf8()), message));
        }
    };
    let file = SourceFile::new(path.to_path_buf(), text);
    let node = jsonc::parse(&file.text).map_err(|e| invalid(&file, e.span, e.message))?;
    Ok((file, node))
}

fn decode_template(
    raw: &Node,
    file: &Arc<SourceFile>,
    dir: &Path,
    options: &LoadOptions,
) -> Result<(Template, std::collections::BTreeMap<String, String>), TemplateError> {
    let mut interp = Interpolator { template_dir: dir.to_string_lossy().into_owned(), ..Default::default() };
    // Variables come first: everything else may interpolate them.
    let mut declared = Vec::new();
    let mut early = Cx::new(file.clone(), &interp);
    let Some(mut top) = early.object(raw) else {
        return Err(TemplateError::Invalid(Diagnostics(early.errors)));
    };
    if let Some(node) = top.node("variables") {
        declared = early.in_field("variables", |cx| vars::read_declarations(node, cx));
    }
    let mut errors = early.errors;
    let values = vars::resolve(&declared, &options.vars, &interp)?;
    let (table, shown) = vars::finish(&declared, &values);
    interp.vars = table;

    // `name` and `version` next: `build.*` is made of them.
    let mut cx = Cx::new(file.clone(), &interp);
    vars::check_required(&declared, &values, &mut cx);
    let name = top.req::<String>(&mut cx, "name").and_then(|n| check(&mut cx, &mut top, "name", n));
    let version = read_version(&mut top, &mut cx, options);
    errors.append(&mut cx.errors);

    interp.build = Some(BuildVars {
        name: name.clone().unwrap_or_default(),
        version: match &version {
            Some(VersionSpec::Exact(v)) => v.clone(),
            _ => "auto".into(),
        },
        id: options.build_id.clone(),
        ssh_public_key: options.ssh_public_key.clone(),
    });
    let mut cx = Cx::new(file.clone(), &interp);
    let description = top.opt::<String>(&mut cx, "description");
    let builder = top.req::<Builder>(&mut cx, "builder");
    let source = match builder {
        Some(Builder::Null) => top.opt::<Source>(&mut cx, "source"),
        _ => top.req::<Source>(&mut cx, "source"),
    };
    let provisioners = top.or_default::<Vec<Provisioner>>(&mut cx, "provisioners");
    let verify = top.or_default::<Vec<Check>>(&mut cx, "verify");
    let export = top.opt::<Export>(&mut cx, "export");
    let lint = top.or_default::<LintSettings>(&mut cx, "lint");
    top.finish(&mut cx);
    errors.append(&mut cx.errors);
    errors.sort_by_key(|d| d.span.start);
    if !errors.is_empty() {
        return Err(TemplateError::Invalid(Diagnostics(errors)));
    }
    let missing = || TemplateError::Usage(format!("template is missing one of {TOP_LEVEL_REQUIRED:?}"));
    let values = values.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    let template = Template {
        name: name.ok_or_else(missing)?,
        version: version.ok_or_else(missing)?,
        description,
        variables: shown,
        source,
        builder: builder.ok_or_else(missing)?,
        provisioners,
        verify,
        export: export.unwrap_or_default(),
        lint,
    };
    Ok((template, values))
}

fn check(cx: &mut Cx, top: &mut decode::ObjectReader, field: &'static str, name: String) -> Option<String> {
    match model::validate_name(&name) {
        Ok(()) => Some(name),
        Err(e) => {
            let span = top.node(field).map(|n| n.span).unwrap_or(top.span);
            cx.in_field(field, |cx| cx.error(span, e));
            None
        }
    }
}

fn read_version(top: &mut decode::ObjectReader, cx: &mut Cx, options: &LoadOptions) -> Option<VersionSpec> {
    let node = top.node("version");
    if let Some(v) = &options.version_override {
        return match v.parse::<VersionSpec>() {
            Ok(spec) => Some(spec),
            Err(e) => {
                cx.error(top.span, format!("--set-version: {e}"));
                None
            }
        };
    }
    match node {
        Some(node) => cx.in_field("version", |cx| parse_string(node, cx, |s| s.parse::<VersionSpec>())),
        None => Some(VersionSpec::Auto),
    }
}

impl Loaded {
    /// The same document resolved again with other build values (`build.id`,
    /// the version, `build.ssh_public_key`) and every variable pinned to the
    /// value it has here. Reads nothing: no template file, var-file or
    /// environment variable is consulted again, so both resolutions agree.
    pub fn reresolve(
        &self,
        build_id: String,
        version_override: Option<String>,
        ssh_public_key: String,
    ) -> Result<Loaded, TemplateError> {
        let options = LoadOptions {
            vars: VarInputs {
                cli: self.variable_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                files: Vec::new(),
                use_env: false,
            },
            build_id,
            version_override,
            ssh_public_key,
        };
        let (template, variable_values) = decode_template(&self.raw, &self.file, &self.dir, &options)?;
        Ok(Loaded {
            template,
            path: self.path.clone(),
            dir: self.dir.clone(),
            file: self.file.clone(),
            raw: self.raw.clone(),
            build_id: options.build_id,
            variable_values,
        })
    }

    /// The resolved template as JSON, secrets masked.
    pub fn resolved_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(&self.template).unwrap_or_default();
        crate::redact::scrub_json(&mut value);
        value
    }
}

#[cfg(test)]
mod tests {
    /// The modules `text` names through `crate::` (a `use crate::{a, b}` group included).
    fn crate_modules(text: &str) -> Vec<String> {
        let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
        let mut out = Vec::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    out.extend(group.split(',').map(|item| ident(item.trim())));
                }
                None => out.push(ident(rest)),
            }
        }
        out
    }

    #[test]
    fn reresolve_keeps_variable_values_and_takes_new_build_values() {
        use super::*;
        let text = r#"{ "name": "re", "version": "auto", "variables": { "role": { "default": "web" } },
            "builder": { "type": "null" },
            "provisioners": [ { "type": "shell-local", "inline": ["{{ var.role }} {{ build.version }} {{ build.id }}"] } ] }"#;
        let options = LoadOptions {
            vars: VarInputs { cli: vec![("role".into(), "db".into())], ..Default::default() },
            build_id: "id-1".into(),
            ..Default::default()
        };
        let inline = |l: &Loaded| match &l.template.provisioners[0].kind {
            ProvisionerKind::ShellLocal(s) => serde_json::to_value(&s.commands).unwrap()["inline"][0].clone(),
            _ => unreachable!("the template has one shell-local step"),
        };
        let loaded = load_bytes(Path::new("/t/re.json"), text.as_bytes().to_vec(), &options).unwrap();
        assert_eq!(inline(&loaded), "db auto id-1");
        let again = loaded.reresolve("id-2".into(), Some("2026.01.01.3".into()), String::new()).unwrap();
        assert_eq!(inline(&again), "db 2026.01.01.3 id-2", "the --var value stays without being given again");
        assert_eq!(again.template.version, VersionSpec::Exact("2026.01.01.3".into()));
        assert_eq!((again.build_id.as_str(), &again.variable_values), ("id-2", &loaded.variable_values));
    }

    /// The template is pure: parse, validate, resolve. Builders, stores and
    /// the rest depend on it, never the other way round.
    #[test]
    fn imports_nothing_from_builders_stores_communicators_or_export() {
        const FORBIDDEN: [&str; 4] = ["builder", "store", "communicator", "export"];
        let sample = format!("use {c}::{{redact, store::X}};\n{c}::builder::qemu", c = "crate");
        assert_eq!(crate_modules(&sample), ["redact", "store", "builder"]);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/template");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for module in crate_modules(&text) {
                assert!(!FORBIDDEN.contains(&module.as_str()), "{} uses crate::{module}", path.display());
            }
            checked += 1;
        }
        assert!(checked >= 10, "read the template sources");
    }
}
