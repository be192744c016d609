//! The template's JSON Schema (2020-12), generated from the model types with
//! schemars, for editors (`"$schema"`) and CI validators. `imgbuild schema`
//! prints it; `docs/imgbuild.schema.json` is the committed copy, kept equal
//! by a test.
//!
//! The defaults below are the ones the decoder uses, so the schema shows the
//! real value of a field that is left out.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::model::*;
use super::units::{Dur, Size};
use crate::source::DigestAlgo;

/// Accepts `{{ ... }}` interpolation wherever a pattern constrains a string.
const INTERPOLATED: &str = r".*\{\{.*\}\}.*";

fn pattern(regex: &str, description: &str) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": format!("^(?:{regex}|{INTERPOLATED})$"),
        "description": description,
    })
}

macro_rules! string_schema {
    ($ty:ty, $name:literal, $regex:expr, $description:literal) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                pattern($regex, $description)
            }
        }
    };
}

string_schema!(Dur, "Duration", r"(?:[0-9]+(?:ms|s|m|h|d))+", "A duration such as `90s`, `5m`, `1h30m` or `500ms`.");
string_schema!(
    Size,
    "Size",
    r"[0-9]+\s*(?:K|k|M|G|T|KiB|MiB|GiB|TiB)",
    "A size with a binary unit: `512M`, `8G`, `20GiB`."
);
string_schema!(
    ChecksumField,
    "Checksum",
    r"(?:sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128}|file:.+|none)",
    "`sha256:HEX`, `sha512:HEX`, `file:URL-or-path` of a SHA256SUMS-style list, or `none`."
);
string_schema!(FileMode, "FileMode", r"[0-7]{3,4}", "An octal file mode such as \"0644\".");
string_schema!(
    VersionSpec,
    "Version",
    r"auto|[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?|[0-9]{4}\.[0-9]{2}\.[0-9]{2}\.[0-9]+",
    "A semantic version (`1.4.0`), a date version (`YYYY.MM.DD.N`) or `auto` (the next free date version)."
);
string_schema!(Secret, "Secret", r".+", "A secret: masked as `<sensitive>` in every output. At least 4 characters.");
string_schema!(Pattern, "Regex", r".+", "A regular expression (Rust `regex` syntax; `^`/`$` match at line ends).");
string_schema!(TemplatePath, "Path", r".+", "A path; relative paths resolve against the template's directory.");

impl JsonSchema for DigestAlgo {
    fn schema_name() -> Cow<'static, str> {
        "DigestAlgorithm".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "enum": ["sha256", "sha512"] })
    }
}

/// A variable declaration as written in `variables`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct VariableDecl {
    /// Used when no other source sets the variable.
    default: Option<serde_json::Value>,
    description: Option<String>,
    /// Fail unless a value is given (`--var`, `--var-file`, `IMGBUILD_VAR_<name>`).
    #[serde(default)]
    required: bool,
    /// Mask the value as `<sensitive>` everywhere.
    #[serde(default)]
    sensitive: bool,
}

/// `"$schema"` may name this schema at the top of a template.
pub fn allow_schema_key(schema: &mut Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        properties.insert("$schema".into(), serde_json::json!({ "type": "string" }));
    }
}

/// `cloud_init` is `false`, `true`, or an object.
pub fn cloud_init(generator: &mut SchemaGenerator) -> Schema {
    let object = generator.subschema_for::<CloudInit>();
    json_schema!({ "anyOf": [ { "type": "boolean" }, object ] })
}

/// A TCP port, or a string that interpolates to one (`"{{ var.ssh_port }}"`):
/// the decoder accepts both.
pub fn port(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "integer", "minimum": 1, "maximum": 65535 },
            { "type": "string", "pattern": "\\{\\{" }
        ]
    })
}

pub fn protocol(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "enum": ["tcp", "udp"] })
}

// Defaults shared by the decoder and the schema.

pub fn version() -> VersionSpec {
    VersionSpec::Auto
}
pub fn export() -> Export {
    Export::default()
}
pub fn accelerator() -> Accelerator {
    Accelerator::Auto
}
pub fn cpus() -> u32 {
    1
}
pub fn memory() -> Size {
    Size(1 << 30)
}
pub fn disk_interface() -> DiskInterface {
    DiskInterface::Virtio
}
pub fn machine() -> String {
    "q35".into()
}
pub fn firmware() -> Firmware {
    Firmware::Bios
}
pub fn qemu_binary() -> String {
    "qemu-system-x86_64".into()
}
pub fn shutdown_timeout() -> Dur {
    Dur(Duration::from_secs(120))
}
pub fn username() -> String {
    "root".into()
}
pub fn ssh_port() -> u16 {
    22
}
pub fn ssh_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
pub fn ec2_username() -> String {
    "admin".into()
}
pub fn ec2_ssh_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
pub fn ssh_interface() -> super::ec2::SshInterface {
    super::ec2::SshInterface::PublicIp
}
pub fn instance_type() -> String {
    "t3.small".into()
}
pub fn instance_wait_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
pub fn ami_wait_timeout() -> Dur {
    Dur(Duration::from_secs(3600))
}
pub fn yes() -> bool {
    true
}
pub fn tcp() -> String {
    "tcp".into()
}
pub fn valid_exit_codes() -> Vec<i32> {
    vec![0]
}
pub fn remote_folder() -> String {
    "/tmp".into()
}
pub fn direction() -> Direction {
    Direction::Upload
}
pub fn formats() -> Vec<FormatSpec> {
    Export::default().formats
}
pub fn checksums() -> Vec<DigestAlgo> {
    Export::default().checksums
}
pub fn boot_wait() -> Dur {
    Dur(Duration::from_secs(1))
}
pub fn boot_key_interval() -> Dur {
    Dur(Duration::from_millis(20))
}
pub fn communicator() -> Communicator {
    Communicator::Ssh
}
pub fn verify_on() -> VerifyOn {
    VerifyOn::FreshBoot
}

/// The template schema as JSON.
pub fn template_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Template);
    if let Some(object) = schema.as_object_mut() {
        object.insert("$id".into(), "https://imgbuild.dev/schema/template.json".into());
    }
    serde_json::to_value(&schema).unwrap_or_default()
}
