//! Human table and JUnit XML for verify results.

use std::fmt::Write as _;

use console::{Alignment, measure_text_width, pad_str, truncate_str};

use super::{CheckResult, summary};

/// Widest CHECK cell; longer names are cut with `…`.
const NAME_WIDTH: usize = 40;
/// Widest EXPECTED / ACTUAL cell; failed checks are repeated in full below the table.
const VALUE_WIDTH: usize = 50;
/// Longest value repeated under "Failed checks".
const DETAIL_CHARS: usize = 2000;

/// The results as an aligned table for stderr: `CHECK | EXPECTED | ACTUAL |
/// RESULT | TIME`, a summary line and, for each failed check, its full
/// expected and actual values.
pub fn render_table(results: &[CheckResult]) -> String {
    if results.is_empty() {
        return "verify: no checks\n".to_owned();
    }
    let header = ["CHECK", "EXPECTED", "ACTUAL", "RESULT", "TIME"].map(str::to_owned);
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|r| {
            [
                cell(&r.name, NAME_WIDTH),
                cell(&r.expected, VALUE_WIDTH),
                cell(&r.actual, VALUE_WIDTH),
                if r.passed { "PASS" } else { "FAIL" }.to_owned(),
                format_ms(r.duration_ms),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| measure_text_width(&h));
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(measure_text_width(c));
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(&pad_str(c, w, Alignment::Left, None));
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let (passed, failed) = summary(results);
    let total_ms: u64 = results.iter().map(|r| r.duration_ms).sum();
    let _ = writeln!(
        out,
        "\nverify: {} {}, {passed} passed, {failed} failed ({})",
        results.len(),
        if results.len() == 1 { "check" } else { "checks" },
        format_ms(total_ms)
    );
    if failed > 0 {
        out.push_str("\nFailed checks:\n");
        for r in results.iter().filter(|r| !r.passed) {
            let _ = writeln!(out, "  {}", one_line(&r.name));
            let _ = writeln!(out, "    expected: {}", detail(&r.expected));
            let _ = writeln!(out, "    actual:   {}", detail(&r.actual));
        }
    }
    out
}

/// Control characters (newlines, tabs, escapes) as spaces.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn cell(text: &str, width: usize) -> String {
    truncate_str(&one_line(text), width, "…").into_owned()
}

fn detail(text: &str) -> String {
    let text = one_line(text);
    match text.char_indices().nth(DETAIL_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 { format!("{ms}ms") } else { format!("{:.1}s", ms as f64 / 1000.0) }
}

fn seconds(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// JUnit XML for CI: one `<testsuite>` named `suite`, one `<testcase>` per
/// check (`classname="imgbuild.verify.KIND"`), a `<failure>` with expected
/// and actual for each failed one.
pub fn junit_xml(suite: &str, results: &[CheckResult]) -> String {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    junit_xml_at(suite, results, &now)
}

/// [`junit_xml`] with a fixed `timestamp` (UTC, `YYYY-MM-DDTHH:MM:SS`).
pub(crate) fn junit_xml_at(suite: &str, results: &[CheckResult], timestamp: &str) -> String {
    let (_, failed) = summary(results);
    let total_ms: u64 = results.iter().map(|r| r.duration_ms).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" time=\"{}\">",
        escape(suite),
        results.len(),
        seconds(total_ms)
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\" time=\"{}\" timestamp=\"{}\">",
        escape(suite),
        results.len(),
        seconds(total_ms),
        escape(timestamp)
    );
    for r in results {
        let _ = write!(
            out,
            "    <testcase classname=\"imgbuild.verify.{}\" name=\"{}\" time=\"{}\"",
            escape(r.kind),
            escape(&r.name),
            seconds(r.duration_ms)
        );
        if r.passed {
            out.push_str("/>\n");
            continue;
        }
        let message = format!("expected {}; actual {}", r.expected, r.actual);
        let _ = writeln!(
            out,
            ">\n      <failure message=\"{}\" type=\"{}\">expected: {}\nactual: {}</failure>\n    </testcase>",
            escape(&message),
            escape(r.kind),
            escape(&r.expected),
            escape(&r.actual)
        );
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Escapes text for XML content and attribute values: `& < > " '` become
/// entities, tab/newline/carriage return become character references (so
/// attribute values keep them), and characters XML 1.0 cannot carry (other
/// C0 controls, U+FFFE, U+FFFF) are dropped.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}
