//! Template diagnostics: every error names the file, the JSON path and the
//! `line:column`, and shows the offending line, the way compilers do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::jsonc::Span;

/// A template (or var-file) source text with its line index.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, text: String) -> Arc<Self> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(SourceFile { path, text, line_starts })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line + 1, column + 1)
    }

    fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: Arc<SourceFile>,
    pub span: Span,
    /// JSON path such as `builder.ssh.username`; empty for the document root.
    pub path: String,
    pub message: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn location(&self) -> String {
        let (line, col) = self.file.line_col(self.span.start);
        format!("{}:{line}:{col}", display_path(&self.file.path))
    }
}

/// Renders a short relative path when the file is below the current directory.
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// How much of a long source line a diagnostic shows around its column.
const SHOWN_BEFORE_COLUMN: usize = 60;
const SHOWN_AFTER_COLUMN: usize = 100;

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.file.line_col(self.span.start);
        if self.path.is_empty() {
            writeln!(f, "{}", self.message)?;
        } else {
            writeln!(f, "{} (at {})", self.message, self.path)?;
        }
        writeln!(f, "  --> {}:{line}:{col}", display_path(&self.file.path))?;
        let text = self.file.line_text(line);
        let gutter = line.to_string().len();
        let (end_line, end_col) = self.file.line_col(self.span.end.max(self.span.start + 1) - 1);
        let width = if end_line == line { (end_col + 1).saturating_sub(col).max(1) } else { 1 };
        // A long line shows as a window around the column: nobody reads a
        // minified 100 KB line, and the caret's padding stays small.
        let skip = (col - 1).saturating_sub(SHOWN_BEFORE_COLUMN);
        let shown: String = text.chars().skip(skip).take(SHOWN_BEFORE_COLUMN + SHOWN_AFTER_COLUMN).collect();
        let (ellipsis, pad) = if skip > 0 { ("…", col - skip) } else { ("", col - 1) };
        writeln!(f, "{:gutter$} |", "")?;
        writeln!(f, "{line} | {ellipsis}{shown}")?;
        write!(f, "{:gutter$} | {}{}", "", " ".repeat(pad), "^".repeat(width.min(80)))?;
        if let Some(help) = &self.help {
            write!(f, "\n{:gutter$} = help: {help}", "")?;
        }
        Ok(())
    }
}

/// All problems found in one template; displayed one after another.
#[derive(Debug, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} errors in {}", self.0.len(), display_path(&self.0[0].file.path))?;
        }
        Ok(())
    }
}

/// "did you mean" suggestion among known names (Jaro-Winkler, like cargo).
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_chars() {
        let f = SourceFile::new("t.json".into(), "{\n  \"é\": 1\n}".into());
        assert_eq!(f.line_col(0), (1, 1));
        let pos = f.text.find('1').unwrap();
        assert_eq!(f.line_col(pos), (2, 8));
    }

    /// Found by the fuzzer: a column past 65,535 made the caret's padding
    /// overflow the formatter's width limit (a panic in `validate`).
    #[test]
    fn a_long_line_shows_a_window_around_the_column() {
        let text = format!("{{\"a\": \"{}\", \"b\": x}}", "y".repeat(70_000));
        let start = text.find('x').unwrap();
        let file = SourceFile::new("t.json".into(), text);
        let d = Diagnostic {
            file,
            span: Span { start, end: start + 1 },
            path: "b".into(),
            message: "bad".into(),
            help: None,
        };
        let shown = d.to_string();
        assert!(shown.contains("t.json:1:70016"), "{shown}");
        let lines: Vec<&str> = shown.lines().collect();
        let (source, caret) = (lines[lines.len() - 2], lines[lines.len() - 1]);
        assert!(source.len() < 300 && source.contains("…yyy") && source.ends_with(", \"b\": x}"), "{source}");
        assert_eq!(caret.find('^'), source.chars().position(|c| c == 'x'), "{shown}");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("usernme", ["username", "password"]), Some("username"));
        assert_eq!(did_you_mean("zzz", ["username", "password"]), None);
    }
}
