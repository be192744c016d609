//! Mutation fuzzing of everything that reads user input, on stable Rust.
//!
//! One driver ([`fuzz_target`]) runs every target: it starts from seed inputs
//! (the repository's templates, the inline templates of the other tests,
//! sample checksum lists, ...), mutates them with a seeded RNG (byte and bit
//! flips, truncation, insertions, dictionary tokens, duplicated ranges, deep
//! nesting, huge numbers, invalid UTF-8, splices of two inputs) and keeps an
//! input in its corpus when it reaches an outcome (an error message, with
//! numbers and quoted text blanked) not seen before.
//!
//! Every input must be processed without a panic, within a time limit
//! (`IMGBUILD_FUZZ_INPUT_LIMIT_MS`, 2000 by default; a watchdog aborts the
//! process on a real hang), and satisfy the target's properties (every
//! template diagnostic lies within the file, printed durations parse back,
//! ...). Findings are minimised and printed as Rust literals for a
//! regression test.
//!
//! `cargo test --test fuzz` is the short run (a fixed seed and a bounded
//! count). The long run is `scripts/fuzz-long.sh` (release mode,
//! `IMGBUILD_FUZZ_ITERATIONS` inputs per target); see docs/testing.md.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use imgbuild::builder::qemu::keys;
use imgbuild::source::{Checksum, ListLookup, lookup_in_list};
use imgbuild::store::LocalStore;
use imgbuild::template::interp::{BuildVars, Interpolator, Mode, VarValue, render_http};
use imgbuild::template::jsonc::{self, Node, NodeKind, Span};
use imgbuild::template::units::{Dur, Size};
use imgbuild::template::{self, Diagnostic, LoadOptions, TemplateError};
use imgbuild_store_format as store_format;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ------------------------------------------------------------------ driver

/// Inputs per target in the short run (`cargo test`).
const SHORT_RUN_ITERATIONS: u64 = 5_000;
/// The seed of the short run; the long run picks a fresh one unless given.
const DEFAULT_SEED: u64 = 0x1a6b_u64;
/// Inputs longer than this are cut: big enough for quadratic blow-ups to show.
const MAX_INPUT_LEN: usize = 64 * 1024;
/// Inputs kept for mutation besides the seeds.
const MAX_CORPUS: usize = 4_096;
/// Distinct findings reported per target before the run stops.
const MAX_FINDINGS: usize = 8;

struct Config {
    iterations: u64,
    seed: u64,
    input_limit: Duration,
}

fn config() -> Config {
    let number = |name: &str| {
        std::env::var(name).ok().map(|v| {
            let v = v.replace('_', "");
            v.parse::<u64>().unwrap_or_else(|_| panic!("{name}={v}: expected a whole number"))
        })
    };
    Config {
        iterations: number("IMGBUILD_FUZZ_ITERATIONS").unwrap_or(SHORT_RUN_ITERATIONS),
        seed: number("IMGBUILD_FUZZ_SEED").unwrap_or(DEFAULT_SEED),
        input_limit: Duration::from_millis(number("IMGBUILD_FUZZ_INPUT_LIMIT_MS").unwrap_or(2_000)),
    }
}

/// One problem found: a panic (a failed property is a panic too) or an input
/// that took longer than the limit.
#[derive(Debug, Clone)]
struct Finding {
    /// Panic location and message, or `slow`; what findings are told apart by.
    signature: String,
    message: String,
    input: Vec<u8>,
}

thread_local! {
    /// Set while this thread runs fuzz inputs: panics are recorded, not printed.
    static CAPTURE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                let slot = c.as_mut()?;
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                *slot = format!("panicked at {location}: {message}");
                Some(())
            });
            if captured.is_none() {
                default(info);
            }
        }));
    });
}

/// Runs `check` on one input; `Err` is the panic (or property failure).
/// A target's checks of one input: a summary of what it did, or a panic.
type CheckFn = dyn Fn(&[u8]) -> String;

fn run_one(check: &dyn Fn(&[u8]) -> String, input: &[u8]) -> Result<String, String> {
    CAPTURE.with(|c| *c.borrow_mut() = Some(String::new()));
    let result = catch_unwind(AssertUnwindSafe(|| check(input)));
    let message = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    result.map_err(|_| message)
}

/// The input being processed, for the watchdog to print if it never returns.
struct Current {
    target: String,
    started: Option<Instant>,
    input: Vec<u8>,
}

/// Aborts the process when one input runs far past the limit (a real hang
/// never returns to the driver, so the driver cannot report it itself).
struct Watchdog {
    current: Arc<Mutex<Current>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(target: &str, limit: Duration) -> Self {
        let current = Arc::new(Mutex::new(Current { target: target.to_string(), started: None, input: Vec::new() }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (current, stop) = (current.clone(), stop.clone());
            // Five times the limit: the driver reports inputs that are merely slow.
            let hang = limit * 5;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::park_timeout(Duration::from_millis(200));
                    let c = current.lock().unwrap_or_else(|e| e.into_inner());
                    if c.started.is_some_and(|s| s.elapsed() > hang) {
                        let file = save_finding(&c.target, "hang", &c.input);
                        eprintln!(
                            "fuzz {}: an input has run for more than {hang:?}; aborting. Input ({} bytes, saved to {}):\n{}",
                            c.target,
                            c.input.len(),
                            file.display(),
                            literal(&c.input)
                        );
                        std::process::abort();
                    }
                }
            })
        };
        Watchdog { current, stop, thread: Some(thread) }
    }

    fn begin(&self, input: &[u8]) {
        let mut c = self.current.lock().unwrap_or_else(|e| e.into_inner());
        c.input.clear();
        c.input.extend_from_slice(input);
        c.started = Some(Instant::now());
    }

    fn end(&self) {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).started = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Writes a finding's input under the cargo target directory; returns the path.
fn save_finding(target: &str, kind: &str, input: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{target}-{kind}-{hash:016x}.bin"));
    let _ = std::fs::write(&path, input);
    path
}

/// The input as a Rust byte-string literal, ready for a regression test.
fn literal(input: &[u8]) -> String {
    const SHOWN: usize = 4_000;
    let shown = &input[..input.len().min(SHOWN)];
    let more =
        if input.len() > SHOWN { format!(" /* … {} more bytes */", input.len() - SHOWN) } else { String::new() };
    format!("b\"{}\"{more}", shown.escape_ascii())
}

/// Blanks numbers and `quoted` parts, so that outcomes differing only there count once.
fn outcome_class(outcome: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in outcome.chars().take(160) {
        match c {
            '`' => {
                quoted = !quoted;
                out.push('`');
            }
            _ if quoted => {}
            '0'..='9' => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

struct Target<'a> {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    /// Tokens worth inserting for this input format.
    dictionary: Vec<Vec<u8>>,
    /// Share of the configured iterations this target runs (slow targets < 1).
    share: f64,
    /// Processes one input, panicking when a property fails; returns a short outcome.
    check: &'a dyn Fn(&[u8]) -> String,
}

struct Summary {
    inputs: u64,
    /// The longest time one input took, and that input's length.
    slowest: (Duration, usize),
    corpus: usize,
    outcomes: usize,
    elapsed: Duration,
}

/// Fuzzes one target: `iterations × share` mutated inputs from a seeded RNG.
/// Panics with every distinct finding, each minimised, at the end.
fn fuzz_target(target: Target<'_>) -> Summary {
    install_panic_hook();
    let config = config();
    let iterations = ((config.iterations as f64) * target.share).ceil() as u64;
    let seed = config.seed ^ target.name.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dictionary = common_dictionary();
    dictionary.extend(target.dictionary.iter().cloned());
    let mut corpus: Vec<Vec<u8>> = target.seeds.iter().filter(|s| s.len() <= MAX_INPUT_LEN).cloned().collect();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let watchdog = Watchdog::start(target.name, config.input_limit);
    let mut seen = HashSet::new();
    let mut findings: BTreeMap<String, Finding> = BTreeMap::new();
    let started = Instant::now();
    let mut inputs = 0;
    let mut slowest = (Duration::ZERO, 0);
    // The seeds themselves first, unmutated.
    let mut pending: Vec<Vec<u8>> = corpus.iter().rev().cloned().collect();
    while inputs < iterations.max(pending.len() as u64) && findings.len() < MAX_FINDINGS {
        let input = pending.pop().unwrap_or_else(|| mutate(&mut rng, &corpus, &dictionary));
        inputs += 1;
        watchdog.begin(&input);
        let at = Instant::now();
        let result = run_one(target.check, &input);
        let took = at.elapsed();
        watchdog.end();
        if took > slowest.0 {
            slowest = (took, input.len());
        }
        let finding = match result {
            Err(message) => Some(Finding { signature: panic_signature(&message), message, input }),
            // Timed again: on a loaded machine a single stall is not the input's fault.
            Ok(_) if took > config.input_limit && timed(target.check, &input) > config.input_limit => Some(Finding {
                signature: "slow".into(),
                message: format!("took {took:?} (limit {:?})", config.input_limit),
                input,
            }),
            Ok(outcome) => {
                if seen.insert(outcome_class(&outcome)) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
                None
            }
        };
        if let Some(f) = finding {
            findings.entry(f.signature.clone()).or_insert(f);
        }
    }
    drop(watchdog);
    let summary = Summary { inputs, slowest, corpus: corpus.len(), outcomes: seen.len(), elapsed: started.elapsed() };
    eprintln!(
        "fuzz {}: {} inputs in {:.1?} (IMGBUILD_FUZZ_SEED={}), slowest {:.1?} ({} bytes), {} distinct outcomes, corpus {}, {} findings",
        target.name,
        summary.inputs,
        summary.elapsed,
        config.seed,
        summary.slowest.0,
        summary.slowest.1,
        summary.outcomes,
        summary.corpus,
        findings.len()
    );
    if !findings.is_empty() {
        let report: Vec<String> = findings
            .into_values()
            .map(|f| {
                let input = if f.signature == "slow" { f.input } else { minimise(target.check, &f.signature, f.input) };
                let file = save_finding(target.name, "finding", &input);
                format!(
                    "{}\n  input ({} bytes, saved to {}): {}",
                    f.message,
                    input.len(),
                    file.display(),
                    literal(&input)
                )
            })
            .collect();
        panic!("fuzz {}: {} finding(s):\n{}", target.name, report.len(), report.join("\n"));
    }
    summary
}

fn timed(check: &dyn Fn(&[u8]) -> String, input: &[u8]) -> Duration {
    let at = Instant::now();
    let _ = run_one(check, input);
    at.elapsed()
}

/// Where a panic happened plus its message without numbers: one signature per bug.
fn panic_signature(message: &str) -> String {
    outcome_class(message)
}

/// Shrinks an input while it still fails with the same signature (delta debugging).
fn minimise(check: &dyn Fn(&[u8]) -> String, signature: &str, mut input: Vec<u8>) -> Vec<u8> {
    let fails = |candidate: &[u8]| matches!(run_one(check, candidate), Err(m) if panic_signature(&m) == signature);
    let mut chunk = input.len() / 2;
    let mut tries = 0;
    while chunk >= 1 && tries < 20_000 {
        let mut start = 0;
        let mut shrunk = false;
        while start < input.len() && tries < 20_000 {
            let end = (start + chunk).min(input.len());
            let mut candidate = input[..start].to_vec();
            candidate.extend_from_slice(&input[end..]);
            tries += 1;
            if fails(&candidate) {
                input = candidate;
                shrunk = true;
            } else {
                start += chunk;
            }
        }
        if !shrunk {
            chunk /= 2;
        }
    }
    input
}

// --------------------------------------------------------------- mutation

fn common_dictionary() -> Vec<Vec<u8>> {
    let tokens: &[&[u8]] = &[
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b"//",
        b"/*",
        b"*/",
        b"\\",
        b"\\u",
        b"\\ud800",
        b"\\udc00",
        b"\\ud83d\\ude00",
        b"\\ud800\\u0041",
        b"{{",
        b"}}",
        b"{{ ",
        b" }}",
        b"0",
        b"-0",
        b"1e999",
        b"-1e-999",
        b"0.0000001",
        b"99999999999999999999",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"340282366920938463463374607431768211456",
        b"true",
        b"null",
        b"\xff",
        b"\xc3",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xef\xbb\xbf",
        b"\0",
        b"\r\n",
        b"\r",
        b"\t",
        "é".as_bytes(),
        "😀".as_bytes(),
        "\u{202e}".as_bytes(),
    ];
    tokens.iter().map(|t| t.to_vec()).collect()
}

fn bytes_of(tokens: &[&str]) -> Vec<Vec<u8>> {
    tokens.iter().map(|t| t.as_bytes().to_vec()).collect()
}

/// A random position in `input` (`0..=len`).
fn position(rng: &mut StdRng, input: &[u8]) -> usize {
    rng.random_range(0..=input.len())
}

/// A random range of `input`, mostly short.
fn range(rng: &mut StdRng, input: &[u8]) -> (usize, usize) {
    if input.is_empty() {
        return (0, 0);
    }
    let start = rng.random_range(0..input.len());
    let max = (input.len() - start).min(if rng.random_bool(0.9) { 32 } else { input.len() });
    (start, start + rng.random_range(1..=max))
}

/// One mutant of a random corpus entry: 1-4 stacked mutations (sometimes more).
fn mutate(rng: &mut StdRng, corpus: &[Vec<u8>], dictionary: &[Vec<u8>]) -> Vec<u8> {
    let mut input = corpus[rng.random_range(0..corpus.len())].clone();
    let rounds = if rng.random_bool(0.1) { rng.random_range(5..=16) } else { rng.random_range(1..=4) };
    for _ in 0..rounds {
        mutate_once(rng, &mut input, corpus, dictionary);
    }
    input.truncate(MAX_INPUT_LEN);
    input
}

fn mutate_once(rng: &mut StdRng, input: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[Vec<u8>]) {
    const INTERESTING: &[u8] = b"\0\x01\x7f\x80\xff \"{}[],:\\/\n\r\t<>*.-+e#@=";
    match rng.random_range(0..14) {
        // Flip one bit.
        0 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] ^= 1 << rng.random_range(0..8);
        }
        // Replace a byte by an interesting or random one.
        1 if !input.is_empty() => {
            let i = rng.random_range(0..input.len());
            input[i] =
                if rng.random_bool(0.7) { INTERESTING[rng.random_range(0..INTERESTING.len())] } else { rng.random() };
        }
        // Delete a range.
        2 => {
            let (start, end) = range(rng, input);
            input.drain(start..end);
        }
        // Truncate.
        3 => {
            let at = position(rng, input);
            input.truncate(at);
        }
        // Insert random bytes.
        4 => {
            let at = position(rng, input);
            let n = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            input.splice(at..at, bytes);
        }
        // Insert or overwrite with a dictionary token.
        5 | 6 => {
            let token = &dictionary[rng.random_range(0..dictionary.len())];
            let at = position(rng, input);
            if rng.random_bool(0.5) {
                input.splice(at..at, token.iter().copied());
            } else {
                let end = (at + token.len()).min(input.len());
                input.splice(at..end, token.iter().copied());
            }
        }
        // Duplicate a range elsewhere (duplicated keys, repeated fields).
        7 => {
            let (start, end) = range(rng, input);
            let copy = input[start..end].to_vec();
            let at = position(rng, input);
            input.splice(at..at, copy);
        }
        // Repeat a range many times in place (deep nesting, long runs).
        8 => {
            let (start, end) = range(rng, input);
            let times = if rng.random_bool(0.8) { rng.random_range(2..=64) } else { rng.random_range(64..=4_096) };
            let copy = input[start..end].repeat(times.min(MAX_INPUT_LEN / (end - start).max(1)));
            input.splice(start..end, copy);
        }
        // Splice in a range of another input.
        9 => {
            let other = &corpus[rng.random_range(0..corpus.len())];
            let (start, end) = range(rng, other);
            let piece = other[start..end].to_vec();
            let at = position(rng, input);
            if rng.random_bool(0.5) {
                input.splice(at..at, piece);
            } else {
                let end = (at + piece.len()).min(input.len());
                input.splice(at..end, piece);
            }
        }
        // Deep nesting.
        10 => {
            let opener: &[u8] = match rng.random_range(0..3) {
                0 => b"[",
                1 => b"{\"a\":",
                _ => b"[{\"a\":",
            };
            let depth = rng.random_range(100..=3_000);
            let at = position(rng, input);
            input.splice(at..at, opener.repeat(depth));
        }
        // A number grown huge.
        11 => {
            if let Some(i) =
                (0..input.len()).map(|_| rng.random_range(0..input.len())).find(|&i| input[i].is_ascii_digit())
            {
                let digits = rng.random_range(10..=400);
                input.splice(i..i, std::iter::repeat_n(b'9', digits));
            }
        }
        // Swap two bytes.
        12 if input.len() >= 2 => {
            let (a, b) = (rng.random_range(0..input.len()), rng.random_range(0..input.len()));
            input.swap(a, b);
        }
        // Invalid UTF-8 in the middle of a character or text.
        _ => {
            let bad: &[u8] = [&b"\xff"[..], b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xb0\x80", b"\xc0\xaf"]
                [rng.random_range(0..6)];
            let at = position(rng, input);
            input.splice(at..at, bad.iter().copied());
        }
    }
}

// ------------------------------------------------------------------ seeds

/// Every `.json` file of the repository (templates, schemas, test data).
fn json_files() -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = common::repo_root();
    let mut out = Vec::new();
    for dir in ["templates", "tests", "docs", "ci"] {
        walk(&root.join(dir), &mut out);
    }
    assert!(out.iter().any(|(p, _)| p.ends_with("templates/hello-null.json")), "templates not found");
    out
}

/// The templates written inline in the other integration tests (`r#"{ … }"#`).
fn inline_templates() -> Vec<Vec<u8>> {
    let dir = common::repo_root().join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut out = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs") && !f.ends_with("fuzz.rs")) {
        let text = std::fs::read_to_string(file).unwrap();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("r#\"") {
            let body = &rest[start + 3..];
            let Some(end) = body.find("\"#") else { break };
            let literal = &body[..end];
            if literal.trim_start().starts_with('{') && literal.contains("\"name\"") {
                out.push(literal.as_bytes().to_vec());
                // Inside `format!`, braces are doubled.
                if literal.trim_start().starts_with("{{") {
                    out.push(literal.replace("{{", "{").replace("}}", "}").into_bytes());
                }
            }
            rest = &body[end + 2..];
        }
    }
    assert!(out.len() >= 5, "expected inline templates in tests/*.rs, found {}", out.len());
    out
}

fn template_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = json_files().into_iter().map(|(_, bytes)| bytes).collect();
    seeds.extend(inline_templates());
    seeds
}

/// Every string value in the seed templates, for the string-level targets.
fn template_strings() -> Vec<String> {
    fn collect(node: &Node, out: &mut Vec<String>) {
        match &node.kind {
            NodeKind::String(s) => out.push(s.clone()),
            NodeKind::Array(items) => items.iter().for_each(|n| collect(n, out)),
            NodeKind::Object(members) => members.iter().for_each(|(_, n)| collect(n, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for seed in template_seeds() {
        if let Ok(node) = std::str::from_utf8(&seed).map_err(|_| ()).and_then(|t| jsonc::parse(t).map_err(|_| ())) {
            collect(&node, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

const H64: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn h128() -> String {
    "ab".repeat(64)
}

fn checksum_list_seeds() -> Vec<Vec<u8>> {
    let h128 = h128();
    let lists = [
        format!("{H64}  disk.qcow2\n"),
        format!("# comment\n{H64}  other.iso\n{h128}  ./disk.qcow2\n"),
        format!("{}  *disk.qcow2\r\n", H64.to_uppercase()),
        format!("SHA256 (disk.qcow2) = {H64}\nSHA512 (x.img) = {h128}\n"),
        format!("SHA256 (a b.iso) = {H64}\n"),
        format!("{H64}\n"),
        format!("{H64} *disk.qcow2\n{H64}  sub/dir/disk.qcow2\n"),
        format!("sha256:{H64}"),
        format!("sha512:{h128}"),
        "file:https://example.com/SHA256SUMS".into(),
        "file:///srv/SHA256SUMS".into(),
        "none".into(),
    ];
    lists.into_iter().map(String::into_bytes).collect()
}

// ----------------------------------------------------------------- checks

/// A span that lies within `text` and starts on a character boundary.
fn assert_span_within(span: Span, text: &str, what: &str) {
    assert!(
        span.start <= span.end && span.end <= text.len(),
        "{what}: span {}..{} is outside the input ({} bytes)",
        span.start,
        span.end,
        text.len()
    );
    assert!(text.is_char_boundary(span.start), "{what}: span starts inside a character at {}", span.start);
}

fn check_node_spans(node: &Node, text: &str) {
    assert_span_within(node.span, text, "value");
    match &node.kind {
        NodeKind::Array(items) => items.iter().for_each(|n| check_node_spans(n, text)),
        NodeKind::Object(members) => members.iter().for_each(|(k, n)| {
            assert_span_within(k.span, text, "key");
            check_node_spans(n, text)
        }),
        _ => {}
    }
}

/// Whether serde_json's error (strict JSON) is at something JSONC allows:
/// a comment, a trailing comma or a byte order mark.
fn is_jsonc_extension(text: &str, error: &serde_json::Error) -> bool {
    if error.to_string().contains("trailing comma") || text.starts_with('\u{feff}') {
        return true;
    }
    let line_start: usize = text.split_inclusive('\n').take(error.line().saturating_sub(1)).map(str::len).sum();
    let at = line_start + error.column();
    let window = text.get(at.saturating_sub(2)..(at + 1).min(text.len())).unwrap_or("");
    window.contains('/') || window.contains(',')
}

/// The JSON-with-comments reader: spans within the input, agreement with
/// serde_json on strict JSON, and printed JSON reads back the same.
fn check_jsonc(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let strict = serde_json::from_str::<serde_json::Value>(&text);
    match jsonc::parse(&text) {
        Ok(node) => {
            check_node_spans(&node, &text);
            let value = node.to_json();
            match &strict {
                Ok(v) => assert_eq!(&value, v, "JSONC and serde_json read different values"),
                Err(e) => assert!(is_jsonc_extension(&text, e), "JSONC accepted invalid JSON (serde_json: {e})"),
            }
            let printed = value.to_string();
            let again = jsonc::parse(&printed).unwrap_or_else(|e| panic!("printed JSON does not read back: {e}"));
            assert_eq!(again.to_json(), value, "printed JSON reads back differently");
            "ok".into()
        }
        Err(e) => {
            assert_span_within(e.span, &text, "syntax error");
            assert!(!e.message.is_empty(), "empty error message");
            if strict.is_ok() {
                assert!(
                    e.message.contains("duplicate field") || e.message.contains("nesting is too deep"),
                    "serde_json reads this, JSONC says: {}",
                    e.message
                );
            }
            e.message
        }
    }
}

/// Where the template target pretends the template is (relative paths in it resolve there).
fn template_path() -> PathBuf {
    common::repo_root().join("templates/fuzz-input.json")
}

fn check_diagnostic(d: &Diagnostic, path: &Path) {
    assert_eq!(d.file.path, path, "diagnostic names another file");
    assert_span_within(d.span, &d.file.text, &format!("diagnostic `{}`", d.message));
    assert!(!d.message.is_empty(), "empty diagnostic message");
    let rendered = d.to_string();
    let location = d.location();
    assert!(rendered.contains(&location), "diagnostic does not show its location {location}:\n{rendered}");
    let (line, _) = d.file.line_col(d.span.start);
    assert!(line <= d.file.text.lines().count().max(1) + 1, "line {line} is past the end of the file");
}

/// The template loader `validate` uses, then the build plan: a bad template
/// is a diagnostic with a position in the file, never a panic.
fn check_template(input: &[u8]) -> String {
    let path = template_path();
    match template::load_bytes(&path, input.to_vec(), &LoadOptions::default()) {
        Ok(loaded) => {
            let _ = loaded.resolved_json();
            match imgbuild::build::plan(&loaded) {
                Ok(_) => "ok".into(),
                Err(e) => format!("plan: {e}"),
            }
        }
        Err(TemplateError::Invalid(diagnostics)) => {
            assert!(!diagnostics.0.is_empty(), "an invalid template without diagnostics");
            diagnostics.0.iter().for_each(|d| check_diagnostic(d, &path));
            let _ = diagnostics.to_string();
            diagnostics.0.iter().take(4).map(|d| d.message.as_str()).collect::<Vec<_>>().join(";")
        }
        Err(other) => panic!("template error without a position: {}", imgbuild::error::chain(&other)),
    }
}

/// Durations and sizes: what is accepted prints back to the same value.
fn check_units(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut outcome = String::new();
    match text.parse::<Dur>() {
        Ok(d) => {
            let printed = d.to_string();
            let again = printed.parse::<Dur>().unwrap_or_else(|e| panic!("duration prints as `{printed}`: {e}"));
            assert_eq!(again, d, "duration `{text}` prints as `{printed}`, which reads back differently");
            outcome.push_str("dur ok;");
        }
        Err(e) => outcome.push_str(&e.to_string()),
    }
    match text.parse::<Size>() {
        Ok(s) => {
            assert!(s.bytes() > 0, "a zero size was accepted");
            let printed = s.to_string();
            let again = printed.parse::<Size>().unwrap_or_else(|e| panic!("size prints as `{printed}`: {e}"));
            assert_eq!(again, s, "size `{text}` prints as `{printed}`, which reads back differently");
            outcome.push_str("size ok");
        }
        Err(e) => outcome.push_str(&e.to_string()),
    }
    outcome
}

/// `boot_command` key syntax.
fn check_keys(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    match keys::parse(&text) {
        Ok(actions) => {
            assert!(actions.len() <= text.chars().count(), "more actions than characters");
            for action in &actions {
                if let keys::Action::Press(keys) = action {
                    assert!(!keys.is_empty() && keys.iter().all(|k| !k.is_empty()), "empty key press");
                }
            }
            format!("ok {}", actions.len().min(3))
        }
        Err(e) => e.to_string(),
    }
}

fn interpolator() -> Interpolator {
    let mut vars = BTreeMap::new();
    vars.insert("user".to_string(), VarValue::Set("root".into()));
    vars.insert("braces".to_string(), VarValue::Set("{{ var.user }}".into()));
    vars.insert("pw".to_string(), VarValue::RequiredUnset);
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

/// `{{ … }}` interpolation; text without `{{` is left exactly as it is.
fn check_interp(input: &[u8]) -> String {
    static INTERP: OnceLock<Interpolator> = OnceLock::new();
    let interp = INTERP.get_or_init(interpolator);
    let text = String::from_utf8_lossy(input);
    let mut outcome = String::new();
    for mode in [Mode::Eager, Mode::KeepHttp] {
        match interp.render(&text, mode) {
            Ok(out) => {
                if !text.contains("{{") {
                    assert_eq!(out, text, "text without `{{{{` changed");
                }
                let _ = render_http(&out, "10.0.2.2", 8080);
                outcome.push_str("ok;");
            }
            Err(e) => {
                let _ = e.help();
                outcome.push_str(&e.to_string());
            }
        }
    }
    outcome
}

/// Checksum lists (GNU and BSD) as the source fetcher reads them, the store's
/// strict `SHA256SUMS` reader, and `checksum` template values.
fn check_checksums(input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut outcome = String::new();
    let named = text.lines().next().and_then(|l| l.split_whitespace().last()).unwrap_or("x").trim_start_matches('*');
    for name in ["disk.qcow2", named] {
        match lookup_in_list(&text, name) {
            ListLookup::Found(d) => {
                assert_eq!(d.hex.len(), d.algo.hex_len(), "digest of the wrong length");
                assert!(d.hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "digest not lowercase hex");
                outcome.push_str("found;");
            }
            ListLookup::Missing { names, listed } => {
                assert!(names.len() <= 5 && names.len() <= listed, "{} names of {listed} listed", names.len());
                outcome.push_str(&format!("missing {};", listed.min(2)));
            }
        }
    }
    for algo in [store_format::Algo::Sha256, store_format::Algo::Sha512] {
        match store_format::parse_sums(&text, algo) {
            Ok(entries) => {
                for e in &entries {
                    assert!(store_format::is_safe_file_name(&e.file), "unsafe file name `{}` accepted", e.file);
                }
                let printed = store_format::format_sums(entries.iter().map(|e| (e.file.as_str(), e.hex.as_str())));
                let again = store_format::parse_sums(&printed, algo)
                    .unwrap_or_else(|b| panic!("printed list does not read back: line {}: {}", b.line, b.reason));
                assert_eq!(again, entries, "printed list reads back differently");
                outcome.push_str("sums ok;");
            }
            Err(bad) => {
                assert!(bad.line >= 1 && bad.line <= text.lines().count(), "bad line {} is not a line", bad.line);
                outcome.push_str(&bad.reason);
            }
        }
    }
    match text.parse::<Checksum>() {
        Ok(c) => {
            let printed = c.to_string();
            assert_eq!(
                printed.parse::<Checksum>().ok(),
                Some(c),
                "checksum prints as `{printed}`, reads back differently"
            );
            outcome.push_str("checksum ok");
        }
        Err(e) => outcome.push_str(&e.reason),
    }
    outcome
}

/// A store name, version or channel never escapes its directory.
fn assert_safe_component(s: &str, what: &str) {
    assert!(
        store_format::is_safe_file_name(s) && !s.contains(['\\', '\0']) && s != "." && s != "..",
        "{what} `{}` accepted but is not a plain path component",
        s.escape_debug()
    );
}

/// The store format: `manifest.json` digests, `index.json`, `channels.json`,
/// and names, versions and channels (valid ones are safe path components;
/// version order is a total order).
fn check_store_format(input: &[u8]) -> String {
    let listed = [store_format::SumsEntry { hex: "aa".repeat(32), file: "disk.img".into() }];
    let plan = store_format::Plan::new(&listed, &[], Ok(input));
    assert_eq!(plan.files, ["disk.img"], "the file set is SHA256SUMS's");
    let mut outcome: String = plan.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(";");
    outcome.push_str(match serde_json::from_slice::<store_format::Index>(input) {
        Ok(_) => "index ok;",
        Err(_) => "index bad;",
    });
    if let Ok(channels) = serde_json::from_slice::<BTreeMap<String, String>>(input) {
        outcome.push_str("channels ok;");
        for (channel, version) in &channels {
            if store_format::is_valid_channel(channel) {
                assert_safe_component(channel, "channel");
            }
            if store_format::is_valid_version(version) {
                assert_safe_component(version, "version");
            }
        }
    }
    let text = String::from_utf8_lossy(input);
    let words: Vec<&str> = text.split(['\n', ' ', '"', '@']).take(8).collect();
    for w in &words {
        if store_format::check_name(w).is_ok() {
            assert_safe_component(w, "name");
            outcome.push_str("name;");
        }
        if store_format::is_valid_version(w) {
            assert_safe_component(w, "version");
            outcome.push_str("version;");
        }
        if store_format::is_valid_channel(w) {
            assert_safe_component(w, "channel");
            assert!(!store_format::is_valid_version(w), "`{w}` is both a channel and a version");
        }
    }
    for a in &words {
        assert_eq!(store_format::compare(a, a), std::cmp::Ordering::Equal);
        for b in &words {
            let (ab, ba) = (store_format::compare(a, b), store_format::compare(b, a));
            assert_eq!(ab, ba.reverse(), "compare(`{a}`, `{b}`) is not antisymmetric");
            if ab == std::cmp::Ordering::Equal {
                assert_eq!(a, b, "distinct versions compare equal");
            }
        }
    }
    outcome
}

// ------------------------------------------------------- the store on disk

/// The files of one published version, as a valid store has them.
fn valid_store_files() -> Vec<(&'static str, Vec<u8>)> {
    let disk = b"disk image bytes\n".to_vec();
    let sha256 = hex_sha256(&disk);
    let manifest = serde_json::json!({
        "name": "img", "version": "1.0.0", "created_at": "2025-01-02T03:04:05Z",
        "artifacts": [{ "file": "disk.img", "digests": { "sha256": format!("sha256:{sha256}") } }]
    });
    vec![
        ("img/1.0.0/disk.img", disk),
        ("img/1.0.0/manifest.json", serde_json::to_vec_pretty(&manifest).unwrap()),
        ("img/1.0.0/SHA256SUMS", format!("{sha256}  disk.img\n").into_bytes()),
        ("img/1.0.0/SHA512SUMS", Vec::new()),
        ("img/channels.json", br#"{"latest": "1.0.0", "stable": "1.0.0"}"#.to_vec()),
        ("index.json", br#"{"schema_version":1,"images":{"img":{"versions":["1.0.0"],"updated_at":"x"}}}"#.to_vec()),
    ]
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// Metadata files of the store the `store_files` target replaces, one per input.
const STORE_FUZZED: [&str; 5] =
    ["img/1.0.0/manifest.json", "img/1.0.0/SHA256SUMS", "img/1.0.0/SHA512SUMS", "img/channels.json", "index.json"];

fn store_file_seeds() -> Vec<Vec<u8>> {
    let files = valid_store_files();
    STORE_FUZZED
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut seed = vec![i as u8];
            seed.extend_from_slice(&files.iter().find(|(n, _)| n == name).unwrap().1);
            seed
        })
        .collect()
}

/// A store holding one valid version, in a directory removed on drop.
fn valid_store() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("imgbuild-fuzz-store-").tempdir_in(scratch_dir()).unwrap();
    for (name, bytes) in valid_store_files() {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    dir
}

/// The real local store at `root` reading a damaged metadata file: the first
/// byte picks the file ([`STORE_FUZZED`]), the rest is its content.
fn check_store_files(root: &Path, input: &[u8]) -> String {
    let Some((&which, content)) = input.split_first() else { return "empty".into() };
    let name = STORE_FUZZED[usize::from(which) % STORE_FUZZED.len()];
    std::fs::write(root.join(name), content).unwrap();
    let store = LocalStore::open_existing(root).unwrap();
    let mut outcome = String::new();
    let mut note = |r: Result<String, imgbuild::store::StoreError>| match r {
        Ok(s) => outcome.push_str(&format!("{s};")),
        Err(e) => outcome.push_str(&format!("{};", imgbuild::error::chain(&e))),
    };
    note(store.versions("img").map(|v| format!("{} versions", v.len())));
    note(store.resolve("img").map(|(_, v)| v));
    note(store.resolve("img@stable").map(|(_, v)| v));
    note(store.verify(&root.join("img/1.0.0")).map(|r| format!("{} problems", r.problems.len())));
    note(store.promote("img", "1.0.0", "beta").map(|_| "promoted".into()));
    note(store.prune("img", 100).map(|removed| format!("{} pruned", removed.len())));
    // Back to a valid store for the next input (promote and prune rewrite files).
    for (name, bytes) in valid_store_files().into_iter().filter(|(n, _)| !n.ends_with("disk.img")) {
        std::fs::write(root.join(name), bytes).unwrap();
    }
    outcome
}

/// Memory-backed when available: the store target writes files per input.
fn scratch_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() { shm } else { std::env::temp_dir() }
}

// ----------------------------------------------------------------- targets

fn template_dictionary() -> Vec<Vec<u8>> {
    bytes_of(&[
        "\"name\": \"t\",",
        "\"version\": \"1.0.0\",",
        "\"version\": \"auto\",",
        "\"builder\": { \"type\": \"null\" },",
        "\"builder\": { \"type\": \"qemu\" },",
        "\"builder\": { \"type\": \"ec2\" },",
        "\"source\": { \"type\": \"ami\", \"ami\": \"ami-1\" },",
        "\"type\": \"iso\"",
        "\"type\": \"cloud-image\"",
        "\"type\": \"shell\"",
        "\"type\": \"shell-local\"",
        "\"type\": \"file\"",
        "\"variables\": { \"v\": { \"default\": \"x\" } },",
        "\"sensitive\": true",
        "\"required\": true",
        "\"default\": ",
        "\"boot_command\": [\"<wait5><enter>\"]",
        "\"communicator\": \"none\"",
        "\"inline\": [\"true\"]",
        "\"memory\": \"512M\"",
        "\"timeout\": \"5m\"",
        "\"cpus\": 99999999999",
        "\"$schema\": \"x\"",
        "{{ var.user }}",
        "{{ var.nope }}",
        "{{ env.HOME }}",
        "{{ env.IMGBUILD_FUZZ_UNSET }}",
        "{{ build.name }}",
        "{{ build.version }}",
        "{{ build.ssh_public_key }}",
        "{{ http.url }}",
        "{{ template_dir }}",
        "{{ \"{{\" }}",
        "{{ .Path }}",
        "sha256:",
        "sha512:",
        "file:",
        "none",
        "<wait>",
        "<enter>",
        "<leftCtrlOn>",
        "../",
        "/",
    ])
}

#[test]
fn fuzz_jsonc_reader() {
    fuzz_target(Target {
        name: "jsonc",
        seeds: template_seeds(),
        dictionary: bytes_of(&["\"a\": 1,", "\"a\": \"b\"", "[1, 2,]", "{\"a\": {}}", "// c\n", "/* c */"]),
        share: 1.0,
        check: &check_jsonc,
    });
}

#[test]
fn fuzz_template_loader() {
    fuzz_target(Target {
        name: "template",
        seeds: template_seeds(),
        dictionary: template_dictionary(),
        share: 1.0,
        check: &check_template,
    });
}

#[test]
fn fuzz_durations_and_sizes() {
    let mut seeds = bytes_of(&[
        "90s",
        "5m",
        "1h30m",
        "500ms",
        "2d",
        "0s",
        "18446744073709551615s",
        "213503982334601d",
        "512M",
        "8G",
        "20GiB",
        "1K",
        "16383T",
        " 8 G ",
    ]);
    seeds.extend(template_strings().into_iter().filter(|s| s.len() < 16).map(String::into_bytes));
    fuzz_target(Target {
        name: "units",
        seeds,
        dictionary: bytes_of(&["ms", "s", "m", "h", "d", "K", "M", "G", "T", "iB", "KiB", "0", "1", " "]),
        share: 1.0,
        check: &check_units,
    });
}

#[test]
fn fuzz_boot_command_keys() {
    let mut seeds = bytes_of(&[
        "aB<enter><wait5><leftCtrlOn>c<leftCtrlOff><f12><wait500ms>",
        "<x>",
        "<wait10s>",
        "<wait1m><bs><del><esc><tab><spacebar><up><down><pageUp><pageDown>",
        "linux ks={{ http.url }}/ks.cfg<enter>",
        "<leftShiftOn>abc<leftShiftOff><rightAltOn><f4><rightAltOff>",
    ]);
    seeds.extend(template_strings().into_iter().filter(|s| s.contains('<')).map(String::into_bytes));
    fuzz_target(Target {
        name: "keys",
        seeds,
        dictionary: bytes_of(&[
            "<",
            ">",
            "<wait",
            "<wait>",
            "<wait10s>",
            "<wait99999999999999999999>",
            "<wait1h30m>",
            "<f0>",
            "<f13>",
            "<f18446744073709551617>",
            "<enter>",
            "<leftCtrlOn>",
            "<leftctrloff>",
            "<rightSuperOn>",
            "On>",
            "Off>",
        ]),
        share: 1.0,
        check: &check_keys,
    });
}

#[test]
fn fuzz_interpolation() {
    let mut seeds = bytes_of(&[
        "{{ var.user }}@{{build.name}}-{{ build.version }} {{ template_dir }}",
        "{{ \"{{\" }} x",
        "{{ 'a' }}",
        "x {{ http.url }}/ks {{http.ip}}:{{ http.port }}",
        "{{ var.pw }}",
        "{{ env.HOME }}",
        "{{ .Path }}",
        "{{ var.braces }}",
        "plain text",
    ]);
    seeds.extend(template_strings().into_iter().filter(|s| s.contains("{{")).map(String::into_bytes));
    fuzz_target(Target {
        name: "interp",
        seeds,
        dictionary: bytes_of(&[
            "{{",
            "}}",
            "{{ ",
            " }}",
            "var.",
            "env.",
            "build.",
            "http.",
            "user",
            "pw",
            "url",
            "ip",
            "port",
            "\"",
            "'",
            ".",
            "template_dir",
            "ssh_public_key",
        ]),
        share: 1.0,
        check: &check_interp,
    });
}

#[test]
fn fuzz_checksum_lists() {
    fuzz_target(Target {
        name: "checksums",
        seeds: checksum_list_seeds(),
        dictionary: vec![
            b"SHA256 (".to_vec(),
            b"SHA512 (".to_vec(),
            b") = ".to_vec(),
            b"  ".to_vec(),
            b" *".to_vec(),
            b"./".to_vec(),
            b"../".to_vec(),
            b"#".to_vec(),
            b"\n".to_vec(),
            b"disk.qcow2".to_vec(),
            H64.as_bytes().to_vec(),
            h128().into_bytes(),
            b"sha256:".to_vec(),
            b"SHA512:".to_vec(),
            b"md5:".to_vec(),
            b"file:".to_vec(),
            b"FILE://".to_vec(),
            b"none".to_vec(),
        ],
        share: 1.0,
        check: &check_checksums,
    });
}

#[test]
fn fuzz_store_format() {
    let mut seeds: Vec<Vec<u8>> =
        valid_store_files().into_iter().filter(|(n, _)| n.ends_with(".json")).map(|(_, b)| b).collect();
    seeds.extend(json_files().into_iter().filter(|(p, _)| p.ends_with("manifest.schema.json")).map(|(_, b)| b));
    seeds.extend(bytes_of(&[
        r#"{"artifacts": [{"name": "disk.img", "digests": ["sha256:aaaa", "md5:x"]}]}"#,
        "1.0.0\n1.10.0-rc.1+b.7\n2025.03.07.1\nstable\nimg\n0.0.0-0\n1.0.0-alpha.beta",
        "../x\n.hidden\na/b\n2025.13.01.1\n01.0.0",
    ]));
    fuzz_target(Target {
        name: "store-format",
        seeds,
        dictionary: bytes_of(&[
            "\"artifacts\"",
            "\"digests\"",
            "\"file\"",
            "\"name\"",
            "\"sha256\"",
            "\"sha512\"",
            "\"md5\"",
            "sha256:",
            "\"images\"",
            "\"versions\"",
            "\"schema_version\"",
            "\"updated_at\"",
            "\"latest\"",
            "\"stable\"",
            "1.0.0",
            "2025.01.02.3",
            "-rc.1",
            "+b.7",
            ".",
            "..",
            "/",
            "\\",
            "-",
            "0",
        ]),
        share: 1.0,
        check: &check_store_format,
    });
}

#[test]
fn fuzz_store_files() {
    let store = valid_store();
    fuzz_target(Target {
        name: "store-files",
        seeds: store_file_seeds(),
        dictionary: bytes_of(&["\"latest\"", "\"beta\"", "\"1.0.0\"", "\"../1.0.0\"", "\"images\"", "  disk.img\n"]),
        // Each input writes and reads real files: far slower than the others.
        share: 0.05,
        check: &|input| check_store_files(store.path(), input),
    });
}

// ------------------------------------------------------- the real binary

/// Mutated templates that the loader rejects make `imgbuild validate` exit
/// with 2, and a diagnostic's `file:line:column` reaches stderr.
#[test]
fn validate_exits_2_for_mutated_templates() {
    const MUTANTS: usize = 12;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("t.json");
    let seeds: Vec<Vec<u8>> = template_seeds()
        .into_iter()
        .filter(|s| {
            template::load_bytes(&path, s.clone(), &LoadOptions::default())
                .is_ok_and(|l| imgbuild::build::plan(&l).is_ok())
        })
        .collect();
    assert!(seeds.len() >= 3, "expected valid seed templates, found {}", seeds.len());
    let mut rng = StdRng::seed_from_u64(config().seed);
    let dictionary = [common_dictionary(), template_dictionary()].concat();
    let mut checked = 0;
    for _ in 0..1_000 {
        if checked == MUTANTS {
            break;
        }
        let mutant = mutate(&mut rng, &seeds, &dictionary);
        let expected = match template::load_bytes(&path, mutant.clone(), &LoadOptions::default()) {
            Err(TemplateError::Invalid(d)) => Some(d.0[0].location()),
            Err(e) => panic!("template error without a position: {e}"),
            Ok(l) if imgbuild::build::plan(&l).is_err() => None,
            Ok(_) => continue,
        };
        std::fs::write(&path, &mutant).unwrap();
        let out = common::run({
            let mut c = common::imgbuild(work.path());
            c.arg("validate").arg(&path);
            c
        });
        assert_eq!(out.code, 2, "validate exit code for {}:\n{}", literal(&mutant), out.stderr);
        if let Some(location) = expected {
            let line_col = location.rsplit_once("t.json").map_or(location.as_str(), |(_, lc)| lc);
            assert!(
                out.stderr.contains(&format!("t.json{line_col}")),
                "stderr lacks t.json{line_col}:\n{}",
                out.stderr
            );
        }
        checked += 1;
    }
    assert_eq!(checked, MUTANTS, "too few invalid mutants");
}

// ------------------------------------------------------------ regressions

/// Inputs the fuzzer once failed on, each through its target's checks.
#[test]
fn regressions() {
    install_panic_hook();
    let long_line = [b"{\"name\": \"".as_slice(), &[b'y'; 70_000], b"\", \"version\": x}"].concat();
    let cases: [(&str, &CheckFn, &[u8]); 5] = [
        // A 159-digit integer read as a neighbouring float, so printed JSON read back differently.
        ("jsonc", &check_jsonc, b"[999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999991]"),
        // A byte order mark between tokens was skipped like a space.
        ("jsonc", &check_jsonc, b"{\"e\":\"\",\"\":[{\"e\":[\xef\xbb\xbf\"\",\"\"]}]}"),
        // A high surrogate followed by a non-surrogate escape was decoded to an arbitrary character.
        ("jsonc", &check_jsonc, b"{\"\":\"\",\"u\":[{\"\":\"\",\"e\":[\"\\ud800\\u0041\"]},{\"t\":\"\",\"\":\"\"}]}"),
        // A duration of u64::MAX seconds and more printed as milliseconds that do not read back.
        ("units", &check_units, b"213503983346001d1d"),
        // An error past column 65,535 overflowed the caret's padding: a panic in `validate`.
        ("template", &check_template, &long_line),
    ];
    for (target, check, input) in cases {
        if let Err(message) = run_one(check, input) {
            panic!("{target} {}: {message}", literal(input));
        }
    }
}

/// A template that is not UTF-8 is a diagnostic at the first bad byte, in
/// the library and through `imgbuild validate` (it was `cannot read`, without
/// a position).
#[test]
fn a_template_that_is_not_utf8_gets_a_line_and_column() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("t.json");
    let text = b"{\n  \"name\": \"caf\xe9\"\n}\n";
    let Err(TemplateError::Invalid(d)) = template::load_bytes(&path, text.to_vec(), &LoadOptions::default()) else {
        panic!("expected a diagnostic");
    };
    assert_eq!(d.0[0].span.start, 16);
    assert!(d.0[0].location().ends_with("t.json:2:15"), "{}", d.0[0].location());
    std::fs::write(&path, text).unwrap();
    let out = common::run({
        let mut c = common::imgbuild(work.path());
        c.arg("validate").arg(&path);
        c
    });
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("invalid UTF-8 at byte 16"), "{}", out.stderr);
    assert!(out.stderr.contains("t.json:2:15"), "{}", out.stderr);
}
