//! A build: the typed state the steps share, and the list of steps a
//! template turns into.

pub mod liveness;
pub mod publish;
mod steps;
pub mod verify_step;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::builder::qemu;
use crate::communicator::{Communicator, KeyPair};
use crate::machine::{Capture, ImageBooter, Machine, MachineFacts};
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
///
/// The generic steps (provision, verify, export, publish) only read the
/// builder-neutral fields: `machine`, `communicator`, `facts`, `captured`,
/// `image_booter`. Each builder keeps its own state in its own field.
pub struct BuildState {
    pub loaded: Arc<Loaded>,
    pub settings: BuildSettings,
    pub work_dir: Option<PathBuf>,
    /// Held from the first step on: tells other imgbuild processes this build is alive.
    pub lock: Option<liveness::BuildLock>,
    pub source: Option<Fetched>,
    /// This build's SSH key, which the guest is told to trust. It exists
    /// before the template is read (`{{ build.ssh_public_key }}`).
    pub ssh_key: Option<Arc<KeyPair>>,
    /// The running build machine, once a builder launched one.
    pub machine: Option<Arc<dyn Machine>>,
    /// The session with it, once it answered.
    pub communicator: Option<Box<dyn Communicator>>,
    /// When the builder started the machine.
    pub launched_at: Option<Instant>,
    /// Machine start to communicator ready, on the first boot.
    pub boot_time: Option<Duration>,
    /// What the manifest records about the machine.
    pub facts: MachineFacts,
    /// What the builder captured: a disk, or images in a cloud.
    pub captured: Option<Capture>,
    /// How to boot a throwaway copy of an image (fresh-boot verify).
    pub image_booter: Option<Arc<dyn ImageBooter>>,
    /// The `qemu` builder's own state.
    pub qemu: qemu::QemuState,
    /// The `ec2` builder's own state.
    #[cfg(feature = "aws")]
    pub ec2: Option<crate::builder::ec2::Ec2State>,
    /// The version being built (`auto` already resolved).
    pub version: String,
    pub export: Option<publish::ExportState>,
    pub verify_results: Option<serde_json::Value>,
    pub published: Option<PathBuf>,
    /// Set once the version is in every publish target. Cleanups that must
    /// undo only what was not published (an AMI marked complete) read it.
    pub published_flag: Arc<std::sync::atomic::AtomicBool>,
    /// Digest over every build input, recorded in the manifest for `--if-changed`.
    pub input_digest: Option<crate::digest::InputDigest>,
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
            input_digest: None,
            loaded,
            settings,
            work_dir: None,
            lock: None,
            source: None,
            ssh_key: None,
            machine: None,
            communicator: None,
            launched_at: None,
            boot_time: None,
            facts: MachineFacts::default(),
            captured: None,
            image_booter: None,
            qemu: Default::default(),
            #[cfg(feature = "aws")]
            ec2: None,
        }
    }

    pub fn require<'a, T>(field: &'a Option<T>, what: &'static str) -> Result<&'a T, MissingState> {
        field.as_ref().ok_or(MissingState { what })
    }

    /// `--on-error abort`: leave the VM running when the state is dropped.
    pub fn keep_resources(&self) {
        if let Some(machine) = &self.machine {
            machine.keep_for_debugging();
        }
    }

    /// Records the first session with the build machine for later steps.
    pub fn machine_answered(&mut self, communicator: Box<dyn Communicator>) {
        self.boot_time = self.launched_at.map(|t| t.elapsed());
        self.facts.host_key_fingerprint = Some(communicator.peer_identity());
        self.communicator = Some(communicator);
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
    #[error("`imgbuild test` boots image files, which the `{0}` builder cannot; it needs the `qemu` builder")]
    CannotBootImages(&'static str),
}

/// `imgbuild test`: the steps that boot a published image file and run the
/// template's checks on it.
pub fn test_plan(loaded: &Loaded, image: PathBuf) -> Result<Vec<Box<dyn Step<BuildState>>>, PlanError> {
    let preflight: Box<dyn Step<BuildState>> = match &loaded.template.builder {
        Builder::Qemu(_) => Box::new(qemu::Preflight),
        Builder::Ec2(_) => return Err(PlanError::CannotBootImages("ec2")),
        Builder::Null => return Err(PlanError::CannotBootImages("null")),
    };
    Ok(vec![
        Box::new(WorkDir),
        preflight,
        Box::new(verify_step::Verify { target: verify_step::Target::Published(image) }),
    ])
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
