//! The local, directory-based artifact store.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use imgbuild_store_format::policy::{self, Backend, Listed, Refusal};
use serde::Serialize;

use super::error::StoreError;
use super::fsio::{self, LOCK_FILE, open_lock, read_dir, remove_locked_dir, try_lock};
use super::meta::{self, CHANNELS_FILE, INDEX_FILE};
use super::staging::Staging;
use super::verify::{VerifyReport, verify_dir};
use super::versions::{self, validate_name, validate_version};
use super::{MANIFEST_FILE, STAGING_PREFIX, TRASH_PREFIX, pause_point};
use imgbuild_store_format::{Day, Index, IndexEntry};

/// A store rooted at a directory; see the module documentation for the
/// layout. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// One published version, as listed by [`LocalStore::versions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: String,
    /// `created_at` from the manifest, as written there.
    pub created_at: Option<String>,
    /// Total size of the files in the version directory, in bytes.
    pub size: u64,
    /// Channels pointing at this version, sorted.
    pub channels: Vec<String>,
    pub path: PathBuf,
}

/// The exclusive store lock (`STORE/.lock`), released on drop.
pub struct StoreLock {
    _file: File,
}

/// A staging or trash directory whose lock we hold, to delete once the store
/// lock is released.
pub struct Claimed {
    dir: PathBuf,
    _lock: File,
}

impl LocalStore {
    /// Opens the store at `root`, creating the directory if needed, and
    /// deletes staging and trash directories left by dead processes. Sweep
    /// failures are logged, not returned: a read-only store is still usable.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root).map_err(|e| StoreError::io("create the store directory", root, e))?;
        let store = LocalStore { root: root.to_path_buf() };
        store.sweep();
        Ok(store)
    }

    /// Like [`LocalStore::open`], but a missing directory is an error (for
    /// commands that only read, so a typo does not create an empty store).
    pub fn open_existing(root: &Path) -> Result<Self, StoreError> {
        if !root.is_dir() {
            return Err(StoreError::NoStore { path: root.to_path_buf() });
        }
        Self::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `STORE/NAME/VERSION`. Pure path arithmetic: validate `name` and
    /// `version` first when they come from outside.
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.image_dir(name).join(version)
    }

    pub(crate) fn image_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether `name@version` is published (a complete version directory).
    pub fn exists(&self, name: &str, version: &str) -> bool {
        now(policy::exists(self, name, version)).unwrap_or(false)
    }

    fn has_manifest_file(&self, name: &str, version: &str) -> bool {
        self.version_dir(name, version).join(MANIFEST_FILE).is_file()
    }

    /// `YYYY.MM.DD.N` for `today`, with `N` one more than the highest
    /// published (or half-published) `N` of that day, starting at 1. Two
    /// builds racing for the same number are settled at commit: one gets
    /// [`StoreError::VersionExists`].
    pub fn next_auto_version(&self, name: &str, today: Day) -> Result<String, StoreError> {
        Ok(today.version(self.highest_auto_number(name, today)? + 1))
    }

    /// The highest `N` of `today`'s `YYYY.MM.DD.N` versions of `name`,
    /// half-published ones included (0 when none).
    pub fn highest_auto_number(&self, name: &str, today: Day) -> Result<u64, StoreError> {
        now(policy::highest_auto_number(self, name, today))
    }

    /// Starts publishing `name@version`: a fresh, locked staging directory
    /// for the exporter to write the artifact files into.
    pub fn begin(&self, name: &str, version: &str) -> Result<Staging, StoreError> {
        validate_name(name)?;
        validate_version(version)?;
        // Any entry at the target blocks the final rename; fail before the
        // (long) export instead of after it.
        if self.version_dir(name, version).symlink_metadata().is_ok() {
            return Err(StoreError::VersionExists { name: name.to_string(), version: version.to_string() });
        }
        let image_dir = self.image_dir(name);
        fs::create_dir_all(&image_dir).map_err(|e| StoreError::io("create directory", &image_dir, e))?;
        let staging = {
            // Under the store lock, a sweeper never sees the new directory
            // before its lock is held.
            let _lock = self.lock_store()?;
            Staging::create(self.clone(), name, version)?
        };
        pause_point("staged");
        Ok(staging)
    }

    /// Published versions, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let list = now(policy::versions(self, name))?;
        Ok(list
            .into_iter()
            .map(|v| VersionInfo {
                path: self.version_dir(name, &v.version),
                version: v.version,
                created_at: v.created_at,
                size: v.size,
                channels: v.channels,
            })
            .collect())
    }

    /// `created_at` from the manifest, as written there.
    fn created_at(&self, name: &str, version: &str) -> Option<String> {
        match self.manifest_file(name, version) {
            Ok(m) => m?.get("created_at").and_then(|v| v.as_str()).map(String::from),
            Err(e) => {
                tracing::warn!(error = %crate::error::chain(&e), "no creation time");
                None
            }
        }
    }

    /// Complete version directories of `name`, oldest first. Dot-directories
    /// (staging, trash) and directories without a manifest are not versions.
    pub(crate) fn visible_versions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut list = self.complete_version_names(name)?;
        list.sort_by(|a, b| versions::compare(a, b));
        Ok(list)
    }

    fn complete_version_names(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .dir_names(&self.image_dir(name))?
            .into_iter()
            .filter(|v| validate_version(v).is_ok() && self.has_manifest_file(name, v))
            .collect())
    }

    /// Images with at least one published version, sorted.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        for name in self.dir_names(&self.root)? {
            if validate_name(&name).is_ok() && !self.visible_versions(&name)?.is_empty() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// `NAME@VERSION`, `NAME@CHANNEL` or `NAME` (the `latest` channel) →
    /// `(name, version)` of a published version. Without a `latest` channel
    /// (a crash between publishing and updating it) the newest version is
    /// used.
    pub fn resolve(&self, spec: &str) -> Result<(String, String), StoreError> {
        now(policy::resolve(self, spec))
    }

    /// The parsed `manifest.json` of a published version.
    pub fn manifest(&self, name: &str, version: &str) -> Result<serde_json::Value, StoreError> {
        now(policy::manifest(self, name, version))
    }

    /// `None` when the version has no manifest.
    fn manifest_file(&self, name: &str, version: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let path = self.version_dir(name, version).join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", path, e)),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Channel → version for `name` (empty when none are set).
    pub fn channels(&self, name: &str) -> Result<BTreeMap<String, String>, StoreError> {
        now(policy::channels(self, name))
    }

    /// Points `channel` at `name@version`; returns the version it pointed at
    /// before, if any.
    pub fn promote(&self, name: &str, version: &str, channel: &str) -> Result<Option<String>, StoreError> {
        now(policy::promote(self, name, version, channel))
    }

    /// Under the store lock: `channel` → `version`, returning the old target.
    pub(crate) fn set_channel(&self, name: &str, channel: &str, version: &str) -> Result<Option<String>, StoreError> {
        let path = self.image_dir(name).join(CHANNELS_FILE);
        let mut channels = meta::read_channels(&path)?;
        let (previous, changed) = policy::point_channel(&mut channels, channel, version);
        if changed {
            meta::write_channels(&path, &channels)?;
        }
        Ok(previous)
    }

    /// Removes all but the newest `keep` versions of `name`, except versions
    /// a channel points at. Returns the removed versions, oldest first.
    ///
    /// Each victim is first renamed to a `.trash-*` directory (it disappears
    /// atomically for readers), the index is rewritten, and only then are the
    /// files deleted, outside the store lock.
    pub fn prune(&self, name: &str, keep: usize) -> Result<Vec<String>, StoreError> {
        now(policy::prune(self, name, keep))
    }

    /// Under the store lock: renames a version directory to a locked trash
    /// directory, so a crash before the deletion leaves something `open`
    /// sweeps.
    fn move_to_trash(&self, name: &str, version: &str) -> Result<Claimed, StoreError> {
        let from = self.version_dir(name, version);
        let trash = self.image_dir(name).join(format!("{TRASH_PREFIX}{}", fsio::random_suffix()));
        fs::rename(&from, &trash).map_err(|source| StoreError::Rename {
            from: from.clone(),
            to: trash.clone(),
            source,
        })?;
        let lock_path = trash.join(LOCK_FILE);
        let lock = open_lock(&lock_path, true).map_err(|e| StoreError::io("create", &lock_path, e))?;
        try_lock(&lock, &lock_path)?;
        Ok(Claimed { dir: trash, _lock: lock })
    }

    /// Re-hashes the files of a version directory (any directory with a
    /// `SHA256SUMS`) and compares them with the checksum lists and the
    /// manifest. Mismatches are in the report, not errors.
    pub fn verify(&self, dir: &Path) -> Result<VerifyReport, StoreError> {
        verify_dir(dir)
    }

    /// Takes the exclusive store lock, waiting for other holders. Held only
    /// for short metadata updates.
    pub(crate) fn lock_store(&self) -> Result<StoreLock, StoreError> {
        let path = self.root.join(LOCK_FILE);
        let file = open_lock(&path, true).map_err(|e| StoreError::io("open", &path, e))?;
        fsio::lock(&file, &path)?;
        Ok(StoreLock { _file: file })
    }

    /// Under the store lock: rewrites `index.json` from the directories on
    /// disk; `touched` gets a new `updated_at`, others keep theirs.
    pub(crate) fn rebuild_index(&self, touched: &str) -> Result<(), StoreError> {
        let path = self.root.join(INDEX_FILE);
        let old = meta::read_index(&path);
        let now = jiff::Timestamp::now().to_string();
        let mut images = BTreeMap::new();
        for name in self.names()? {
            let updated_at = match old.as_ref().and_then(|i| i.images.get(&name)) {
                Some(entry) if name != touched => entry.updated_at.clone(),
                _ => now.clone(),
            };
            let versions = self.visible_versions(&name)?;
            images.insert(name, IndexEntry { versions, updated_at });
        }
        let index = Index { schema_version: meta::INDEX_SCHEMA_VERSION, images };
        meta::write_index(&path, &index)
    }

    /// Names of the entries in `dir` that are directories and do not start
    /// with a dot. A missing `dir` has none.
    fn dir_names(&self, dir: &Path) -> Result<Vec<String>, StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("read directory", dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            match entry.file_name().into_string() {
                Ok(name) if is_dir && !name.starts_with('.') => names.push(name),
                _ => {}
            }
        }
        Ok(names)
    }

    // ------------------------------------------------------------- sweeping

    fn sweep(&self) {
        if let Err(e) = self.try_sweep() {
            tracing::warn!(error = %crate::error::chain(&e), "could not clean up the store");
        }
    }

    /// Claims abandoned staging/trash directories under the store lock, then
    /// deletes them without it (deleting an image can take a while).
    fn try_sweep(&self) -> Result<(), StoreError> {
        let claimed = {
            let _lock = self.lock_store()?;
            remove_atomic_temps(&self.root);
            let mut claimed = Vec::new();
            for name in self.dir_names(&self.root)? {
                let image_dir = self.image_dir(&name);
                remove_atomic_temps(&image_dir);
                claimed.extend(claim_abandoned_in(&image_dir));
            }
            claimed
        };
        for c in claimed {
            delete_claimed(c);
        }
        Ok(())
    }
}

/// Runs a store policy function on the local store. Its primitives do their
/// (blocking) file-system work without ever waiting on another future, so the
/// policy completes in one pass on the calling thread, inside or outside an
/// async runtime alike. Primitives never call back into these wrappers.
fn now<T>(policy_call: impl std::future::Future<Output = T>) -> T {
    futures::executor::block_on(policy_call)
}

/// The local directory as a backend of the store policy.
#[async_trait::async_trait]
impl Backend for LocalStore {
    type Error = StoreError;
    type Guard = StoreLock;
    type Removed = Vec<Claimed>;

    fn refuse(&self, refusal: Refusal) -> StoreError {
        StoreError::refused(refusal, &self.root)
    }

    async fn lock(&self) -> Result<StoreLock, StoreError> {
        self.lock_store()
    }

    async fn complete_versions(&self, name: &str, details: bool) -> Result<Vec<Listed>, StoreError> {
        Ok(self
            .complete_version_names(name)?
            .into_iter()
            .map(|version| match details {
                true => Listed {
                    size: dir_size(&self.version_dir(name, &version)),
                    created_at: self.created_at(name, &version),
                    version,
                },
                false => Listed { version, size: 0, created_at: None },
            })
            .collect())
    }

    /// Half-published versions too: a crash between the rename and the
    /// channel update must not hand out the same `auto` number again.
    async fn taken_versions(&self, name: &str) -> Result<Vec<String>, StoreError> {
        self.dir_names(&self.image_dir(name))
    }

    async fn has_manifest(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        Ok(self.has_manifest_file(name, version))
    }

    async fn read_manifest(&self, name: &str, version: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.manifest_file(name, version)
    }

    async fn read_channels(&self, name: &str) -> Result<BTreeMap<String, String>, StoreError> {
        meta::read_channels(&self.image_dir(name).join(CHANNELS_FILE))
    }

    /// Called under the store lock, which serialises every writer.
    async fn write_channel(&self, name: &str, channel: &str, version: &str) -> Result<Option<String>, StoreError> {
        self.set_channel(name, channel, version)
    }

    async fn remove_versions(&self, name: &str, versions: &[String]) -> Result<Vec<Claimed>, StoreError> {
        let mut claimed = Vec::new();
        for version in versions {
            claimed.push(self.move_to_trash(name, version)?);
        }
        fsio::sync_dir(&self.image_dir(name))?;
        self.rebuild_index(name)?;
        Ok(claimed)
    }

    async fn purge(&self, claimed: Vec<Claimed>) {
        for c in claimed {
            delete_claimed(c);
        }
    }
}

/// Every `.staging-*` / `.trash-*` directory of an image whose owner is gone.
fn claim_abandoned_in(image_dir: &Path) -> Vec<Claimed> {
    let entries = match read_dir(image_dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "cannot look for leftovers");
            return Vec::new();
        }
    };
    let mut claimed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(STAGING_PREFIX) || name.starts_with(TRASH_PREFIX)) {
            continue;
        }
        match claim_if_abandoned(&entry.path()) {
            Ok(Some(c)) => claimed.push(c),
            Ok(None) => tracing::debug!(dir = %name, "in use by a live process"),
            Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot clean up"),
        }
    }
    claimed
}

/// Takes the directory's lock if nobody holds it. flocks die with their
/// process, so a free lock means the owner is gone. A directory without a
/// lock file is abandoned too: owners create it under the store lock, which
/// the caller holds, so it cannot be about to appear.
fn claim_if_abandoned(dir: &Path) -> Result<Option<Claimed>, StoreError> {
    let lock_path = dir.join(LOCK_FILE);
    let file = match open_lock(&lock_path, false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match open_lock(&lock_path, true) {
            Ok(file) => file,
            // The directory itself is gone: its owner just finished removing it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("create", lock_path, e)),
        },
        Err(e) => return Err(StoreError::io("open", lock_path, e)),
    };
    if !try_lock(&file, &lock_path)? {
        return Ok(None);
    }
    Ok(Some(Claimed { dir: dir.to_path_buf(), _lock: file }))
}

fn delete_claimed(claimed: Claimed) {
    tracing::debug!(dir = %claimed.dir.display(), "removing");
    if let Err(e) = remove_locked_dir(&claimed.dir) {
        tracing::warn!(error = %crate::error::chain(&e), "could not remove a leftover directory");
    }
}

/// Deletes `.<file>.tmp-*` files left by a crash during an atomic write.
/// Only called under the store lock, which every writer of them holds.
fn remove_atomic_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && fsio::is_atomic_temp(&name)
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), error = %e, "could not remove");
        }
    }
}

/// Sum of the sizes of the regular files directly in `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
}
