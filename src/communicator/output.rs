//! Command output plumbing: line splitting, sinks, results, shell quoting.

use std::collections::VecDeque;

use super::error::SshError;

/// Number of output lines kept in [`ExecResult::tail`].
pub const TAIL_LINES: usize = 20;

/// Which remote stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Receives remote output one complete line at a time (without the trailing
/// `\n` or `\r\n`), decoded as lossy UTF-8. A final line without a newline is
/// delivered when the command ends.
pub trait OutputSink: Send {
    fn line(&mut self, stream: OutputStream, line: &str);
}

impl<F: FnMut(OutputStream, &str) + Send> OutputSink for F {
    fn line(&mut self, stream: OutputStream, line: &str) {
        self(stream, line)
    }
}

/// A sink that drops every line.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl OutputSink for NullSink {
    fn line(&mut self, _stream: OutputStream, _line: &str) {}
}

/// A sink that keeps every line, in arrival order.
#[derive(Debug, Default, Clone)]
pub struct CollectSink {
    pub lines: Vec<(OutputStream, String)>,
}

impl CollectSink {
    /// The lines of one stream, joined with `\n`.
    pub fn text(&self, stream: OutputStream) -> String {
        let lines: Vec<&str> = self.lines.iter().filter(|(s, _)| *s == stream).map(|(_, l)| l.as_str()).collect();
        lines.join("\n")
    }
}

impl OutputSink for CollectSink {
    fn line(&mut self, stream: OutputStream, line: &str) {
        self.lines.push((stream, line.to_owned()));
    }
}

/// How a remote command ended. Callers decide what a non-zero status means.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResult {
    /// `exit-status` sent by the server, if any.
    pub exit_status: Option<u32>,
    /// `exit-signal` name (e.g. `KILL`) if the command died from a signal.
    pub exit_signal: Option<String>,
    /// The last [`TAIL_LINES`] output lines of both streams, in arrival order.
    pub tail: Vec<String>,
}

impl ExecResult {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

/// Splits byte chunks of one stream into lines.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk; calls `emit` for every completed line.
    pub(crate) fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        // Every segment but the last ends with a newline.
        let mut segments = chunk.split(|b| *b == b'\n');
        let mut current = segments.next().unwrap_or_default();
        for next in segments {
            self.pending.extend_from_slice(current);
            emit_line(&self.pending, &mut emit);
            self.pending.clear();
            current = next;
        }
        self.pending.extend_from_slice(current);
    }

    /// Emits the unterminated last line, if any.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            emit_line(&self.pending, &mut emit);
            self.pending.clear();
        }
    }
}

fn emit_line(raw: &[u8], emit: &mut impl FnMut(&str)) {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    emit(&String::from_utf8_lossy(raw));
}

/// Forwards lines of both streams to a sink and remembers the tail.
pub(crate) struct LineRouter<'a> {
    sink: &'a mut dyn OutputSink,
    stdout: LineSplitter,
    stderr: LineSplitter,
    tail: VecDeque<String>,
}

impl<'a> LineRouter<'a> {
    pub(crate) fn new(sink: &'a mut dyn OutputSink) -> Self {
        Self {
            sink,
            stdout: LineSplitter::default(),
            stderr: LineSplitter::default(),
            tail: VecDeque::with_capacity(TAIL_LINES),
        }
    }

    pub(crate) fn push(&mut self, stream: OutputStream, chunk: &[u8]) {
        let Self { sink, stdout, stderr, tail } = self;
        let splitter = match stream {
            OutputStream::Stdout => stdout,
            OutputStream::Stderr => stderr,
        };
        splitter.push(chunk, |line| deliver(&mut **sink, tail, stream, line));
    }

    /// Flushes partial lines and returns the tail.
    pub(crate) fn finish(mut self) -> Vec<String> {
        let Self { sink, stdout, stderr, tail } = &mut self;
        stdout.finish(|line| deliver(&mut **sink, tail, OutputStream::Stdout, line));
        stderr.finish(|line| deliver(&mut **sink, tail, OutputStream::Stderr, line));
        self.tail.into_iter().collect()
    }
}

fn deliver(sink: &mut dyn OutputSink, tail: &mut VecDeque<String>, stream: OutputStream, line: &str) {
    sink.line(stream, line);
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line.to_owned());
}

/// Quotes `value` for a POSIX shell: wraps it in single quotes and turns every
/// `'` into `'\''`. The result is always one shell word with no expansion.
pub fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for ch in value.chars() {
        if ch == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

/// True for names matching `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Prefixes `command` with `export K='v';` assignments (validated names,
/// quoted values), so the environment does not depend on the server's `AcceptEnv`.
pub fn command_with_env(command: &str, env: &[(String, String)]) -> Result<String, SshError> {
    let mut out = String::new();
    for (name, value) in env {
        if !is_valid_env_name(name) {
            return Err(SshError::InvalidEnvName { name: name.clone() });
        }
        out.push_str("export ");
        out.push_str(name);
        out.push('=');
        out.push_str(&shell_quote(value));
        out.push_str("; ");
    }
    out.push_str(command);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_plain_and_special() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("abc"), "'abc'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(x);\n"), "'$(x);\n'");
    }

    #[test]
    fn env_names() {
        assert!(is_valid_env_name("_A1"));
        assert!(is_valid_env_name("PATH"));
        assert!(!is_valid_env_name("1A"));
        assert!(!is_valid_env_name(""));
        assert!(!is_valid_env_name("A-B"));
        assert!(!is_valid_env_name("A B"));
        assert!(!is_valid_env_name("Ä"));
    }

    #[test]
    fn env_prefix() {
        let env = vec![("K".to_owned(), "a'b".to_owned())];
        let cmd = command_with_env("echo", &env);
        assert_eq!(cmd.ok().as_deref(), Some("export K='a'\\''b'; echo"));
        let bad = vec![("K;rm".to_owned(), String::new())];
        assert!(matches!(command_with_env("echo", &bad), Err(SshError::InvalidEnvName { .. })));
    }

    #[test]
    fn splitter_handles_partial_lines_and_crlf() {
        let mut sink = CollectSink::default();
        let mut router = LineRouter::new(&mut sink);
        router.push(OutputStream::Stdout, b"one\r\ntw");
        router.push(OutputStream::Stderr, b"err\n");
        router.push(OutputStream::Stdout, b"o\nthree");
        let tail = router.finish();
        assert_eq!(tail, vec!["one", "err", "two", "three"]);
        assert_eq!(sink.text(OutputStream::Stdout), "one\ntwo\nthree");
    }

    #[test]
    fn splitter_keeps_split_utf8() {
        let mut sink = CollectSink::default();
        let mut router = LineRouter::new(&mut sink);
        let bytes = "héllo\n".as_bytes();
        router.push(OutputStream::Stdout, &bytes[..2]);
        router.push(OutputStream::Stdout, &bytes[2..]);
        router.finish();
        assert_eq!(sink.text(OutputStream::Stdout), "héllo");
    }

    #[test]
    fn tail_is_bounded() {
        let mut sink = NullSink;
        let mut router = LineRouter::new(&mut sink);
        for i in 0..30 {
            router.push(OutputStream::Stdout, format!("{i}\n").as_bytes());
        }
        let tail = router.finish();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.first().map(String::as_str), Some("10"));
    }
}
