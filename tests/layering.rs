//! Layering rules, checked by reading the sources: only the command-line
//! face prints, nothing imports the face, and the seams of issue 13 hold.
//!
//! Each rule names the files it covers, what they must not use, and the
//! files exempt with a reason. A rule that does not hold yet is `pending`
//! (with why): its violations are printed, not failed, and the test fails
//! once a pending rule passes, so the mark is removed and the table stays
//! honest.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a rule forbids.
enum Forbid {
    /// Module paths (`crate::builder`) and everything below them.
    Modules(&'static [&'static str]),
    /// Printing macros and the process's stdout/stderr.
    Printing,
    /// Identifiers (e.g. concrete step types).
    Names(&'static [&'static str]),
}

struct Rule {
    name: &'static str,
    /// Files or directories under the repository root the rule covers.
    covers: &'static [&'static str],
    forbid: Forbid,
    /// Covered files or directories the rule does not apply to, and why.
    except: &'static [(&'static str, &'static str)],
    /// `Some(why)`: known not to hold yet.
    pending: Option<&'static str>,
}

const PRINTING_MACROS: [&str; 5] = ["println!", "eprintln!", "print!", "eprint!", "dbg!"];
const STD_STREAMS: [&str; 2] = ["io::stdout", "io::stderr"];

const RULES: &[Rule] = &[
    Rule {
        name: "only the face prints",
        covers: &["src"],
        forbid: Forbid::Printing,
        except: &[
            ("src/face", "the command-line face: the one place that prints"),
            ("src/main.rs", "the binary's entry point (part of the face): its panic hook prints one line"),
            ("src/testing.rs", "test helpers: a skipped test says so on the test's stderr"),
            (
                "src/store/mod.rs",
                "`pause_point`: a test hook whose stderr line fault tests wait for before killing the process",
            ),
        ],
        pending: None,
    },
    Rule {
        name: "nothing outside the face imports the face",
        covers: &["src"],
        forbid: Forbid::Modules(&["crate::face"]),
        except: &[("src/face", "the face itself"), ("src/main.rs", "the binary calls the face")],
        pending: None,
    },
    Rule {
        name: "the runner names no concrete step",
        covers: &["src/runner.rs"],
        forbid: Forbid::Modules(&[
            "crate::build",
            "crate::builder",
            "crate::provision",
            "crate::verify",
            "crate::export",
            "crate::source",
            "crate::communicator",
            "crate::store",
        ]),
        except: &[],
        pending: None,
    },
    Rule {
        name: "the runner names no build state",
        covers: &["src/runner.rs"],
        forbid: Forbid::Names(&["BuildState", "MachineState", "Preflight", "WorkDir", "Verify", "Export", "Publish"]),
        except: &[],
        pending: None,
    },
    Rule {
        name: "provision/ and verify/ import nothing from builder/",
        covers: &["src/provision", "src/verify"],
        forbid: Forbid::Modules(&["crate::builder"]),
        except: &[],
        pending: None,
    },
    Rule {
        name: "template/ imports nothing from builder/, store/, communicator/, export/",
        covers: &["src/template"],
        forbid: Forbid::Modules(&["crate::builder", "crate::store", "crate::communicator", "crate::export"]),
        except: &[],
        pending: None,
    },
    Rule {
        name: "builders know nothing of stores or publishing",
        covers: &["src/builder"],
        forbid: Forbid::Modules(&["crate::store", "crate::build::publish"]),
        except: &[],
        pending: None,
    },
    Rule {
        name: "export/ and publishing know no builder",
        covers: &["src/export", "src/store", "src/build/publish.rs", "crates/imgbuild-store-format/src"],
        forbid: Forbid::Modules(&["crate::builder"]),
        except: &[],
        pending: None,
    },
    Rule {
        name: "no legacy shim use",
        covers: &["src"],
        forbid: Forbid::Modules(&["crate::ui", "crate::report::legacy"]),
        except: &[],
        pending: None,
    },
];

#[test]
fn the_layering_rules_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut now_passing = Vec::new();
    for rule in RULES {
        let violations = check(root, rule);
        match (rule.pending, violations.is_empty()) {
            (None, true) => {}
            (None, false) => broken.push(format!("{}:\n  {}", rule.name, violations.join("\n  "))),
            (Some(why), false) => {
                eprintln!("pending rule `{}` ({why}): {} violation(s)", rule.name, violations.len());
                violations.iter().for_each(|v| eprintln!("  {v}"));
            }
            (Some(_), true) => now_passing.push(rule.name),
        }
    }
    assert!(broken.is_empty(), "layering rules broken:\n{}", broken.join("\n"));
    assert!(
        now_passing.is_empty(),
        "pending rules that now pass (remove their `pending` mark in tests/layering.rs): {now_passing:?}"
    );
}

#[test]
fn every_exception_names_an_existing_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for rule in RULES {
        for path in rule.covers.iter().chain(rule.except.iter().map(|(p, _)| p)) {
            assert!(root.join(path).exists(), "rule `{}` names {path}, which does not exist", rule.name);
        }
    }
}

/// `file:line: what` for every use the rule forbids.
fn check(root: &Path, rule: &Rule) -> Vec<String> {
    let mut files = Vec::new();
    for covered in rule.covers {
        rust_files(&root.join(covered), &mut files);
    }
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        if rule.except.iter().any(|(p, _)| relative == *p || relative.starts_with(&format!("{p}/"))) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"));
        for (line, what) in forbidden_uses(&text, &module_path(&relative), &rule.forbid) {
            violations.push(format!("{relative}:{line}: {what}"));
        }
    }
    violations
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
        return;
    }
    let mut entries: Vec<_> = std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
    entries.sort();
    entries.iter().for_each(|p| rust_files(p, out));
}

/// The module a file under `src/` defines: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn module_path(relative: &str) -> Vec<String> {
    let inner = relative.strip_prefix("src/").unwrap_or(relative).trim_end_matches(".rs");
    let mut parts: Vec<String> = inner.split('/').map(String::from).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// `(line, what)` for each forbidden use in `source`, a file of module `module`.
fn forbidden_uses(source: &str, module: &[String], forbid: &Forbid) -> Vec<(usize, String)> {
    let code = blank_comments_and_strings(source);
    let mut found = Vec::new();
    match forbid {
        Forbid::Printing => {
            for (offset, token) in tokens(&code) {
                let next = code[offset + token.len()..].trim_start();
                let last = token.rsplit("::").next().unwrap_or(token);
                let is_macro = next.starts_with('!')
                    && !next.starts_with("!=")
                    && PRINTING_MACROS.iter().any(|m| m.trim_end_matches('!') == last);
                let is_stream = STD_STREAMS.iter().any(|s| path_ends_with(token, s));
                if is_macro {
                    found.push((line_of(&code, offset), format!("{token}!")));
                } else if is_stream {
                    found.push((line_of(&code, offset), token.to_string()));
                }
            }
        }
        Forbid::Names(names) => {
            for (offset, token) in tokens(&code) {
                if let Some(name) = token.split("::").find(|segment| names.contains(segment)) {
                    found.push((line_of(&code, offset), name.to_string()));
                }
            }
        }
        Forbid::Modules(modules) => {
            for (offset, path) in referenced_paths(&code) {
                let Some(absolute) = resolve(&path, module) else { continue };
                if let Some(m) = modules.iter().find(|m| absolute == **m || absolute.starts_with(&format!("{m}::"))) {
                    found.push((line_of(&code, offset), format!("{path} (under {m})")));
                }
            }
        }
    }
    found
}

fn path_ends_with(path: &str, suffix: &str) -> bool {
    path == suffix || path.ends_with(&format!("::{suffix}"))
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].matches('\n').count() + 1
}

/// Identifier paths (`a`, `a::b::c`) with their byte offsets.
fn tokens(code: &str) -> Vec<(usize, &str)> {
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if is_ident(bytes[i]) && (i == 0 || !is_ident(bytes[i - 1])) {
            let start = i;
            loop {
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                if code[i..].starts_with("::") && bytes.get(i + 2).is_some_and(|b| is_ident(*b)) {
                    i += 2;
                } else {
                    break;
                }
            }
            out.push((start, &code[start..i]));
        } else {
            i += 1;
        }
    }
    out
}

/// Every module path the code names: `use` trees expanded (`use a::{b, c::d}`
/// gives `a::b` and `a::c::d`), and paths written inline.
fn referenced_paths(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut use_end = 0;
    for (offset, token) in tokens(code) {
        if offset < use_end {
            continue;
        }
        if token == "use" {
            let rest = &code[offset + 3..];
            let end = rest.find(';').unwrap_or(rest.len());
            use_end = offset + 3 + end;
            let mut paths = Vec::new();
            expand_use("", &rest[..end], &mut paths);
            out.extend(paths.into_iter().map(|p| (offset, p)));
        } else if token.contains("::") {
            out.push((offset, token.to_string()));
        }
    }
    out
}

/// Expands one `use` tree (without `use` and `;`) below `prefix`.
fn expand_use(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let join = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { format!("{a}::{b}") };
    if let Some(open) = tree.find('{')
        && tree.ends_with('}')
    {
        let head = tree[..open].trim().trim_end_matches("::").trim();
        let base = if head.is_empty() { prefix.to_string() } else { join(prefix, head) };
        for part in split_top_level(&tree[open + 1..tree.len() - 1]) {
            expand_use(&base, part, out);
        }
        return;
    }
    // `path as alias`: the path is what is used.
    match tree.split_whitespace().next().unwrap_or("") {
        "" => {}
        "self" => out.push(prefix.to_string()),
        path => out.push(join(prefix, path.trim_end_matches("::*"))),
    }
}

fn split_top_level(list: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
}

/// `crate::a::b` for a path as written in module `module`; `None` for paths
/// outside the crate (std, other crates, local names).
fn resolve(path: &str, module: &[String]) -> Option<String> {
    let mut segments = path.split("::").peekable();
    let mut base: Vec<String> = match *segments.peek()? {
        "crate" | "imgbuild" => {
            segments.next();
            Vec::new()
        }
        "super" | "self" => module.to_vec(),
        _ => return None,
    };
    while let Some(&segment) = segments.peek() {
        match segment {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            _ => break,
        }
        segments.next();
    }
    base.extend(segments.map(String::from));
    Some(std::iter::once("crate".to_string()).chain(base).collect::<Vec<_>>().join("::"))
}

/// The source with comments and the contents of string and char literals
/// replaced by spaces (newlines kept, so offsets and lines stay right).
fn blank_comments_and_strings(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !prev_is_ident(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let closing: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            out.push_str(&" ".repeat(2 + hashes));
            i += 2 + hashes;
            while i < chars.len() && !chars[i..].starts_with(&closing.chars().collect::<Vec<_>>()) {
                out.push(blank(chars[i]));
                i += 1;
            }
            out.push_str(&" ".repeat(closing.len()));
            i += closing.len();
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'x'` or `'\n'`, as opposed to a lifetime `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

// ------------------------------------------------------ the scanner itself

fn uses(source: &str, file: &str, forbid: &Forbid) -> BTreeSet<String> {
    forbidden_uses(source, &module_path(file), forbid)
        .into_iter()
        .map(|(line, what)| format!("{line}: {what}"))
        .collect()
}

#[test]
fn the_scanner_finds_printing_but_not_in_comments_or_strings() {
    let source = r##"
// println!("in a comment");
/* eprintln!("in a block comment") */
fn f<'a>(x: &'a str) {
    let s = "println!(\"in a string\") and io::stdout()";
    let c = '"';
    let r = r#"eprint!("raw")"#;
    println!("{x}");
    let _ = std::io::stderr().lock();
    cmd.stdout(Stdio::piped());
    if a != b {}
}
"##;
    let found = uses(source, "src/x.rs", &Forbid::Printing);
    assert_eq!(found, ["8: println!", "9: std::io::stderr"].into_iter().map(String::from).collect());
}

#[test]
fn the_scanner_resolves_use_trees_and_relative_paths() {
    let source = "
use crate::{report::BuildReporter, builder::{qemu, ec2::gc}};
use super::super::builder::qemu::boot_id;
use super::sibling;
use std::io;
fn f() { crate::builder::qemu::reconnect(); let x = other::builder::y; }
";
    let found = uses(source, "src/provision/deep/mod.rs", &Forbid::Modules(&["crate::builder"]));
    let expected = [
        "2: crate::builder::qemu (under crate::builder)",
        "2: crate::builder::ec2::gc (under crate::builder)",
        "3: super::super::builder::qemu::boot_id (under crate::builder)",
        "6: crate::builder::qemu::reconnect (under crate::builder)",
    ];
    assert_eq!(found, expected.into_iter().map(String::from).collect());
    // `crate::builderx` is a different module.
    assert!(uses("use crate::builderx::A;", "src/a.rs", &Forbid::Modules(&["crate::builder"])).is_empty());
    assert_eq!(
        uses("use crate::ui as legacy;\nuse crate::face;", "src/a.rs", &Forbid::Modules(&["crate::ui", "crate::face"])),
        ["1: crate::ui (under crate::ui)", "2: crate::face (under crate::face)"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[test]
fn the_scanner_finds_names() {
    let found = uses(
        "fn f(s: &mut BuildState) { crate::build::WorkDir; }",
        "src/runner.rs",
        &Forbid::Names(&["BuildState", "WorkDir"]),
    );
    assert_eq!(found, ["1: BuildState", "1: WorkDir"].into_iter().map(String::from).collect());
}

#[test]
fn module_paths_follow_the_file_layout() {
    assert_eq!(module_path("src/lib.rs"), Vec::<String>::new());
    assert_eq!(module_path("src/face/mod.rs"), ["face"]);
    assert_eq!(module_path("src/face/terminal/progress.rs"), ["face", "terminal", "progress"]);
    assert_eq!(
        resolve("super::cli::VarArgs", &module_path("src/face/lint.rs")).as_deref(),
        Some("crate::face::cli::VarArgs")
    );
    assert_eq!(resolve("std::io", &[]), None);
}
