//! `build --metrics-file PATH`: build metrics in the Prometheus text
//! exposition format, for node_exporter's textfile collector
//! (`--collector.textfile.directory`). See `docs/ci.md#metrics`.
//!
//! The file is rewritten atomically (temporary file in the same directory,
//! fsync, rename), so the collector never reads half a file. Several
//! templates may share one file: the series of other `name`s are kept, and a
//! lock file beside it (`.NAME.lock`, ignored by the collector, which reads
//! only `*.prom`) serialises concurrent builds.
//!
//! After a failed build the previous `imgbuild_last_success_timestamp_seconds`
//! and `imgbuild_artifact_bytes` of that name are kept: they describe the
//! last image that was published. A build skipped by `--if-changed`
//! (`up_to_date`) counts as a success (the published image is current) and
//! keeps the duration and step series of the last build that ran.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::StepTiming;

/// What one build reports.
#[derive(Debug, Clone)]
pub struct BuildMetrics<'a> {
    pub name: &'a str,
    /// The version built (or attempted).
    pub version: &'a str,
    pub success: bool,
    pub duration: Duration,
    pub steps: &'a [StepTiming],
    /// Total size of the published artifact files (0 when nothing was published).
    pub artifact_bytes: u64,
    /// Unix time of this success; `None` after a failure keeps the previous value.
    pub last_success: Option<u64>,
    /// `--if-changed` found the published image current and built nothing
    /// (`success` is then true, `steps` empty, `duration` ignored).
    pub up_to_date: bool,
}

const FAMILIES: [(&str, &str); 6] = [
    ("imgbuild_build_duration_seconds", "Wall-clock duration of the last imgbuild build."),
    ("imgbuild_step_duration_seconds", "Duration of each step of the last imgbuild build."),
    ("imgbuild_build_success", "1 if the last imgbuild build succeeded, else 0."),
    ("imgbuild_artifact_bytes", "Size of the last published artifact, all files together."),
    ("imgbuild_last_success_timestamp_seconds", "Unix time of the last successful imgbuild build."),
    ("imgbuild_build_up_to_date", "1 if the last run built nothing because the inputs had not changed, else 0."),
];

/// One sample: metric name, labels in order, value as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: String,
}

impl Sample {
    fn new(metric: &str, labels: &[(&str, &str)], value: String) -> Self {
        Sample {
            metric: metric.to_string(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
        }
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write metrics file {}", path.display())]
pub struct MetricsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes (or updates) the metrics of `m.name` in the file at `path`.
pub fn write_metrics(path: &Path, m: &BuildMetrics<'_>) -> Result<(), MetricsError> {
    let err = |source| MetricsError { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!(".{file_name}.lock")))
        .map_err(err)?;
    fs4::FileExt::lock(&lock).map_err(err)?;
    let previous = match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(err(e)),
    };
    let text = render(&merge(previous, m));
    let mut temp =
        tempfile::Builder::new().prefix(&format!(".{file_name}.")).suffix(".tmp").tempfile_in(dir).map_err(err)?;
    temp.write_all(text.as_bytes()).map_err(err)?;
    temp.as_file().sync_all().map_err(err)?;
    // node_exporter may run as another user: the file must be world-readable.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    temp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The samples of this build, plus what is kept from the previous file.
pub fn merge(previous: Vec<Sample>, m: &BuildMetrics<'_>) -> Vec<Sample> {
    let ours = |s: &Sample| s.label("name") == Some(m.name);
    let kept_from_ours = |s: &Sample| match s.metric.as_str() {
        "imgbuild_artifact_bytes" => !(m.success || m.up_to_date),
        "imgbuild_last_success_timestamp_seconds" => m.last_success.is_none(),
        "imgbuild_build_duration_seconds" | "imgbuild_step_duration_seconds" => m.up_to_date,
        _ => false,
    };
    let mut out: Vec<Sample> = previous
        .into_iter()
        .filter(|s| FAMILIES.iter().any(|(f, _)| *f == s.metric))
        .filter(|s| !ours(s) || kept_from_ours(s))
        .collect();
    let name = m.name;
    if !m.up_to_date {
        out.push(Sample::new("imgbuild_build_duration_seconds", &[("name", name)], seconds(m.duration)));
        for step in m.steps {
            let value = seconds(Duration::from_millis(step.duration_ms));
            out.push(Sample::new("imgbuild_step_duration_seconds", &[("name", name), ("step", &step.step)], value));
        }
    }
    let success = m.success || m.up_to_date;
    out.push(Sample::new("imgbuild_build_success", &[("name", name)], u8::from(success).to_string()));
    out.push(Sample::new("imgbuild_build_up_to_date", &[("name", name)], u8::from(m.up_to_date).to_string()));
    if success {
        out.push(Sample::new(
            "imgbuild_artifact_bytes",
            &[("name", name), ("version", m.version)],
            m.artifact_bytes.to_string(),
        ));
    }
    if let Some(ts) = m.last_success {
        out.push(Sample::new("imgbuild_last_success_timestamp_seconds", &[("name", name)], ts.to_string()));
    }
    out
}

/// The total `size` of a manifest's `artifacts` (for an up-to-date run,
/// from the latest published manifest).
pub fn manifest_artifact_bytes(manifest: &serde_json::Value) -> u64 {
    manifest["artifacts"].as_array().map(|a| a.iter().filter_map(|x| x["size"].as_u64()).sum()).unwrap_or(0)
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The exposition text: each family's HELP and TYPE, then its samples
/// (sorted by labels, so the file is stable).
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    for (family, help) in FAMILIES {
        let mut rows: BTreeMap<String, &Sample> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.metric == family) {
            rows.insert(format_labels(&s.labels), s);
        }
        if rows.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {family} {help}\n# TYPE {family} gauge\n"));
        for (labels, s) in rows {
            out.push_str(&format!("{family}{labels} {}\n", s.value));
        }
    }
    out
}

fn format_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
    format!("{{{}}}", inner.join(","))
}

/// Label value escaping of the text format: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Reads samples back from exposition text (comments skipped). Lines it
/// does not understand are dropped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let metric = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut consumed = None;
        loop {
            while chars.peek().is_some_and(|(_, c)| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    consumed = Some(i + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return None,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
            labels.push((key.trim().to_string(), value));
        }
        rest = &after[consumed?..];
    }
    let value = rest.split_whitespace().next()?.to_string();
    Some(Sample { metric, labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps() -> Vec<StepTiming> {
        vec![
            StepTiming { step: "boot".into(), duration_ms: 1500 },
            StepTiming { step: "provisioners[0] (shell)".into(), duration_ms: 250 },
        ]
    }

    fn metrics<'a>(name: &'a str, success: bool, steps: &'a [StepTiming], ts: Option<u64>) -> BuildMetrics<'a> {
        BuildMetrics {
            name,
            version: "1.0.0",
            success,
            duration: Duration::from_millis(12_345),
            steps,
            artifact_bytes: 4096,
            last_success: ts,
            up_to_date: false,
        }
    }

    fn value(samples: &[Sample], metric: &str, name: &str) -> Option<String> {
        samples.iter().find(|s| s.metric == metric && s.label("name") == Some(name)).map(|s| s.value.clone())
    }

    #[test]
    fn writes_every_family_with_help_and_type() {
        let steps = steps();
        let text = render(&merge(Vec::new(), &metrics("web", true, &steps, Some(1_700_000_000))));
        for (family, _) in FAMILIES {
            assert!(text.contains(&format!("# HELP {family} ")), "{text}");
            assert!(text.contains(&format!("# TYPE {family} gauge\n")), "{text}");
        }
        assert!(text.contains("imgbuild_build_duration_seconds{name=\"web\"} 12.345\n"), "{text}");
        assert!(text.contains("imgbuild_step_duration_seconds{name=\"web\",step=\"boot\"} 1.500\n"), "{text}");
        assert!(text.contains("imgbuild_build_success{name=\"web\"} 1\n"), "{text}");
        assert!(text.contains("imgbuild_artifact_bytes{name=\"web\",version=\"1.0.0\"} 4096\n"), "{text}");
        assert!(text.contains("imgbuild_last_success_timestamp_seconds{name=\"web\"} 1700000000\n"), "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn escapes_label_values_and_parses_them_back() {
        let steps = vec![StepTiming { step: "say \"hi\" \\ now\nplease".into(), duration_ms: 1 }];
        let samples = merge(Vec::new(), &metrics("web", true, &steps, None));
        let text = render(&samples);
        assert!(text.contains(r#"step="say \"hi\" \\ now\nplease""#), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("imgbuild_step_duration_seconds")).count(), 1);
        let back = parse(&text);
        let step = back.iter().find(|s| s.metric == "imgbuild_step_duration_seconds").unwrap();
        assert_eq!(step.label("step"), Some("say \"hi\" \\ now\nplease"));
        assert_eq!(render(&back), text);
    }

    #[test]
    fn a_failure_keeps_the_last_success_and_artifact_and_other_names() {
        let steps = steps();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/imgbuild.prom");
        write_metrics(&path, &metrics("web", true, &steps, Some(111))).unwrap();
        write_metrics(&path, &metrics("db", true, &steps, Some(222))).unwrap();
        let failed = BuildMetrics { version: "1.0.1", artifact_bytes: 0, ..metrics("web", false, &steps[..1], None) };
        write_metrics(&path, &failed).unwrap();
        let samples = parse(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(value(&samples, "imgbuild_build_success", "web").as_deref(), Some("0"));
        assert_eq!(value(&samples, "imgbuild_last_success_timestamp_seconds", "web").as_deref(), Some("111"));
        let bytes: Vec<_> = samples.iter().filter(|s| s.metric == "imgbuild_artifact_bytes").collect();
        assert_eq!(bytes.len(), 2, "{bytes:?}");
        assert!(bytes.iter().any(|s| s.label("name") == Some("web") && s.label("version") == Some("1.0.0")));
        let web_steps =
            samples.iter().filter(|s| s.metric == "imgbuild_step_duration_seconds" && s.label("name") == Some("web"));
        assert_eq!(web_steps.count(), 1, "old step series are replaced");
        assert_eq!(value(&samples, "imgbuild_build_success", "db").as_deref(), Some("1"));
        assert_eq!(value(&samples, "imgbuild_last_success_timestamp_seconds", "db").as_deref(), Some("222"));
        // The next success replaces the version series.
        let ok = BuildMetrics { version: "1.0.2", ..metrics("web", true, &steps, Some(333)) };
        write_metrics(&path, &ok).unwrap();
        let samples = parse(&std::fs::read_to_string(&path).unwrap());
        let web_bytes: Vec<_> = samples
            .iter()
            .filter(|s| s.metric == "imgbuild_artifact_bytes" && s.label("name") == Some("web"))
            .collect();
        assert_eq!(web_bytes.len(), 1);
        assert_eq!(web_bytes[0].label("version"), Some("1.0.2"));
        assert_eq!(value(&samples, "imgbuild_last_success_timestamp_seconds", "web").as_deref(), Some("333"));
        // Only the .prom file and the lock are left: the temp file was renamed.
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".imgbuild.prom.lock", "imgbuild.prom"]);
    }

    #[test]
    fn an_up_to_date_run_keeps_the_last_build_durations() {
        let steps = steps();
        let built = merge(Vec::new(), &metrics("web", true, &steps, Some(100)));
        let skipped = BuildMetrics {
            duration: Duration::from_millis(20),
            up_to_date: true,
            ..metrics("web", true, &[], Some(200))
        };
        let samples = parse(&render(&merge(built, &skipped)));
        assert_eq!(value(&samples, "imgbuild_build_duration_seconds", "web").as_deref(), Some("12.345"));
        assert_eq!(samples.iter().filter(|s| s.metric == "imgbuild_step_duration_seconds").count(), 2);
        assert_eq!(value(&samples, "imgbuild_build_up_to_date", "web").as_deref(), Some("1"));
        assert_eq!(value(&samples, "imgbuild_build_success", "web").as_deref(), Some("1"));
        assert_eq!(value(&samples, "imgbuild_last_success_timestamp_seconds", "web").as_deref(), Some("200"));
        let manifest = serde_json::json!({ "artifacts": [ { "size": 10 }, { "size": 32 } ] });
        assert_eq!(manifest_artifact_bytes(&manifest), 42);
    }

    #[test]
    fn a_first_failure_has_no_last_success() {
        let steps = steps();
        let text = render(&merge(Vec::new(), &metrics("web", false, &steps, None)));
        assert!(!text.contains("imgbuild_last_success_timestamp_seconds"), "{text}");
        assert!(!text.contains("imgbuild_artifact_bytes"), "{text}");
        assert!(text.contains("imgbuild_build_success{name=\"web\"} 0\n"), "{text}");
    }

    /// The Prometheus project's own Python parser (prometheus-client, in the
    /// test venv) reads every sample back, label escapes included.
    #[test]
    fn the_prometheus_client_parser_reads_the_file_back() {
        let step = "a \"quoted\" step\\ with\nnewline";
        let steps = vec![StepTiming { step: step.into(), duration_ms: 3 }];
        let text = render(&merge(Vec::new(), &metrics("web", true, &steps, Some(1))));
        let script = "import sys, json\n\
from prometheus_client.parser import text_string_to_metric_families\n\
print(json.dumps([[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))\n";
        let mut child = std::process::Command::new(crate::testing::venv_program("python"))
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        let samples: Vec<(String, std::collections::BTreeMap<String, String>, f64)> =
            serde_json::from_slice(&out.stdout).unwrap();
        let ours = parse(&text);
        assert_eq!(samples.len(), ours.len(), "{text}");
        assert!(samples.iter().any(|(n, l, v)| n == "imgbuild_build_success" && l["name"] == "web" && *v == 1.0));
        assert!(samples.iter().any(|(_, l, _)| l.get("step").map(String::as_str) == Some(step)), "{samples:?}");
    }
}
