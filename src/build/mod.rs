//! A build: the typed state the steps share, and the list of steps a
//! template turns into.

pub mod liveness;
pub mod publish;
mod steps;
pub mod verify_step;

use std::path::PathBuf;
use std::sync::Arc;

use crate::builder::qemu;
use crate::runner::Step;
use crate::source::Fetched;
use crate::template::{Builder, Loaded, ProvisionerKind};

pub use steps::{FetchSource, Provision, WorkDir, create_private_file};

/// Options that do not come from the template.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub cache_dir: PathBuf,
    /// Parent of the per-build work directory.
    pub work_root: PathBuf,
    /// The local artifact store (see [`publish::store_path`]).
    pub store: PathBuf,
    /// `--junit`: where to write the verify results as JUnit XML.
    pub junit: Option<PathBuf>,
    /// `--on-error abort`: the build VM may outlive imgbuild.
    pub keep_on_error: bool,
}

impl BuildSettings {
    pub fn new(store: PathBuf) -> Self {
        BuildSettings {
            cache_dir: crate::source::Fetcher::default_cache_dir(),
            work_root: std::env::var_os("IMGBUILD_WORK_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir),
            store,
            junit: None,
            keep_on_error: false,
        }
    }
}

/// Everything steps hand to later steps. Fields are filled in pipeline order;
/// a step that needs one that is missing reports an internal error instead of
/// panicking (see [`BuildState::require`]).
pub struct BuildState {
    pub loaded: Arc<Loaded>,
    pub settings: BuildSettings,
    pub work_dir: Option<PathBuf>,
    /// Held from the first step on: tells other imgbuild processes this build is alive.
    pub lock: Option<liveness::BuildLock>,
    pub source: Option<Fetched>,
    pub machine: crate::builder::qemu::MachineState,
    /// The version being built (`auto` already resolved).
    pub version: String,
    pub export: Option<publish::ExportState>,
    pub verify_results: Option<serde_json::Value>,
    pub published: Option<PathBuf>,
    /// Set once the version is in every publish target. Cleanups that must
    /// undo only what was not published (an AMI marked complete) read it.
    pub published_flag: Arc<std::sync::atomic::AtomicBool>,
    /// Images a builder captured in a cloud instead of a disk (`ec2`).
    pub cloud_images: Option<crate::export::manifest::CloudImages>,
    /// Digest over every build input, recorded in the manifest for `--if-changed`.
    pub input_digest: Option<crate::digest::InputDigest>,
    #[cfg(feature = "aws")]
    pub ec2: Option<crate::builder::ec2::Ec2State>,
    /// Where this build reports (tagged with its build id).
    pub report: crate::report::BuildReporter,
}

#[derive(Debug, thiserror::Error)]
#[error("internal error: {what} is not available at this point of the build")]
pub struct MissingState {
    what: &'static str,
}

impl MissingState {
    pub fn new(what: &'static str) -> Self {
        MissingState { what }
    }
}

impl BuildState {
    pub fn new(
        loaded: Arc<Loaded>,
        settings: BuildSettings,
        version: String,
        report: crate::report::BuildReporter,
    ) -> Self {
        BuildState {
            report,
            version,
            export: None,
            verify_results: None,
            published: None,
            published_flag: Arc::default(),
            cloud_images: None,
            input_digest: None,
            loaded,
            settings,
            work_dir: None,
            lock: None,
            source: None,
            machine: Default::default(),
            #[cfg(feature = "aws")]
            ec2: None,
        }
    }

    pub fn require<'a, T>(field: &'a Option<T>, what: &'static str) -> Result<&'a T, MissingState> {
        field.as_ref().ok_or(MissingState { what })
    }

    /// `--on-error abort`: leave the VM running when the state is dropped.
    pub fn keep_resources(&self) {
        if let Some(vm) = &self.machine.vm {
            vm.keep_running();
        }
    }

    pub fn build_id(&self) -> &str {
        &self.loaded.build_id
    }
}

/// Problems found when turning a valid template into a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("provisioner {index} (`{kind}`) needs a machine, but the `null` builder boots none; use `shell-local`")]
    NeedsMachine { index: usize, kind: &'static str },
    #[error(
        "provisioner {index} (`{kind}`) needs SSH, but `communicator` is `none`; use `shell-local` or `communicator: ssh`"
    )]
    NeedsCommunicator { index: usize, kind: &'static str },
    #[error("the `ec2` builder needs an `ami` source (`cloud-image` and `iso` sources are for `qemu`)")]
    Ec2NeedsAmi,
    #[error("an `ami` source needs the `ec2` builder")]
    AmiNeedsEc2,
    #[error("this imgbuild was built without AWS support (cargo feature `aws`), which the `ec2` builder needs")]
    NoAwsSupport,
}

/// The ordered steps of a build.
pub fn plan(loaded: &Loaded) -> Result<Vec<Box<dyn Step<BuildState>>>, PlanError> {
    let template = &loaded.template;
    let mut steps: Vec<Box<dyn Step<BuildState>>> = vec![Box::new(WorkDir)];
    if matches!(template.builder, Builder::Qemu(_)) {
        steps.push(Box::new(qemu::Preflight));
    }
    if template.source.as_ref().is_some_and(|s| s.download().is_some()) {
        steps.push(Box::new(FetchSource));
    }
    let ami_source = matches!(template.source, Some(crate::template::Source::Ami(_)));
    match &template.builder {
        Builder::Ec2(_) if !ami_source => return Err(PlanError::Ec2NeedsAmi),
        Builder::Ec2(_) => steps.extend(ec2_steps(loaded)?),
        _ if ami_source => return Err(PlanError::AmiNeedsEc2),
        Builder::Null => {
            if let Some((index, kind)) = needs_machine(template) {
                return Err(PlanError::NeedsMachine { index, kind });
            }
            steps.extend(provision_steps(loaded));
        }
        Builder::Qemu(q) => {
            steps.push(Box::new(qemu::CreateDisk));
            steps.push(Box::new(qemu::CreateSeed));
            if q.http_directory.is_some() || !q.http_content.is_empty() {
                steps.push(Box::new(qemu::iso::StartHttp));
            }
            steps.push(Box::new(qemu::Launch));
            if !q.boot_command.is_empty() {
                steps.push(Box::new(qemu::iso::TypeBootCommand));
            }
            let checks = !template.verify.is_empty();
            let on_build_vm = template.export.verify_on == crate::template::VerifyOn::BuildVm;
            if q.communicator == crate::template::Communicator::None {
                // No machine to talk to: only host-side steps, after the guest powered off.
                if let Some((index, p)) = needs_machine(template) {
                    return Err(PlanError::NeedsCommunicator { index, kind: p });
                }
                steps.push(Box::new(qemu::iso::WaitForPowerOff));
                steps.extend(provision_steps(loaded));
            } else {
                steps.push(Box::new(qemu::WaitSsh));
                steps.extend(provision_steps(loaded));
                if checks && on_build_vm {
                    steps.push(Box::new(verify_step::Verify { target: verify_step::Target::BuildVm }));
                }
                steps.push(Box::new(qemu::Shutdown));
            }
            steps.push(Box::new(publish::Export));
            if checks && !on_build_vm {
                steps.push(Box::new(verify_step::Verify { target: verify_step::Target::Exported }));
            }
            steps.push(Box::new(publish::PublishStep));
        }
    }
    Ok(steps)
}

/// An instance in EC2: provision, verify on the build instance (a fresh boot
/// would be a second instance), stop, capture, copy, publish the AMI ids.
#[cfg(feature = "aws")]
fn ec2_steps(loaded: &Loaded) -> Result<Vec<Box<dyn Step<BuildState>>>, PlanError> {
    use crate::builder::ec2;
    let mut steps: Vec<Box<dyn Step<BuildState>>> =
        vec![Box::new(ec2::Prepare), Box::new(ec2::CreateAccess), Box::new(ec2::Launch), Box::new(ec2::WaitSsh)];
    steps.extend(provision_steps(loaded));
    if !loaded.template.verify.is_empty() {
        steps.push(Box::new(verify_step::Verify { target: verify_step::Target::BuildVm }));
    }
    steps.extend([
        Box::new(ec2::Stop) as Box<dyn Step<BuildState>>,
        Box::new(ec2::CreateAmi),
        Box::new(ec2::CopyAmi),
        Box::new(ec2::MarkComplete),
        // The same export and publish as every builder: a version with no
        // files, whose manifest records the AMIs, in every publish target.
        Box::new(publish::Export),
        Box::new(publish::PublishStep),
    ]);
    Ok(steps)
}

#[cfg(not(feature = "aws"))]
fn ec2_steps(_: &Loaded) -> Result<Vec<Box<dyn Step<BuildState>>>, PlanError> {
    Err(PlanError::NoAwsSupport)
}

/// The first provisioner that needs a running machine (anything but `shell-local`).
fn needs_machine(template: &crate::template::Template) -> Option<(usize, &'static str)> {
    template
        .provisioners
        .iter()
        .enumerate()
        .find(|(_, p)| !matches!(p.kind, ProvisionerKind::ShellLocal(_)))
        .map(|(i, p)| (i, p.kind.type_name()))
}

fn provision_steps(loaded: &Loaded) -> Vec<Box<dyn Step<BuildState>>> {
    loaded
        .template
        .provisioners
        .iter()
        .enumerate()
        .map(|(index, p)| Box::new(Provision { index, kind: p.kind.type_name() }) as Box<dyn Step<BuildState>>)
        .collect()
}
