//! `{{ ... }}` interpolation in template strings.
//!
//! Supported: `var.NAME`, `env.NAME`, `build.name|version|id`,
//! `template_dir`, a quoted literal (`{{ "{{" }}` writes `{{`), and — only in
//! fields read after the HTTP server starts — `http.ip|port|url`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything must resolve now.
    Eager,
    /// `http.*` is left in place for the builder to fill in at run time.
    KeepHttp,
}

#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("undefined variable `{0}`")]
    UndefinedVariable(String),
    #[error("required variable `{0}` is not set")]
    RequiredUnset(String),
    #[error("environment variable `{0}` is not set")]
    UnsetEnv(String),
    #[error("`{0}` is not available here")]
    NotAvailable(String),
    #[error("unknown interpolation `{{{{ {0} }}}}`")]
    Unknown(String),
    #[error("unclosed `{{{{` in string")]
    Unclosed,
}

impl InterpError {
    pub fn help(&self) -> Option<String> {
        match self {
            InterpError::UndefinedVariable(name) => {
                Some(format!("declare it under `variables`, e.g. \"{name}\": {{ \"default\": \"...\" }}"))
            }
            InterpError::RequiredUnset(name) => Some(format!(
                "set it with `--var {name}=...`, a `--var-file`, or the environment variable IMGBUILD_VAR_{name}"
            )),
            InterpError::Unknown(_) => {
                Some(
                "available: var.NAME, env.NAME, build.name, build.version, build.id, build.ssh_public_key, template_dir"
                    .into(),
            )
            }
            InterpError::NotAvailable(what) if what.starts_with("http.") => {
                Some("`http.*` works only in `boot_command` and `http_content`".into())
            }
            _ => None,
        }
    }
}

/// The trimmed expressions of the `{{ ... }}` placeholders in `s`.
pub fn expressions(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    out
}

/// The value of one variable as interpolation sees it.
#[derive(Debug, Clone)]
pub enum VarValue {
    Set(String),
    RequiredUnset,
}

#[derive(Debug, Default, Clone)]
pub struct Interpolator {
    pub vars: BTreeMap<String, VarValue>,
    /// `build.*`; `None` while `name`/`version` themselves are decoded.
    pub build: Option<BuildVars>,
    pub template_dir: String,
}

#[derive(Debug, Clone)]
pub struct BuildVars {
    pub name: String,
    pub version: String,
    pub id: String,
    /// The per-build SSH public key, for installer answer files.
    pub ssh_public_key: String,
}

impl Interpolator {
    pub fn render(&self, input: &str, mode: Mode) -> Result<String, InterpError> {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(InterpError::Unclosed)?;
            let expr = after[..end].trim();
            match self.resolve(expr, mode)? {
                Some(value) => out.push_str(&value),
                None => out.push_str(&rest[start..start + 2 + end + 2]),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `Ok(None)` keeps the expression as written (a run-time placeholder).
    fn resolve(&self, expr: &str, mode: Mode) -> Result<Option<String>, InterpError> {
        // `{{ .Path }}`-style placeholders belong to `execute_command` (Packer syntax).
        if expr.starts_with('.') {
            return Ok(None);
        }
        if let Some(literal) = quoted_literal(expr) {
            return Ok(Some(literal.to_string()));
        }
        if expr == "template_dir" {
            return Ok(Some(self.template_dir.clone()));
        }
        let (namespace, name) = expr.split_once('.').ok_or_else(|| InterpError::Unknown(expr.into()))?;
        match namespace {
            "var" => match self.vars.get(name) {
                Some(VarValue::Set(v)) => Ok(Some(v.clone())),
                Some(VarValue::RequiredUnset) => Err(InterpError::RequiredUnset(name.into())),
                None => Err(InterpError::UndefinedVariable(name.into())),
            },
            "env" => std::env::var(name).map(Some).map_err(|_| InterpError::UnsetEnv(name.into())),
            "build" => self.build_var(name).map(Some),
            "http" if matches!(name, "ip" | "port" | "url") => match mode {
                Mode::KeepHttp => Ok(None),
                Mode::Eager => Err(InterpError::NotAvailable(expr.into())),
            },
            _ => Err(InterpError::Unknown(expr.into())),
        }
    }

    fn build_var(&self, name: &str) -> Result<String, InterpError> {
        let build = self.build.as_ref().ok_or_else(|| InterpError::NotAvailable(format!("build.{name}")))?;
        match name {
            "name" => Ok(build.name.clone()),
            "version" => Ok(build.version.clone()),
            "id" => Ok(build.id.clone()),
            // Tools that read templates without building (lint, changed) have no key: a stand-in.
            "ssh_public_key" if build.ssh_public_key.is_empty() => Ok("ssh-ed25519 <per-build key>".into()),
            "ssh_public_key" => Ok(build.ssh_public_key.clone()),
            _ => Err(InterpError::Unknown(format!("build.{name}"))),
        }
    }
}

fn quoted_literal(expr: &str) -> Option<&str> {
    ['"', '\''].iter().find_map(|q| expr.strip_prefix(*q).and_then(|e| e.strip_suffix(*q)))
}

/// Fills in the run-time `http.*` placeholders kept by [`Mode::KeepHttp`].
pub fn render_http(input: &str, ip: &str, port: u16) -> String {
    let url = format!("http://{ip}:{port}");
    let mut out = input.to_string();
    for (name, value) in [("ip", ip.to_string()), ("port", port.to_string()), ("url", url)] {
        for spaced in [format!("{{{{ http.{name} }}}}"), format!("{{{{http.{name}}}}}")] {
            out = out.replace(&spaced, &value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp() -> Interpolator {
        let mut vars = BTreeMap::new();
        vars.insert("user".into(), VarValue::Set("root".into()));
        vars.insert("pw".into(), VarValue::RequiredUnset);
        Interpolator {
            vars,
            build: Some(BuildVars {
                name: "n".into(),
                version: "1.0.0".into(),
                id: "b1".into(),
                ssh_public_key: String::new(),
            }),
            template_dir: "/t".into(),
        }
    }

    #[test]
    fn renders_all_namespaces() {
        let s = interp().render("{{ var.user }}@{{build.name}}-{{ build.version }} {{ template_dir }}", Mode::Eager);
        assert_eq!(s.unwrap(), "root@n-1.0.0 /t");
        assert_eq!(interp().render("{{ \"{{\" }} x", Mode::Eager).unwrap(), "{{ x");
    }

    #[test]
    fn reports_undefined_and_unset() {
        assert!(matches!(interp().render("{{ var.nope }}", Mode::Eager), Err(InterpError::UndefinedVariable(_))));
        assert!(matches!(interp().render("{{ var.pw }}", Mode::Eager), Err(InterpError::RequiredUnset(_))));
        assert!(matches!(interp().render("{{ var.user", Mode::Eager), Err(InterpError::Unclosed)));
        assert!(matches!(interp().render("{{ http.ip }}", Mode::Eager), Err(InterpError::NotAvailable(_))));
    }

    #[test]
    fn keeps_http_placeholders_until_run_time() {
        let kept = interp().render("x {{ http.url }}/ks", Mode::KeepHttp).unwrap();
        assert_eq!(kept, "x {{ http.url }}/ks");
        assert_eq!(render_http(&kept, "10.0.2.2", 8080), "x http://10.0.2.2:8080/ks");
    }
}
