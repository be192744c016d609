//! The checks behind the rules in [`super::rules`]. Each reads the typed
//! template for meaning (interpolated paths, parsed checksums) and the raw
//! tree for positions, so every finding points at the value at fault.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use super::Finding;
use super::rules::{self, Rule};
use super::walk::{self, as_bool, expressions, field, index, items, literal_text, members};
use crate::source::{Checksum, Location};
use crate::template::jsonc::{Node, NodeKind, Span};
use crate::template::{Builder, Commands, Direction, Loaded, ProvisionerKind, VersionSpec};

/// Marks the value lint gives a required variable nobody set; values that
/// contain it are not judged (a path made of it cannot be checked).
pub(super) const UNSET_PREFIX: &str = "<unset:";

/// Scripts larger than this are not scanned (they are not shell scripts).
const MAX_SCRIPT_BYTES: u64 = 4 << 20;

pub(super) struct Checker<'a> {
    loaded: &'a Loaded,
    raw: &'a Node,
    /// `--store`, for IB007.
    store: Option<&'a PathBuf>,
    pub findings: Vec<Finding>,
}

fn unset(s: &str) -> bool {
    s.contains(UNSET_PREFIX)
}

impl<'a> Checker<'a> {
    pub fn new(loaded: &'a Loaded, store: Option<&'a PathBuf>) -> Self {
        Checker { loaded, raw: &loaded.raw, store, findings: Vec::new() }
    }

    pub fn run_all(&mut self) {
        self.source();
        self.provisioner_files();
        self.secrets();
        self.reboots();
        self.verify();
        self.published_version();
        self.builder();
        self.pipes_to_shell();
        self.metadata();
        self.variables();
    }

    fn push(&mut self, rule: &'static Rule, span: Span, path: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            rule,
            file: self.loaded.file.clone(),
            span,
            path: path.into(),
            message: message.into(),
        });
    }

    /// `qemu` and `ec2` boot a machine (and publish); `null` does neither.
    fn boots_machine(&self) -> bool {
        !matches!(self.loaded.template.builder, Builder::Null)
    }

    /// IB001, IB003, IB013 and the source part of IB002.
    fn source(&mut self) {
        let download = self.loaded.template.source.as_ref().and_then(|s| s.download());
        let (Some((url, checksum)), Some(raw)) = (download, self.raw.get("source")) else {
            return;
        };
        let (url, checksum) = (url.to_string(), checksum.clone());
        let url_node = raw.get("url");
        let sum_node = raw.get("checksum");
        let (url_span, sum_span) = (url_node.map_or(raw.span, |n| n.span), sum_node.map_or(raw.span, |n| n.span));

        if matches!(checksum, Checksum::None) {
            self.push(
                rules::IB001,
                sum_span,
                "source.checksum",
                "`checksum` is `none`: the downloaded image is booted and published without any integrity check",
            );
        }

        static MOVING: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?i)(?:^|[/._\-])(latest|current|daily)(?:[/._\-]|$)").unwrap());
        // With an unset variable in the URL, judge the text as written.
        let judged = if unset(&url) { url_node.and_then(Node::as_str).unwrap_or("").to_string() } else { url.clone() };
        if let Some(m) = MOVING.captures(&judged).and_then(|c| c.get(1)) {
            let word = m.as_str();
            match &checksum {
                Checksum::Digest(_) => self.push(
                    rules::IB003,
                    url_span,
                    "source.url",
                    format!(
                        "the URL points at a moving target (`{word}`) but `checksum` is a fixed digest: \
                         the build breaks as soon as the image is updated upstream"
                    ),
                ),
                Checksum::None => self.push(
                    rules::IB003,
                    url_span,
                    "source.url",
                    format!("the URL points at a moving target (`{word}`) and nothing verifies what it serves"),
                ),
                Checksum::File(_) => {}
            }
        }

        if let Checksum::File(list) = &checksum
            && !unset(list)
        {
            match Location::parse(list, &self.loaded.dir) {
                Ok(Location::Http(u)) if u.scheme() == "http" => self.push(
                    rules::IB013,
                    sum_span,
                    "source.checksum",
                    format!(
                        "the checksum list `{u}` is fetched over plain HTTP: anyone on the path can replace \
                         the image and its checksum together"
                    ),
                ),
                Ok(Location::File(p)) if !p.exists() => self.push(
                    rules::IB002,
                    sum_span,
                    "source.checksum",
                    format!("the checksum list `{}` does not exist", p.display()),
                ),
                _ => {}
            }
        }
        if !unset(&url)
            && let Ok(Location::File(p)) = Location::parse(&url, &self.loaded.dir)
            && !p.exists()
        {
            self.push(
                rules::IB002,
                url_span,
                "source.url",
                format!("the source image `{}` does not exist", p.display()),
            );
        }
    }

    /// IB002 for provisioner `script`, `scripts` and upload `source`.
    fn provisioner_files(&mut self) {
        let raw_list = items(self.raw.get("provisioners"));
        for (i, (p, raw)) in self.loaded.template.provisioners.iter().zip(raw_list).enumerate() {
            let path = index("provisioners", i);
            match &p.kind {
                ProvisionerKind::Shell(s) => self.script_files(&s.commands, raw, &path),
                ProvisionerKind::ShellLocal(s) => self.script_files(&s.commands, raw, &path),
                ProvisionerKind::File(f) => {
                    if let (Direction::Upload, Some(src), Some(node)) = (f.direction, &f.source, raw.get("source"))
                        && !unset(&src.written)
                        && !src.resolved.exists()
                    {
                        self.push(
                            rules::IB002,
                            node.span,
                            field(&path, "source"),
                            format!("`{}` does not exist (looked for {})", src.written, src.resolved.display()),
                        );
                    }
                }
            }
        }
    }

    fn script_files(&mut self, commands: &Commands, raw: &Node, path: &str) {
        for (tp, node, p) in script_nodes(commands, raw, path) {
            if unset(&tp.written) {
                continue;
            }
            let problem = if tp.resolved.is_dir() {
                "is a directory, not a script"
            } else if !tp.resolved.exists() {
                "does not exist"
            } else {
                continue;
            };
            self.push(
                rules::IB002,
                node.span,
                p,
                format!("script `{}` {problem} (looked for {})", tp.written, tp.resolved.display()),
            );
        }
    }

    /// IB004: password-like fields with literal values, cloud-init passwords,
    /// AWS access keys and private keys anywhere in the file (comments too).
    fn secrets(&mut self) {
        let sensitive: BTreeSet<&str> =
            self.loaded.template.variables.iter().filter(|(_, v)| v.sensitive).map(|(k, _)| k.as_str()).collect();
        let mut found: Vec<(Span, String, String)> = Vec::new();
        walk::visit(self.raw, &mut |node, key, path| {
            let (Some(key), NodeKind::String(value)) = (key, &node.kind) else { return };
            if path.starts_with("variables.") || path.starts_with("lint.") || path == "$schema" {
                return;
            }
            if key.name == "user_data" {
                for (name, v) in yaml_passwords(value) {
                    if let Some(why) = secret_problem(&name, &v, &sensitive) {
                        found.push((node.span, path.to_string(), format!("cloud-init user data: {why}")));
                    }
                }
            } else if password_like(&key.name)
                && let Some(why) = secret_problem(&key.name, value, &sensitive)
            {
                found.push((node.span, path.to_string(), why));
            }
        });
        // A variable named like a secret, not `sensitive`, with a literal default
        // (sensitive ones with a default are IB011).
        for (key, decl) in members(self.raw.get("variables")) {
            let default = decl.get("default").and_then(|d| d.as_str().map(|s| (d, s)));
            if let Some((node, value)) = default
                && password_like(&key.name)
                && !sensitive.contains(key.name.as_str())
                && !value.trim().is_empty()
            {
                found.push((
                    node.span,
                    field(&field("variables", &key.name), "default"),
                    format!(
                        "variable `{}` looks like a secret but has a literal `default` and is not marked `sensitive`",
                        key.name
                    ),
                ));
            }
        }
        for (span, path, message) in found {
            self.push(rules::IB004, span, path, message);
        }

        static PATTERNS: LazyLock<[(Regex, &str); 2]> = LazyLock::new(|| {
            [
                (Regex::new(r"\bAKIA[0-9A-Z]{16}\b").unwrap(), "an AWS access key id (`AKIA…`)"),
                (
                    Regex::new(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----").unwrap(),
                    "a private key (`-----BEGIN … PRIVATE KEY-----`)",
                ),
            ]
        });
        let text = &self.loaded.file.text;
        for (re, what) in PATTERNS.iter() {
            for m in re.find_iter(text) {
                let already = self
                    .findings
                    .iter()
                    .any(|f| f.rule == rules::IB004 && f.span.start <= m.start() && m.start() < f.span.end);
                if !already {
                    let path = walk::path_at(self.raw, m.start());
                    self.push(
                        rules::IB004,
                        Span::new(m.start(), m.end()),
                        path,
                        format!("the template contains {what}"),
                    );
                }
            }
        }
    }

    /// IB005: a remote `shell` step that reboots without `expect_disconnect`.
    fn reboots(&mut self) {
        let raw_list = items(self.raw.get("provisioners"));
        for (i, (p, raw)) in self.loaded.template.provisioners.iter().zip(raw_list).enumerate() {
            let ProvisionerKind::Shell(shell) = &p.kind else { continue };
            if shell.expect_disconnect {
                continue;
            }
            let path = index("provisioners", i);
            let mut hits = Vec::new();
            for (j, item) in items(raw.get("inline")).iter().enumerate() {
                if let Some(cmd) = item.as_str().and_then(reboot_command) {
                    hits.push((
                        item.span,
                        index(&field(&path, "inline"), j),
                        format!(
                            "`{cmd}` restarts the machine, and without `expect_disconnect: true` \
                             the dropped SSH connection fails the build"
                        ),
                    ));
                }
            }
            for (tp, node, p) in script_nodes(&shell.commands, raw, &path) {
                if let Some((line, cmd)) = scan_script(&tp.resolved, reboot_command) {
                    hits.push((
                        node.span,
                        p,
                        format!(
                            "script `{}` restarts the machine (line {line}: `{cmd}`), and without \
                             `expect_disconnect: true` the dropped SSH connection fails the build",
                            tp.written
                        ),
                    ));
                }
            }
            for (span, path, message) in hits {
                self.push(rules::IB005, span, path, message);
            }
        }
    }

    /// IB009: `curl … | sh` in inline commands and scripts (remote and local).
    fn pipes_to_shell(&mut self) {
        let raw_list = items(self.raw.get("provisioners"));
        for (i, (p, raw)) in self.loaded.template.provisioners.iter().zip(raw_list).enumerate() {
            let commands = match &p.kind {
                ProvisionerKind::Shell(s) => &s.commands,
                ProvisionerKind::ShellLocal(s) => &s.commands,
                ProvisionerKind::File(_) => continue,
            };
            let path = index("provisioners", i);
            let mut hits = Vec::new();
            for (j, item) in items(raw.get("inline")).iter().enumerate() {
                if let Some(cmd) = item.as_str().and_then(pipe_to_shell) {
                    hits.push((
                        item.span,
                        index(&field(&path, "inline"), j),
                        format!("`{cmd}` runs whatever the server sends, unverified, as the build user"),
                    ));
                }
            }
            for (tp, node, p) in script_nodes(commands, raw, &path) {
                if let Some((line, cmd)) = scan_script(&tp.resolved, pipe_to_shell) {
                    hits.push((
                        node.span,
                        p,
                        format!(
                            "script `{}` pipes a download into a shell (line {line}: `{cmd}`): it runs whatever \
                             the server sends, unverified",
                            tp.written
                        ),
                    ));
                }
            }
            for (span, path, message) in hits {
                self.push(rules::IB009, span, path, message);
            }
        }
    }

    /// IB006 and IB015.
    fn verify(&mut self) {
        let node = self.raw.get("verify");
        let empty = self.loaded.template.verify.is_empty();
        if self.boots_machine() && empty {
            let span = node.map_or(self.raw.span, |n| n.span);
            let path = if node.is_some() { "verify" } else { "" };
            self.push(
                rules::IB006,
                span,
                path,
                "no `verify` checks: the image is published without any test that it boots into a working system",
            );
        }
        if !self.boots_machine() && !empty {
            let span = node.map_or(self.raw.span, |n| n.span);
            self.push(
                rules::IB015,
                span,
                "verify",
                "the `null` builder boots no machine, so these `verify` checks never run",
            );
        }
    }

    /// IB007: an explicit version that the store already holds.
    fn published_version(&mut self) {
        let VersionSpec::Exact(version) = &self.loaded.template.version else { return };
        let Some(node) = self.raw.get("version") else { return };
        if !self.boots_machine() {
            // The null builder publishes nothing.
            return;
        }
        let dir = crate::build::publish::store_path(self.loaded, self.store);
        // Never create a store just to look into it.
        if !dir.is_dir() {
            return;
        }
        let Ok(store) = crate::store::LocalStore::open_existing(&dir) else { return };
        let name = &self.loaded.template.name;
        if store.exists(name, version) {
            self.push(
                rules::IB007,
                node.span,
                "version",
                format!(
                    "{name}@{version} is already published in {}; published versions are immutable, \
                     so a build would be refused",
                    dir.display()
                ),
            );
        }
    }

    /// IB008 and IB012.
    fn builder(&mut self) {
        let Builder::Qemu(q) = &self.loaded.template.builder else { return };
        let Some(raw) = self.raw.get("builder") else { return };
        if q.shutdown_command.is_none() {
            let (span, path) = match raw.get("shutdown_command") {
                Some(n) => (n.span, "builder.shutdown_command"),
                None => (raw.span, "builder"),
            };
            self.push(
                rules::IB008,
                span,
                path,
                "no `shutdown_command`: the VM is stopped with an ACPI power-down, which is slower, \
                 and guests that ignore it are killed after `shutdown_timeout`",
            );
        }
        if let Some(node) = raw.get("accelerator")
            && node.as_str() == Some("kvm")
        {
            self.push(
                rules::IB012,
                node.span,
                "builder.accelerator",
                "`kvm` fails on hosts without /dev/kvm (CI runners, nested VMs); `auto` uses KVM when it is there",
            );
        }
    }

    /// IB010.
    fn metadata(&mut self) {
        let described = self.loaded.template.description.as_deref().is_some_and(|d| !d.trim().is_empty());
        if !described {
            let (span, path) = match self.raw.get("description") {
                Some(n) => (n.span, "description"),
                None => (self.raw.span, ""),
            };
            self.push(
                rules::IB010,
                span,
                path,
                "no `description`: `inspect`, manifests and colleagues have nothing to go by",
            );
        }
    }

    /// IB011 and IB014.
    fn variables(&mut self) {
        let mut used = BTreeSet::new();
        walk::visit(self.raw, &mut |node, _, _| {
            if let Some(s) = node.as_str() {
                for e in expressions(s) {
                    if let Some(name) = e.strip_prefix("var.") {
                        used.insert(name.trim().to_string());
                    }
                }
            }
        });
        let mut hits = Vec::new();
        for (key, decl) in members(self.raw.get("variables")) {
            let path = field("variables", &key.name);
            // An empty default stores no secret: it means "none unless given".
            if as_bool(decl.get("sensitive")) == Some(true)
                && let Some(default) = decl.get("default").filter(|d| d.as_str() != Some(""))
            {
                hits.push((
                    rules::IB011,
                    default.span,
                    field(&path, "default"),
                    format!(
                        "variable `{}` is `sensitive` but has a `default`: the secret is stored in the template",
                        key.name
                    ),
                ));
            }
            if !used.contains(&key.name) {
                hits.push((
                    rules::IB014,
                    key.span,
                    path,
                    format!("variable `{}` is declared but no `{{{{ var.{} }}}}` uses it", key.name, key.name),
                ));
            }
        }
        for (rule, span, path, message) in hits {
            self.push(rule, span, path, message);
        }
    }
}

/// `(path, raw node, JSON path)` of every script a `shell`/`shell-local` step names.
fn script_nodes<'n>(
    commands: &'n Commands,
    raw: &'n Node,
    path: &str,
) -> Vec<(&'n crate::template::TemplatePath, &'n Node, String)> {
    match commands {
        Commands::Inline(_) => Vec::new(),
        Commands::Script(tp) => raw.get("script").map(|n| (tp, n, field(path, "script"))).into_iter().collect(),
        Commands::Scripts(list) => list
            .iter()
            .zip(items(raw.get("scripts")))
            .enumerate()
            .map(|(j, (tp, n))| (tp, n, index(&field(path, "scripts"), j)))
            .collect(),
    }
}

/// The first line of a script where `matcher` finds something: `(line number, match)`.
fn scan_script(path: &Path, matcher: fn(&str) -> Option<String>) -> Option<(usize, String)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_SCRIPT_BYTES {
        return None;
    }
    let text = String::from_utf8_lossy(&std::fs::read(path).ok()?).into_owned();
    text.lines().enumerate().find_map(|(i, line)| matcher(line).map(|m| (i + 1, m)))
}

/// Strips a shell comment line.
fn code(line: &str) -> Option<&str> {
    let t = line.trim_start();
    (!t.starts_with('#')).then_some(t)
}

/// The reboot command in a shell line, if it reboots: `reboot`,
/// `shutdown -r`, `systemctl reboot`, `init 6` in command position.
pub(super) fn reboot_command(line: &str) -> Option<String> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"(?:^|[;&|(`{]|\bthen\b|\bdo\b|\belse\b|\bexec\b|\bnohup\b)\s*",
            r"(?:sudo\s+(?:-\S+\s+)*)?(?:/usr)?(?:/s?bin/)?",
            r"(reboot\b|shutdown\b[^;&|\n]*?\s(?:-[a-zA-Z]*r[a-zA-Z]*|--reboot)\b[^;&|\n]*|",
            r"systemctl\s+(?:-\S+\s+)*reboot\b|init\s+6\b)"
        ))
        .unwrap()
    });
    let line = code(line)?;
    RE.captures(line).and_then(|c| c.get(1)).map(|m| m.as_str().trim().to_string())
}

/// The offending part of a shell line that pipes a download into a shell.
pub(super) fn pipe_to_shell(line: &str) -> Option<String> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"\b(?:curl|wget)\b[^|;&\n]*\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:env\s+(?:\S+=\S*\s+)*)?",
            r"(?:/usr)?(?:/bin/)?(?:ba|z|da|k|fi)?sh\b",
            r"|\b(?:ba|z|da|k)?sh\s+(?:-\S+\s+)*[\x22']?\$\(\s*(?:curl|wget)\b[^)]*\)?",
            r"|<\(\s*(?:curl|wget)\b[^)]*\)?"
        ))
        .unwrap()
    });
    let line = code(line)?;
    RE.find(line).map(|m| m.as_str().trim().to_string())
}

/// Field names that hold secrets (`password`, `db_token`, `API_KEY`, …),
/// except those naming where a secret is (`private_key_file`) or about it.
pub(super) fn password_like(name: &str) -> bool {
    static LIKE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?i)(password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|^pw$|_pw$|^pass$|_pass$)",
        )
        .unwrap()
    });
    static ABOUT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(_file|_path|_url|_uri|_command|_cmd|_name|_id|_env|_var|_length|_len|_ttl|_type|_auth)$")
            .unwrap()
    });
    LIKE.is_match(name) && !ABOUT.is_match(name)
}

/// Why a password-like value is a problem, if it is: a literal, or a
/// variable that is not `sensitive`. `{{ env.X }}` and sensitive variables are fine.
pub(super) fn secret_problem(key: &str, value: &str, sensitive: &BTreeSet<&str>) -> Option<String> {
    let exprs = expressions(value);
    if let Some(name) = exprs.iter().filter_map(|e| e.strip_prefix("var.")).find(|n| !sensitive.contains(n.trim())) {
        return Some(format!(
            "`{key}` takes variable `{}`, which is not marked `sensitive`: its value shows in logs and `inspect`",
            name.trim()
        ));
    }
    let from_outside = exprs.iter().any(|e| e.starts_with("var.") || e.starts_with("env."));
    // `{{ "x" }}` is a literal too.
    let quoted = exprs.iter().any(|e| e.starts_with('"') || e.starts_with('\''));
    if !from_outside && (!literal_text(value).trim().is_empty() || quoted) {
        return Some(format!("`{key}` is a literal value: the secret ends up in version control and build history"));
    }
    None
}

/// `password:` / `plain_text_passwd:` entries of cloud-init YAML: `(key, value)`.
fn yaml_passwords(yaml: &str) -> Vec<(String, String)> {
    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(?m)^\s*(?:-\s*)?(password|plain_text_passwd)\s*:\s*(\S[^\n]*?)\s*$").unwrap());
    RE.captures_iter(yaml)
        .map(|c| {
            let v = c[2].trim_matches(|ch| ch == '"' || ch == '\'').to_string();
            (c[1].to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_reboots_in_command_position_only() {
        for yes in [
            "reboot",
            "sudo reboot",
            "sleep 1 && reboot",
            "(sleep 2; /sbin/reboot) &",
            "shutdown -r now",
            "sudo shutdown -r +1",
            "shutdown --reboot now",
            "systemctl reboot",
            "sudo systemctl --no-block reboot",
            "if true; then reboot; fi",
            "init 6",
        ] {
            assert!(reboot_command(yes).is_some(), "{yes}");
        }
        for no in ["echo rebooting", "echo reboot", "shutdown -h now", "poweroff", "# reboot", "systemctl restart ssh"]
        {
            assert_eq!(reboot_command(no), None, "{no}");
        }
    }

    #[test]
    fn finds_downloads_piped_into_shells() {
        for yes in [
            "curl -fsSL https://get.example.com | sh",
            "curl https://x | sudo -E bash -",
            "wget -O- https://x | bash",
            "wget -qO - https://x|sh",
            "sh -c \"$(curl -fsSL https://x)\"",
            "bash <(curl -s https://x)",
        ] {
            assert!(pipe_to_shell(yes).is_some(), "{yes}");
        }
        for no in ["curl -o install.sh https://x", "curl https://x | tee out", "echo hi | sh", "# curl x | sh"] {
            assert_eq!(pipe_to_shell(no), None, "{no}");
        }
    }

    #[test]
    fn password_like_names() {
        for yes in ["password", "DB_PASSWORD", "api_key", "ApiKey", "GITHUB_TOKEN", "secret", "aws_secret_access_key"] {
            assert!(password_like(yes), "{yes}");
        }
        for no in ["username", "private_key_file", "password_command", "token_url", "bypass", "compass", "ssh_pwauth"] {
            assert!(!password_like(no), "{no}");
        }
    }

    #[test]
    fn secret_values() {
        let sensitive: BTreeSet<&str> = ["pw"].into_iter().collect();
        assert!(secret_problem("password", "hunter2", &sensitive).is_some());
        assert!(secret_problem("password", "{{ \"hunter2\" }}", &sensitive).is_some());
        assert!(secret_problem("password", "{{ var.user }}", &sensitive).unwrap().contains("not marked"));
        assert_eq!(secret_problem("password", "{{ var.pw }}", &sensitive), None);
        assert_eq!(secret_problem("password", "{{ env.PW }}", &sensitive), None);
        assert_eq!(secret_problem("password", "", &sensitive), None);
    }

    #[test]
    fn yaml_password_lines() {
        let y = "#cloud-config\nusers:\n  - name: a\n    plain_text_passwd: 'hunter2'\npassword: {{ var.pw }}\n";
        assert_eq!(
            yaml_passwords(y),
            vec![
                ("plain_text_passwd".to_string(), "hunter2".to_string()),
                ("password".to_string(), "{{ var.pw }}".to_string())
            ]
        );
    }
}
