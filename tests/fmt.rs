//! `imgbuild fmt`: idempotence on every example template and crafted inputs
//! with comments everywhere, comments preserved, the JSON value unchanged,
//! and `--check` exit codes and diffs through the real binary.

mod common;

use std::path::Path;

use common::{imgbuild, repo_root, run};
use imgbuild::fmt::{FmtError, format_text, unified_diff};
use imgbuild::template::jsonc;

fn value(text: &str) -> serde_json::Value {
    jsonc::parse(text).unwrap_or_else(|e| panic!("does not parse: {e}\n{text}")).to_json()
}

/// Formats, and checks the invariants every output must hold.
fn fmt(text: &str) -> String {
    let once = format_text(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let twice = format_text(&once).unwrap();
    assert_eq!(twice, once, "not idempotent; first output:\n{once}");
    assert_eq!(value(&once), value(text), "value changed:\n{once}");
    assert!(once.ends_with("}\n") || once.ends_with("]\n") || once.ends_with('\n'));
    assert!(!once.ends_with("\n\n"), "one final newline");
    assert!(once.lines().all(|l| l == l.trim_end()), "no trailing blanks:\n{once}");
    once
}

/// Every comment of the input, in the order written.
fn comments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if b[i + 1] == b'/' => {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                out.push(text[i..end].trim_end().to_string());
                i = end;
            }
            b'/' if b[i + 1] == b'*' => {
                let end = i + 2 + text[i + 2..].find("*/").unwrap() + 2;
                out.push(text[i..end].to_string());
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn example_templates_are_idempotent_and_keep_comments() {
    let dir = repo_root().join("templates");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let out = fmt(&text);
        assert_eq!(sorted(comments(&out)), sorted(comments(&text)), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 2, "example templates found: {seen}");
}

const COMMENTED: &str = r#"// file header
/* second header,
   two lines */

{ // after the opening brace
  "provisioners": [ // the steps
    // first step
    { "inline": ["a", "b"], "type": "shell" }, // trailing first step
    /* second */ { "type": "file", "destination": "/x", /* inside */ "source": "s" }
    // end of provisioners
  ],
  "builder": {
    "memory": "1G", // memory
    "type": "qemu" /* type */ , // after comma
    "ssh": {
      "username": "root",
      // dangling in ssh
    },
  },
  "name" /* before colon */ : // after colon
    "t",

  // about version

  "version": "1.0.0",
  "unknown_a": 1,
  "variables": { "zz": { "default": "1", "description": "d" }, "aa": {} },
  "verify": [
    { "running": true, "service": "ssh" },
    { "exists": true, "file": "/etc/motd", "name": "motd" }
  ],
  "$schema": "x",
  "empty": [
    // only a comment
  ],
  "emptyobj": {},
  "nested": [[1, 2], [ /* c */ 3]]
  // end of root
}
// after the document
/* and a block */
"#;

#[test]
fn comments_everywhere_are_kept_in_place() {
    let out = fmt(COMMENTED);
    assert_eq!(sorted(comments(&out)), sorted(comments(COMMENTED)));
    let expected = r#"// file header
/* second header,
   two lines */

{
  "$schema": "x",
  /* before colon */
  // after colon
  "name": "t",

  // about version

  "version": "1.0.0",
  "variables": {
    "zz": {
      "description": "d",
      "default": "1"
    },
    "aa": {}
  },
  "builder": {
    "type": "qemu", /* type */ // after comma
    "memory": "1G", // memory
    "ssh": {
      "username": "root"
      // dangling in ssh
    }
  },
  // after the opening brace
  "provisioners": [
    // the steps
    // first step
    {
      "type": "shell",
      "inline": ["a", "b"]
    }, // trailing first step
    /* second */
    {
      "type": "file",
      "source": "s",
      "destination": "/x" /* inside */
    }
    // end of provisioners
  ],
  "verify": [
    {
      "service": "ssh",
      "running": true
    },
    {
      "name": "motd",
      "file": "/etc/motd",
      "exists": true
    }
  ],
  "unknown_a": 1,
  "empty": [
    // only a comment
  ],
  "emptyobj": {},
  "nested": [
    [1, 2],
    [
      /* c */
      3
    ]
  ]
  // end of root
}
// after the document
/* and a block */
"#;
    assert_eq!(out, expected, "got:\n{out}");
}

#[test]
fn canonical_order_in_every_known_block() {
    let src = r#"{
  "lint": { "ignore": ["IB010"] },
  "export": {
    "publish": [ { "path": "../artifacts", "type": "local" } ],
    "formats": [ { "compression": "zstd", "format": "qcow2" } ],
    "checksums": ["sha256"]
  },
  "source": { "checksum": "none", "url": "u", "type": "iso" },
  "builder": {
    "shutdown_command": "poweroff",
    "ssh": { "timeout": "1m", "username": "root" },
    "cloud_init": { "user_data": "x", "enabled": true },
    "cpus": 2,
    "type": "qemu"
  },
  "description": "d",
  "name": "n"
}"#;
    let out = fmt(src);
    let keys: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('"').and_then(|r| r.split_once("\":")).map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        vec![
            "name",
            "description",
            "source",
            "type",
            "url",
            "checksum",
            "builder",
            "type",
            "cpus",
            "cloud_init",
            "enabled",
            "user_data",
            "ssh",
            "username",
            "timeout",
            "shutdown_command",
            "export",
            "formats",
            "format",
            "compression",
            "checksums",
            "publish",
            "type",
            "path",
            "lint",
            "ignore",
        ],
        "{out}"
    );
    // `env` and other user-keyed objects keep the order written.
    let out = fmt(r#"{"provisioners": [{"env": {"Z": "1", "A": "2"}, "type": "shell", "inline": []}]}"#);
    assert!(out.find("\"Z\"").unwrap() < out.find("\"A\"").unwrap(), "{out}");
    assert!(out.find("\"type\"").unwrap() < out.find("\"inline\"").unwrap(), "{out}");
}

#[test]
fn strings_and_numbers_are_copied_as_written() {
    let src = r#"{"a": "tab\there \u00e9 \/ \"q\" \\ é", "n": [1.0, -0, 1e5, 2E-3, 10000000000000000000000]}"#;
    let out = fmt(src);
    assert!(out.contains(r#""tab\there \u00e9 \/ \"q\" \\ é""#), "{out}");
    assert!(out.contains("[1.0, -0, 1e5, 2E-3, 10000000000000000000000]"), "{out}");
}

#[test]
fn arrays_of_scalars_stay_on_one_line_up_to_100_columns() {
    // `  "k": [` is 8 columns, `]` 1: items may take 91 columns.
    let item = |n: usize| format!("\"{}\"", "x".repeat(n));
    // Two items of width w+2 joined by ", ": 2*(w+2)+2 columns.
    let fits = format!("{{\"k\": [{}, {}]}}", item(42), item(42)); // 8 + 90 + 1 = 99
    let exact = format!("{{\"k\": [{}, {}], \"z\": 1}}", item(42), item(42)); // 99 + comma = 100
    let over = format!("{{\"k\": [{}, {}], \"z\": 1}}", item(43), item(42)); // 101
    let line_of = |out: &str| out.lines().find(|l| l.contains("\"k\"")).unwrap().to_string();
    let out = fmt(&fits);
    assert!(line_of(&out).ends_with(']'), "{out}");
    let out = fmt(&exact);
    assert_eq!(line_of(&out).chars().count(), 100, "{out}");
    let out = fmt(&over);
    assert_eq!(line_of(&out), "  \"k\": [", "{out}");
    // Objects inside or comments force one item per line.
    let out = fmt("{\"k\": [1, {\"a\": 1}]}");
    assert!(out.contains("\"k\": [\n    1,\n    {\n"), "{out}");
}

#[test]
fn crlf_bom_and_trailing_commas() {
    let src = "\u{feff}{\r\n  // c\r\n  \"b\": [1, 2,],\r\n  \"name\": \"x\",\r\n}\r\n";
    let out = fmt(src);
    assert_eq!(out, "{\n  \"name\": \"x\",\n  // c\n  \"b\": [1, 2]\n}\n");
}

#[test]
fn scalar_and_empty_documents() {
    assert_eq!(fmt("  \"x\"  "), "\"x\"\n");
    assert_eq!(fmt("[]"), "[]\n");
    assert_eq!(fmt("{ /* nothing */ }"), "{\n  /* nothing */\n}\n");
    assert_eq!(fmt("// only\n{}"), "// only\n{}\n");
}

#[test]
fn syntax_errors_leave_the_text_alone() {
    for bad in ["{\"a\": }", "{\"a\": 1 \"b\": 2}", "{/* open", "{\"a\": 1}}", "{'a': 1}"] {
        match format_text(bad) {
            Err(FmtError::Syntax { message, .. }) => assert!(!message.is_empty()),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn diff_output() {
    let d = unified_diff("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n", "a\nB\nc\nd\ne\nf\ng\nh\nI\nj\n", "a/t", "b/t");
    assert_eq!(d, "--- a/t\n+++ b/t\n@@ -1,10 +1,10 @@\n a\n-b\n+B\n c\n d\n e\n f\n g\n h\n-i\n+I\n j\n");
    let many: String = (0..30).map(|i| format!("{i}\n")).collect();
    let changed: String = (0..30)
        .map(|i| match i {
            3 => "three\n".to_string(),
            25 => "x\n".to_string(),
            _ => format!("{i}\n"),
        })
        .collect();
    let d = unified_diff(&many, &changed, "a/t", "b/t");
    assert_eq!(d.matches("@@ ").count(), 2, "{d}");
    assert!(d.contains("@@ -1,7 +1,7 @@\n 0\n 1\n 2\n-3\n+three\n 4\n 5\n 6\n"), "{d}");
    assert!(d.contains("@@ -23,7 +23,7 @@\n 22\n 23\n 24\n-25\n+x\n 26\n 27\n 28\n"), "{d}");
}

/// A small deterministic generator (xorshift) for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const KEYS: [&str; 16] = [
    "type",
    "name",
    "version",
    "source",
    "builder",
    "ssh",
    "provisioners",
    "verify",
    "env",
    "inline",
    "zeta",
    "alpha",
    "$schema",
    "url",
    "checksum",
    "lint",
];

fn trivia(rng: &mut Rng, n: &mut usize, out: &mut String) {
    *n += 1;
    let piece = match rng.below(12) {
        0..=3 => String::new(),
        4 => " ".into(),
        5 | 6 => "\n    ".into(),
        7 => "\n\n".into(),
        8 => format!(" // line {n}\n"),
        9 => format!("/* block {n} */"),
        10 => format!("\n/* multi {n}\n   line */\n"),
        _ => format!("\n  // own line {n}\n  "),
    };
    out.push_str(&piece);
}

fn document(rng: &mut Rng, depth: usize, n: &mut usize, out: &mut String) {
    let kind = match depth {
        0 => rng.below(2),
        1 | 2 => rng.below(5),
        3 => rng.below(7),
        _ => 2 + rng.below(5),
    };
    match kind {
        0 => {
            out.push('{');
            let count = rng.below(5);
            let mut keys: Vec<&str> = Vec::new();
            while keys.len() < count {
                let k = KEYS[rng.below(KEYS.len())];
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for (i, k) in keys.iter().enumerate() {
                trivia(rng, n, out);
                out.push_str(&format!("\"{k}\""));
                trivia(rng, n, out);
                out.push(':');
                trivia(rng, n, out);
                document(rng, depth + 1, n, out);
                trivia(rng, n, out);
                if i + 1 < keys.len() || rng.below(3) == 0 {
                    out.push(',');
                }
            }
            trivia(rng, n, out);
            out.push('}');
        }
        1 => {
            out.push('[');
            let count = rng.below(5);
            for i in 0..count {
                trivia(rng, n, out);
                document(rng, depth + 1, n, out);
                trivia(rng, n, out);
                if i + 1 < count || rng.below(3) == 0 {
                    out.push(',');
                }
            }
            trivia(rng, n, out);
            out.push(']');
        }
        2 => out.push_str(&format!("\"s{}\\n\\u00e9\"", rng.below(100))),
        3 => out.push_str(&format!("\"{}\"", "w".repeat(rng.below(60)))),
        4 => out.push_str(["1", "-2.50", "3e7", "0"][rng.below(4)]),
        5 => out.push_str(["true", "false", "null"][rng.below(3)]),
        _ => out.push_str("\"//not a comment /* either */\""),
    }
}

#[test]
fn random_documents_hold_the_invariants() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut checked = 0;
    for case in 0..2000 {
        let mut text = String::new();
        let mut n = 0;
        trivia(&mut rng, &mut n, &mut text);
        document(&mut rng, 0, &mut n, &mut text);
        trivia(&mut rng, &mut n, &mut text);
        if jsonc::parse(&text).is_err() {
            continue;
        }
        let out =
            std::panic::catch_unwind(|| fmt(&text)).unwrap_or_else(|_| panic!("case {case} failed; input:\n{text}"));
        assert_eq!(sorted(comments(&out)), sorted(comments(&text)), "case {case}; input:\n{text}\noutput:\n{out}");
        checked += 1;
    }
    assert!(checked > 1500, "only {checked} generated documents parsed");
}

// ---------------------------------------------------------------- binary
// These need `fmt` wired into the CLI (`Command::Fmt`).

fn copy_examples(to: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("templates")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&path, to.join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    names
}

#[test]
fn binary_check_then_write_then_check() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("t");
    std::fs::create_dir(&dir).unwrap();
    let messy = "{\"version\": \"1.0.0\", \"name\": \"x\" // the name\n}";
    std::fs::write(dir.join("messy.json"), messy).unwrap();
    let tidy = format_text(messy).unwrap();
    std::fs::write(dir.join("tidy.json"), &tidy).unwrap();

    // --check: exit 1, a diff, nothing written.
    let mut cmd = imgbuild(work.path());
    cmd.current_dir(&dir).args(["fmt", "--check", "tidy.json", "messy.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, unified_diff(messy, &tidy, "a/messy.json", "b/messy.json"));
    assert!(r.stdout.starts_with("--- a/messy.json\n+++ b/messy.json\n@@ -1,2 +1,4 @@\n"), "{}", r.stdout);
    assert!(r.stdout.contains("\n+  \"name\": \"x\", // the name\n"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(dir.join("messy.json")).unwrap(), messy);

    // Only formatted files: exit 0, no output.
    let mut cmd = imgbuild(work.path());
    cmd.current_dir(&dir).args(["fmt", "--check", "tidy.json"]);
    let r = run(cmd);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);

    // Writing: the changed file is named, rewritten, and keeps its permissions.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("messy.json"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut cmd = imgbuild(work.path());
    cmd.current_dir(&dir).args(["fmt", "tidy.json", "messy.json"]);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "formatted messy.json\n");
    assert_eq!(std::fs::read_to_string(dir.join("messy.json")).unwrap(), tidy);
    let mode = std::fs::metadata(dir.join("messy.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");

    let mut cmd = imgbuild(work.path());
    cmd.current_dir(&dir).args(["fmt", "--check", "tidy.json", "messy.json"]);
    assert_eq!(run(cmd).code, 0);
}

#[test]
fn binary_invalid_file_exits_2_and_is_not_touched() {
    let work = tempfile::tempdir().unwrap();
    let bad = "{\n  \"a\": 1\n  \"b\": 2\n}\n";
    let path = work.path().join("bad.json");
    std::fs::write(&path, bad).unwrap();
    for check in [true, false] {
        let mut cmd = imgbuild(work.path());
        cmd.current_dir(work.path()).arg("fmt");
        if check {
            cmd.arg("--check");
        }
        cmd.arg("bad.json");
        let r = run(cmd);
        assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("bad.json:3:3"), "{}", r.stderr);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
    }
}

#[test]
fn binary_formats_the_examples_idempotently() {
    let work = tempfile::tempdir().unwrap();
    let names = copy_examples(work.path());
    let mut cmd = imgbuild(work.path());
    cmd.current_dir(work.path()).arg("fmt").args(&names);
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let mut cmd = imgbuild(work.path());
    cmd.current_dir(work.path()).args(["fmt", "--check"]).args(&names);
    let r = run(cmd);
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
}
