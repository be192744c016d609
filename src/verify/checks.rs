//! Per-kind probes: the guest command each check runs, and the host-side
//! evaluation of its output.
//!
//! Probe scripts assign every template value to a shell variable through
//! [`shell_quote`] and only ever expand it in double quotes, so no value is
//! parsed as shell syntax. Names that would read as an option (leading `-`)
//! are refused before anything runs.

use std::collections::BTreeMap;
use std::time::Duration;

use regex::{Regex, RegexBuilder};

use super::{CommandOutput, GuestExec, proc_net};
use crate::communicator::shell_quote;
use crate::template::{CheckKind, FileMode};

/// How much of a file's content `file` checks fetch for `contains`/`matches`.
pub(crate) const CONTENT_CAP: u64 = 1 << 20;
/// The line after which a `file` probe prints the file's content.
pub(crate) const CONTENT_MARKER: &str = "===imgbuild-content===";
/// Longest excerpt of guest output quoted in an `actual` value.
const EXCERPT_CHARS: usize = 80;
/// Linux truncates `/proc/PID/comm` to 15 bytes.
const COMM_LEN: usize = 15;
/// `systemctl is-enabled` states for which it exits 0.
const SYSTEMD_ENABLED: [&str; 7] =
    ["enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient"];

/// One checked property: `expected` comes from [`expectations`], in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Prop {
    pub expected: String,
    pub actual: String,
    pub ok: bool,
}

impl Prop {
    fn new(expected: String, actual: String, ok: bool) -> Self {
        Prop { expected, actual, ok }
    }
}

// ---------------------------------------------------------------- expectations and names

/// `(enabled, running)` to check: `running: true` when neither is given.
fn service_wants(enabled: Option<bool>, running: Option<bool>) -> (Option<bool>, Option<bool>) {
    if enabled.is_none() && running.is_none() { (None, Some(true)) } else { (enabled, running) }
}

fn kv(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key}={value}")
}

fn normalize_sha256(value: &str) -> String {
    let v = value.trim();
    let v = v.strip_prefix("sha256:").unwrap_or(v);
    v.to_ascii_lowercase()
}

fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Every property a check compares, as `key=value`, in evaluation order.
pub(crate) fn expectations(kind: &CheckKind) -> Vec<String> {
    let mut out = Vec::new();
    match kind {
        CheckKind::Service { enabled, running, .. } => {
            let (enabled, running) = service_wants(*enabled, *running);
            if let Some(r) = running {
                out.push(kv("running", r));
            }
            if let Some(e) = enabled {
                out.push(kv("enabled", e));
            }
        }
        CheckKind::Port { listening, .. } => out.push(kv("listening", listening)),
        CheckKind::File { exists, mode, owner, contains, matches, sha256, .. } => {
            out.push(kv("exists", exists));
            if *exists {
                if let Some(m) = mode {
                    out.push(kv("mode", mode_text(m.0)));
                }
                if let Some(o) = owner {
                    out.push(kv("owner", o));
                }
                if let Some(c) = contains {
                    out.push(format!("contains={c:?}"));
                }
                if let Some(m) = matches {
                    out.push(format!("matches=/{m}/"));
                }
                if let Some(s) = sha256 {
                    out.push(kv("sha256", normalize_sha256(s)));
                }
            }
        }
        CheckKind::Package { installed, .. } => out.push(kv("installed", installed)),
        CheckKind::Command { exit_code, stdout_matches, stderr_empty, .. } => {
            out.push(kv("exit_code", exit_code.unwrap_or(0)));
            if let Some(re) = stdout_matches {
                out.push(format!("stdout_matches=/{re}/"));
            }
            if let Some(e) = stderr_empty {
                out.push(kv("stderr_empty", e));
            }
        }
        CheckKind::User { exists, groups, shell, .. } => {
            out.push(kv("exists", exists));
            if *exists {
                if !groups.is_empty() {
                    out.push(format!("groups=[{}]", groups.join(", ")));
                }
                if let Some(s) = shell {
                    out.push(kv("shell", s));
                }
            }
        }
        CheckKind::BootTimeMax { boot_time_max } => out.push(format!("boot_time<={boot_time_max}")),
    }
    out
}

/// A readable name for a check without one, e.g. `service ssh running`.
pub(crate) fn default_name(kind: &CheckKind) -> String {
    match kind {
        CheckKind::Service { service, enabled, running } => {
            let (enabled, running) = service_wants(*enabled, *running);
            let mut states = Vec::new();
            if let Some(r) = running {
                states.push(if r { "running" } else { "not running" });
            }
            if let Some(e) = enabled {
                states.push(if e { "enabled" } else { "disabled" });
            }
            format!("service {service} {}", states.join(" and "))
        }
        CheckKind::Port { port, listening, protocol } => {
            let state = if *listening { "listening" } else { "not listening" };
            format!("port {port}/{} {state}", protocol.to_ascii_lowercase())
        }
        CheckKind::File { file, exists, .. } => {
            if *exists {
                format!("file {file}")
            } else {
                format!("file {file} absent")
            }
        }
        CheckKind::Package { package, installed, .. } => {
            let state = if *installed { "installed" } else { "not installed" };
            format!("package {package} {state}")
        }
        CheckKind::Command { command, .. } => {
            let one_line: String = command.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("command `{}`", truncate_chars(&one_line, 50))
        }
        CheckKind::User { user, exists, .. } => {
            let state = if *exists { "exists" } else { "absent" };
            format!("user {user} {state}")
        }
        CheckKind::BootTimeMax { boot_time_max } => format!("boot time <= {boot_time_max}"),
    }
}

// ---------------------------------------------------------------- evaluation

/// Runs a check's probe and compares. `Err` is a check that could not be
/// evaluated (SSH failure, bad regex, unusable probe output); it fails.
pub(crate) async fn evaluate(
    guest: &dyn GuestExec,
    kind: &CheckKind,
    boot_time: Option<Duration>,
) -> Result<Vec<Prop>, String> {
    match kind {
        CheckKind::Service { service, enabled, running } => {
            let (enabled, running) = service_wants(*enabled, *running);
            let command = service_command(service)?;
            let out = run(guest, &command).await?;
            eval_service(service, enabled, running, &out)
        }
        CheckKind::Port { port, listening, protocol } => {
            let udp = parse_protocol(protocol)?;
            let out = run(guest, port_command(udp)).await?;
            eval_port(*port, *listening, udp, &out)
        }
        CheckKind::File { file, exists, mode, owner, contains, matches, sha256 } => {
            let spec = FileSpec {
                exists: *exists,
                mode: *mode,
                owner: owner.as_deref(),
                contains: contains.as_deref(),
                matches: matches.as_deref().map(|m| compile(m, "matches")).transpose()?,
                sha256: sha256.as_deref(),
            };
            let command = file_command(file, spec.wants_hash(), spec.wants_content());
            let out = run(guest, &command).await?;
            eval_file(&spec, &out)
        }
        CheckKind::Package { package, installed } => {
            let command = package_command(package)?;
            let out = run(guest, &command).await?;
            eval_package(*installed, &out)
        }
        CheckKind::Command { command, exit_code, stdout_matches, stderr_empty } => {
            let re = stdout_matches.as_deref().map(|m| compile(m, "stdout_matches")).transpose()?;
            let out = run(guest, command).await?;
            Ok(eval_command(exit_code.unwrap_or(0), stdout_matches.as_deref().zip(re.as_ref()), *stderr_empty, &out))
        }
        CheckKind::User { user, exists, groups, shell } => {
            let command = user_command(user)?;
            let out = run(guest, &command).await?;
            eval_user(user, *exists, groups, shell.as_deref(), &out)
        }
        CheckKind::BootTimeMax { boot_time_max } => Ok(vec![eval_boot(boot_time_max, boot_time)]),
    }
}

async fn run(guest: &dyn GuestExec, command: &str) -> Result<CommandOutput, String> {
    guest.run(command).await.map_err(|e| crate::error::chain(&e))
}

fn compile(pattern: &str, field: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .multi_line(true)
        .build()
        .map_err(|e| format!("invalid `{field}` regular expression: {e}"))
}

/// Refuses values a guest tool would read as an option.
fn plain_name<'a>(what: &str, name: &'a str) -> Result<&'a str, String> {
    if name.is_empty() || name.starts_with('-') || name.contains(['\n', '\0']) {
        Err(format!("invalid {what} name {name:?}"))
    } else {
        Ok(name)
    }
}

/// The message for a probe whose output lacks its markers.
fn probe_failed(what: &str, out: &CommandOutput) -> String {
    let status = match out.exit_code {
        Some(code) => format!("exit status {code}"),
        None => "no exit status".to_owned(),
    };
    let stderr = last_line(&out.stderr);
    if stderr.is_empty() {
        format!("the {what} probe printed nothing usable ({status})")
    } else {
        format!("the {what} probe failed ({status}): {stderr}")
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// A short quoted excerpt of guest output for an `actual` value.
fn excerpt(text: &str) -> String {
    let text = text.strip_suffix('\n').unwrap_or(text);
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((i, _)) => format!("{:?}…", &text[..i]),
        None => format!("{text:?}"),
    }
}

/// `key=value` lines before the first line starting with `===`.
fn header_fields(stdout: &str) -> BTreeMap<&str, &str> {
    let mut fields = BTreeMap::new();
    for line in stdout.lines() {
        if line.starts_with("===") {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            fields.entry(k).or_insert(v);
        }
    }
    fields
}

/// Repeated `key=value` lines (anywhere before the first `===`).
fn header_values<'a>(stdout: &'a str, key: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .take_while(|l| !l.starts_with("==="))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

/// The lines between `===NAME` and the next `===` line.
fn section<'a>(stdout: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let marker = format!("==={name}");
    let mut lines = stdout.lines();
    lines.find(|l| *l == marker)?;
    Some(lines.take_while(|l| !l.starts_with("===")).collect())
}

// ---------------------------------------------------------------- service

pub(crate) fn service_command(name: &str) -> Result<String, String> {
    let q = shell_quote(plain_name("service", name)?);
    Ok(format!(
        r#"n={q}
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  echo init=systemd
  printf 'is-enabled=%s\n' "$(systemctl is-enabled -- "$n" 2>/dev/null)"
  printf 'is-active=%s\n' "$(systemctl is-active -- "$n" 2>/dev/null)"
else
  echo init=other
  for c in "$n" "${{n}}d"; do
    if p=$(pidof "$c" 2>/dev/null); then printf 'pidof=%s %s\n' "$c" "$p"; fi
  done
  for f in /etc/init.d/"$n" /etc/init.d/"${{n}}d" /etc/init.d/S??"$n" /etc/init.d/S??"${{n}}d" /etc/rc[0-9S].d/S??"$n" /etc/rc[0-9S].d/S??"${{n}}d" /etc/runlevels/*/"$n" /etc/runlevels/*/"${{n}}d"; do
    if [ -f "$f" ] && [ -x "$f" ]; then printf 'initscript=%s\n' "$f"; fi
  done
  echo ===comm
  cat /proc/[0-9]*/comm 2>/dev/null
  echo ===inittab
  head -c 65536 /etc/inittab 2>/dev/null
fi
exit 0
"#
    ))
}

fn comm_name(name: &str) -> &str {
    let mut end = name.len().min(COMM_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// An active `/etc/inittab` entry whose command mentions one of `names`.
fn inittab_entry<'a>(lines: &[&'a str], names: &[&str]) -> Option<&'a str> {
    lines.iter().map(|l| l.trim()).find(|line| {
        if line.is_empty() || line.starts_with('#') {
            return false;
        }
        let fields: Vec<&str> = line.splitn(4, ':').collect();
        let process = match fields.as_slice() {
            [_, _, action, process] => {
                if *action == "off" {
                    return false;
                }
                *process
            }
            _ => line,
        };
        process
            .split(|c: char| c.is_whitespace() || matches!(c, '/' | ';' | '"' | '\'' | '&' | '|'))
            .any(|word| names.contains(&word))
    })
}

fn eval_service(
    name: &str,
    enabled: Option<bool>,
    running: Option<bool>,
    out: &CommandOutput,
) -> Result<Vec<Prop>, String> {
    let fields = header_fields(&out.stdout);
    let daemon = format!("{name}d");
    let names = [name, daemon.as_str()];
    let mut props = Vec::new();
    match fields.get("init").copied() {
        Some("systemd") => {
            let show = |v: &str| {
                if v.is_empty() { "systemd: no such unit".to_owned() } else { format!("systemd: {v}") }
            };
            if let Some(want) = running {
                let state = fields.get("is-active").copied().unwrap_or("");
                let have = matches!(state, "active" | "reloading");
                props.push(Prop::new(kv("running", want), format!("running={have} ({})", show(state)), have == want));
            }
            if let Some(want) = enabled {
                let state = fields.get("is-enabled").copied().unwrap_or("");
                let have = SYSTEMD_ENABLED.contains(&state);
                props.push(Prop::new(kv("enabled", want), format!("enabled={have} ({})", show(state)), have == want));
            }
        }
        Some("other") => {
            if let Some(want) = running {
                let pidof = header_values(&out.stdout, "pidof");
                let comms = section(&out.stdout, "comm").unwrap_or_default();
                let (have, detail) = if let Some(found) = pidof.first() {
                    let (proc_name, pids) = found.split_once(' ').unwrap_or((found, ""));
                    (true, format!("process {proc_name}, pid {}", pids.trim()))
                } else if let Some(comm) =
                    comms.iter().map(|c| c.trim()).find(|c| names.iter().any(|n| comm_name(n) == *c))
                {
                    (true, format!("process {comm}"))
                } else {
                    (false, format!("no process named {name} or {daemon}"))
                };
                props.push(Prop::new(kv("running", want), format!("running={have} ({detail})"), have == want));
            }
            if let Some(want) = enabled {
                let scripts = header_values(&out.stdout, "initscript");
                let inittab = section(&out.stdout, "inittab").unwrap_or_default();
                let (have, detail) = if let Some(script) = scripts.first() {
                    (true, (*script).to_owned())
                } else if let Some(line) = inittab_entry(&inittab, &names) {
                    (true, format!("/etc/inittab: {line}"))
                } else {
                    (false, format!("no init script or inittab entry for {name} or {daemon}"))
                };
                props.push(Prop::new(kv("enabled", want), format!("enabled={have} ({detail})"), have == want));
            }
        }
        _ => return Err(probe_failed("service", out)),
    }
    Ok(props)
}

// ---------------------------------------------------------------- port

fn parse_protocol(protocol: &str) -> Result<bool, String> {
    match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Ok(false),
        "udp" => Ok(true),
        other => Err(format!("unsupported protocol {other:?} (use \"tcp\" or \"udp\")")),
    }
}

pub(crate) fn port_command(udp: bool) -> &'static str {
    if udp {
        "for f in /proc/net/udp /proc/net/udp6; do if [ -r \"$f\" ]; then echo \"===$f\"; cat \"$f\"; fi; done; exit 0"
    } else {
        "for f in /proc/net/tcp /proc/net/tcp6; do if [ -r \"$f\" ]; then echo \"===$f\"; cat \"$f\"; fi; done; exit 0"
    }
}

fn eval_port(port: u16, want: bool, udp: bool, out: &CommandOutput) -> Result<Vec<Prop>, String> {
    let proto = if udp { "udp" } else { "tcp" };
    if !out.stdout.lines().any(|l| l.starts_with("===/proc/net/")) {
        return Err(format!("cannot read /proc/net/{proto} in the guest ({})", probe_failed("port", out)));
    }
    let listening: Vec<proc_net::Socket> =
        proc_net::parse_table(&out.stdout).into_iter().filter(|s| s.is_listening(udp)).collect();
    let mut on_port: Vec<String> = Vec::new();
    for socket in listening.iter().filter(|s| s.local_port == port) {
        let shown = socket.local_display();
        if !on_port.contains(&shown) {
            on_port.push(shown);
        }
    }
    let have = !on_port.is_empty();
    let actual = if have {
        format!("listening=true ({})", on_port.join(", "))
    } else {
        let mut ports: Vec<u16> = listening.iter().map(|s| s.local_port).collect();
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            format!("listening=false (no listening {proto} sockets)")
        } else {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            format!("listening=false (listening {proto} ports: {})", list.join(", "))
        }
    };
    Ok(vec![Prop::new(kv("listening", want), actual, have == want)])
}

// ---------------------------------------------------------------- file

struct FileSpec<'a> {
    exists: bool,
    mode: Option<FileMode>,
    owner: Option<&'a str>,
    contains: Option<&'a str>,
    matches: Option<Regex>,
    sha256: Option<&'a str>,
}

impl FileSpec<'_> {
    fn wants_hash(&self) -> bool {
        self.exists && self.sha256.is_some()
    }

    fn wants_content(&self) -> bool {
        self.exists && (self.contains.is_some() || self.matches.is_some())
    }
}

pub(crate) fn file_command(path: &str, hash: bool, content: bool) -> String {
    let mut regular = String::new();
    if hash || content {
        regular.push_str("    if [ -r \"$f\" ]; then\n");
        if hash {
            regular.push_str("      printf 'sha256=%s\\n' \"$(sha256sum < \"$f\" 2>/dev/null | cut -d' ' -f1)\"\n");
        }
        if content {
            regular.push_str("      printf 'size=%s\\n' \"$(wc -c < \"$f\" 2>/dev/null)\"\n");
            regular.push_str(&format!("      echo '{CONTENT_MARKER}'\n"));
            regular.push_str(&format!("      head -c {CONTENT_CAP} < \"$f\"\n"));
        }
        regular.push_str("    else\n      echo readable=no\n    fi\n");
    }
    format!(
        "f={q}\n\
         if [ -e \"$f\" ]; then\n\
         \x20 echo exists=yes\n\
         \x20 printf 'stat=%s\\n' \"$(stat -L -c '%a %u %U %F' -- \"$f\" 2>/dev/null)\"\n\
         \x20 if [ -f \"$f\" ]; then\n\
         \x20   echo regular=yes\n\
         {regular}\
         \x20 fi\n\
         else\n\
         \x20 echo exists=no\n\
         fi\n\
         exit 0\n",
        q = shell_quote(path)
    )
}

fn eval_file(spec: &FileSpec, out: &CommandOutput) -> Result<Vec<Prop>, String> {
    let fields = header_fields(&out.stdout);
    let exists = match fields.get("exists").copied() {
        Some("yes") => true,
        Some("no") => false,
        _ => return Err(probe_failed("file", out)),
    };
    let mut props = vec![Prop::new(kv("exists", spec.exists), kv("exists", exists), exists == spec.exists)];
    if !spec.exists {
        return Ok(props);
    }
    let missing = |key: &str, why: &str| format!("{key}=n/a ({why})");
    let stat = fields.get("stat").copied().unwrap_or("");
    let mut stat_words = stat.splitn(4, ' ');
    let (mode, uid, user) = (stat_words.next(), stat_words.next(), stat_words.next());
    let regular = fields.get("regular") == Some(&"yes");
    let unreadable = fields.get("readable") == Some(&"no");
    // Why content or hash is unavailable, if it is.
    let no_data = if !exists {
        Some("no such file")
    } else if !regular {
        Some("not a regular file")
    } else if unreadable {
        Some("not readable")
    } else {
        None
    };

    if let Some(want) = spec.mode {
        let expected = kv("mode", mode_text(want.0));
        let have = mode.filter(|m| !m.is_empty()).and_then(|m| u32::from_str_radix(m, 8).ok());
        props.push(match (exists, have) {
            (false, _) => Prop::new(expected, missing("mode", "no such file"), false),
            (true, None) => Prop::new(expected, missing("mode", "stat failed"), false),
            (true, Some(m)) => Prop::new(expected, kv("mode", mode_text(m)), m & 0o7777 == want.0 & 0o7777),
        });
    }
    if let Some(want) = spec.owner {
        let expected = kv("owner", want);
        props.push(match (exists, user, uid) {
            (false, _, _) => Prop::new(expected, missing("owner", "no such file"), false),
            (true, Some(name), Some(uid)) if !name.is_empty() => {
                let shown = if name == "UNKNOWN" { format!("owner={uid}") } else { kv("owner", name) };
                Prop::new(expected, shown, want == name || want == uid)
            }
            _ => Prop::new(expected, missing("owner", "stat failed"), false),
        });
    }

    let content = out
        .stdout
        .split_once(&format!("\n{CONTENT_MARKER}\n"))
        .map(|(_, c)| c)
        .or_else(|| out.stdout.strip_prefix(&format!("{CONTENT_MARKER}\n")));
    let size: Option<u64> = fields.get("size").and_then(|s| s.trim().parse().ok());
    let partial = match size {
        Some(n) if n > CONTENT_CAP => format!(" (searched the first 1 MiB of {n} bytes)"),
        _ => String::new(),
    };
    if let Some(want) = spec.contains {
        let expected = format!("contains={want:?}");
        props.push(match (no_data, content) {
            (Some(why), _) => Prop::new(expected, missing("contains", why), false),
            (None, None) => Prop::new(expected, missing("contains", "content not received"), false),
            (None, Some(text)) => {
                let have = text.contains(want);
                let actual = if have {
                    format!("contains=true{partial}")
                } else {
                    format!("contains=false (content: {}){partial}", excerpt(text))
                };
                Prop::new(expected, actual, have)
            }
        });
    }
    if let Some(re) = &spec.matches {
        let expected = format!("matches=/{}/", re.as_str());
        props.push(match (no_data, content) {
            (Some(why), _) => Prop::new(expected, missing("matches", why), false),
            (None, None) => Prop::new(expected, missing("matches", "content not received"), false),
            (None, Some(text)) => match re.find(text) {
                Some(m) => Prop::new(expected, format!("matches=true ({}){partial}", excerpt(m.as_str())), true),
                None => Prop::new(expected, format!("matches=false (content: {}){partial}", excerpt(text)), false),
            },
        });
    }
    if let Some(want) = spec.sha256 {
        let want = normalize_sha256(want);
        let expected = kv("sha256", &want);
        let have = fields.get("sha256").copied().unwrap_or("").trim();
        props.push(match no_data {
            Some(why) => Prop::new(expected, missing("sha256", why), false),
            None if have.is_empty() => Prop::new(expected, missing("sha256", "sha256sum failed"), false),
            None => Prop::new(expected, kv("sha256", have), have == want),
        });
    }
    Ok(props)
}

// ---------------------------------------------------------------- package

pub(crate) fn package_command(name: &str) -> Result<String, String> {
    let q = shell_quote(plain_name("package", name)?);
    Ok(format!(
        r#"p={q}
if command -v dpkg-query >/dev/null 2>&1; then
  echo manager=dpkg
  s=$(dpkg-query -W -f='${{Status}}' "$p" 2>/dev/null); echo "rc=$?"
  printf 'status=%s\n' "$s"
elif command -v rpm >/dev/null 2>&1; then
  echo manager=rpm
  s=$(rpm -q "$p" 2>&1); echo "rc=$?"
  printf 'status=%s\n' "$s"
elif command -v apk >/dev/null 2>&1; then
  echo manager=apk
  s=$(apk info -e "$p" 2>&1); echo "rc=$?"
  printf 'status=%s\n' "$s"
else
  echo manager=none
fi
exit 0
"#
    ))
}

fn eval_package(want: bool, out: &CommandOutput) -> Result<Vec<Prop>, String> {
    let fields = header_fields(&out.stdout);
    let manager = match fields.get("manager").copied() {
        Some("none") => {
            return Err("no package manager in the guest (looked for dpkg-query, rpm and apk)".to_owned());
        }
        Some(m) => m,
        None => return Err(probe_failed("package", out)),
    };
    let rc_ok = fields.get("rc").copied() == Some("0");
    // `status=` may span lines (rpm prints one line per installed version).
    let status = out.stdout.split_once("\nstatus=").map(|(_, s)| s.trim()).unwrap_or("");
    let status_line = status.lines().next().unwrap_or("").trim();
    let (have, detail) = match manager {
        "dpkg" => {
            let state = status.split_whitespace().nth(2);
            let have = rc_ok && state == Some("installed");
            let shown = if status.is_empty() { "not known to dpkg" } else { status_line };
            (have, format!("dpkg: {shown}"))
        }
        "rpm" => (rc_ok, format!("rpm: {status_line}")),
        _ => {
            let shown = if rc_ok { "installed" } else { "not installed" };
            (rc_ok, format!("{manager}: {shown}"))
        }
    };
    Ok(vec![Prop::new(kv("installed", want), format!("installed={have} ({detail})"), have == want)])
}

// ---------------------------------------------------------------- command

fn eval_command(
    want_code: i32,
    stdout_matches: Option<(&str, &Regex)>,
    stderr_empty: Option<bool>,
    out: &CommandOutput,
) -> Vec<Prop> {
    let mut props = Vec::new();
    let code_ok = out.exit_code == Some(want_code);
    let mut actual = match out.exit_code {
        Some(code) => kv("exit_code", code),
        None => "exit_code=none (no exit status)".to_owned(),
    };
    if !code_ok {
        let line = last_line(&out.stderr);
        if !line.is_empty() {
            actual.push_str(&format!(" (stderr: {})", excerpt(line)));
        }
    }
    props.push(Prop::new(kv("exit_code", want_code), actual, code_ok));
    if let Some((pattern, re)) = stdout_matches {
        let expected = format!("stdout_matches=/{pattern}/");
        props.push(match re.find(&out.stdout) {
            Some(m) => Prop::new(expected, format!("stdout_matches=true ({})", excerpt(m.as_str())), true),
            None => Prop::new(expected, format!("stdout_matches=false (stdout: {})", excerpt(&out.stdout)), false),
        });
    }
    if let Some(want) = stderr_empty {
        let have = out.stderr.is_empty();
        let actual = if have {
            "stderr_empty=true".to_owned()
        } else {
            format!("stderr_empty=false (stderr: {})", excerpt(&out.stderr))
        };
        props.push(Prop::new(kv("stderr_empty", want), actual, have == want));
    }
    props
}

// ---------------------------------------------------------------- user

pub(crate) fn user_command(name: &str) -> Result<String, String> {
    let q = shell_quote(plain_name("user", name)?);
    Ok(format!(
        "u={q}\n\
         echo ===passwd\n\
         getent passwd \"$u\" 2>/dev/null || cat /etc/passwd 2>/dev/null\n\
         echo ===groups\n\
         id -Gn -- \"$u\" 2>/dev/null\n\
         echo ===end\n\
         exit 0\n"
    ))
}

fn eval_user(
    name: &str,
    want_exists: bool,
    want_groups: &[String],
    want_shell: Option<&str>,
    out: &CommandOutput,
) -> Result<Vec<Prop>, String> {
    let Some(passwd) = section(&out.stdout, "passwd") else {
        return Err(probe_failed("user", out));
    };
    let entry: Option<Vec<&str>> =
        passwd.iter().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() >= 7 && f[0] == name);
    let exists = entry.is_some();
    let exists_actual = match &entry {
        Some(f) => format!("exists=true (uid {})", f[2]),
        None => "exists=false".to_owned(),
    };
    let mut props = vec![Prop::new(kv("exists", want_exists), exists_actual, exists == want_exists)];
    if !want_exists {
        return Ok(props);
    }
    if !want_groups.is_empty() {
        let expected = format!("groups=[{}]", want_groups.join(", "));
        let have: Vec<&str> =
            section(&out.stdout, "groups").unwrap_or_default().iter().flat_map(|l| l.split_whitespace()).collect();
        props.push(if !exists {
            Prop::new(expected, "groups=n/a (no such user)".to_owned(), false)
        } else {
            let missing: Vec<&str> = want_groups.iter().map(String::as_str).filter(|g| !have.contains(g)).collect();
            let mut actual = format!("groups=[{}]", have.join(", "));
            if !missing.is_empty() {
                actual.push_str(&format!(" (missing: {})", missing.join(", ")));
            }
            Prop::new(expected, actual, missing.is_empty())
        });
    }
    if let Some(want) = want_shell {
        let expected = kv("shell", want);
        props.push(match &entry {
            None => Prop::new(expected, "shell=n/a (no such user)".to_owned(), false),
            Some(f) => {
                let shell = f[6..].join(":");
                let ok = shell == want;
                Prop::new(expected, kv("shell", shell), ok)
            }
        });
    }
    Ok(props)
}

// ---------------------------------------------------------------- boot time

fn eval_boot(max: &crate::template::units::Dur, measured: Option<Duration>) -> Prop {
    let expected = format!("boot_time<={max}");
    match measured {
        None => Prop::new(expected, "boot_time=not measured".to_owned(), false),
        Some(t) => Prop::new(expected, format!("boot_time={:.1}s", t.as_secs_f64()), t <= max.0),
    }
}
