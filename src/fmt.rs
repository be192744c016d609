//! `imgbuild fmt`: rewrites templates in one canonical layout, keeping every
//! comment. The rules (also in `docs/lint/fmt.md`):
//!
//! * 2-space indentation; every non-empty object has one member per line;
//!   `{}` and `[]` stay empty; no trailing commas; the file ends with one
//!   newline.
//! * Arrays whose items are all scalars (strings, numbers, booleans, null)
//!   and that hold no comments are written on one line, `[a, b, c]`, when
//!   that line (indentation, key and trailing comma included) is at most 100
//!   columns; otherwise one item per line.
//! * Keys are put in a canonical order in the blocks the template language
//!   defines (see [`key_order`]): the top level, `source`, `builder`,
//!   `builder.ssh`, `builder.cloud_init`, each variable declaration, each
//!   provisioner, each `verify` check, `export`, its `formats` and `publish`
//!   entries, and `lint`. `type` comes first in tagged objects. Keys a block
//!   does not know go after the known ones, in the order written. Objects
//!   with user-chosen keys (`variables`, `env`, …) keep the order written.
//! * Strings (keys included) and numbers are copied exactly as written:
//!   escapes are not changed.
//! * Comments (`//` and `/* */`) are kept: a comment on a line of its own
//!   stays attached to the member or item that follows it (and moves with
//!   it when keys are reordered); a comment after a value on the same line
//!   stays after it; comments before the closing `}`/`]` stay at the end of
//!   the object or array; comments before and after the document stay
//!   there; comments between a key and its value move before the member.
//!   Block comments are copied as written.
//! * One blank line between members (or before a comment) is kept where the
//!   source had at least one; blank lines at the start of an object go.
//!
//! The result parses to the same JSON value as the input, and formatting is
//! idempotent: `fmt(fmt(x)) == fmt(x)`.

use std::io::Write as _;
use std::path::Path;

use crate::template::jsonc::{self, Span};

/// Arrays of scalars are kept on one line up to this many columns.
pub const MAX_WIDTH: usize = 100;
const INDENT: usize = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FmtError {
    /// The text is not valid JSON with comments.
    #[error("{message}")]
    Syntax { span: Span, message: String },
    /// A bug: the output would not mean the same as the input. Nothing is written.
    #[error("internal formatter error: {0}")]
    Internal(String),
}

/// Formats a template's text. Fails on syntax errors (the text is left as
/// is) and never returns a text whose JSON value differs from the input's.
pub fn format_text(text: &str) -> Result<String, FmtError> {
    let before = jsonc::parse(text).map_err(|e| FmtError::Syntax { span: e.span, message: e.message })?;
    let doc = Parser { text, bytes: text.as_bytes(), pos: 0 }.document()?;
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    render_document(&doc, &mut out);
    let after = jsonc::parse(&out).map_err(|e| FmtError::Internal(format!("output does not parse: {e}")))?;
    if after.to_json() != before.to_json() {
        return Err(FmtError::Internal("output has a different JSON value than the input".into()));
    }
    Ok(out)
}

// ------------------------------------------------------------------ tree

#[derive(Debug, Clone)]
struct Comment {
    /// As written: `// …` (trailing blanks removed) or `/* … */`.
    text: String,
    /// A blank line before it in the source.
    blank_before: bool,
}

#[derive(Debug)]
enum Value {
    /// A string, number, `true`, `false` or `null`, as written.
    Scalar(String),
    Object(Block),
    Array(Block),
}

#[derive(Debug, Default)]
struct Block {
    entries: Vec<Entry>,
    /// Comments after the last entry, before the closing bracket.
    dangling: Vec<Comment>,
}

#[derive(Debug)]
struct Entry {
    /// Comments on their own lines before the entry.
    leading: Vec<Comment>,
    /// A blank line right before the key (or the value in arrays).
    blank_before: bool,
    /// Object members: the key as written (with its quotes) and its name.
    key: Option<(String, String)>,
    value: Value,
    /// Comments after the value (and its comma) on the same line.
    trailing: Vec<Comment>,
}

#[derive(Debug)]
struct Document {
    leading: Vec<Comment>,
    root: Entry,
    /// Comments after the root value, on later lines.
    end: Vec<Comment>,
}

// ------------------------------------------------------------------ parser

/// A lossless reader of text `jsonc::parse` has already accepted; it keeps
/// comments and raw scalar text.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

struct Trivia {
    comments: Vec<Comment>,
    /// A blank line between the last comment (or the start) and what follows.
    blank_at_end: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn fail(&self, what: &str) -> FmtError {
        FmtError::Internal(format!("unexpected input at byte {} ({what})", self.pos))
    }

    fn starts_comment(&self) -> bool {
        self.peek() == Some(b'/') && matches!(self.bytes.get(self.pos + 1), Some(b'/' | b'*'))
    }

    fn comment(&mut self) -> Result<String, FmtError> {
        let start = self.pos;
        if self.bytes[self.pos + 1] == b'/' {
            let end = self.text[start..].find('\n').map_or(self.text.len(), |n| start + n);
            self.pos = end;
            Ok(self.text[start..end].trim_end().to_string())
        } else {
            let end = self.text[start + 2..].find("*/").ok_or_else(|| self.fail("unterminated comment"))?;
            self.pos = start + 2 + end + 2;
            Ok(self.text[start..self.pos].to_string())
        }
    }

    /// Whitespace and comments up to the next token.
    fn trivia(&mut self) -> Result<Trivia, FmtError> {
        let mut comments = Vec::new();
        let mut newlines = 0;
        loop {
            match self.peek() {
                Some(b'\n') => {
                    newlines += 1;
                    self.pos += 1;
                }
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(0xEF) if self.bytes[self.pos..].starts_with(&[0xEF, 0xBB, 0xBF]) => self.pos += 3,
                Some(b'/') if self.starts_comment() => {
                    let text = self.comment()?;
                    comments.push(Comment { text, blank_before: newlines >= 2 });
                    newlines = 0;
                }
                _ => return Ok(Trivia { comments, blank_at_end: newlines >= 2 }),
            }
        }
    }

    /// Comments on the rest of the current line (stops before a line break).
    fn same_line_comments(&mut self) -> Result<Vec<Comment>, FmtError> {
        let mut out = Vec::new();
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
                self.pos += 1;
            }
            if !self.starts_comment() {
                return Ok(out);
            }
            let line = self.bytes[self.pos + 1] == b'/';
            let text = self.comment()?;
            let multi_line = text.contains('\n');
            out.push(Comment { text, blank_before: false });
            if line || multi_line {
                return Ok(out);
            }
        }
    }

    fn document(&mut self) -> Result<Document, FmtError> {
        let t = self.trivia()?;
        let value = self.value()?;
        let trailing = self.same_line_comments()?;
        let end = self.trivia()?;
        if self.pos < self.bytes.len() {
            return Err(self.fail("content after the document"));
        }
        let blank_before = t.blank_at_end && !t.comments.is_empty();
        Ok(Document {
            leading: t.comments,
            root: Entry { leading: Vec::new(), blank_before, key: None, value, trailing },
            end: end.comments,
        })
    }

    fn value(&mut self) -> Result<Value, FmtError> {
        match self.peek() {
            Some(b'{') => Ok(Value::Object(self.block(b'}', true)?)),
            Some(b'[') => Ok(Value::Array(self.block(b']', false)?)),
            Some(b'"') => Ok(Value::Scalar(self.string()?.to_string())),
            Some(_) => {
                let start = self.pos;
                while matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(self.fail("expected a value"));
                }
                Ok(Value::Scalar(self.text[start..self.pos].to_string()))
            }
            None => Err(self.fail("unexpected end")),
        }
    }

    /// A string token, quotes included, exactly as written.
    fn string(&mut self) -> Result<&str, FmtError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(&self.text[start..self.pos]);
                }
                Some(b'\\') => self.pos += 2,
                Some(_) => self.pos += 1,
                None => return Err(self.fail("unterminated string")),
            }
        }
    }

    /// An object (`keyed`) or an array, from its opening bracket.
    fn block(&mut self, close: u8, keyed: bool) -> Result<Block, FmtError> {
        self.pos += 1;
        let mut block = Block::default();
        // Comments that came after a value on later lines, before its comma.
        let mut pending: Vec<Comment> = Vec::new();
        loop {
            let t = self.trivia()?;
            let blank_at_end = t.blank_at_end;
            pending.extend(t.comments);
            if self.peek() == Some(close) {
                self.pos += 1;
                block.dangling = pending;
                break;
            }
            let mut leading = std::mem::take(&mut pending);
            let mut blank_before = blank_at_end;
            let key = if keyed {
                if self.peek() != Some(b'"') {
                    return Err(self.fail("expected a key"));
                }
                let raw = self.string()?.to_string();
                let name = serde_json::from_str::<String>(&raw).unwrap_or_else(|_| raw.clone());
                // Comments around the colon move before the member (after
                // the blank line that preceded the key, if any).
                let mut moved = self.trivia()?.comments;
                if self.peek() != Some(b':') {
                    return Err(self.fail("expected `:`"));
                }
                self.pos += 1;
                moved.extend(self.trivia()?.comments);
                for (i, c) in moved.iter_mut().enumerate() {
                    c.blank_before = i == 0 && blank_before;
                }
                if !moved.is_empty() {
                    blank_before = false;
                }
                leading.extend(moved);
                Some((raw, name))
            } else {
                None
            };
            let value = self.value()?;
            let mut trailing = self.same_line_comments()?;
            let line_ended = trailing.last().is_some_and(|c| c.text.starts_with("//") || c.text.contains('\n'));
            if !line_ended && self.peek() == Some(b',') {
                self.pos += 1;
                trailing.extend(self.same_line_comments()?);
            } else {
                // The comma (if any) is on a later line; comments before it go with the next entry.
                let t = self.trivia()?;
                pending.extend(t.comments);
                if self.peek() == Some(b',') {
                    self.pos += 1;
                } else if self.peek() != Some(close) {
                    return Err(self.fail("expected `,` or a closing bracket"));
                }
            }
            block.entries.push(Entry { leading, blank_before, key, value, trailing });
        }
        // No blank line right after the opening bracket.
        if let Some(first) = block.entries.first_mut() {
            match first.leading.first_mut() {
                Some(c) => c.blank_before = false,
                None => first.blank_before = false,
            }
        } else if let Some(c) = block.dangling.first_mut() {
            c.blank_before = false;
        }
        Ok(block)
    }
}

// ------------------------------------------------------------------ key order

/// The blocks whose keys have a canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Top,
    Variables,
    VarDecl,
    Source,
    Builder,
    Ssh,
    CloudInit,
    Provisioner,
    Check,
    Export,
    Format,
    Publish,
    Lint,
    /// Keys in the order written.
    Keep,
}

/// The canonical key order of a block (empty: keep the order written).
fn key_order(ctx: Ctx) -> &'static [&'static str] {
    match ctx {
        Ctx::Top => &[
            "$schema",
            "name",
            "version",
            "description",
            "variables",
            "source",
            "builder",
            "provisioners",
            "verify",
            "export",
            "lint",
        ],
        Ctx::VarDecl => &["description", "default", "required", "sensitive"],
        Ctx::Source => &["type", "url", "checksum"],
        Ctx::Builder => &[
            "type",
            "accelerator",
            "machine",
            "firmware",
            "cpus",
            "memory",
            "disk_size",
            "disk_interface",
            "qemu_binary",
            "qemu_args",
            "cloud_init",
            "ssh",
            "boot_timeout",
            "shutdown_command",
            "shutdown_timeout",
        ],
        Ctx::Ssh => &["username", "password", "port", "timeout", "ready_command"],
        Ctx::CloudInit => &["enabled", "user_data"],
        Ctx::Provisioner => &[
            "type",
            "inline",
            "script",
            "scripts",
            "source",
            "content",
            "destination",
            "direction",
            "mode",
            "env",
            "execute_command",
            "expect_disconnect",
            "valid_exit_codes",
            "remote_folder",
            "pause_before",
            "timeout",
            "max_retries",
        ],
        Ctx::Check => &[
            "name",
            "service",
            "port",
            "file",
            "package",
            "command",
            "user",
            "boot_time_max",
            "running",
            "enabled",
            "listening",
            "protocol",
            "exists",
            "mode",
            "contains",
            "matches",
            "owner",
            "sha256",
            "installed",
            "exit_code",
            "stdout_matches",
            "stderr_empty",
            "groups",
            "shell",
        ],
        Ctx::Export => &["formats", "checksums", "verify_on", "publish"],
        Ctx::Format => &["format", "compression", "compress"],
        Ctx::Publish => &["type", "path", "bucket", "prefix", "region", "endpoint_url", "part_size"],
        Ctx::Lint => &["ignore"],
        Ctx::Variables | Ctx::Keep => &[],
    }
}

/// The block a member's value is (for arrays: the block of their items).
fn child_ctx(ctx: Ctx, key: &str) -> Ctx {
    match (ctx, key) {
        (Ctx::Top, "variables") => Ctx::Variables,
        (Ctx::Top, "source") => Ctx::Source,
        (Ctx::Top, "builder") => Ctx::Builder,
        (Ctx::Top, "provisioners") => Ctx::Provisioner,
        (Ctx::Top, "verify") => Ctx::Check,
        (Ctx::Top, "export") => Ctx::Export,
        (Ctx::Top, "lint") => Ctx::Lint,
        (Ctx::Variables, _) => Ctx::VarDecl,
        (Ctx::Builder, "ssh") => Ctx::Ssh,
        (Ctx::Builder, "cloud_init") => Ctx::CloudInit,
        (Ctx::Export, "formats") => Ctx::Format,
        (Ctx::Export, "publish") => Ctx::Publish,
        _ => Ctx::Keep,
    }
}

fn ordered(block: &Block, ctx: Ctx) -> Vec<&Entry> {
    let mut entries: Vec<&Entry> = block.entries.iter().collect();
    let order = key_order(ctx);
    if !order.is_empty() {
        let rank = |e: &Entry| {
            let name = e.key.as_ref().map_or("", |(_, n)| n.as_str());
            order.iter().position(|k| *k == name).unwrap_or(order.len())
        };
        entries.sort_by_key(|e| rank(e));
    }
    entries
}

// ------------------------------------------------------------------ printer

fn width(s: &str) -> usize {
    s.chars().count()
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn render_document(doc: &Document, out: &mut String) {
    let mut first = true;
    own_line_comments(&doc.leading, 0, &mut first, out);
    if doc.root.blank_before && !first {
        out.push('\n');
    }
    render_value(&doc.root.value, 0, 0, false, Ctx::Top, out);
    trailing_comments(&doc.root.trailing, out);
    out.push('\n');
    let mut first = false;
    own_line_comments(&doc.end, 0, &mut first, out);
}

fn own_line_comments(comments: &[Comment], indent: usize, first: &mut bool, out: &mut String) {
    for c in comments {
        if c.blank_before && !*first {
            out.push('\n');
        }
        *first = false;
        pad(out, indent);
        out.push_str(&c.text);
        out.push('\n');
    }
}

fn trailing_comments(comments: &[Comment], out: &mut String) {
    for c in comments {
        out.push(' ');
        out.push_str(&c.text);
    }
}

/// Writes `value` at the current position (column `col`); `comma` says
/// whether a comma will follow it on the same line.
fn render_value(value: &Value, indent: usize, col: usize, comma: bool, ctx: Ctx, out: &mut String) {
    match value {
        Value::Scalar(s) => out.push_str(s),
        Value::Object(block) => render_block(block, '{', '}', indent, ctx, out),
        Value::Array(block) => match inline_array(block) {
            Some(line) if col + width(&line) + usize::from(comma) <= MAX_WIDTH => out.push_str(&line),
            _ => render_block(block, '[', ']', indent, ctx, out),
        },
    }
}

/// `[a, b]` for an array of scalars without comments.
fn inline_array(block: &Block) -> Option<String> {
    if !block.dangling.is_empty() {
        return None;
    }
    let mut parts = Vec::with_capacity(block.entries.len());
    for e in &block.entries {
        match &e.value {
            Value::Scalar(s) if e.leading.is_empty() && e.trailing.is_empty() => parts.push(s.as_str()),
            _ => return None,
        }
    }
    Some(format!("[{}]", parts.join(", ")))
}

fn render_block(block: &Block, open: char, close: char, indent: usize, ctx: Ctx, out: &mut String) {
    if block.entries.is_empty() && block.dangling.is_empty() {
        out.push(open);
        out.push(close);
        return;
    }
    out.push(open);
    out.push('\n');
    let inner = indent + INDENT;
    let entries = ordered(block, ctx);
    let mut first = true;
    for (i, e) in entries.iter().enumerate() {
        own_line_comments(&e.leading, inner, &mut first, out);
        if e.blank_before && !first {
            out.push('\n');
        }
        first = false;
        pad(out, inner);
        let comma = i + 1 < entries.len();
        let (col, value_ctx) = match &e.key {
            Some((raw, name)) => {
                out.push_str(raw);
                out.push_str(": ");
                (inner + width(raw) + 2, child_ctx(ctx, name))
            }
            // Array items are blocks of the array's kind.
            None => (inner, ctx),
        };
        render_value(&e.value, inner, col, comma, value_ctx, out);
        if comma {
            out.push(',');
        }
        trailing_comments(&e.trailing, out);
        out.push('\n');
    }
    own_line_comments(&block.dangling, inner, &mut first, out);
    pad(out, indent);
    out.push(close);
}

// ------------------------------------------------------------------ diff

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    Delete,
    Insert,
}

/// Diffs of larger middles (after the common start and end) fall back to
/// "everything in between changed".
const MAX_DIFF_CELLS: usize = 25_000_000;

/// A unified diff (`diff -u` style, 3 lines of context) of two texts; empty
/// when they are equal.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    const CONTEXT: usize = 3;
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    let ops = diff_ops(&a, &b);
    if ops.iter().all(|op| *op == Op::Equal) {
        return String::new();
    }
    // Position of every op in both files.
    let mut positions = Vec::with_capacity(ops.len());
    let (mut i, mut j) = (0, 0);
    for op in &ops {
        positions.push((i, j));
        match op {
            Op::Equal => {
                i += 1;
                j += 1;
            }
            Op::Delete => i += 1,
            Op::Insert => j += 1,
        }
    }
    let changes: Vec<usize> = ops.iter().enumerate().filter(|(_, op)| **op != Op::Equal).map(|(k, _)| k).collect();
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while k < changes.len() {
        let mut last = k;
        while last + 1 < changes.len() && changes[last + 1] - changes[last] <= 2 * CONTEXT + 1 {
            last += 1;
        }
        let start = changes[k].saturating_sub(CONTEXT);
        let end = (changes[last] + CONTEXT + 1).min(ops.len());
        let old_len = ops[start..end].iter().filter(|op| **op != Op::Insert).count();
        let new_len = ops[start..end].iter().filter(|op| **op != Op::Delete).count();
        let (i0, j0) = positions[start];
        let old_start = if old_len == 0 { i0 } else { i0 + 1 };
        let new_start = if new_len == 0 { j0 } else { j0 + 1 };
        out.push_str(&format!("@@ -{old_start},{old_len} +{new_start},{new_len} @@\n"));
        for idx in start..end {
            let (i, j) = positions[idx];
            let (sign, line) = match ops[idx] {
                Op::Equal => (' ', a[i]),
                Op::Delete => ('-', a[i]),
                Op::Insert => ('+', b[j]),
            };
            out.push(sign);
            out.push_str(line);
            if !line.ends_with('\n') {
                out.push_str("\n\\ No newline at end of file\n");
            }
        }
        k = last + 1;
    }
    out
}

/// Line operations turning `a` into `b` (a longest common subsequence).
fn diff_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..].iter().rev().zip(b[prefix..].iter().rev()).take_while(|(x, y)| x == y).count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut ops = vec![Op::Equal; prefix];
    let (n, m) = (am.len(), bm.len());
    if n.saturating_mul(m) > MAX_DIFF_CELLS {
        ops.extend(std::iter::repeat_n(Op::Delete, n));
        ops.extend(std::iter::repeat_n(Op::Insert, m));
    } else {
        // lcs[i][j]: LCS length of am[i..] and bm[j..].
        let w = m + 1;
        let mut lcs = vec![0u32; (n + 1) * w];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i * w + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push(Op::Equal);
                i += 1;
                j += 1;
            } else if j >= m || (i < n && lcs[(i + 1) * w + j] >= lcs[i * w + j + 1]) {
                ops.push(Op::Delete);
                i += 1;
            } else {
                ops.push(Op::Insert);
                j += 1;
            }
        }
    }
    ops.extend(std::iter::repeat_n(Op::Equal, suffix));
    ops
}

// ------------------------------------------------------------------ command

/// Replaces `path`'s content atomically (a temporary file in the same
/// directory, renamed over it), keeping its permissions. Symbolic links are
/// followed: the file they point at is rewritten.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".imgbuild-fmt-").tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    if let Ok(meta) = std::fs::metadata(&target) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(s: &str) -> String {
        format_text(s).unwrap_or_else(|e| panic!("{e}:\n{s}"))
    }

    #[test]
    fn orders_keys_and_indents() {
        let out = fmt(r#"{"builder":{"memory":"1G","type":"qemu"},"name":"x","$schema":"s"}"#);
        assert_eq!(
            out,
            "{\n  \"$schema\": \"s\",\n  \"name\": \"x\",\n  \"builder\": {\n    \"type\": \"qemu\",\n    \"memory\": \"1G\"\n  }\n}\n"
        );
    }

    #[test]
    fn keeps_comments_and_blank_lines() {
        let src = "// head\n{\n  // about b\n  \"b\": 1, // after b\n\n  /* about a */ \"name\": \"a\"\n  // end\n}\n// tail\n";
        let out = fmt(src);
        assert_eq!(
            out,
            "// head\n{\n  /* about a */\n  \"name\": \"a\",\n  // about b\n  \"b\": 1 // after b\n  // end\n}\n// tail\n"
        );
        // A blank line stays with the member after it.
        let out = fmt("{\n  \"name\": \"a\",\n\n  // b\n  \"b\": 1\n}");
        assert_eq!(out, "{\n  \"name\": \"a\",\n\n  // b\n  \"b\": 1\n}\n");
        assert_eq!(fmt(&out), out);
    }

    #[test]
    fn inline_arrays_only_when_short_and_plain() {
        assert_eq!(fmt("{\"a\": [1,2,\n3]}"), "{\n  \"a\": [1, 2, 3]\n}\n");
        assert_eq!(fmt("{\"a\": [1, // one\n 2]}"), "{\n  \"a\": [\n    1, // one\n    2\n  ]\n}\n");
        let long = format!("{{\"a\": [\"{}\", \"{}\"]}}", "x".repeat(45), "y".repeat(45));
        assert!(fmt(&long).contains("[\n"));
    }

    #[test]
    fn strings_and_numbers_as_written() {
        let src = "{\"a\": \"\\u00e9\\/\\\"\", \"b\": 1.50e+3, \"c\": []}";
        assert_eq!(fmt(src), "{\n  \"a\": \"\\u00e9\\/\\\"\",\n  \"b\": 1.50e+3,\n  \"c\": []\n}\n");
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(format_text("{\"a\": }"), Err(FmtError::Syntax { .. })));
    }

    #[test]
    fn diff_has_hunks() {
        let d = unified_diff("a\nb\nc\n", "a\nB\nc\n", "a/x", "b/x");
        assert_eq!(d, "--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
        assert_eq!(unified_diff("same\n", "same\n", "a", "b"), "");
        let d = unified_diff("", "x\n", "a", "b");
        assert_eq!(d, "--- a\n+++ b\n@@ -0,0 +1,1 @@\n+x\n");
        let d = unified_diff("x", "x\n", "a", "b");
        assert!(d.contains("-x\n\\ No newline at end of file\n+x\n"), "{d}");
    }
}
