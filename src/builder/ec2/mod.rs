//! The `ec2` builder: launches an instance from an AMI, provisions it over
//! SSH, stops it and captures a new AMI (copied to `ami_regions`).
//!
//! Steps: prepare (pre-validate the AMI name everywhere, resolve the source,
//! arm the sweep) → key pair + security group → launch → wait for SSH →
//! (provisioners, verify) → stop → create AMI → copy → publish.
//!
//! Cleanup is one *sweep by tag*, armed before anything exists: every
//! resource carries `imgbuild:build-id` from its creation call, so the sweep
//! finds what the build made even when a call was interrupted before its
//! response arrived. `imgbuild gc` runs the same sweep for dead builds.

pub mod gc;

use std::sync::Arc;
use std::time::Duration;

use imgbuild_aws::ec2::{self as api, Ec2, Ec2Error, ImageInfo, ImageQuery, LaunchRequest, Tags};

use super::ReadyError;
use crate::build::BuildState;
use crate::communicator::{Communicator, KeyPair, SshAuth, SshClient, SshTarget};
use crate::machine::{Capture, Machine, MachineError, ShutdownMethod};
use crate::report::BuildReporter;
use crate::runner::{BoxError, Cleanup, Step, StepContext};
use crate::template::{Builder, Ec2Builder, Source, SshInterface};

const CONSOLE_TAIL: usize = 25;
const STOP_TIMEOUT: Duration = Duration::from_secs(600);
/// Terminating an instance and waiting for it can take minutes in EC2.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Api(#[from] Ec2Error),
    #[error(transparent)]
    Missing(#[from] crate::build::MissingState),
    #[error("{source}\n--- instance console output (last lines) ---\n{console}")]
    SshWait {
        #[source]
        source: Box<crate::communicator::WaitError>,
        console: String,
    },
    #[error("`ready_command` did not succeed within the SSH timeout; last exit status: {0}")]
    NotReady(String),
    #[error("instance {instance} has no {interface} address; set `ssh.interface` or `ssh.host`")]
    NoAddress { instance: String, interface: &'static str },
    #[error(
        "cannot find this machine's public address for the temporary security group ({0}); set `temporary_sg_cidrs`"
    )]
    NoPublicAddress(String),
    #[error(
        "AMI {id} in {region} was not available after {waited}; it is kept (tagged imgbuild:status=kept), not deregistered: check it in the console and deregister it if it failed"
    )]
    AmiKept { id: String, region: String, waited: String },
    #[error(transparent)]
    Ssh(#[from] crate::communicator::SshError),
    #[error(transparent)]
    Liveness(#[from] crate::build::liveness::LivenessError),
}

/// What the ec2 steps hand to later steps.
pub struct Ec2State {
    pub api: Ec2,
    pub source: ImageInfo,
    /// Tags on everything this build creates.
    pub tags: Tags,
    pub key_name: Option<String>,
    pub security_group: Option<String>,
    pub instance: Option<String>,
    pub spot: bool,
    /// `(region, AMI)`, the build region first.
    pub amis: Vec<(String, ImageInfo)>,
}

fn config(state: &BuildState) -> Result<&Ec2Builder, crate::build::MissingState> {
    match &state.loaded.template.builder {
        Builder::Ec2(b) => Ok(b),
        _ => BuildState::require(&None, "the ec2 builder settings"),
    }
}

fn ec2(state: &mut BuildState) -> Result<&mut Ec2State, crate::build::MissingState> {
    state.ec2.as_mut().ok_or(crate::build::MissingState::new("the EC2 connection"))
}

/// The tags of every resource of this build.
pub fn build_tags(state: &BuildState, cfg: &Ec2Builder) -> Tags {
    let now = jiff::Timestamp::now();
    // Longest a healthy build should hold resources; past it, `gc` may reap
    // them even from another machine.
    let budget = cfg.instance_wait_timeout.0
        + cfg.ssh.timeout.0
        + cfg.ami_wait_timeout.0 * (1 + cfg.ami_regions.len() as u32)
        + Duration::from_secs(6 * 3600);
    let expires = now + jiff::SignedDuration::try_from(budget).unwrap_or(jiff::SignedDuration::from_hours(24));
    let mut tags: Tags = cfg.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    tags.extend([
        (api::TAG_BUILD_ID.to_string(), state.build_id().to_string()),
        (api::TAG_NAME.to_string(), state.loaded.template.name.clone()),
        ("imgbuild:version".to_string(), state.version.clone()),
        (api::TAG_CREATED_AT.to_string(), timestamp(now)),
        (api::TAG_EXPIRES_AT.to_string(), timestamp(expires)),
    ]);
    tags
}

fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn with_name(tags: &Tags, name: &str) -> Tags {
    let mut tags = tags.clone();
    tags.push(("Name".to_string(), name.to_string()));
    tags
}

// ------------------------------------------------------------------ steps

/// Connects, refuses an AMI name that exists in any target region, resolves
/// the source AMI, and arms the sweep.
pub struct Prepare;

#[async_trait::async_trait]
impl Step<BuildState> for Prepare {
    fn name(&self) -> String {
        "prepare EC2".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let report = state.report.clone();
        let cfg = config(state)?.clone();
        let api = Ec2::connect(cfg.region.as_deref(), cfg.endpoint_url.as_deref()).await.map_err(BuildError::from)?;
        // Should this process die, its lock file now stays for `gc` to find.
        let lock = BuildState::require(&state.lock, "the build lock")?;
        lock.mark_remote_resources().map_err(BuildError::from)?;
        let regions = all_regions(&api, &cfg);
        for region in &regions {
            api.in_region(region).ensure_name_free(&cfg.ami_name).await.map_err(BuildError::from)?;
        }
        let query = match &state.loaded.template.source {
            Some(Source::Ami(a)) => match (&a.ami, &a.filter) {
                (Some(id), _) => ImageQuery::Id(id.clone()),
                (None, Some(f)) => {
                    ImageQuery::Filter { name: f.name.clone(), owners: f.owners.clone(), most_recent: f.most_recent }
                }
                (None, None) => return Err(crate::build::MissingState::new("the source AMI").into()),
            },
            _ => return Err(crate::build::MissingState::new("an `ami` source").into()),
        };
        let source = api.find_image(&query).await.map_err(BuildError::from)?;
        report.info(format!("source AMI {} ({}, created {})", source.id, source.name, source.creation_date));
        arm_sweep(state, cx, &api, &regions);
        let tags = build_tags(state, &cfg);
        state.ec2 = Some(Ec2State {
            api,
            source,
            tags,
            key_name: None,
            security_group: None,
            instance: None,
            spot: false,
            amis: Vec::new(),
        });
        Ok(())
    }
}

fn all_regions(api: &Ec2, cfg: &Ec2Builder) -> Vec<String> {
    let mut regions = vec![api.region().to_string()];
    for r in &cfg.ami_regions {
        if !regions.contains(r) {
            regions.push(r.clone());
        }
    }
    regions
}

/// One cleanup for everything: whatever carries this build's id and is not
/// a finished AMI, in every region the build touches.
fn arm_sweep(state: &BuildState, cx: &mut StepContext, api: &Ec2, regions: &[String]) {
    let build_id = state.build_id().to_string();
    let apis: Vec<Ec2> = regions.iter().map(|r| api.in_region(r)).collect();
    let note = format!(
        "EC2 resources tagged imgbuild:build-id={build_id} in {} (remove them with `imgbuild gc`)",
        regions.join(", ")
    );
    cx.on_cleanup(
        Cleanup::new("delete EC2 resources", move || async move { sweep_build(&apis, &build_id).await })
            .timeout(SWEEP_TIMEOUT)
            .keep_note(note),
    );
}

async fn sweep_build(apis: &[Ec2], build_id: &str) -> Result<(), BoxError> {
    let mut failures = Vec::new();
    for api in apis {
        // One region failing to answer must not keep the others from being swept.
        let tagged = match api.tagged(Some(build_id)).await {
            Ok(tagged) => tagged,
            Err(e) => {
                failures.push(format!("listing {}: {}", api.region(), crate::error::chain(&e)));
                continue;
            }
        };
        let doomed: Vec<_> = tagged.resources.into_iter().filter(|r| !r.is_protected()).collect();
        for outcome in api.sweep(&doomed, SWEEP_TIMEOUT).await {
            let what = format!("{} {} in {}", outcome.resource.kind.as_str(), outcome.resource.id, api.region());
            match outcome.error {
                None => tracing::debug!("deleted {what}"),
                Some(e) => failures.push(format!("{what}: {}", crate::error::chain(&e))),
            }
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ").into()) }
}

/// The temporary key pair (the build's SSH key) and a security group that
/// admits SSH from this machine only.
pub struct CreateAccess;

#[async_trait::async_trait]
impl Step<BuildState> for CreateAccess {
    fn name(&self) -> String {
        "create key pair and security group".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let report = state.report.clone();
        let cfg = config(state)?.clone();
        let key = match &state.ssh_key {
            Some(k) => k.clone(),
            None => Arc::new(KeyPair::generate().map_err(BuildError::from)?),
        };
        crate::redact::register(&key.private_openssh_pem().map_err(BuildError::from)?);
        state.ssh_key = Some(key.clone());
        let name = format!("imgbuild-{}", state.build_id());
        let cidrs = match cfg.temporary_sg_cidrs.is_empty() {
            false => cfg.temporary_sg_cidrs.clone(),
            true => vec![public_address().await?],
        };
        let ec2 = ec2(state)?;
        let tags = with_name(&ec2.tags, &name);
        ec2.api.import_key_pair(&name, &key.public_openssh(&name), &tags).await.map_err(BuildError::from)?;
        ec2.key_name = Some(name.clone());
        let vpc = match &cfg.subnet_id {
            Some(subnet) => Some(ec2.api.subnet_vpc(subnet).await.map_err(BuildError::from)?),
            None => None,
        };
        let group = ec2
            .api
            .create_ssh_security_group(&name, vpc.as_deref(), cfg.ssh.port, &cidrs, &tags)
            .await
            .map_err(BuildError::from)?;
        report.info(format!("key pair {name}, security group {group} (SSH from {})", cidrs.join(", ")));
        ec2.security_group = Some(group);
        Ok(())
    }
}

/// This machine's public IPv4 address as a /32, as AWS sees it.
async fn public_address() -> Result<String, BuildError> {
    let fail = |e: &dyn std::fmt::Display| BuildError::NoPublicAddress(e.to_string());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| fail(&e))?;
    let text = client
        .get("https://checkip.amazonaws.com")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| fail(&e))?
        .text()
        .await
        .map_err(|e| fail(&e))?;
    let ip: std::net::Ipv4Addr = text.trim().parse().map_err(|e| fail(&e))?;
    Ok(format!("{ip}/32"))
}

pub struct Launch;

#[async_trait::async_trait]
impl Step<BuildState> for Launch {
    fn name(&self) -> String {
        "launch instance".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let report = state.report.clone();
        let cfg = config(state)?.clone();
        let build_id = state.build_id().to_string();
        let name = format!("imgbuild {} {}", state.loaded.template.name, state.version);
        let ec2 = ec2(state)?;
        let request = LaunchRequest {
            image_id: ec2.source.id.clone(),
            instance_type: cfg.instance_type.clone(),
            key_name: BuildState::require(&ec2.key_name, "the key pair")?.clone(),
            security_group_id: BuildState::require(&ec2.security_group, "the security group")?.clone(),
            subnet_id: cfg.subnet_id.clone(),
            associate_public_ip: cfg.associate_public_ip,
            spot: cfg.spot,
            spot_fallback: cfg.spot_fallback,
            user_data: cfg.user_data.clone(),
            client_token: build_id,
            tags: with_name(&ec2.tags, &name),
        };
        let launched = ec2.api.launch(&request).await.map_err(BuildError::from)?;
        ec2.instance = Some(launched.instance_id.clone());
        ec2.spot = launched.spot;
        let market = if launched.spot { "spot" } else { "on-demand" };
        report.info(format!(
            "instance {} ({}, {market}) launched; waiting for it to run",
            launched.instance_id, cfg.instance_type
        ));
        ec2.api
            .wait_instance(&launched.instance_id, api::InstanceStateName::Running, cfg.instance_wait_timeout.0)
            .await
            .map_err(BuildError::from)?;
        state.launched_at = Some(std::time::Instant::now());
        Ok(())
    }
}

pub struct WaitSsh;

#[async_trait::async_trait]
impl Step<BuildState> for WaitSsh {
    fn name(&self) -> String {
        "wait for SSH".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let report = state.report.clone();
        let cfg = config(state)?.clone();
        let key = BuildState::require(&state.ssh_key, "the SSH key")?.clone();
        let ec2 = ec2(state)?;
        let instance = BuildState::require(&ec2.instance, "the instance")?.clone();
        let host = match &cfg.ssh.host {
            Some(host) => host.clone(),
            None => instance_address(&ec2.api, &instance, cfg.ssh.interface).await?,
        };
        let mut auth = vec![SshAuth::Key(key)];
        if let Some(password) = &cfg.ssh.password {
            auth.push(SshAuth::Password(password.expose().to_string()));
        }
        let target = SshTarget { host, port: cfg.ssh.port, username: cfg.ssh.username.clone(), auth };
        report.info(format!("waiting for SSH on {}:{} as {}", target.host, target.port, target.username));
        let machine = Arc::new(Ec2Machine {
            api: ec2.api.clone(),
            instance,
            target,
            settings: cfg.ssh.common(),
            report: state.report.clone(),
        });
        let started = std::time::Instant::now();
        let communicator = machine.connect(&cx.cancel).await?;
        state.machine = Some(machine);
        super::ssh_ready(state, communicator, started);
        Ok(())
    }
}

/// An EC2 instance, reached over SSH on its address.
pub struct Ec2Machine {
    api: Ec2,
    instance: String,
    target: SshTarget,
    settings: crate::template::SshSettings,
    report: BuildReporter,
}

impl Ec2Machine {
    async fn wait_for_ssh(&self, cancel: &tokio_util::sync::CancellationToken) -> Result<SshClient, BuildError> {
        match super::wait_until_ready(&self.target, &self.settings, cancel).await {
            Ok(client) => Ok(client),
            Err(ReadyError::NotReady(status)) => Err(BuildError::NotReady(status)),
            Err(ReadyError::Wait(source)) => {
                let console = self.api.console_output(&self.instance).await.map(|c| tail(&c)).unwrap_or_default();
                let console = if console.is_empty() { "(EC2 has no console output yet)".into() } else { console };
                Err(BuildError::SshWait { source: Box::new(source), console })
            }
        }
    }

    async fn stop(&self, communicator: Option<Box<dyn Communicator>>) -> Result<(), BuildError> {
        if let Some(communicator) = communicator {
            communicator.close().await;
        }
        self.api.stop_instance(&self.instance, STOP_TIMEOUT).await?;
        self.report.info(format!("instance {} stopped", self.instance));
        Ok(())
    }
}

#[async_trait::async_trait]
impl Machine for Ec2Machine {
    async fn connect(
        &self,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Box<dyn Communicator>, MachineError> {
        Ok(Box::new(self.wait_for_ssh(cancel).await.map_err(MachineError::new)?))
    }

    /// Not watched yet: a terminated instance shows as a lost SSH connection.
    fn watch(&self) -> Option<Arc<dyn crate::communicator::MachineWatch>> {
        None
    }

    async fn shut_down(&self, communicator: Option<Box<dyn Communicator>>) -> Result<ShutdownMethod, MachineError> {
        self.stop(communicator).await.map_err(MachineError::new)?;
        Ok(ShutdownMethod::Stopped)
    }

    /// The build's sweep terminates the instance; stopping it is all that is urgent.
    async fn discard(&self) {
        if let Err(e) = self.stop(None).await {
            tracing::debug!("could not stop instance {}: {e}", self.instance);
        }
    }

    /// Nothing to do: `--on-error abort` keeps the sweep from running.
    fn keep_for_debugging(&self) {}
}

async fn instance_address(api: &Ec2, instance: &str, interface: SshInterface) -> Result<String, BuildError> {
    let info = api.describe_instance(instance).await?.unwrap_or_default();
    let (address, name) = match interface {
        SshInterface::PublicIp => (info.public_ip, "public IP"),
        SshInterface::PrivateIp => (info.private_ip, "private IP"),
        SshInterface::PublicDns => (info.public_dns, "public DNS"),
    };
    address.ok_or(BuildError::NoAddress { instance: instance.to_string(), interface: name })
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(CONSOLE_TAIL)..].join("\n")
}

pub struct Stop;

#[async_trait::async_trait]
impl Step<BuildState> for Stop {
    fn name(&self) -> String {
        "stop instance".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let machine = BuildState::require(&state.machine, "the instance")?.clone();
        let method = machine.shut_down(state.communicator.take()).await?;
        state.facts.shutdown = Some(method);
        Ok(())
    }
}

pub struct CreateAmi;

#[async_trait::async_trait]
impl Step<BuildState> for CreateAmi {
    fn name(&self) -> String {
        "create AMI".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let report = state.report.clone();
        let cfg = config(state)?.clone();
        let ec2 = ec2(state)?;
        let instance = BuildState::require(&ec2.instance, "the instance")?.clone();
        let tags = with_name(&ec2.tags, &cfg.ami_name);
        let id = ec2
            .api
            .create_image(&instance, &cfg.ami_name, cfg.ami_description.as_deref(), &tags)
            .await
            .map_err(BuildError::from)?;
        report.info(format!(
            "AMI {id} ({}) created in {}; waiting until it is available",
            cfg.ami_name,
            ec2.api.region()
        ));
        let image = wait_or_keep(&ec2.api, &id, &cfg).await?;
        ec2.api.tag_image(&image, &tags).await.map_err(BuildError::from)?;
        report.info(format!("AMI {id} available in {}", ec2.api.region()));
        ec2.amis.push((ec2.api.region().to_string(), image));
        Ok(())
    }
}

/// Waits for an AMI; on timeout tags it `kept` so no sweep removes it.
async fn wait_or_keep(api: &Ec2, id: &str, cfg: &Ec2Builder) -> Result<ImageInfo, BuildError> {
    match api.wait_image_available(id, cfg.ami_wait_timeout.0).await {
        Ok(image) => Ok(image),
        Err(Ec2Error::WaitTimeout { .. }) => {
            let kept = vec![(api::TAG_STATUS.to_string(), api::STATUS_KEPT.to_string())];
            api.create_tags(&[id.to_string()], &kept).await?;
            Err(BuildError::AmiKept {
                id: id.into(),
                region: api.region().into(),
                waited: cfg.ami_wait_timeout.to_string(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub struct CopyAmi;

#[async_trait::async_trait]
impl Step<BuildState> for CopyAmi {
    fn name(&self) -> String {
        "copy AMI".into()
    }

    async fn run(&self, state: &mut BuildState, _cx: &mut StepContext) -> Result<(), BoxError> {
        let report = state.report.clone();
        let cfg = config(state)?.clone();
        let ec2 = ec2(state)?;
        let (home, image) = ec2.amis.first().cloned().ok_or(crate::build::MissingState::new("the AMI"))?;
        let tags = with_name(&ec2.tags, &cfg.ami_name);
        let source = &ec2.api;
        let copies = cfg.ami_regions.iter().filter(|r| **r != home).map(|region| {
            let (api, tags, image, cfg, report) = (source.in_region(region), &tags, &image, &cfg, &report);
            async move {
                let id = api
                    .copy_image_from(
                        source,
                        &image.id,
                        &cfg.ami_name,
                        cfg.ami_description.as_deref(),
                        cfg.encrypt_boot,
                        tags,
                    )
                    .await?;
                report.info(format!("copying AMI {} to {region} as {id}", image.id));
                let copy = wait_or_keep(&api, &id, cfg).await?;
                api.tag_image(&copy, tags).await?;
                Ok::<_, BuildError>((region.clone(), copy))
            }
        });
        let results = futures::future::join_all(copies).await;
        for result in results {
            let (region, copy) = result?;
            report.info(format!("AMI {} available in {region}", copy.id));
            ec2.amis.push((region, copy));
        }
        Ok(())
    }
}

/// Marks the AMIs and their snapshots complete, so the build's sweep and `gc` leave them alone,
/// and hands them to the generic publish step, which records them as a
/// version in every publish target. Marked before publishing: a published
/// version must never name an AMI that a sweep could still delete. Should
/// publishing fail, the cleanup takes the mark back so the sweep removes them.
pub struct MarkComplete;

#[async_trait::async_trait]
impl Step<BuildState> for MarkComplete {
    fn name(&self) -> String {
        "mark AMIs complete".into()
    }

    async fn run(&self, state: &mut BuildState, cx: &mut StepContext) -> Result<(), BoxError> {
        let published = state.published_flag.clone();
        let ec2 = ec2(state)?;
        let images: Vec<(Ec2, ImageInfo)> =
            ec2.amis.iter().map(|(region, image)| (ec2.api.in_region(region), image.clone())).collect();
        let unmark = images.clone();
        cx.on_cleanup(Cleanup::new("unmark unpublished AMIs", move || async move {
            if published.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            let building = vec![(api::TAG_STATUS.to_string(), api::STATUS_BUILDING.to_string())];
            for (api, image) in &unmark {
                api.tag_image(image, &building).await.map_err(BuildError::from)?;
            }
            Ok(())
        }));
        let complete = vec![(api::TAG_STATUS.to_string(), api::STATUS_COMPLETE.to_string())];
        for (api, image) in &images {
            api.tag_image(image, &complete).await.map_err(BuildError::from)?;
        }
        let cloud_images = crate::export::manifest::CloudImages {
            images: ec2
                .amis
                .iter()
                .map(|(region, image)| crate::export::manifest::CloudImage {
                    region: region.clone(),
                    id: image.id.clone(),
                    name: image.name.clone(),
                    snapshots: image.snapshots.clone(),
                })
                .collect(),
            source: crate::export::manifest::SourceAmi {
                region: ec2.api.region().to_string(),
                id: ec2.source.id.clone(),
                name: ec2.source.name.clone(),
                creation_date: ec2.source.creation_date.clone(),
            },
        };
        state.captured = Some(Capture::CloudImages(cloud_images));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn console_tail_keeps_the_last_lines() {
        let text: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let tail = super::tail(&text);
        assert!(tail.starts_with("line 16\n") && tail.ends_with("line 40"), "{tail}");
        assert_eq!(super::tail("only\n"), "only");
    }
}
