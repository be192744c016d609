//! The template blocks of EC2 builds: the `ami` source and the `ec2` builder.
//! See `docs/builder-ec2.md`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use super::decode::{Cx, Decode, ObjectReader, one_of};
use super::jsonc::Node;
use super::model::SshSettings;
use super::schema as defaults;
use super::units::Dur;

/// `"source": {"type": "ami", "ami": "ami-…"}` or `{"type": "ami", "filter": {…}}`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AmiSource {
    /// An AMI id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// Or a lookup by name pattern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<AmiFilter>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AmiFilter {
    /// EC2 name pattern (`*` and `?` wildcards), e.g. `debian-12-amd64-*`.
    pub name: String,
    /// Account ids (or `self`, `amazon`) that may own the AMI.
    #[serde(default)]
    pub owners: Vec<String>,
    /// Pick the newest match by creation date; without it exactly one AMI must match.
    #[serde(default)]
    pub most_recent: bool,
}

impl AmiSource {
    pub(super) fn read(o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        let ami = o.opt::<String>(cx, "ami");
        let filter = o.opt::<AmiFilter>(cx, "filter");
        match (&ami, &filter, o.has("ami") || o.has("filter")) {
            (Some(_), Some(_), _) => {
                cx.error(o.span, "give either `ami` or `filter`, not both");
                None
            }
            (None, None, false) => {
                cx.error(o.span, "an `ami` source needs `ami` (an AMI id) or `filter` (a name lookup)");
                None
            }
            (None, None, true) => None,
            _ => Some(AmiSource { ami, filter }),
        }
    }

    /// What the build digest and `changed` see: the id or the lookup.
    pub fn describe(&self) -> String {
        match (&self.ami, &self.filter) {
            (Some(id), _) => id.clone(),
            (None, Some(f)) => {
                format!("name={} owners={} most_recent={}", f.name, f.owners.join(","), f.most_recent)
            }
            (None, None) => String::new(),
        }
    }
}

impl Decode for AmiFilter {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let name = o.req::<String>(cx, "name");
        let owners = o.or_default(cx, "owners");
        let most_recent = o.or(cx, "most_recent", false);
        o.finish(cx);
        Some(AmiFilter { name: name?, owners, most_recent })
    }
}

/// How the builder reaches the instance over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SshInterface {
    PublicIp,
    PrivateIp,
    PublicDns,
}

/// `builder.ssh` of an ec2 build: the common SSH settings plus how to find
/// the instance.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ec2Ssh {
    #[schemars(default = "defaults::ec2_username")]
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<super::model::Secret>,
    #[schemars(default = "defaults::ssh_port", schema_with = "defaults::port")]
    pub port: u16,
    #[schemars(default = "defaults::ec2_ssh_timeout")]
    pub timeout: Dur,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_command: Option<String>,
    /// Which address of the instance to connect to.
    #[schemars(default = "defaults::ssh_interface")]
    pub interface: SshInterface,
    /// Connect here instead of the instance's address (a bastion's forwarded
    /// port, or a stand-in machine in tests); `port` still applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl Ec2Ssh {
    /// The settings the shared SSH code understands.
    pub fn common(&self) -> SshSettings {
        SshSettings {
            username: self.username.clone(),
            password: self.password.clone(),
            port: self.port,
            timeout: self.timeout,
            ready_command: self.ready_command.clone(),
        }
    }
}

impl Default for Ec2Ssh {
    fn default() -> Self {
        Ec2Ssh {
            username: defaults::ec2_username(),
            password: None,
            port: defaults::ssh_port(),
            timeout: defaults::ec2_ssh_timeout(),
            ready_command: None,
            interface: defaults::ssh_interface(),
            host: None,
        }
    }
}

impl Decode for Ec2Ssh {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let d = Ec2Ssh::default();
        let common = SshSettings::read_fields(&mut o, cx, d.common());
        let interface = o.node("interface").map_or(Some(d.interface), |n| {
            cx.in_field("interface", |cx| {
                one_of(
                    n,
                    cx,
                    &[
                        ("public_ip", SshInterface::PublicIp),
                        ("private_ip", SshInterface::PrivateIp),
                        ("public_dns", SshInterface::PublicDns),
                    ],
                )
            })
        });
        let s = Ec2Ssh {
            username: common.username,
            password: common.password,
            port: common.port,
            timeout: common.timeout,
            ready_command: common.ready_command,
            interface: interface?,
            host: o.opt::<String>(cx, "host").filter(|h| !h.is_empty()),
        };
        o.finish(cx);
        Some(s)
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ec2Builder {
    /// Else the standard AWS chain (AWS_REGION, profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An EC2-compatible endpoint (else AWS_ENDPOINT_URL_EC2 / AWS_ENDPOINT_URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    #[schemars(default = "defaults::instance_type")]
    pub instance_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// With `subnet_id`: give the instance a public address (else the subnet's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub associate_public_ip: Option<bool>,
    /// Launch on the spot market.
    #[serde(default)]
    pub spot: bool,
    /// When spot capacity is refused, launch on-demand instead of failing.
    #[schemars(default = "defaults::yes")]
    pub spot_fallback: bool,
    #[serde(default)]
    pub ssh: Ec2Ssh,
    /// Who may reach the instance's SSH port; default: this machine's public address.
    #[serde(default)]
    pub temporary_sg_cidrs: Vec<String>,
    /// Passed to the instance as user data (cloud-init).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// The name of the AMI; must not exist yet in any target region.
    pub ami_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami_description: Option<String>,
    /// Regions the AMI is copied to after it is available.
    #[serde(default)]
    pub ami_regions: Vec<String>,
    /// Tags on the instance, its volumes, the AMIs and their snapshots.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Encrypt the copies (with the account's default EBS key).
    #[serde(default)]
    pub encrypt_boot: bool,
    /// How long the instance may take to be `running`.
    #[schemars(default = "defaults::instance_wait_timeout")]
    pub instance_wait_timeout: Dur,
    /// How long an AMI may take to become `available`. On timeout the AMI is
    /// kept (tagged `imgbuild:status=kept`) and reported, never deleted.
    #[schemars(default = "defaults::ami_wait_timeout")]
    pub ami_wait_timeout: Dur,
}

impl Ec2Builder {
    pub(super) fn read(o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        // Read in documentation order: `imgbuild fmt` writes fields in the order they are read.
        let region = o.opt::<String>(cx, "region").filter(|r| !r.is_empty());
        let endpoint_url = o.opt::<String>(cx, "endpoint_url").filter(|e| !e.is_empty());
        let instance_type = o.or(cx, "instance_type", defaults::instance_type());
        let subnet_id = o.opt(cx, "subnet_id");
        let associate_public_ip = o.opt(cx, "associate_public_ip");
        let spot = o.or(cx, "spot", false);
        let spot_fallback = o.or(cx, "spot_fallback", true);
        let ssh = o.opt::<Ec2Ssh>(cx, "ssh").or_else(|| (!o.has("ssh")).then(Ec2Ssh::default));
        // Empty entries are dropped, so a variable can leave the default in place.
        let cidrs: Vec<String> = o.or_default::<Vec<String>>(cx, "temporary_sg_cidrs");
        let cidrs: Vec<String> = cidrs.into_iter().filter(|c| !c.is_empty()).collect();
        for (i, cidr) in cidrs.iter().enumerate() {
            if !is_cidr(cidr) {
                let span = o.node("temporary_sg_cidrs").map_or(o.span, |n| n.span);
                cx.in_field("temporary_sg_cidrs", |cx| {
                    cx.in_index(i, |cx| cx.error(span, format!("`{cidr}` is not an IPv4 CIDR like 203.0.113.7/32")))
                });
            }
        }
        let user_data = o.opt(cx, "user_data");
        let ami_name = o.req::<String>(cx, "ami_name");
        if let Some(name) = &ami_name
            && let Err(e) = check_ami_name(name)
        {
            let span = o.node("ami_name").map_or(o.span, |n| n.span);
            cx.in_field("ami_name", |cx| cx.error(span, e));
        }
        Some(Ec2Builder {
            region,
            endpoint_url,
            instance_type,
            subnet_id,
            associate_public_ip,
            spot,
            spot_fallback,
            ssh: ssh?,
            temporary_sg_cidrs: cidrs,
            user_data,
            ami_name: ami_name.filter(|n| check_ami_name(n).is_ok())?,
            ami_description: o.opt(cx, "ami_description"),
            ami_regions: o.or_default::<Vec<String>>(cx, "ami_regions").into_iter().filter(|r| !r.is_empty()).collect(),
            tags: o.or_default(cx, "tags"),
            encrypt_boot: o.or(cx, "encrypt_boot", false),
            instance_wait_timeout: o.or(cx, "instance_wait_timeout", defaults::instance_wait_timeout()),
            ami_wait_timeout: o.or(cx, "ami_wait_timeout", defaults::ami_wait_timeout()),
        })
    }
}

/// EC2's rule: 3-128 characters of letters, digits, `()[] ./-'@_`.
fn check_ami_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c);
    if (3..=128).contains(&name.len()) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!("invalid AMI name `{name}`: use 3-128 letters, digits, spaces or ( ) [ ] . / - ' @ _"))
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else { return false };
    ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_names_follow_ec2_rules() {
        assert!(check_ami_name("web-2026.11.27.1").is_ok());
        assert!(check_ami_name("golden (debian) [12] @x/y_z'").is_ok());
        for bad in ["ab", "a*b", "name,with,commas", &"x".repeat(129)] {
            assert!(check_ami_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("127.0.0.1/32"));
        assert!(is_cidr("0.0.0.0/0"));
        for bad in ["127.0.0.1", "127.0.0.1/33", "::1/128", "host/24"] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }
}
