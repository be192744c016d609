//! Export and publish: the disk is converted straight into a staging
//! directory inside the store, and the version appears in one atomic rename
//! only after everything (verify included) has passed.

use std::path::PathBuf;

use super::BuildState;
use crate::export::{self, Artifact, manifest};
use crate::runner::{BoxError, Step, StepContext};
use crate::store::{LocalStore, Staging};
use crate::template::{Loaded, Publish};
use crate::ui;

/// Where artifacts go: `--store`, then `IMGBUILD_STORE`, then the template's
/// `local` publish entry, then `./artifacts`.
pub fn store_path(loaded: &Loaded, cli_store: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = cli_store {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("IMGBUILD_STORE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    loaded
        .template
        .export
        .publish
        .iter()
        .map(|Publish::Local { path }| path.resolved.clone())
        .next()
        .unwrap_or_else(|| PathBuf::from("artifacts"))
}

/// What the export step hands to verify and publish.
pub struct ExportState {
    pub staging: Staging,
    pub artifacts: Vec<Artifact>,
}

pub struct Export;

#[async_trait::async_trait]
impl Step<BuildState> for Export {
    fn name(&self) -> String {
        "export".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let disk = BuildState::require(&state.machine.disk, "the disk")?.clone();
        let store = LocalStore::open(&state.settings.store)?;
        let name = state.loaded.template.name.clone();
        // Checked again here: another build may have published this version meanwhile.
        let staging = store.begin(&name, &state.version)?;
        let export_cfg = &state.loaded.template.export;
        let base = format!("{name}-{}", state.version);
        let artifacts =
            export::export_all(&disk, &staging.dir, &base, &export_cfg.formats, &export_cfg.checksums).await?;
        for a in &artifacts {
            ui::info(format!(
                "exported {} ({} bytes, sha256 {})",
                a.file,
                a.size,
                a.digests.get("sha256").map_or("-", |s| s)
            ));
        }
        state.export = Some(ExportState { staging, artifacts });
        Ok(())
    }
}

pub struct PublishStep;

#[async_trait::async_trait]
impl Step<BuildState> for PublishStep {
    fn name(&self) -> String {
        "publish".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let exported = state.export.take().ok_or(crate::build::MissingState::new("the exported artifacts"))?;
        let mut manifest = manifest::build(state, &state.version, cx.timings(), &exported.artifacts).await;
        manifest.verify = state.verify_results.clone();
        let mut json = serde_json::to_value(&manifest)?;
        crate::redact::scrub_json(&mut json);
        let sums = export::sums_files(&exported.artifacts, &state.loaded.template.export.checksums);
        let dir = exported.staging.commit(&json, &sums)?;
        ui::info(format!("published {}@{} to {}", manifest.name, manifest.version, dir.display()));
        state.published = Some(dir);
        Ok(())
    }
}
