//! `manifest.json`: what was built, from what, how, and what came out.
//! Documented in `docs/manifest.md` with a JSON Schema in
//! `docs/manifest.schema.json`; bump `schema_version` on breaking changes.

use std::path::Path;

use serde::Serialize;

use super::Artifact;
use crate::build::BuildState;
use crate::report::StepTiming;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    pub build_id: String,
    pub created_at: String,
    pub imgbuild_version: String,
    pub template: TemplateInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
    /// The AMI an `ec2` build started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ami: Option<SourceAmi>,
    pub builder: BuilderInfo,
    pub provisioners: Vec<ProvisionerInfo>,
    pub steps: Vec<StepTiming>,
    pub artifacts: Vec<Artifact>,
    /// The artifact of an `ec2` build: its AMI in each region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amis: Option<Vec<CloudImage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `sha256:` over all build inputs (`imgbuild inspect --digest`); `--if-changed` compares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// The labelled parts of `input_digest`, so a rebuild can say what changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_parts: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceAmi {
    pub region: String,
    pub id: String,
    pub name: String,
    pub creation_date: String,
}

/// What a builder captured in a cloud instead of a disk file: the images
/// (copies in other regions included) and the image the build started from.
/// The publish step records them in the manifest like any other version.
#[derive(Debug, Clone)]
pub struct CloudImages {
    pub images: Vec<CloudImage>,
    pub source: SourceAmi,
}

/// An AMI an `ec2` build published.
#[derive(Debug, Clone, Serialize)]
pub struct CloudImage {
    pub region: String,
    pub id: String,
    pub name: String,
    pub snapshots: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TemplateInfo {
    pub path: String,
    /// sha256 of the resolved template JSON, secrets masked.
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct GitInfo {
    pub commit: String,
    pub dirty: bool,
}

#[derive(Debug, Serialize)]
pub struct SourceInfo {
    pub url: String,
    pub digest: String,
}

#[derive(Debug, Serialize)]
pub struct BuilderInfo {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key_fingerprint: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ProvisionerInfo {
    #[serde(rename = "type")]
    pub kind: String,
    pub files: Vec<FileInfo>,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub sha256: String,
}

pub use imgbuild_store_format::sha256_hex;

/// Assembles the manifest from the build state. Secrets are masked by the
/// caller's final `redact::scrub_json` pass.
pub async fn build(state: &BuildState, version: &str, steps: &[StepTiming], artifacts: &[Artifact]) -> Manifest {
    let loaded = &state.loaded;
    let resolved = serde_json::to_vec(&loaded.resolved_json()).unwrap_or_default();
    let facts = &state.facts;
    let cloud_images = match &state.captured {
        Some(crate::machine::Capture::CloudImages(images)) => Some(images),
        _ => None,
    };
    Manifest {
        schema_version: SCHEMA_VERSION,
        name: loaded.template.name.clone(),
        version: version.to_string(),
        build_id: loaded.build_id.clone(),
        created_at: jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        imgbuild_version: env!("CARGO_PKG_VERSION").to_string(),
        template: TemplateInfo { path: loaded.path.display().to_string(), sha256: sha256_hex(&resolved) },
        git: git_info(&loaded.dir).await,
        source: state.source.as_ref().map(|s| SourceInfo { url: s.source.clone(), digest: s.digest.to_string() }),
        source_ami: cloud_images.map(|c| c.source.clone()),
        builder: BuilderInfo {
            kind: match &loaded.template.builder {
                crate::template::Builder::Qemu(_) => "qemu".into(),
                crate::template::Builder::Ec2(_) => "ec2".into(),
                crate::template::Builder::Null => "null".into(),
            },
            accelerator: facts.accelerator.clone(),
            qemu_version: facts.qemu_version.clone(),
            shutdown: facts.shutdown.map(|s| s.as_str().to_string()),
            host_key_fingerprint: facts.host_key_fingerprint.clone(),
        },
        provisioners: provisioner_info(state).await,
        steps: steps.to_vec(),
        artifacts: artifacts.to_vec(),
        amis: cloud_images.map(|c| c.images.clone()),
        verify: None,
        parent: None,
        input_digest: state.input_digest.as_ref().map(|d| d.digest.clone()),
        input_parts: state.input_digest.as_ref().map(|d| d.parts_json()),
    }
}

/// Per provisioner, the host files and inline text it used, as the input walk lists them.
async fn provisioner_info(state: &BuildState) -> Vec<ProvisionerInfo> {
    let mut out = Vec::new();
    for p in crate::inputs::walk(&state.loaded).provisioners {
        let mut files = Vec::new();
        for file in &p.files {
            if let Some(sha256) = hash_path(&file.path.resolved).await {
                files.push(FileInfo { path: file.path.written.clone(), sha256 });
            }
        }
        if let Some(text) = &p.inline {
            files.push(FileInfo { path: "<inline>".into(), sha256: sha256_hex(text.as_bytes()) });
        }
        out.push(ProvisionerInfo { kind: p.kind.to_string(), files });
    }
    out
}

/// sha256 hex of a file or a directory tree, as the input digest computes it.
async fn hash_path(path: &Path) -> Option<String> {
    let path = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || crate::inputs::hash_path(&path)).await.ok()?.ok()?;
    digest.strip_prefix("sha256:").map(str::to_string)
}

/// The commit of the template's repository and whether it has local changes.
async fn git_info(dir: &Path) -> Option<GitInfo> {
    let run = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("-C").arg(dir).args(args);
        crate::process::run_capture(cmd, std::time::Duration::from_secs(10))
    };
    let commit = run(&["rev-parse", "HEAD"]).await.ok()?.trim().to_string();
    let dirty = !run(&["status", "--porcelain"]).await.ok()?.trim().is_empty();
    Some(GitInfo { commit, dirty })
}
