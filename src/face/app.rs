//! Runs a parsed command line and maps the outcome to an exit code.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::cli::{BuildArgs, Cli, Command, InspectArgs, OnErrorArg, ValidateArgs, VarArgs};
use super::terminal::{self, UiOptions};
use super::{report_error, reporter};
use crate::build::{self, BuildSettings, BuildState};
use crate::communicator::KeyPair;
use crate::error::{ExitCode, chain};
use crate::report::{BuildReporter, Event, Status, StepTiming};
use crate::runner::{OnError, Outcome, RunFailure, Runner};
use crate::template::{self, LoadOptions, Loaded, TemplateError, VarInputs, diag::display_path};

pub fn run(cli: Cli) -> i32 {
    let verbosity = if cli.global.quiet { -1 } else { cli.global.verbose.min(2) as i8 };
    terminal::init(UiOptions {
        format: cli.global.output,
        color: cli.global.color,
        no_progress: cli.global.no_progress,
        verbosity,
    });
    terminal::init_tracing(verbosity);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::BuildFailed.code();
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Build(args) => build(args).await,
            Command::Validate(args) => validate(&args),
            Command::Inspect(args) if args.digest => inspect_digest(&args).await,
            Command::Inspect(args) => inspect(&args),
            Command::Changed(args) => super::changed::run(&args),
            Command::Gc(args) => super::gc::run(&args).await,
            Command::Test(args) => test(args).await,
            Command::Versions(args) => super::store::versions(&args).await,
            Command::Show(args) => super::store::show(&args).await,
            Command::Promote(args) => super::store::promote(&args).await,
            Command::VerifyArtifact(args) => super::store::verify_artifact(&args).await,
            Command::Prune(args) => super::store::prune(&args).await,
            Command::Lint(args) => super::lint::run(&args),
            Command::Fmt(args) => super::fmt::run(&args),
            Command::Schema => {
                let schema = crate::template::schema::template_schema();
                terminal::print_stdout(&serde_json::to_string_pretty(&schema).unwrap_or_default());
                ExitCode::Success
            }
        }
    });
    code.code()
}

pub fn new_build_id() -> String {
    let now = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    format!("{now}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// `{{ build.ssh_public_key }}`: the public half of the build's own key.
fn public_key(key: &KeyPair, build_id: &str) -> String {
    key.public_openssh(&format!("imgbuild-{build_id}"))
}

fn load_options(
    vars: &VarArgs,
    build_id: String,
    version_override: Option<String>,
    key: &KeyPair,
) -> Result<LoadOptions, String> {
    let ssh_public_key = public_key(key, &build_id);
    Ok(LoadOptions {
        vars: VarInputs { cli: VarInputs::parse_cli(&vars.vars)?, files: vars.var_files.clone(), use_env: true },
        build_id,
        version_override,
        ssh_public_key,
    })
}

/// Reads a template for a new build, which gets its own SSH key: it exists
/// before the template is read, so `{{ build.ssh_public_key }}` can go into
/// installer answer files. (Per build, not per process: two builds in one
/// process never share a key.)
fn load_keyed(path: &Path, vars: &VarArgs, version: Option<String>) -> Result<(Loaded, Arc<KeyPair>), ExitCode> {
    let key = KeyPair::generate().map(Arc::new).map_err(|e| {
        report_error(&chain(&e));
        ExitCode::BuildFailed
    })?;
    let options = load_options(vars, new_build_id(), version, &key).map_err(|e| {
        report_error(&e);
        ExitCode::Usage
    })?;
    let loaded = template::load(path, &options).map_err(|e| {
        report_template_error(&e);
        ExitCode::Usage
    })?;
    Ok((loaded, key))
}

/// Reads a template that will not be built (validate, inspect, test).
fn load(path: &Path, vars: &VarArgs, version: Option<String>) -> Result<Loaded, ExitCode> {
    load_keyed(path, vars, version).map(|(loaded, _)| loaded)
}

fn report_template_error(e: &TemplateError) {
    match e {
        // Diagnostics are already complete; print them as they are.
        TemplateError::Invalid(d) if terminal::is_json() => d.0.iter().for_each(|d| report_error(&d.to_string())),
        TemplateError::Invalid(d) => terminal::eprintln_raw(&d.to_string()),
        other => report_error(&chain(other)),
    }
}

fn validate(args: &ValidateArgs) -> ExitCode {
    let mut worst = ExitCode::Success;
    for path in &args.templates {
        match load(path, &args.vars, None) {
            Ok(loaded) => match build::plan(&loaded) {
                Ok(_) => {
                    if !cfg!(feature = "aws") && !build::publish::s3_targets(&loaded).is_empty() {
                        reporter().warn(format!(
                            "{}: publishing to s3 needs AWS support, but this imgbuild was built without it (cargo feature `aws`)",
                            display_path(path)
                        ));
                    }
                    reporter().info(format!("{}: ok", display_path(path)))
                }
                Err(e) => {
                    report_error(&format!("{}: {}", display_path(path), chain(&e)));
                    worst = ExitCode::Usage;
                }
            },
            Err(code) => worst = code,
        }
    }
    worst
}

async fn inspect_digest(args: &InspectArgs) -> ExitCode {
    let loaded = match load(&args.template, &args.vars, None) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match input_digest(&loaded, &args.vars.var_files).await {
        Ok(d) if terminal::is_json() => terminal::print_stdout(&d.to_json().to_string()),
        Ok(d) => terminal::print_stdout(&d.render_text()),
        Err(code) => return code,
    }
    ExitCode::Success
}

/// The input digest; an unreadable input is a usage error, an unreachable checksum list a failure.
async fn input_digest(
    loaded: &Loaded,
    var_files: &[std::path::PathBuf],
) -> Result<crate::digest::InputDigest, ExitCode> {
    let fetcher = crate::source::Fetcher::new(crate::source::Fetcher::default_cache_dir(), std::sync::Arc::new(|_| {}))
        .map_err(|e| {
            report_error(&chain(&e));
            ExitCode::BuildFailed
        })?;
    crate::digest::input_digest(loaded, var_files, &fetcher).await.map_err(|e| {
        report_error(&chain(&e));
        match e {
            crate::digest::DigestError::Source(_) => ExitCode::BuildFailed,
            _ => ExitCode::Usage,
        }
    })
}

fn inspect(args: &InspectArgs) -> ExitCode {
    let loaded = match load(&args.template, &args.vars, None) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let steps = match build::plan(&loaded) {
        Ok(steps) => steps.iter().map(|s| s.name()).collect::<Vec<_>>(),
        Err(e) => {
            report_error(&chain(&e));
            return ExitCode::Usage;
        }
    };
    let mut doc = serde_json::json!({ "template": loaded.resolved_json(), "steps": steps });
    crate::redact::scrub_json(&mut doc);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    terminal::print_stdout(&text);
    ExitCode::Success
}

async fn build(args: BuildArgs) -> ExitCode {
    let (loaded, store, version, key) = match prepare(&args).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let digest = match input_digest(&loaded, &args.vars.var_files).await {
        Ok(d) => d,
        Err(code) => return code,
    };
    let report = reporter().for_build(&loaded.build_id);
    if args.if_changed
        && !args.force
        && let Some(code) = skip_if_unchanged(&loaded, &store, &digest, &args, &report).await
    {
        return code;
    }
    let loaded = Arc::new(loaded);
    let steps = match build::plan(&loaded) {
        Ok(steps) => steps,
        Err(e) => {
            report_error(&chain(&e));
            return ExitCode::Usage;
        }
    };
    let t = &loaded.template;
    report.emit(Event::BuildStarted {
        build_id: loaded.build_id.clone(),
        name: t.name.clone(),
        version: serde_json::to_value(&t.version).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        template: display_path(&loaded.path),
    });
    let cancel = CancellationToken::new();
    let signals = super::signals::watch(cancel.clone(), report.clone());
    let on_error = match args.on_error {
        OnErrorArg::Cleanup => OnError::Cleanup,
        OnErrorArg::Abort => OnError::Abort,
    };
    let started = Instant::now();
    let mut settings = BuildSettings::new(store);
    settings.junit = args.junit.clone();
    settings.keep_on_error = on_error == OnError::Abort;
    let mut state = BuildState::new(loaded.clone(), settings, version, report.clone());
    state.ssh_key = Some(key);
    state.input_digest = Some(digest);
    let outcome = Runner { cancel, on_error, report: report.clone() }.run(&steps, &mut state).await;
    if let Some(path) = &args.metrics_file {
        write_build_metrics(path, &state, &outcome, started.elapsed(), &report);
    }
    if !outcome.kept.is_empty() {
        state.keep_resources();
    }
    let published = state.export.as_ref().map(|e| e.published.clone()).unwrap_or_default();
    drop(state);
    signals.abort();
    finish(&report, outcome, started, published)
}

/// `--if-changed`: `Some(exit code)` when the latest published version in
/// every publish target was built from exactly these inputs, so there is
/// nothing to do. A target without it (or that cannot be read) means a build.
async fn skip_if_unchanged(
    loaded: &Loaded,
    store_dir: &Path,
    digest: &crate::digest::InputDigest,
    args: &BuildArgs,
    report: &BuildReporter,
) -> Option<ExitCode> {
    let name = &loaded.template.name;
    let targets = build::publish::targets(loaded, store_dir).ok()?;
    let mut current = None;
    for target in &targets {
        let (latest, manifest) = target.latest(name).await?;
        if crate::digest::manifest_digest(&manifest).as_deref() != Some(digest.digest.as_str()) {
            let changed = crate::digest::changed_parts(&crate::digest::manifest_parts(&manifest), &digest.parts);
            if !changed.is_empty() {
                report.info(format!("inputs changed since {name}@{latest}: {}", changed.join(", ")));
            }
            return None;
        }
        current.get_or_insert((latest, manifest));
    }
    let (version, manifest) = current?;
    report.info(format!("{name}@{version} is up to date (input digest {}); nothing to build", digest.digest));
    if let Some(path) = &args.metrics_file {
        let m = crate::metrics::BuildMetrics {
            name,
            version: &version,
            success: true,
            duration: std::time::Duration::ZERO,
            steps: &[],
            artifact_bytes: crate::metrics::manifest_artifact_bytes(&manifest),
            last_success: None,
            up_to_date: true,
        };
        if let Err(e) = crate::metrics::write_metrics(path, &m) {
            report.warn(chain(&e));
        }
    }
    Some(ExitCode::Success)
}

fn write_build_metrics(
    path: &Path,
    state: &BuildState,
    outcome: &crate::runner::Outcome,
    duration: std::time::Duration,
    report: &BuildReporter,
) {
    let success = outcome.result.is_ok() && outcome.cleanup_errors.is_empty();
    let artifact_bytes = state
        .published
        .as_ref()
        .and_then(|dir| std::fs::read(dir.join("manifest.json")).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .map(|m| crate::metrics::manifest_artifact_bytes(&m))
        // Published to S3 only: the artifacts as exported.
        .or_else(|| {
            let export = state.export.as_ref().filter(|e| !e.published.is_empty())?;
            Some(export.artifacts.iter().map(|a| a.size).sum())
        })
        .unwrap_or(0);
    let now = jiff::Timestamp::now().as_second().max(0) as u64;
    let m = crate::metrics::BuildMetrics {
        name: &state.loaded.template.name,
        version: &state.version,
        success,
        duration,
        steps: &outcome.timings,
        artifact_bytes,
        last_success: success.then_some(now),
        up_to_date: false,
    };
    if let Err(e) = crate::metrics::write_metrics(path, &m) {
        report.warn(chain(&e));
    }
}

/// `imgbuild test`: the verify block against an already published artifact.
async fn test(args: super::cli::TestArgs) -> ExitCode {
    let loaded = match load(&args.template, &args.vars, None) {
        Ok(l) => Arc::new(l),
        Err(code) => return code,
    };
    let store_dir = build::publish::store_path(&loaded, args.store.as_ref());
    let image = match published_image(&loaded, &store_dir, &args.artifact) {
        Ok(i) => i,
        Err(e) => {
            report_error(&e);
            return ExitCode::Usage;
        }
    };
    if loaded.template.verify.is_empty() {
        report_error("the template has no `verify` checks to run");
        return ExitCode::Usage;
    }
    let report = reporter().for_build(&loaded.build_id);
    report.info(format!("testing {}", image.display()));
    let steps = match build::test_plan(&loaded, image) {
        Ok(steps) => steps,
        Err(e) => {
            report_error(&chain(&e));
            return ExitCode::Usage;
        }
    };
    let mut settings = BuildSettings::new(store_dir);
    settings.junit = args.junit.clone();
    let cancel = CancellationToken::new();
    let signals = super::signals::watch(cancel.clone(), report.clone());
    let started = Instant::now();
    let version = version_text(&loaded.template.version);
    let mut state = BuildState::new(loaded, settings, version, report.clone());
    let runner = Runner { cancel, on_error: OnError::Cleanup, report: report.clone() };
    let outcome = runner.run(&steps, &mut state).await;
    drop(state);
    signals.abort();
    finish(&report, outcome, started, Vec::new())
}

/// The bootable image file of a published artifact (`NAME@X`, or `@X` for the template's name).
fn published_image(loaded: &Loaded, store_dir: &Path, spec: &str) -> Result<std::path::PathBuf, String> {
    let spec = if spec.starts_with('@') { format!("{}{spec}", loaded.template.name) } else { spec.to_string() };
    let store = crate::store::LocalStore::open_existing(store_dir).map_err(|e| chain(&e))?;
    let (name, version) = store.resolve(&spec).map_err(|e| chain(&e))?;
    let manifest = store.manifest(&name, &version).map_err(|e| chain(&e))?;
    let files = manifest["artifacts"].as_array().cloned().unwrap_or_default();
    files
        .iter()
        .filter_map(|a| a["file"].as_str())
        .find(|f| ![".zst", ".xz", ".gz"].iter().any(|ext| f.ends_with(ext)))
        .map(|f| store.version_dir(&name, &version).join(f))
        .ok_or_else(|| format!("{name}@{version} has no image file QEMU can boot"))
}

/// Loads the template and settles the version: `auto` becomes the next free
/// date version in the store(s); an explicit version that is already
/// published (locally or in an S3 target) is refused before anything starts
/// (published versions are immutable).
async fn prepare(args: &BuildArgs) -> Result<(Loaded, std::path::PathBuf, String, Arc<KeyPair>), ExitCode> {
    let (loaded, key) = load_keyed(&args.template, &args.vars, args.set_version.clone())?;
    let store_dir = build::publish::store_path(&loaded, args.store.as_ref());
    if matches!(loaded.template.builder, template::Builder::Null) {
        let version = version_text(&loaded.template.version);
        return Ok((loaded, store_dir, version, key));
    }
    let local = build::publish::publishes_locally(&loaded);
    if !local && args.store.is_some() {
        reporter().warn(
            "--store is not used: the template publishes to S3 only (add a `local` publish target to keep a local copy)",
        );
    }
    let failed = |e: crate::store::StoreError| {
        report_error(&chain(&e));
        ExitCode::BuildFailed
    };
    let targets = build::publish::targets(&loaded, &store_dir).map_err(failed)?;
    let name = loaded.template.name.clone();
    match &loaded.template.version {
        template::VersionSpec::Exact(v) => {
            for target in &targets {
                if target.has_version(&name, v).await.map_err(failed)? {
                    report_error(&format!(
                        "{name}@{v} is already published in {}; published versions are immutable: change `version` or use --set-version",
                        target.location()
                    ));
                    return Err(ExitCode::Usage);
                }
            }
            let v = v.clone();
            Ok((loaded, store_dir, v, key))
        }
        template::VersionSpec::Auto => {
            let today = crate::store::today();
            let mut highest = 0;
            for target in &targets {
                highest = highest.max(target.highest_auto_number(&name, today).await.map_err(failed)?);
            }
            let next = today.version(highest + 1);
            // The same document and variable values, with the version `build.version` now stands for.
            let public = public_key(&key, &loaded.build_id);
            let reloaded = loaded.reresolve(loaded.build_id.clone(), Some(next.clone()), public).map_err(|e| {
                report_template_error(&e);
                ExitCode::Usage
            })?;
            Ok((reloaded, store_dir, next, key))
        }
    }
}

fn version_text(v: &template::VersionSpec) -> String {
    match v {
        template::VersionSpec::Exact(v) => v.clone(),
        template::VersionSpec::Auto => "auto".into(),
    }
}

/// Per-step durations, slowest marked, for people reading a build log.
fn print_step_summary(timings: &[StepTiming]) {
    if timings.len() < 2 || terminal::is_json() || terminal::is_quiet() {
        return;
    }
    let width = timings.iter().map(|t| t.step.len()).max().unwrap_or(0);
    let slowest = timings.iter().map(|t| t.duration_ms).max().unwrap_or(0);
    terminal::eprintln_raw("    step timings:");
    for t in timings {
        let mark = if t.duration_ms == slowest { "  <- slowest" } else { "" };
        terminal::eprintln_raw(&format!("      {:width$}  {:>7}{mark}", t.step, terminal::secs(t.duration_ms)));
    }
}

/// Prints the summary and the `result` event; returns the exit code.
fn finish(report: &BuildReporter, outcome: Outcome, started: Instant, published: Vec<String>) -> ExitCode {
    let (status, code, error) = match (&outcome.result, outcome.cleanup_errors.is_empty()) {
        (_, false) => (Status::CleanupFailed, ExitCode::CleanupFailed, outcome.result.as_ref().err().map(|e| chain(e))),
        (Ok(()), true) => (Status::Success, ExitCode::Success, None),
        (Err(e @ RunFailure::Interrupted { .. }), true) => (Status::Interrupted, ExitCode::Interrupted, Some(chain(e))),
        (Err(e), true) => (Status::Failed, ExitCode::BuildFailed, Some(chain(e))),
    };
    if let Some(e) = &error {
        report.error(e.as_str());
    }
    let mut left_behind: Vec<String> = outcome.cleanup_errors.iter().map(|(what, e)| format!("{what} ({e})")).collect();
    left_behind.extend(outcome.kept.iter().cloned());
    for item in &left_behind {
        terminal::eprintln_raw(&format!("    left behind: {item}"));
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    print_step_summary(&outcome.timings);
    if status == Status::Success {
        report.info(format!("finished in {}", terminal::secs(duration_ms)));
    }
    report.emit(Event::Result {
        status,
        exit_code: code.code(),
        duration_ms,
        error,
        steps: outcome.timings,
        left_behind,
        published,
    });
    code
}
