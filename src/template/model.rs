//! The typed template: what a build is made of, after variables and
//! interpolation. Decoding lives beside each type so a field's name, default
//! and validation are read in one place.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use super::schema::{self as defaults, VariableDecl};

use super::decode::{Cx, Decode, ObjectReader, one_of, parse_string, type_tag};
use super::jsonc::{Node, NodeKind};
use super::units::{Dur, Size};
use crate::redact;
use crate::source::{Checksum, DigestAlgo};

/// A value that must never be shown: it prints and serializes as `<sensitive>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        redact::register(&value);
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(redact::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(redact::MASK)
    }
}

impl Decode for Secret {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let value = String::decode(node, cx)?;
        // Shorter values cannot be masked without masking ordinary text too.
        if !value.is_empty() && value.chars().count() < redact::MIN_LEN {
            cx.error(
                node.span,
                format!("this secret is shorter than {} characters and could not be masked in logs", redact::MIN_LEN),
            );
            return None;
        }
        Some(Secret::new(value))
    }
}

/// A regular expression, checked when the template is read (not when the check runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(pub String);

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Decode for Pattern {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        parse_string(node, cx, |s| match regex::Regex::new(s) {
            Ok(_) => Ok(Pattern(s.to_string())),
            Err(e) => Err(format!("invalid regular expression: {e}")),
        })
    }
}

/// A path from the template: kept as written, resolved against the template's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePath {
    pub written: String,
    pub resolved: PathBuf,
}

impl TemplatePath {
    pub fn resolve(written: String, template_dir: &Path) -> Self {
        let resolved = template_dir.join(&written);
        TemplatePath { written, resolved }
    }
}

impl Serialize for TemplatePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

impl Decode for TemplatePath {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let written = String::decode(node, cx)?;
        if written.is_empty() {
            cx.error(node.span, "expected a path, found an empty string");
            return None;
        }
        let dir = PathBuf::from(&cx.interp.template_dir);
        Some(TemplatePath::resolve(written, &dir))
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(transform = defaults::allow_schema_key, deny_unknown_fields, title = "imgbuild template")]
pub struct Template {
    pub name: String,
    #[schemars(default = "defaults::version")]
    pub version: VersionSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, VariableDecl>")]
    pub variables: BTreeMap<String, Variable>,
    /// Absent only for the `null` builder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub builder: Builder,
    #[serde(default)]
    pub provisioners: Vec<Provisioner>,
    #[serde(default)]
    pub verify: Vec<Check>,
    #[schemars(default = "defaults::export")]
    pub export: Export,
    #[serde(skip_serializing_if = "LintSettings::is_empty", default)]
    pub lint: LintSettings,
}

/// `"lint": { "ignore": ["IB006"] }`: rules silenced for this template.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LintSettings {
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl LintSettings {
    pub fn is_empty(&self) -> bool {
        self.ignore.is_empty()
    }
}

impl Decode for LintSettings {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let ignore: Vec<String> = o.or_default(cx, "ignore");
        o.finish(cx);
        for id in &ignore {
            let valid = id.len() == 5 && id.starts_with("IB") && id[2..].chars().all(|c| c.is_ascii_digit());
            if !valid {
                cx.in_field("ignore", |cx| {
                    cx.error(node.span, format!("invalid lint rule id `{id}` (expected e.g. `IB006`)"))
                });
            }
        }
        Some(LintSettings { ignore })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
    pub sensitive: bool,
    /// The value the build uses (secret ones print as `<sensitive>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<VarShown>,
}

#[derive(Debug, Clone)]
pub enum VarShown {
    Plain(String),
    Sensitive,
}

impl Serialize for VarShown {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            VarShown::Plain(v) => s.serialize_str(v),
            VarShown::Sensitive => s.serialize_str(redact::MASK),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// `YYYY.MM.DD.N`, the next free number of the day in the store.
    Auto,
    Exact(String),
}

impl Serialize for VersionSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            VersionSpec::Auto => s.serialize_str("auto"),
            VersionSpec::Exact(v) => s.serialize_str(v),
        }
    }
}

impl std::str::FromStr for VersionSpec {
    type Err = String;

    /// The store's rule, so every version a template accepts can be published.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(VersionSpec::Auto);
        }
        if imgbuild_store_format::is_valid_version(s) {
            Ok(VersionSpec::Exact(s.to_string()))
        } else {
            Err(format!(
                "invalid version `{s}`: expected a semantic version like `1.4.0` (optionally `-rc.1`), a date version `YYYY.MM.DD.N`, or `auto`"
            ))
        }
    }
}

/// Image names become directory names and cloud tags.
/// The store's rule (`imgbuild-store-format`), so every valid name can be published.
pub fn validate_name(name: &str) -> Result<(), String> {
    imgbuild_store_format::check_name(name)
}

// ---------------------------------------------------------------- source

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Source {
    CloudImage {
        url: String,
        checksum: ChecksumField,
    },
    Iso {
        url: String,
        checksum: ChecksumField,
    },
    /// An EC2 AMI (the `ec2` builder): nothing is downloaded.
    Ami(super::ec2::AmiSource),
}

impl Source {
    /// The file to fetch and its checksum; `None` for an AMI.
    pub fn download(&self) -> Option<(&str, &Checksum)> {
        match self {
            Source::CloudImage { url, checksum } | Source::Iso { url, checksum } => Some((url, &checksum.0)),
            Source::Ami(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChecksumField(pub Checksum);

impl Serialize for ChecksumField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl Decode for ChecksumField {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        parse_string(node, cx, |s| s.parse::<Checksum>()).map(ChecksumField)
    }
}

impl Decode for Source {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let tag = type_tag(node, cx, &mut o, &["cloud-image", "iso", "ami"]);
        if tag.as_deref() == Some("ami") {
            let ami = super::ec2::AmiSource::read(&mut o, cx);
            o.finish(cx);
            return ami.map(Source::Ami);
        }
        let url = o.req::<String>(cx, "url");
        let checksum = o.req::<ChecksumField>(cx, "checksum");
        o.finish(cx);
        let (url, checksum) = (url?, checksum?);
        match tag?.as_str() {
            "iso" => Some(Source::Iso { url, checksum }),
            _ => Some(Source::CloudImage { url, checksum }),
        }
    }
}

// ---------------------------------------------------------------- builder

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Builder {
    Qemu(Box<QemuBuilder>),
    /// Launches an instance in EC2 (or an EC2-compatible API) and captures an AMI.
    Ec2(Box<super::ec2::Ec2Builder>),
    /// Boots nothing: runs `shell-local` steps only. For testing templates and pipelines.
    Null,
}

impl Decode for Builder {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let tag = type_tag(node, cx, &mut o, &["qemu", "ec2", "null"])?;
        let builder = match tag.as_str() {
            "null" => Some(Builder::Null),
            "ec2" => super::ec2::Ec2Builder::read(&mut o, cx).map(|b| Builder::Ec2(Box::new(b))),
            _ => QemuBuilder::read(&mut o, cx).map(|q| Builder::Qemu(Box::new(q))),
        };
        o.finish(cx);
        builder
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DiskInterface {
    Virtio,
    VirtioScsi,
    Ide,
    Nvme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct QemuBuilder {
    #[schemars(default = "defaults::accelerator")]
    pub accelerator: Accelerator,
    #[schemars(default = "defaults::cpus", range(min = 1))]
    pub cpus: u32,
    #[schemars(default = "defaults::memory")]
    pub memory: Size,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_size: Option<Size>,
    #[schemars(default = "defaults::disk_interface")]
    pub disk_interface: DiskInterface,
    #[schemars(default = "defaults::machine")]
    pub machine: String,
    #[schemars(default = "defaults::firmware")]
    pub firmware: Firmware,
    #[schemars(default = "defaults::qemu_binary")]
    pub qemu_binary: String,
    #[serde(default)]
    pub qemu_args: Vec<String>,
    #[serde(default)]
    pub ssh: SshSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_timeout: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_command: Option<String>,
    #[schemars(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: Dur,
    #[serde(default)]
    #[schemars(schema_with = "defaults::cloud_init")]
    pub cloud_init: CloudInit,
    /// Installer boots: wait this long after QEMU starts, then type `boot_command`.
    #[schemars(default = "defaults::boot_wait")]
    pub boot_wait: Dur,
    /// Keys typed over QMP (Packer syntax: `<enter>`, `<wait5>`, `<leftShiftOn>`, literal text).
    #[serde(default)]
    pub boot_command: Vec<String>,
    /// How long each `boot_command` key stays down, and the pause after its release.
    #[schemars(default = "defaults::boot_key_interval")]
    pub boot_key_interval: Dur,
    /// Files the guest can fetch from `{{ http.url }}` during the install.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_directory: Option<TemplatePath>,
    /// URL path → content served at `{{ http.url }}/PATH` (may use `{{ http.* }}`).
    #[serde(default)]
    pub http_content: BTreeMap<String, String>,
    /// `ssh` (default) or `none`: wait for the guest to power itself off.
    #[schemars(default = "defaults::communicator")]
    pub communicator: Communicator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Communicator {
    Ssh,
    None,
}

impl QemuBuilder {
    fn read(o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        let accelerator = o.node("accelerator").map_or(Some(Accelerator::Auto), |n| {
            cx.in_field("accelerator", |cx| {
                one_of(n, cx, &[("auto", Accelerator::Auto), ("kvm", Accelerator::Kvm), ("tcg", Accelerator::Tcg)])
            })
        });
        let disk_interface = o.node("disk_interface").map_or(Some(DiskInterface::Virtio), |n| {
            cx.in_field("disk_interface", |cx| {
                one_of(
                    n,
                    cx,
                    &[
                        ("virtio", DiskInterface::Virtio),
                        ("virtio-scsi", DiskInterface::VirtioScsi),
                        ("ide", DiskInterface::Ide),
                        ("nvme", DiskInterface::Nvme),
                    ],
                )
            })
        });
        let firmware = o.node("firmware").map_or(Some(Firmware::Bios), |n| {
            cx.in_field("firmware", |cx| one_of(n, cx, &[("bios", Firmware::Bios), ("uefi", Firmware::Uefi)]))
        });
        let cpus = o.or(cx, "cpus", defaults::cpus());
        let memory = o.or(cx, "memory", defaults::memory());
        let disk_size = o.opt(cx, "disk_size");
        let machine = o.or(cx, "machine", defaults::machine());
        let qemu_binary = o.or(cx, "qemu_binary", defaults::qemu_binary());
        let qemu_args = o.or_default(cx, "qemu_args");
        let ssh = o.opt::<SshSettings>(cx, "ssh").or_else(|| (!o.has("ssh")).then(SshSettings::default));
        let boot_timeout = o.opt(cx, "boot_timeout");
        let shutdown_command = o.opt::<String>(cx, "shutdown_command").filter(|c| !c.trim().is_empty());
        let shutdown_timeout = o.or(cx, "shutdown_timeout", defaults::shutdown_timeout());
        let cloud_init = o.or(cx, "cloud_init", CloudInit::default());
        let boot_wait = o.or(cx, "boot_wait", defaults::boot_wait());
        let boot_command: Vec<String> = o
            .node("boot_command")
            .and_then(|n| {
                cx.in_field("boot_command", |cx| {
                    cx.with_mode(super::interp::Mode::KeepHttp, |cx| Decode::decode(n, cx))
                })
            })
            .unwrap_or_default();
        for (i, line) in boot_command.iter().enumerate() {
            if let Err(e) = super::keys::parse(line) {
                let span = o.node("boot_command").map(|n| n.span).unwrap_or(o.span);
                cx.in_field("boot_command", |cx| cx.in_index(i, |cx| cx.error(span, e.to_string())));
            }
        }
        let boot_key_interval = o.or(cx, "boot_key_interval", defaults::boot_key_interval());
        let http_directory = o.opt(cx, "http_directory");
        let http_content: BTreeMap<String, String> = o
            .node("http_content")
            .and_then(|n| {
                cx.in_field("http_content", |cx| {
                    cx.with_mode(super::interp::Mode::KeepHttp, |cx| Decode::decode(n, cx))
                })
            })
            .unwrap_or_default();
        let communicator = o.node("communicator").map_or(Some(Communicator::Ssh), |n| {
            cx.in_field("communicator", |cx| one_of(n, cx, &[("ssh", Communicator::Ssh), ("none", Communicator::None)]))
        });
        if cpus == 0 {
            cx.in_field("cpus", |cx| cx.error(o.span, "`cpus` must be at least 1"));
        }
        Some(QemuBuilder {
            accelerator: accelerator?,
            cpus,
            memory,
            disk_size,
            disk_interface: disk_interface?,
            machine,
            firmware: firmware?,
            qemu_binary,
            qemu_args,
            ssh: ssh?,
            boot_timeout,
            shutdown_command,
            shutdown_timeout,
            cloud_init,
            boot_wait,
            boot_command,
            boot_key_interval,
            http_directory,
            http_content,
            communicator: communicator?,
        })
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SshSettings {
    #[schemars(default = "defaults::username")]
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[schemars(default = "defaults::ssh_port", schema_with = "defaults::port")]
    pub port: u16,
    #[schemars(default = "defaults::ssh_timeout")]
    pub timeout: Dur,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_command: Option<String>,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            username: defaults::username(),
            password: None,
            port: defaults::ssh_port(),
            timeout: defaults::ssh_timeout(),
            ready_command: None,
        }
    }
}

impl Decode for SshSettings {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let s = SshSettings::read_fields(&mut o, cx, SshSettings::default());
        o.finish(cx);
        Some(s)
    }
}

impl SshSettings {
    /// The fields every builder's `ssh` block has, with the builder's defaults.
    pub(super) fn read_fields(o: &mut ObjectReader, cx: &mut Cx, d: SshSettings) -> SshSettings {
        SshSettings {
            username: o.or(cx, "username", d.username),
            // Empty (an unset variable's default): no password.
            password: o.opt::<Secret>(cx, "password").filter(|p| !p.expose().is_empty()),
            port: o.or(cx, "port", d.port),
            timeout: o.or(cx, "timeout", d.timeout),
            ready_command: o.opt(cx, "ready_command"),
        }
    }
}

/// The NoCloud seed: on by default for cloud images; `false` turns it off.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CloudInit {
    #[schemars(default = "defaults::yes")]
    pub enabled: bool,
    /// Extra `#cloud-config` YAML merged into the generated user-data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

impl Default for CloudInit {
    fn default() -> Self {
        CloudInit { enabled: true, user_data: None }
    }
}

impl Decode for CloudInit {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        if let NodeKind::Bool(enabled) = node.kind {
            return Some(CloudInit { enabled, user_data: None });
        }
        let mut o = cx.object(node)?;
        let c = CloudInit { enabled: o.or(cx, "enabled", true), user_data: o.opt(cx, "user_data") };
        o.finish(cx);
        Some(c)
    }
}

// ---------------------------------------------------------------- provisioners

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Provisioner {
    #[serde(flatten)]
    pub kind: ProvisionerKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_before: Option<Dur>,
    #[serde(default)]
    pub max_retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ProvisionerKind {
    Shell(Shell),
    File(FileTransfer),
    ShellLocal(ShellLocal),
}

impl ProvisionerKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ProvisionerKind::Shell(_) => "shell",
            ProvisionerKind::File(_) => "file",
            ProvisionerKind::ShellLocal(_) => "shell-local",
        }
    }
}

impl Decode for Provisioner {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        if matches!(&node.kind, NodeKind::Object(members) if members.is_empty()) {
            cx.error_with_help(
                node.span,
                "empty provisioner entry",
                Some("give it a `type` (`shell`, `file` or `shell-local`) and what to run".into()),
            );
            return None;
        }
        let mut o = cx.object(node)?;
        let tag = type_tag(node, cx, &mut o, &["shell", "file", "shell-local"]);
        let pause_before = o.opt(cx, "pause_before");
        let max_retries = o.or(cx, "max_retries", 0u32);
        let timeout = o.opt(cx, "timeout");
        let kind = match tag.as_deref() {
            Some("shell") => Shell::read(node, &mut o, cx).map(ProvisionerKind::Shell),
            Some("file") => FileTransfer::read(node, &mut o, cx).map(ProvisionerKind::File),
            Some("shell-local") => ShellLocal::read(node, &mut o, cx).map(ProvisionerKind::ShellLocal),
            _ => None,
        };
        // Without a valid type the other fields cannot be judged; avoid noise.
        if tag.is_some() {
            o.finish(cx);
        }
        Some(Provisioner { kind: kind?, pause_before, max_retries, timeout })
    }
}

/// The commands of a `shell` or `shell-local` step: exactly one of the three forms.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Commands {
    Inline(Vec<String>),
    Script(TemplatePath),
    Scripts(Vec<TemplatePath>),
}

impl Commands {
    fn read(node: &Node, o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        let inline = o.opt::<Vec<String>>(cx, "inline");
        let script = o.opt::<TemplatePath>(cx, "script");
        let scripts = o.opt::<Vec<TemplatePath>>(cx, "scripts");
        let given = [o.has("inline"), o.has("script"), o.has("scripts")];
        match given.iter().filter(|g| **g).count() {
            0 => {
                cx.error_with_help(
                    node.span,
                    "empty provisioner: it has no commands to run",
                    Some("add one of `inline` (a list of commands), `script` or `scripts`".into()),
                );
                None
            }
            1 => inline.map(Commands::Inline).or(script.map(Commands::Script)).or(scripts.map(Commands::Scripts)),
            _ => {
                cx.error(node.span, "use only one of `inline`, `script` and `scripts`");
                None
            }
        }
    }

    /// Script files this step reads from the host, for digests and lint.
    pub fn files(&self) -> Vec<&TemplatePath> {
        match self {
            Commands::Inline(_) => Vec::new(),
            Commands::Script(p) => vec![p],
            Commands::Scripts(ps) => ps.iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Shell {
    #[serde(flatten)]
    pub commands: Commands,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute_command: Option<String>,
    #[serde(default)]
    pub expect_disconnect: bool,
    #[schemars(default = "defaults::valid_exit_codes")]
    pub valid_exit_codes: Vec<i32>,
    #[schemars(default = "defaults::remote_folder")]
    pub remote_folder: String,
}

impl Shell {
    fn read(node: &Node, o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        let commands = Commands::read(node, o, cx);
        let env = read_env(o, cx);
        Some(Shell {
            commands: commands?,
            env,
            execute_command: o.opt(cx, "execute_command"),
            expect_disconnect: o.or(cx, "expect_disconnect", false),
            valid_exit_codes: o.or(cx, "valid_exit_codes", defaults::valid_exit_codes()),
            remote_folder: o.or(cx, "remote_folder", defaults::remote_folder()),
        })
    }
}

fn read_env(o: &mut ObjectReader, cx: &mut Cx) -> BTreeMap<String, String> {
    let Some(node) = o.node("env") else {
        return BTreeMap::new();
    };
    let env: BTreeMap<String, String> = cx.in_field("env", |cx| Decode::decode(node, cx)).unwrap_or_default();
    for name in env.keys() {
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            cx.in_field("env", |cx| {
                cx.error(node.span, format!("invalid environment variable name `{name}` (use letters, digits and `_`)"))
            });
        }
    }
    env
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FileTransfer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<TemplatePath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub destination: String,
    #[schemars(default = "defaults::direction")]
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

impl FileTransfer {
    fn read(node: &Node, o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        let direction = o.node("direction").map_or(Some(Direction::Upload), |n| {
            cx.in_field("direction", |cx| {
                one_of(n, cx, &[("upload", Direction::Upload), ("download", Direction::Download)])
            })
        })?;
        let source_node = o.node("source");
        let source = source_node.and_then(|n| cx.in_field("source", |cx| String::decode(n, cx)));
        let content = o.opt::<String>(cx, "content");
        let destination = o.req::<String>(cx, "destination");
        let mode = o.opt(cx, "mode");
        if source_node.is_some() == o.has("content") {
            cx.error(node.span, "a `file` provisioner needs exactly one of `source` and `content`");
            return None;
        }
        if direction == Direction::Download && content.is_some() {
            cx.error(node.span, "`content` works only with `direction: upload`");
            return None;
        }
        let destination = destination?;
        let dir = PathBuf::from(&cx.interp.template_dir);
        let (source, destination) = match direction {
            // For downloads the source is in the guest and the destination on the host.
            Direction::Upload => (source.map(|s| TemplatePath::resolve(s, &dir)), destination),
            Direction::Download => (
                source.map(|s| TemplatePath { resolved: PathBuf::from(&s), written: s }),
                dir.join(&destination).to_string_lossy().into_owned(),
            ),
        };
        Some(FileTransfer { source, content, destination, direction, mode })
    }
}

/// An octal file mode written as a string, e.g. `"0644"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl Decode for FileMode {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        parse_string(node, cx, |s| match u32::from_str_radix(s, 8) {
            Ok(v) if v <= 0o7777 && !s.is_empty() => Ok(FileMode(v)),
            _ => Err(format!("invalid file mode `{s}`: expected octal digits like \"0644\"")),
        })
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ShellLocal {
    #[serde(flatten)]
    pub commands: Commands,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl ShellLocal {
    fn read(node: &Node, o: &mut ObjectReader, cx: &mut Cx) -> Option<Self> {
        let commands = Commands::read(node, o, cx);
        let env = read_env(o, cx);
        Some(ShellLocal { commands: commands?, env })
    }
}

// ---------------------------------------------------------------- verify

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Check {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub kind: CheckKind,
}

/// Written flat (`{ "service": "ssh", "running": true }`): the key that is present says the kind.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CheckKind {
    Service {
        service: String,
        enabled: Option<bool>,
        running: Option<bool>,
    },
    Port {
        port: u16,
        #[schemars(default = "defaults::yes")]
        listening: bool,
        #[schemars(default = "defaults::tcp", schema_with = "defaults::protocol")]
        protocol: String,
    },
    File {
        file: String,
        #[schemars(default = "defaults::yes")]
        exists: bool,
        mode: Option<FileMode>,
        owner: Option<String>,
        contains: Option<String>,
        #[schemars(with = "Option<Pattern>")]
        matches: Option<String>,
        sha256: Option<String>,
    },
    Package {
        package: String,
        #[schemars(default = "defaults::yes")]
        installed: bool,
    },
    Command {
        command: String,
        exit_code: Option<i32>,
        #[schemars(with = "Option<Pattern>")]
        stdout_matches: Option<String>,
        stderr_empty: Option<bool>,
    },
    User {
        user: String,
        #[schemars(default = "defaults::yes")]
        exists: bool,
        #[serde(default)]
        groups: Vec<String>,
        shell: Option<String>,
    },
    BootTimeMax {
        boot_time_max: Dur,
    },
}

const CHECK_KINDS: [&str; 7] = ["service", "port", "file", "package", "command", "user", "boot_time_max"];

impl Decode for Check {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let present: Vec<&str> = CHECK_KINDS.iter().copied().filter(|k| o.has(k)).collect();
        if present.len() != 1 {
            let what = if present.is_empty() { "no check kind" } else { "more than one check kind" };
            cx.error_with_help(
                node.span,
                format!("{what} in this verify entry"),
                Some(format!("use exactly one of {}", super::decode::quote_list(&CHECK_KINDS))),
            );
            return None;
        }
        let name = o.opt(cx, "name");
        let kind = read_check_kind(present[0], &mut o, cx);
        o.finish(cx);
        Some(Check { name, kind: kind? })
    }
}

fn read_check_kind(kind: &str, o: &mut ObjectReader, cx: &mut Cx) -> Option<CheckKind> {
    Some(match kind {
        "service" => CheckKind::Service {
            service: o.req(cx, "service")?,
            enabled: o.opt(cx, "enabled"),
            running: o.opt(cx, "running"),
        },
        "port" => CheckKind::Port {
            port: o.req(cx, "port")?,
            listening: o.or(cx, "listening", true),
            protocol: o
                .node("protocol")
                .map_or(Some("tcp"), |n| {
                    cx.in_field("protocol", |cx| one_of(n, cx, &[("tcp", "tcp"), ("udp", "udp")]))
                })?
                .to_string(),
        },
        "file" => CheckKind::File {
            file: o.req(cx, "file")?,
            exists: o.or(cx, "exists", true),
            mode: o.opt(cx, "mode"),
            owner: o.opt(cx, "owner"),
            contains: o.opt(cx, "contains"),
            matches: o.opt::<Pattern>(cx, "matches").map(|p| p.0),
            sha256: o.opt(cx, "sha256"),
        },
        "package" => CheckKind::Package { package: o.req(cx, "package")?, installed: o.or(cx, "installed", true) },
        "command" => CheckKind::Command {
            command: o.req(cx, "command")?,
            exit_code: o.opt(cx, "exit_code"),
            stdout_matches: o.opt::<Pattern>(cx, "stdout_matches").map(|p| p.0),
            stderr_empty: o.opt(cx, "stderr_empty"),
        },
        "user" => CheckKind::User {
            user: o.req(cx, "user")?,
            exists: o.or(cx, "exists", true),
            groups: o.or_default(cx, "groups"),
            shell: o.opt(cx, "shell"),
        },
        _ => CheckKind::BootTimeMax { boot_time_max: o.req(cx, "boot_time_max")? },
    })
}

// ---------------------------------------------------------------- export

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Export {
    #[schemars(default = "defaults::formats")]
    pub formats: Vec<FormatSpec>,
    #[schemars(default = "defaults::checksums")]
    pub checksums: Vec<DigestAlgo>,
    #[serde(default)]
    pub publish: Vec<Publish>,
    #[schemars(default = "defaults::verify_on")]
    pub verify_on: VerifyOn,
}

impl Default for Export {
    fn default() -> Self {
        Export {
            formats: vec![FormatSpec { format: DiskFormat::Qcow2, compression: None, compress: None }],
            checksums: vec![DigestAlgo::Sha256],
            publish: Vec::new(),
            verify_on: VerifyOn::FreshBoot,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyOn {
    FreshBoot,
    BuildVm,
}

impl Decode for Export {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let d = Export::default();
        let checksums = o.node("checksums").map_or(Some(d.checksums), |n| {
            cx.in_field("checksums", |cx| {
                let NodeKind::Array(items) = &n.kind else {
                    cx.type_error(n, "an array");
                    return None;
                };
                let choices = [("sha256", DigestAlgo::Sha256), ("sha512", DigestAlgo::Sha512)];
                let algos: Vec<Option<DigestAlgo>> =
                    items.iter().enumerate().map(|(i, item)| cx.in_index(i, |cx| one_of(item, cx, &choices))).collect();
                algos.into_iter().collect::<Option<Vec<_>>>()
            })
        });
        let verify_on = o.node("verify_on").map_or(Some(d.verify_on), |n| {
            cx.in_field("verify_on", |cx| {
                one_of(n, cx, &[("fresh-boot", VerifyOn::FreshBoot), ("build-vm", VerifyOn::BuildVm)])
            })
        });
        let e = Export {
            formats: o.or(cx, "formats", d.formats),
            checksums: checksums?,
            publish: o.or_default(cx, "publish"),
            verify_on: verify_on?,
        };
        o.finish(cx);
        check_export(&e, node, cx);
        Some(e)
    }
}

/// Each format becomes one file named after it, so a format may appear once;
/// one local store per template, each S3 location once.
fn check_export(e: &Export, node: &Node, cx: &mut Cx) {
    for (i, f) in e.formats.iter().enumerate() {
        if e.formats[..i].iter().any(|g| g.format == f.format) {
            cx.in_field("formats", |cx| {
                cx.error(
                    node.span,
                    format!("format `{:?}` is listed twice; each format may appear once", f.format).to_lowercase(),
                )
            });
        }
    }
    if e.publish.iter().filter(|p| matches!(p, Publish::Local { .. })).count() > 1 {
        cx.in_field("publish", |cx| cx.error(node.span, "only one `local` publish target is supported"));
    }
    // Two entries for one bucket and prefix would publish the same version twice: the second always fails.
    let s3: Vec<&S3Publish> = e.publish.iter().filter_map(Publish::as_s3).collect();
    for (i, t) in s3.iter().enumerate() {
        if s3[..i].iter().any(|u| u.bucket == t.bucket && u.key_prefix() == t.key_prefix()) {
            cx.in_field("publish", |cx| {
                cx.error(node.span, format!("s3://{}/{} is listed twice", t.bucket, t.key_prefix()))
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFormat {
    Qcow2,
    Raw,
    Vmdk,
    VmdkStream,
    Vhdx,
    Vpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Zlib,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamCompression {
    Zstd,
    Xz,
    Gzip,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FormatSpec {
    pub format: DiskFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<StreamCompression>,
}

impl Decode for FormatSpec {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        let format = o.node("format").and_then(|n| {
            cx.in_field("format", |cx| {
                one_of(
                    n,
                    cx,
                    &[
                        ("qcow2", DiskFormat::Qcow2),
                        ("raw", DiskFormat::Raw),
                        ("vmdk", DiskFormat::Vmdk),
                        ("vmdk-stream", DiskFormat::VmdkStream),
                        ("vhdx", DiskFormat::Vhdx),
                        ("vpc", DiskFormat::Vpc),
                    ],
                )
            })
        });
        if !o.has("format") {
            cx.in_field("format", |cx| cx.error(node.span, "missing required field `format`"));
        }
        let compression = o.node("compression").and_then(|n| {
            cx.in_field("compression", |cx| {
                one_of(n, cx, &[("none", Compression::None), ("zlib", Compression::Zlib), ("zstd", Compression::Zstd)])
            })
        });
        let compress = o.node("compress").and_then(|n| {
            cx.in_field("compress", |cx| {
                one_of(
                    n,
                    cx,
                    &[
                        ("zstd", StreamCompression::Zstd),
                        ("xz", StreamCompression::Xz),
                        ("gzip", StreamCompression::Gzip),
                    ],
                )
            })
        });
        o.finish(cx);
        let format = format?;
        if compression.is_some() && format != DiskFormat::Qcow2 {
            cx.error(node.span, "`compression` applies only to `qcow2`");
        }
        if compress.is_some() && format != DiskFormat::Raw {
            cx.error(node.span, "`compress` applies only to `raw`");
        }
        Some(FormatSpec { format, compression, compress })
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[schemars(deny_unknown_fields)]
pub enum Publish {
    /// A local store directory (see docs/store.md).
    Local { path: TemplatePath },
    /// An S3 bucket, or any S3-compatible service, in the local store's layout.
    S3(S3Publish),
}

impl Publish {
    pub fn as_s3(&self) -> Option<&S3Publish> {
        match self {
            Publish::S3(t) => Some(t),
            Publish::Local { .. } => None,
        }
    }
}

/// `{"type": "s3", "bucket": "golden-images", "prefix": "images/", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:5000"}`.
/// Credentials always come from the standard AWS chain, never from the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct S3Publish {
    /// Bucket name (3-63 lowercase letters, digits, `-`, `.`).
    pub bucket: String,
    /// Key prefix under which the store lives (`images/`); empty: the bucket root.
    #[serde(default)]
    pub prefix: String,
    /// AWS region; default: the standard chain (AWS_REGION, profile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "serialize_endpoint")]
    pub endpoint_url: Option<String>,
    /// Multipart part size (5M to 5G, default 8M); memory use is about 4 parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_size: Option<Size>,
}

/// Smallest and largest multipart part S3 accepts.
pub const S3_MIN_PART_SIZE: u64 = 5 << 20;
pub const S3_MAX_PART_SIZE: u64 = 5 << 30;

impl S3Publish {
    /// The prefix as keys use it: no leading `/`, a trailing `/` unless empty.
    pub fn key_prefix(&self) -> String {
        let p = self.prefix.trim_start_matches('/');
        if p.is_empty() || p.ends_with('/') { p.to_string() } else { format!("{p}/") }
    }

    /// `s3://bucket/prefix/`.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key_prefix())
    }

    fn read(o: &mut ObjectReader, cx: &mut Cx, node: &Node) -> Option<Self> {
        let bucket = o.node("bucket").and_then(|n| {
            cx.in_field("bucket", |cx| {
                parse_string(n, cx, |b| if valid_bucket(b) { Ok(b.to_string()) } else { Err(
                    "not a bucket name: use 3-63 lowercase letters, digits, `-` or `.`, starting with a letter or digit",
                ) })
            })
        });
        if !o.has("bucket") {
            cx.in_field("bucket", |cx| cx.error(node.span, "missing required field `bucket`"));
        }
        let prefix = o.node("prefix").map_or(Some(String::new()), |n| {
            cx.in_field("prefix", |cx| {
                parse_string(n, cx, |p| {
                    let bad = p.split('/').any(|c| c == "." || c == "..")
                        || p.trim_start_matches('/').contains("//")
                        || p.contains(['\\', '\0', '\n', '\r']);
                    if bad {
                        Err("not a usable key prefix (no `.`/`..` components, `//` or control characters)")
                    } else {
                        Ok(p.to_string())
                    }
                })
            })
        });
        let region = o.opt::<String>(cx, "region").filter(|r| !r.is_empty());
        let endpoint_url = o.node("endpoint_url").and_then(|n| {
            cx.in_field("endpoint_url", |cx| {
                // The URL is not echoed: it may carry user information.
                parse_string(n, cx, |u| {
                    if u.starts_with("http://") || u.starts_with("https://") {
                        Ok(u.to_string())
                    } else {
                        Err("expected an http:// or https:// URL")
                    }
                })
            })
        });
        let part_size = o.node("part_size").and_then(|n| {
            cx.in_field("part_size", |cx| {
                let size = Size::decode(n, cx)?;
                if !(S3_MIN_PART_SIZE..=S3_MAX_PART_SIZE).contains(&size.bytes()) {
                    cx.error(n.span, format!("part_size {size} is outside 5M..5G, the part sizes S3 accepts"));
                    return None;
                }
                Some(size)
            })
        });
        Some(S3Publish { bucket: bucket?, prefix: prefix?, region, endpoint_url, part_size })
    }
}

/// S3's bucket naming rule (the common subset every region accepts).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
        && b.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// `inspect` and the manifest show the endpoint without user information
/// (`http://user:secret@host` → `http://<sensitive>@host`).
fn serialize_endpoint<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&mask_userinfo(url)),
        None => s.serialize_none(),
    }
}

pub fn mask_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}{}", redact::MASK, &rest[at..]),
        None => url.to_string(),
    }
}

impl Decode for Publish {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let mut o = cx.object(node)?;
        // An unknown type: its fields would only add noise to the error.
        let tag = type_tag(node, cx, &mut o, &["local", "s3"])?;
        let publish = match tag.as_str() {
            "s3" => S3Publish::read(&mut o, cx, node).map(Publish::S3),
            _ => o.req::<TemplatePath>(cx, "path").map(|path| Publish::Local { path }),
        };
        o.finish(cx);
        publish
    }
}
