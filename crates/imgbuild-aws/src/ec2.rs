//! The EC2 calls of the `ec2` builder and of `imgbuild gc`.
//!
//! Every resource imgbuild creates carries [`TAG_BUILD_ID`] and friends at
//! creation time (TagSpecifications), so a resource is never anonymous, not
//! even when the process dies between the API call and its response. Cleanup
//! is therefore a *sweep by tag* ([`Ec2::sweep`]), the same code for a
//! build's own cleanup and for `gc`: it finds what a build left, whatever it
//! managed to record, and deletes it in dependency order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    Filter, ImageState, InstanceMarketOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceType,
    IpPermission, IpRange, MarketType, ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};

pub use aws_sdk_ec2::types::InstanceStateName;

use crate::BoxError;

pub const TAG_BUILD_ID: &str = "imgbuild:build-id";
pub const TAG_NAME: &str = "imgbuild:name";
pub const TAG_CREATED_AT: &str = "imgbuild:created-at";
pub const TAG_EXPIRES_AT: &str = "imgbuild:expires-at";
/// On AMIs and their snapshots: `complete` (a finished build's artifact) or
/// `kept` (a wait that timed out; left for a person to look at). Sweeps
/// never delete either.
pub const TAG_STATUS: &str = "imgbuild:status";
pub const STATUS_COMPLETE: &str = "complete";
pub const STATUS_KEPT: &str = "kept";
/// What everything carries while the build runs (sweepable).
pub const STATUS_BUILDING: &str = "building";

/// Error codes that mean "no spot capacity/price now": worth an on-demand retry.
const SPOT_REFUSALS: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "InsufficientFreeAddressesInSubnet",
    "UnfulfillableCapacity",
];

#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    #[error(transparent)]
    Endpoint(#[from] crate::EndpointError),
    #[error("no AWS region: set `region` in the builder, AWS_REGION / AWS_DEFAULT_REGION, or a profile region")]
    NoRegion,
    #[error("EC2 {operation} failed in {region}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        operation: &'static str,
        region: String,
        code: Option<String>,
        #[source]
        source: BoxError,
    },
    #[error("no AMI matches {query} in {region}")]
    NoImage { query: String, region: String },
    #[error("an AMI named `{name}` already exists in {region} ({id}); pick another `ami_name` or deregister it")]
    NameTaken { name: String, region: String, id: String },
    #[error("{what} {id} did not become {wanted} within {waited:?} (last state: {last})")]
    WaitTimeout { what: &'static str, id: String, wanted: &'static str, waited: Duration, last: String },
    #[error("{what} {id} entered state `{state}`{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    BadState { what: &'static str, id: String, state: String, reason: Option<String> },
    #[error("EC2 returned no {what} for {operation}")]
    Missing { operation: &'static str, what: &'static str },
}

impl Ec2Error {
    pub fn code(&self) -> Option<&str> {
        match self {
            Ec2Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// A tag list, as `(key, value)` pairs.
pub type Tags = Vec<(String, String)>;

/// An EC2 client for one region.
#[derive(Clone)]
pub struct Ec2 {
    client: Client,
    region: String,
    sdk: SdkConfig,
}

/// The AMI a build starts from.
#[derive(Debug, Clone)]
pub enum ImageQuery {
    Id(String),
    /// `name` is an EC2 name pattern (`*`, `?`); the newest by CreationDate wins
    /// when `most_recent`, else exactly one image must match.
    Filter {
        name: String,
        owners: Vec<String>,
        most_recent: bool,
    },
}

impl std::fmt::Display for ImageQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageQuery::Id(id) => write!(f, "id {id}"),
            ImageQuery::Filter { name, owners, .. } if owners.is_empty() => write!(f, "name `{name}`"),
            ImageQuery::Filter { name, owners, .. } => write!(f, "name `{name}` (owners {})", owners.join(", ")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub creation_date: String,
    pub state: String,
    pub snapshots: Vec<String>,
}

/// What RunInstances needs.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    pub key_name: String,
    pub security_group_id: String,
    pub subnet_id: Option<String>,
    pub associate_public_ip: Option<bool>,
    pub spot: bool,
    pub spot_fallback: bool,
    pub user_data: Option<String>,
    /// Idempotency token: a retried call returns the same instance.
    pub client_token: String,
    pub tags: Tags,
}

#[derive(Debug, Clone)]
pub struct Launched {
    pub instance_id: String,
    /// `false` when spot was asked for and refused, and on-demand was used.
    pub spot: bool,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    pub state: String,
    pub public_ip: Option<String>,
    pub private_ip: Option<String>,
    pub public_dns: Option<String>,
}

/// Everything tagged by imgbuild in one region, by build id.
#[derive(Debug, Clone, Default)]
pub struct Tagged {
    pub resources: Vec<TaggedResource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedResource {
    pub kind: ResourceKind,
    pub id: String,
    pub tags: BTreeMap<String, String>,
}

impl TaggedResource {
    pub fn build_id(&self) -> &str {
        self.tags.get(TAG_BUILD_ID).map(String::as_str).unwrap_or("")
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// A finished build's AMI (or its snapshot), or one deliberately kept.
    pub fn is_protected(&self) -> bool {
        matches!(self.tag(TAG_STATUS), Some(STATUS_COMPLETE | STATUS_KEPT))
    }
}

/// In the order a sweep deletes them: what depends on something comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Instance,
    Image,
    Snapshot,
    Volume,
    SecurityGroup,
    KeyPair,
}

impl ResourceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ResourceKind::Instance => "instance",
            ResourceKind::Image => "image",
            ResourceKind::Snapshot => "snapshot",
            ResourceKind::Volume => "volume",
            ResourceKind::SecurityGroup => "security-group",
            ResourceKind::KeyPair => "key-pair",
        }
    }
}

/// One resource a sweep deleted, or could not.
#[derive(Debug)]
pub struct SweepOutcome {
    pub resource: TaggedResource,
    pub error: Option<Ec2Error>,
}

impl Ec2 {
    /// A client for `region` (else the chain's); `endpoint_url`, else
    /// `AWS_ENDPOINT_URL_EC2` / `AWS_ENDPOINT_URL`, selects an EC2-compatible API.
    pub async fn connect(region: Option<&str>, endpoint_url: Option<&str>) -> Result<Ec2, Ec2Error> {
        let (sdk, _) = crate::config::load("EC2", region, endpoint_url).await?;
        Ec2::from_sdk_config(sdk)
    }

    pub fn from_sdk_config(sdk: SdkConfig) -> Result<Ec2, Ec2Error> {
        let region = sdk.region().ok_or(Ec2Error::NoRegion)?.to_string();
        Ok(Ec2 { client: Client::new(&sdk), region, sdk })
    }

    /// The same account and endpoint in another region.
    pub fn in_region(&self, region: &str) -> Ec2 {
        let sdk = self.sdk.to_builder().region(aws_config::Region::new(region.to_string())).build();
        Ec2 { client: Client::new(&sdk), region: region.to_string(), sdk }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api<E, R>(&self, operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> Ec2Error + '_
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        move |err| Ec2Error::Api {
            operation,
            region: self.region.clone(),
            code: err.as_service_error().and_then(|e| e.code()).map(str::to_string),
            source: Box::new(err),
        }
    }

    // ------------------------------------------------------------ images

    /// The source AMI.
    pub async fn find_image(&self, query: &ImageQuery) -> Result<ImageInfo, Ec2Error> {
        let request = match query {
            ImageQuery::Id(id) => self.client.describe_images().image_ids(id),
            ImageQuery::Filter { name, owners, .. } => self
                .client
                .describe_images()
                .set_owners((!owners.is_empty()).then(|| owners.clone()))
                .filters(filter("name", [name.as_str()]))
                .filters(filter("state", ["available"])),
        };
        let out = request.send().await.map_err(self.api("DescribeImages"))?;
        let mut images: Vec<ImageInfo> = out.images().iter().map(image_info).collect();
        let no_image = || Ec2Error::NoImage { query: query.to_string(), region: self.region.clone() };
        if let ImageQuery::Filter { most_recent: false, .. } = query
            && images.len() > 1
        {
            return Err(Ec2Error::BadState {
                what: "AMI filter",
                id: query.to_string(),
                state: format!("{} matches", images.len()),
                reason: Some("set `most_recent: true` or narrow the filter".into()),
            });
        }
        // ISO 8601 timestamps in one format sort as strings.
        images.sort_by(|a, b| a.creation_date.cmp(&b.creation_date));
        images.pop().ok_or_else(no_image)
    }

    /// Fails when an AMI named `name` exists (owned by this account).
    pub async fn ensure_name_free(&self, name: &str) -> Result<(), Ec2Error> {
        let out = self
            .client
            .describe_images()
            .owners("self")
            .filters(filter("name", [name]))
            .send()
            .await
            .map_err(self.api("DescribeImages"))?;
        match out.images().iter().find(|i| i.name() == Some(name)) {
            Some(image) => Err(Ec2Error::NameTaken {
                name: name.to_string(),
                region: self.region.clone(),
                id: image.image_id().unwrap_or_default().to_string(),
            }),
            None => Ok(()),
        }
    }

    pub async fn describe_image(&self, id: &str) -> Result<Option<ImageInfo>, Ec2Error> {
        let out = self.client.describe_images().image_ids(id).send().await;
        match out {
            Ok(out) => Ok(out.images().first().map(image_info)),
            Err(e) if is_not_found(e.code()) => Ok(None),
            Err(e) => Err(self.api("DescribeImages")(e)),
        }
    }

    pub async fn create_image(
        &self,
        instance_id: &str,
        name: &str,
        description: Option<&str>,
        tags: &Tags,
    ) -> Result<String, Ec2Error> {
        // Snapshots are tagged afterwards (`tag_image`): some EC2-compatible
        // APIs reject snapshot TagSpecifications on CreateImage.
        let out = self
            .client
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .set_description(description.map(str::to_string))
            .tag_specifications(tag_spec(ResourceType::Image, tags))
            .send()
            .await
            .map_err(self.api("CreateImage"))?;
        out.image_id().map(str::to_string).ok_or(Ec2Error::Missing { operation: "CreateImage", what: "image id" })
    }

    /// Waits for `available` with back-off. A timeout is reported, never
    /// acted on: the AMI may still become available.
    pub async fn wait_image_available(&self, id: &str, timeout: Duration) -> Result<ImageInfo, Ec2Error> {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(15), timeout);
        let mut last = String::from("unknown");
        loop {
            if let Some(image) = self.describe_image(id).await? {
                match image.state.as_str() {
                    "available" => return Ok(image),
                    "failed" | "error" | "invalid" | "deregistered" => {
                        return Err(Ec2Error::BadState {
                            what: "AMI",
                            id: id.into(),
                            state: image.state,
                            reason: None,
                        });
                    }
                    _ => last = image.state,
                }
            }
            if !backoff.sleep().await {
                return Err(Ec2Error::WaitTimeout {
                    what: "AMI",
                    id: id.into(),
                    wanted: "available",
                    waited: timeout,
                    last,
                });
            }
        }
    }

    /// Tags an AMI and its snapshots.
    pub async fn tag_image(&self, image: &ImageInfo, tags: &Tags) -> Result<(), Ec2Error> {
        let mut ids = vec![image.id.clone()];
        ids.extend(image.snapshots.iter().cloned());
        self.create_tags(&ids, tags).await
    }

    pub async fn create_tags(&self, ids: &[String], tags: &Tags) -> Result<(), Ec2Error> {
        self.client
            .create_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(to_tags(tags)))
            .send()
            .await
            .map_err(self.api("CreateTags"))?;
        Ok(())
    }

    /// Copies `source` (in `from`'s region) into this region; the copy is tagged here.
    pub async fn copy_image_from(
        &self,
        from: &Ec2,
        source_id: &str,
        name: &str,
        description: Option<&str>,
        encrypted: bool,
        tags: &Tags,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
            .copy_image()
            .source_image_id(source_id)
            .source_region(from.region())
            .name(name)
            .set_description(description.map(str::to_string))
            .set_encrypted(encrypted.then_some(true))
            .send()
            .await
            .map_err(self.api("CopyImage"))?;
        let id =
            out.image_id().map(str::to_string).ok_or(Ec2Error::Missing { operation: "CopyImage", what: "image id" })?;
        self.create_tags(std::slice::from_ref(&id), tags).await?;
        Ok(id)
    }

    // ------------------------------------------------ key pair, security group

    pub async fn import_key_pair(&self, name: &str, public_key_openssh: &str, tags: &Tags) -> Result<(), Ec2Error> {
        self.client
            .import_key_pair()
            .key_name(name)
            .public_key_material(Blob::new(public_key_openssh.as_bytes()))
            .tag_specifications(tag_spec(ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(self.api("ImportKeyPair"))?;
        Ok(())
    }

    /// The VPC of a subnet (security groups live in a VPC).
    pub async fn subnet_vpc(&self, subnet_id: &str) -> Result<String, Ec2Error> {
        let out =
            self.client.describe_subnets().subnet_ids(subnet_id).send().await.map_err(self.api("DescribeSubnets"))?;
        out.subnets()
            .first()
            .and_then(|s| s.vpc_id())
            .map(str::to_string)
            .ok_or(Ec2Error::Missing { operation: "DescribeSubnets", what: "VPC id" })
    }

    /// A security group that admits TCP `port` from `cidrs` only.
    pub async fn create_ssh_security_group(
        &self,
        name: &str,
        vpc_id: Option<&str>,
        port: u16,
        cidrs: &[String],
        tags: &Tags,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
            .create_security_group()
            .group_name(name)
            .description("imgbuild temporary: SSH from the builder")
            .set_vpc_id(vpc_id.map(str::to_string))
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(self.api("CreateSecurityGroup"))?;
        let id = out
            .group_id()
            .map(str::to_string)
            .ok_or(Ec2Error::Missing { operation: "CreateSecurityGroup", what: "group id" })?;
        let ranges = cidrs.iter().map(|c| IpRange::builder().cidr_ip(c).description("imgbuild builder").build());
        let permission = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(port))
            .to_port(i32::from(port))
            .set_ip_ranges(Some(ranges.collect()))
            .build();
        self.client
            .authorize_security_group_ingress()
            .group_id(&id)
            .ip_permissions(permission)
            .send()
            .await
            .map_err(self.api("AuthorizeSecurityGroupIngress"))?;
        Ok(id)
    }

    // --------------------------------------------------------- instances

    /// RunInstances with tags on the instance and its volumes. Spot capacity
    /// refused → on-demand, when `spot_fallback`.
    pub async fn launch(&self, request: &LaunchRequest) -> Result<Launched, Ec2Error> {
        if request.spot {
            match self.run_instances(request, true).await {
                Ok(id) => return Ok(Launched { instance_id: id, spot: true }),
                Err(e) if request.spot_fallback && e.code().is_some_and(|c| SPOT_REFUSALS.contains(&c)) => {
                    tracing::warn!("spot request refused ({}); launching on-demand", e.code().unwrap_or_default());
                }
                Err(e) => return Err(e),
            }
        }
        let id = self.run_instances(request, false).await?;
        Ok(Launched { instance_id: id, spot: false })
    }

    async fn run_instances(&self, request: &LaunchRequest, spot: bool) -> Result<String, Ec2Error> {
        use base64::Engine;
        let mut call = self
            .client
            .run_instances()
            .image_id(&request.image_id)
            .instance_type(InstanceType::from(request.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .key_name(&request.key_name)
            // A spot retry as on-demand is another request: another token.
            .client_token(if spot { format!("{}-spot", request.client_token) } else { request.client_token.clone() })
            .instance_initiated_shutdown_behavior(aws_sdk_ec2::types::ShutdownBehavior::Stop)
            .tag_specifications(tag_spec(ResourceType::Instance, &request.tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &request.tags))
            .set_user_data(
                request.user_data.as_ref().map(|u| base64::engine::general_purpose::STANDARD.encode(u.as_bytes())),
            );
        call = match &request.subnet_id {
            // A public address is a property of the network interface.
            Some(subnet) => call.network_interfaces(
                InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(subnet)
                    .groups(&request.security_group_id)
                    .set_associate_public_ip_address(request.associate_public_ip)
                    .delete_on_termination(true)
                    .build(),
            ),
            None => call.security_group_ids(&request.security_group_id),
        };
        if spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(SpotMarketOptions::builder().spot_instance_type(SpotInstanceType::OneTime).build())
                    .build(),
            );
        }
        let out = call.send().await.map_err(self.api("RunInstances"))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or(Ec2Error::Missing { operation: "RunInstances", what: "instance id" })
    }

    pub async fn describe_instance(&self, id: &str) -> Result<Option<InstanceInfo>, Ec2Error> {
        let out = match self.client.describe_instances().instance_ids(id).send().await {
            Ok(out) => out,
            // Eventual consistency: a fresh id can be unknown for a moment.
            Err(e) if is_not_found(e.code()) => return Ok(None),
            Err(e) => return Err(self.api("DescribeInstances")(e)),
        };
        let instance = out.reservations().iter().flat_map(|r| r.instances()).next();
        Ok(instance.map(|i| InstanceInfo {
            state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_string()).unwrap_or_default(),
            public_ip: i.public_ip_address().map(str::to_string),
            private_ip: i.private_ip_address().map(str::to_string),
            public_dns: i.public_dns_name().filter(|d| !d.is_empty()).map(str::to_string),
        }))
    }

    /// Waits for an instance state with back-off (1 s doubling to 10 s).
    pub async fn wait_instance(
        &self,
        id: &str,
        wanted: InstanceStateName,
        timeout: Duration,
    ) -> Result<InstanceInfo, Ec2Error> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10), timeout);
        let mut last = String::from("unknown");
        loop {
            if let Some(info) = self.describe_instance(id).await? {
                if info.state == wanted.as_str() {
                    return Ok(info);
                }
                let dead = matches!(info.state.as_str(), "terminated" | "shutting-down");
                if dead && wanted != InstanceStateName::Terminated {
                    return Err(Ec2Error::BadState {
                        what: "instance",
                        id: id.into(),
                        state: info.state,
                        reason: None,
                    });
                }
                last = info.state;
            }
            if !backoff.sleep().await {
                return Err(Ec2Error::WaitTimeout {
                    what: "instance",
                    id: id.into(),
                    wanted: static_state(&wanted),
                    waited: timeout,
                    last,
                });
            }
        }
    }

    /// The instance's console output (decoded), if EC2 has any yet.
    pub async fn console_output(&self, id: &str) -> Option<String> {
        use base64::Engine;
        let out = self.client.get_console_output().instance_id(id).latest(true).send().await.ok()?;
        let raw = out.output()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(raw.trim()).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn stop_instance(&self, id: &str, timeout: Duration) -> Result<(), Ec2Error> {
        self.client.stop_instances().instance_ids(id).send().await.map_err(self.api("StopInstances"))?;
        self.wait_instance(id, InstanceStateName::Stopped, timeout).await.map(drop)
    }

    // ------------------------------------------------------------ sweeps

    /// Everything in this region tagged with [`TAG_BUILD_ID`] (all builds,
    /// or one). Terminated instances and deleted resources are left out.
    pub async fn tagged(&self, build_id: Option<&str>) -> Result<Tagged, Ec2Error> {
        let tag_filter = || match build_id {
            Some(id) => filter(&format!("tag:{TAG_BUILD_ID}"), [id]),
            None => filter("tag-key", [TAG_BUILD_ID]),
        };
        let mut resources = Vec::new();
        let mut push = |kind, id: Option<&str>, tags: &[Tag]| {
            if let Some(id) = id {
                resources.push(TaggedResource { kind, id: id.to_string(), tags: tag_map(tags) });
            }
        };
        let instances = self
            .client
            .describe_instances()
            .filters(tag_filter())
            .filters(filter("instance-state-name", ["pending", "running", "stopping", "stopped", "shutting-down"]))
            .send()
            .await
            .map_err(self.api("DescribeInstances"))?;
        for i in instances.reservations().iter().flat_map(|r| r.instances()) {
            push(ResourceKind::Instance, i.instance_id(), i.tags());
        }
        let images = self
            .client
            .describe_images()
            .owners("self")
            .filters(tag_filter())
            .send()
            .await
            .map_err(self.api("DescribeImages"))?;
        for i in images.images() {
            push(ResourceKind::Image, i.image_id(), i.tags());
        }
        let snapshots = self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter())
            .send()
            .await
            .map_err(self.api("DescribeSnapshots"))?;
        for s in snapshots.snapshots() {
            push(ResourceKind::Snapshot, s.snapshot_id(), s.tags());
        }
        let volumes = self
            .client
            .describe_volumes()
            .filters(tag_filter())
            .filters(filter("status", ["available", "error"]))
            .send()
            .await
            .map_err(self.api("DescribeVolumes"))?;
        for v in volumes.volumes() {
            push(ResourceKind::Volume, v.volume_id(), v.tags());
        }
        let groups = self
            .client
            .describe_security_groups()
            .filters(tag_filter())
            .send()
            .await
            .map_err(self.api("DescribeSecurityGroups"))?;
        for g in groups.security_groups() {
            push(ResourceKind::SecurityGroup, g.group_id(), g.tags());
        }
        let keys = self
            .client
            .describe_key_pairs()
            .filters(tag_filter())
            .send()
            .await
            .map_err(self.api("DescribeKeyPairs"))?;
        for k in keys.key_pairs() {
            push(ResourceKind::KeyPair, k.key_name(), k.tags());
        }
        resources.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        Ok(Tagged { resources })
    }

    /// Deletes `resources` (from [`Ec2::tagged`]) in dependency order:
    /// instances (and waits until they are gone), AMIs, then snapshots no
    /// remaining AMI uses, volumes, security groups (retrying while EC2 still
    /// sees a dependency), key pairs. Protected AMIs and snapshots
    /// ([`TaggedResource::is_protected`]) must be filtered out by the caller.
    pub async fn sweep(&self, resources: &[TaggedResource], wait: Duration) -> Vec<SweepOutcome> {
        let mut outcomes = Vec::new();
        let of = |kind| resources.iter().filter(move |r| r.kind == kind);
        // Terminate all first, then wait: instances shut down in parallel.
        let mut terminating = Vec::new();
        for r in of(ResourceKind::Instance) {
            match self.client.terminate_instances().instance_ids(&r.id).send().await {
                Ok(_) => terminating.push(r),
                Err(e) => {
                    outcomes.push(SweepOutcome { resource: r.clone(), error: Some(self.api("TerminateInstances")(e)) })
                }
            }
        }
        for r in terminating {
            let error = self.wait_instance(&r.id, InstanceStateName::Terminated, wait).await.err();
            outcomes.push(SweepOutcome { resource: r.clone(), error });
        }
        for r in of(ResourceKind::Image) {
            let error = self.client.deregister_image().image_id(&r.id).send().await.err();
            outcomes.push(SweepOutcome { resource: r.clone(), error: error.map(self.api("DeregisterImage")) });
        }
        let in_use = self.snapshots_in_use().await.unwrap_or_default();
        for r in of(ResourceKind::Snapshot).filter(|r| !in_use.contains(&r.id)) {
            let error = self.client.delete_snapshot().snapshot_id(&r.id).send().await.err();
            outcomes.push(SweepOutcome { resource: r.clone(), error: error.map(self.api("DeleteSnapshot")) });
        }
        for r in of(ResourceKind::Volume) {
            let error = self.client.delete_volume().volume_id(&r.id).send().await.err();
            outcomes.push(SweepOutcome { resource: r.clone(), error: error.map(self.api("DeleteVolume")) });
        }
        for r in of(ResourceKind::SecurityGroup) {
            let error = self.delete_security_group(&r.id, wait).await.err();
            outcomes.push(SweepOutcome { resource: r.clone(), error });
        }
        for r in of(ResourceKind::KeyPair) {
            let error = self.client.delete_key_pair().key_name(&r.id).send().await.err();
            outcomes.push(SweepOutcome { resource: r.clone(), error: error.map(self.api("DeleteKeyPair")) });
        }
        outcomes
    }

    /// Snapshots that an AMI of this account still uses.
    async fn snapshots_in_use(&self) -> Result<BTreeSet<String>, Ec2Error> {
        let out = self.client.describe_images().owners("self").send().await.map_err(self.api("DescribeImages"))?;
        Ok(out.images().iter().flat_map(|i| image_info(i).snapshots).collect())
    }

    /// A terminated instance's network interface keeps the group busy for a
    /// while after termination: retry DependencyViolation with back-off.
    async fn delete_security_group(&self, id: &str, wait: Duration) -> Result<(), Ec2Error> {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10), wait);
        loop {
            match self.client.delete_security_group().group_id(id).send().await {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("DependencyViolation") && backoff.sleep().await => continue,
                Err(e) => return Err(self.api("DeleteSecurityGroup")(e)),
            }
        }
    }
}

/// Exponential back-off with a deadline: `sleep` returns `false` once the
/// deadline has passed instead of sleeping.
pub struct Backoff {
    delay: Duration,
    max: Duration,
    deadline: tokio::time::Instant,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration, total: Duration) -> Backoff {
        Backoff { delay: first, max, deadline: tokio::time::Instant::now() + total }
    }

    pub async fn sleep(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.delay.min(self.deadline - now)).await;
        self.delay = (self.delay * 2).min(self.max);
        true
    }
}

fn filter<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Filter {
    Filter::builder().name(name).set_values(Some(values.into_iter().map(str::to_string).collect())).build()
}

fn to_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

fn tag_spec(kind: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder().resource_type(kind).set_tags(Some(to_tags(tags))).build()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn image_info(image: &aws_sdk_ec2::types::Image) -> ImageInfo {
    ImageInfo {
        id: image.image_id().unwrap_or_default().to_string(),
        name: image.name().unwrap_or_default().to_string(),
        creation_date: image.creation_date().unwrap_or_default().to_string(),
        state: image.state().map(ImageState::as_str).unwrap_or_default().to_string(),
        snapshots: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect(),
    }
}

fn is_not_found(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.ends_with(".NotFound") || c.ends_with(".Malformed"))
}

fn static_state(state: &InstanceStateName) -> &'static str {
    match state {
        InstanceStateName::Running => "running",
        InstanceStateName::Stopped => "stopped",
        InstanceStateName::Terminated => "terminated",
        _ => "ready",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_order_puts_dependents_first() {
        let mut kinds = [
            ResourceKind::KeyPair,
            ResourceKind::SecurityGroup,
            ResourceKind::Snapshot,
            ResourceKind::Image,
            ResourceKind::Instance,
        ];
        kinds.sort();
        assert_eq!(kinds[0], ResourceKind::Instance);
        assert_eq!(*kinds.last().unwrap(), ResourceKind::KeyPair);
    }

    #[test]
    fn complete_and_kept_images_are_protected() {
        let mut r = TaggedResource { kind: ResourceKind::Image, id: "ami-1".into(), tags: BTreeMap::new() };
        assert!(!r.is_protected());
        r.tags.insert(TAG_STATUS.into(), STATUS_COMPLETE.into());
        assert!(r.is_protected());
        r.tags.insert(TAG_STATUS.into(), STATUS_KEPT.into());
        assert!(r.is_protected());
        r.tags.insert(TAG_STATUS.into(), STATUS_BUILDING.into());
        assert!(!r.is_protected());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_stops_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(4), Duration::from_secs(10));
        let mut sleeps = 0;
        while b.sleep().await {
            sleeps += 1;
        }
        // 1 + 2 + 4 + 3 (cut at the deadline)
        assert_eq!(sleeps, 4);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
