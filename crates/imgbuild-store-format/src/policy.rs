//! The store policy, written once over a [`Backend`]: what a name, a
//! version, a channel reference resolves to, listing versions with their
//! channels, promote, which versions prune removes, and the next `auto`
//! number. The local directory store and the S3 store are the two backends;
//! each keeps its own atomicity (flock and `renameat2` on disk, conditional
//! writes on S3) inside the primitives it provides.
//!
//! The functions are `async` because S3 is; a backend whose primitives do not
//! wait (the local store) can drive them with any executor.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::names::{Day, check_name, compare, is_valid_channel, is_valid_version};

/// The channel every publish moves, and what a bare image name resolves to.
pub const LATEST: &str = "latest";

/// A name, version, channel or image reference that the store format does
/// not allow. Every store reports it as it is: there is nothing
/// store-specific to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidInput {
    /// An image name that is not `[a-z0-9][a-z0-9._-]*`.
    Name { name: String, reason: String },
    /// Neither a semantic version nor `YYYY.MM.DD.N`.
    Version { version: String },
    /// A channel name that is not `[a-z][a-z0-9_-]*`.
    Channel { channel: String },
    /// Not `NAME`, `NAME@VERSION` or `NAME@CHANNEL`.
    Spec { spec: String },
}

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvalidInput::Name { reason, .. } => f.write_str(reason),
            InvalidInput::Version { version } => write!(
                f,
                "invalid version `{version}`: expected a semantic version like `1.4.0` (optionally `-rc.1`) or a date version `YYYY.MM.DD.N`"
            ),
            InvalidInput::Channel { channel } => write!(
                f,
                "invalid channel `{channel}`: use 1-64 lowercase letters, digits, `-` or `_`, starting with a letter"
            ),
            InvalidInput::Spec { spec } => {
                write!(f, "invalid image reference `{spec}`: expected NAME, NAME@VERSION or NAME@CHANNEL")
            }
        }
    }
}

impl std::error::Error for InvalidInput {}

/// Why the policy refused a request. Each backend turns it into its own
/// error type, which names the store's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Invalid(InvalidInput),
    /// The image has no published version.
    ImageNotFound {
        name: String,
    },
    VersionNotFound {
        name: String,
        version: String,
    },
    Channel(ChannelError),
}

/// A channel that does not lead to a published version. Like
/// [`InvalidInput`], every store reports it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The channel is not set; `available`: the channels that are, sorted.
    NotSet { name: String, channel: String, available: Vec<String> },
    /// The channel points at a version that is not published.
    Dangling { name: String, channel: String, version: String },
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::NotSet { name, channel, available } if available.is_empty() => {
                write!(f, "channel `{channel}` of image `{name}` is not set (the image has no channels)")
            }
            ChannelError::NotSet { name, channel, available } => {
                write!(f, "channel `{channel}` of image `{name}` is not set (set: {})", available.join(", "))
            }
            ChannelError::Dangling { name, channel, version } => {
                write!(f, "channel `{channel}` of image `{name}` points at {version}, which is not in the store")
            }
        }
    }
}

impl std::error::Error for ChannelError {}

/// A file-system operation of a store that failed (`cannot {action} {path}`,
/// the cause as the source).
#[derive(Debug)]
pub struct IoFailure {
    pub action: &'static str,
    pub path: std::path::PathBuf,
    pub source: std::io::Error,
}

impl std::fmt::Display for IoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot {} {}", self.action, self.path.display())
    }
}

impl std::error::Error for IoFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

pub fn valid_name(name: &str) -> Result<(), Refusal> {
    check_name(name).map_err(|reason| Refusal::Invalid(InvalidInput::Name { name: name.to_string(), reason }))
}

pub fn valid_version(version: &str) -> Result<(), Refusal> {
    match is_valid_version(version) {
        true => Ok(()),
        false => Err(Refusal::Invalid(InvalidInput::Version { version: version.to_string() })),
    }
}

pub fn valid_channel(channel: &str) -> Result<(), Refusal> {
    match is_valid_channel(channel) {
        true => Ok(()),
        false => Err(Refusal::Invalid(InvalidInput::Channel { channel: channel.to_string() })),
    }
}

/// A published version as a backend lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub version: String,
    /// Total size of the version's files, in bytes (0 without details).
    pub size: u64,
    /// When the version was created or published, RFC 3339 (`None` without details).
    pub created_at: Option<String>,
}

/// A published version with the channels pointing at it, as [`versions`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub version: String,
    pub size: u64,
    pub created_at: Option<String>,
    /// Sorted.
    pub channels: Vec<String>,
}

/// What a store provides for the policy: list, read, a conditional write of
/// a channel, delete.
#[async_trait]
pub trait Backend: Sync {
    type Error: Send;
    /// Held while the policy reads and then changes the store (the local
    /// store's lock; nothing on S3, whose writes are conditional).
    type Guard: Send;
    /// What [`Backend::remove_versions`] left to clean up after the guard is
    /// released.
    type Removed: Send;

    /// The store's error for a refusal (naming the store).
    fn refuse(&self, refusal: Refusal) -> Self::Error;

    async fn lock(&self) -> Result<Self::Guard, Self::Error>;

    /// The versions of `name` whose manifest is in place, in any order; an
    /// image without any has none. `details`: fill in sizes and times.
    async fn complete_versions(&self, name: &str, details: bool) -> Result<Vec<Listed>, Self::Error>;

    /// The versions of `name` that an `auto` version must not take
    /// (published ones, and on the local store half-published ones too).
    async fn taken_versions(&self, name: &str) -> Result<Vec<String>, Self::Error>;

    async fn has_manifest(&self, name: &str, version: &str) -> Result<bool, Self::Error>;

    /// The parsed manifest, `None` when the version is not published.
    async fn read_manifest(&self, name: &str, version: &str) -> Result<Option<serde_json::Value>, Self::Error>;

    /// Channel → version (empty when none are set).
    async fn read_channels(&self, name: &str) -> Result<BTreeMap<String, String>, Self::Error>;

    /// Points `channel` at `version` without losing a concurrent change of
    /// another channel (see [`point_channel`]); returns the old target.
    async fn write_channel(&self, name: &str, channel: &str, version: &str) -> Result<Option<String>, Self::Error>;

    /// Under the guard: makes `versions` invisible at once and updates the
    /// index.
    async fn remove_versions(&self, name: &str, versions: &[String]) -> Result<Self::Removed, Self::Error>;

    /// After the guard is released: deletes what is left of removed versions.
    async fn purge(&self, removed: Self::Removed);
}

/// `channel` → `version` in `channels`: the old target, and whether the
/// map changed (a write is needed).
pub fn point_channel(channels: &mut BTreeMap<String, String>, channel: &str, version: &str) -> (Option<String>, bool) {
    let previous = channels.insert(channel.to_string(), version.to_string());
    let changed = previous.as_deref() != Some(version);
    (previous, changed)
}

/// Whether `name@version` is published.
pub async fn exists<B: Backend>(b: &B, name: &str, version: &str) -> Result<bool, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    valid_version(version).map_err(|r| b.refuse(r))?;
    b.has_manifest(name, version).await
}

/// Published versions of `name`, oldest first, with their channels.
pub async fn versions<B: Backend>(b: &B, name: &str) -> Result<Vec<Listing>, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    let list = sorted(b.complete_versions(name, true).await?);
    if list.is_empty() {
        return Err(b.refuse(Refusal::ImageNotFound { name: name.to_string() }));
    }
    let channels = b.read_channels(name).await?;
    Ok(list
        .into_iter()
        .map(|v| Listing {
            channels: channels.iter().filter(|(_, c)| **c == v.version).map(|(c, _)| c.clone()).collect(),
            version: v.version,
            size: v.size,
            created_at: v.created_at,
        })
        .collect())
}

/// The names of the published versions of `name`, oldest first.
pub async fn version_names<B: Backend>(b: &B, name: &str) -> Result<Vec<String>, B::Error> {
    Ok(sorted(b.complete_versions(name, false).await?).into_iter().map(|v| v.version).collect())
}

fn sorted(mut list: Vec<Listed>) -> Vec<Listed> {
    list.sort_by(|a, b| compare(&a.version, &b.version));
    list
}

/// The parsed manifest of a published version.
pub async fn manifest<B: Backend>(b: &B, name: &str, version: &str) -> Result<serde_json::Value, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    valid_version(version).map_err(|r| b.refuse(r))?;
    b.read_manifest(name, version).await?.ok_or_else(|| b.refuse(version_not_found(name, version)))
}

/// Channel → version for `name`.
pub async fn channels<B: Backend>(b: &B, name: &str) -> Result<BTreeMap<String, String>, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    b.read_channels(name).await
}

/// `NAME@VERSION`, `NAME@CHANNEL` or `NAME` (the `latest` channel) →
/// `(name, version)` of a published version. Without a `latest` channel (a
/// crash between publishing and moving it) the newest version is used.
pub async fn resolve<B: Backend>(b: &B, spec: &str) -> Result<(String, String), B::Error> {
    let (name, selector) = spec.split_once('@').unwrap_or((spec, LATEST));
    let invalid = || b.refuse(Refusal::Invalid(InvalidInput::Spec { spec: spec.to_string() }));
    valid_name(name).map_err(|_| invalid())?;
    let version = if is_valid_version(selector) {
        selector.to_string()
    } else if is_valid_channel(selector) {
        resolve_channel(b, name, selector).await?
    } else {
        return Err(invalid());
    };
    if !b.has_manifest(name, &version).await? {
        return Err(b.refuse(version_not_found(name, &version)));
    }
    Ok((name.to_string(), version))
}

async fn resolve_channel<B: Backend>(b: &B, name: &str, channel: &str) -> Result<String, B::Error> {
    let channels = b.read_channels(name).await?;
    if let Some(version) = channels.get(channel) {
        if !b.has_manifest(name, version).await? {
            return Err(b.refuse(Refusal::Channel(ChannelError::Dangling {
                name: name.to_string(),
                channel: channel.to_string(),
                version: version.clone(),
            })));
        }
        return Ok(version.clone());
    }
    if channel == LATEST {
        return version_names(b, name)
            .await?
            .pop()
            .ok_or_else(|| b.refuse(Refusal::ImageNotFound { name: name.to_string() }));
    }
    Err(b.refuse(Refusal::Channel(ChannelError::NotSet {
        name: name.to_string(),
        channel: channel.to_string(),
        available: channels.into_keys().collect(),
    })))
}

/// Points `channel` at the published `name@version`; returns the version it
/// pointed at before.
pub async fn promote<B: Backend>(b: &B, name: &str, version: &str, channel: &str) -> Result<Option<String>, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    valid_version(version).map_err(|r| b.refuse(r))?;
    valid_channel(channel).map_err(|r| b.refuse(r))?;
    let _guard = b.lock().await?;
    // Checked under the guard: on the local store a prune cannot remove it now.
    if !b.has_manifest(name, version).await? {
        return Err(b.refuse(version_not_found(name, version)));
    }
    b.write_channel(name, channel, version).await
}

/// Removes all but the newest `keep` versions of `name`, except versions a
/// channel points at. Returns the removed versions, oldest first.
pub async fn prune<B: Backend>(b: &B, name: &str, keep: usize) -> Result<Vec<String>, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    let (victims, removed) = {
        let _guard = b.lock().await?;
        let all = version_names(b, name).await?;
        if all.is_empty() {
            return Err(b.refuse(Refusal::ImageNotFound { name: name.to_string() }));
        }
        let pinned = b.read_channels(name).await?;
        let victims = prune_victims(&all, &pinned, keep);
        let removed = b.remove_versions(name, &victims).await?;
        (victims, removed)
    };
    b.purge(removed).await;
    Ok(victims)
}

/// The versions of `all` (oldest first) older than the newest `keep`, except
/// channel targets.
pub fn prune_victims(all: &[String], channels: &BTreeMap<String, String>, keep: usize) -> Vec<String> {
    all[..all.len().saturating_sub(keep)].iter().filter(|v| !channels.values().any(|p| p == *v)).cloned().collect()
}

/// The highest `N` of `today`'s `YYYY.MM.DD.N` versions of `name` (0 when none).
pub async fn highest_auto_number<B: Backend>(b: &B, name: &str, today: Day) -> Result<u64, B::Error> {
    valid_name(name).map_err(|r| b.refuse(r))?;
    let taken = b.taken_versions(name).await?;
    Ok(today.highest_n(taken.iter().map(String::as_str)))
}

fn version_not_found(name: &str, version: &str) -> Refusal {
    Refusal::VersionNotFound { name: name.to_string(), version: version.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_and_channel_targets() {
        let all: Vec<String> = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"].map(String::from).to_vec();
        let channels = BTreeMap::from([("stable".to_string(), "1.0.0".to_string())]);
        assert_eq!(prune_victims(&all, &channels, 2), ["1.1.0"]);
        assert_eq!(prune_victims(&all, &channels, 0), ["1.1.0", "1.2.0", "2.0.0"]);
        assert!(prune_victims(&all, &BTreeMap::new(), 9).is_empty());
    }

    #[test]
    fn pointing_a_channel_reports_the_old_target() {
        let mut channels = BTreeMap::new();
        assert_eq!(point_channel(&mut channels, "latest", "1.0.0"), (None, true));
        assert_eq!(point_channel(&mut channels, "latest", "1.0.0"), (Some("1.0.0".into()), false));
        assert_eq!(point_channel(&mut channels, "latest", "2.0.0"), (Some("1.0.0".into()), true));
    }
}
