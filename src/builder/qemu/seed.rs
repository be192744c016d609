//! The cloud-init NoCloud seed: a small FAT volume labelled `cidata` with
//! `meta-data` and `user-data`, written in Rust (no host tool needed).
//!
//! The user-data is what real cloud-init reads on Debian/Ubuntu genericcloud
//! images; the test fixture honours the same subset.

use std::io::{Cursor, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("extra cloud-init `user_data` is not valid YAML")]
    UserDataYaml(#[source] serde_yaml::Error),
    #[error("extra cloud-init `user_data` must be a YAML mapping (`key: value` lines)")]
    UserDataShape,
    #[error("cannot write the FAT seed image")]
    Fat(#[source] std::io::Error),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct SeedSpec<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    pub username: &'a str,
    pub authorized_key: &'a str,
    pub password: Option<&'a str>,
    /// Extra `#cloud-config` YAML from the template, merged in.
    pub extra_user_data: Option<&'a str>,
}

/// Double-quoted YAML scalar: JSON string syntax is valid YAML.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

pub fn meta_data(spec: &SeedSpec) -> String {
    format!("instance-id: {}\nlocal-hostname: {}\n", q(spec.instance_id), q(spec.hostname))
}

/// The user-data imgbuild writes: the build user with the per-build key (and
/// password, if given), root login allowed only when the build user is root.
pub fn user_data(spec: &SeedSpec) -> Result<String, SeedError> {
    let mut out = String::from("#cloud-config\n");
    let is_root = spec.username == "root";
    out.push_str(&format!("disable_root: {}\n", !is_root));
    out.push_str(&format!("ssh_pwauth: {}\n", spec.password.is_some()));
    out.push_str("users:\n");
    if !is_root {
        out.push_str("  - default\n");
    }
    out.push_str(&format!("  - name: {}\n", q(spec.username)));
    out.push_str("    lock_passwd: false\n");
    if !is_root {
        out.push_str("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    shell: /bin/sh\n");
    }
    out.push_str(&format!("    ssh_authorized_keys:\n      - {}\n", q(spec.authorized_key)));
    if let Some(password) = spec.password {
        out.push_str("chpasswd:\n  expire: false\n  users:\n");
        out.push_str(&format!("    - name: {}\n      password: {}\n      type: text\n", q(spec.username), q(password)));
    }
    match spec.extra_user_data {
        None => Ok(out),
        Some(extra) => merge(&out, extra),
    }
}

/// Merges the template's extra user-data: its lists extend ours (`users`,
/// `runcmd`, ...), its other keys are added or override ours.
fn merge(ours: &str, extra: &str) -> Result<String, SeedError> {
    use serde_yaml::Value;
    let mut base: Value = serde_yaml::from_str(ours).map_err(SeedError::UserDataYaml)?;
    let extra: Value = serde_yaml::from_str(extra).map_err(SeedError::UserDataYaml)?;
    let (Value::Mapping(base_map), Value::Mapping(extra_map)) = (&mut base, extra) else {
        return Err(SeedError::UserDataShape);
    };
    for (key, value) in extra_map {
        match (base_map.get_mut(&key), value) {
            (Some(Value::Sequence(ours)), Value::Sequence(theirs)) => ours.extend(theirs),
            (_, value) => {
                base_map.insert(key, value);
            }
        }
    }
    let body = serde_yaml::to_string(&base).map_err(SeedError::UserDataYaml)?;
    Ok(format!("#cloud-config\n{body}"))
}

const SEED_SIZE: u64 = 1 << 20;

/// Writes a FAT12 volume labelled `cidata` holding the seed files.
pub fn write_seed_image(path: &Path, meta_data: &str, user_data: &str) -> Result<(), SeedError> {
    let mut image = Cursor::new(vec![0u8; SEED_SIZE as usize]);
    let options = fatfs::FormatVolumeOptions::new().volume_label(*b"cidata     ").fat_type(fatfs::FatType::Fat12);
    fatfs::format_volume(&mut image, options).map_err(SeedError::Fat)?;
    {
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new()).map_err(SeedError::Fat)?;
        for (name, content) in [("meta-data", meta_data), ("user-data", user_data)] {
            let mut file = fs.root_dir().create_file(name).map_err(SeedError::Fat)?;
            file.truncate().map_err(SeedError::Fat)?;
            file.write_all(content.as_bytes()).map_err(SeedError::Fat)?;
        }
        fs.unmount().map_err(SeedError::Fat)?;
    }
    write_private(path, image.get_ref())
}

/// Writes a file readable by the owner only: the seed holds the password.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SeedError> {
    let err = |source| SeedError::Write { path: path.display().to_string(), source };
    crate::build::create_private_file(path).map_err(err)?.write_all(bytes).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(password: Option<&'a str>, extra: Option<&'a str>) -> SeedSpec<'a> {
        SeedSpec {
            instance_id: "i-1",
            hostname: "h",
            username: "root",
            authorized_key: "ssh-ed25519 AAAA k",
            password,
            extra_user_data: extra,
        }
    }

    #[test]
    fn user_data_is_yaml_cloud_init_reads() {
        let text = user_data(&spec(Some("p'a\"ss $x"), None)).unwrap();
        assert!(text.starts_with("#cloud-config\n"));
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["users"][0]["name"], "root");
        assert_eq!(v["users"][0]["ssh_authorized_keys"][0], "ssh-ed25519 AAAA k");
        assert_eq!(v["chpasswd"]["users"][0]["password"], "p'a\"ss $x");
        assert_eq!(v["disable_root"], false);
    }

    #[test]
    fn extra_user_data_extends_lists_and_adds_keys() {
        let extra = "users:\n  - name: deploy\nruncmd:\n  - [touch, /x]\n";
        let text = user_data(&spec(None, Some(extra))).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(v["users"][1]["name"], "deploy");
        assert_eq!(v["runcmd"][0][0], "touch");
        assert!(user_data(&spec(None, Some("- a list"))).is_err());
    }

    #[test]
    fn seed_image_has_label_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        write_seed_image(&path, "instance-id: i\n", "#cloud-config\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label().trim(), "cidata");
        let names: Vec<String> = fs.root_dir().iter().map(|e| e.unwrap().file_name()).collect();
        assert!(names.contains(&"meta-data".to_string()) && names.contains(&"user-data".to_string()));
    }
}
