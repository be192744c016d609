//! A version being published: a locked `.staging-*` directory that becomes
//! `STORE/NAME/VERSION` with one atomic rename.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::fsio::{self, LOCK_FILE, RenameError, open_lock, try_lock};
use super::local::LocalStore;
use super::sums::{parse_sums, sums_file_name};
use super::{LATEST, MANIFEST_FILE, STAGING_PREFIX, pause_point};
use crate::source::DigestAlgo;

/// A staging directory for `name@version`, made by [`LocalStore::begin`].
///
/// The exporter writes the artifact files straight into [`Staging::dir`];
/// [`Staging::commit`] publishes them without copying. While the value lives,
/// an exclusive flock on `dir/.lock` tells `LocalStore::open` in other
/// processes that the directory is in use. Dropped without a commit, the
/// directory is removed.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    store: LocalStore,
    name: String,
    version: String,
    /// Held until the directory is published or removed.
    lock: Option<File>,
    /// Whether drop removes `dir` (false once renamed into place).
    remove_on_drop: bool,
}

impl Staging {
    /// Called under the store lock: creates and locks the directory.
    pub(crate) fn create(store: LocalStore, name: &str, version: &str) -> Result<Self, StoreError> {
        let dir = store.image_dir(name).join(format!("{STAGING_PREFIX}{}", fsio::random_suffix()));
        fs::create_dir(&dir).map_err(|e| StoreError::io("create directory", &dir, e))?;
        let mut staging = Staging {
            dir,
            store,
            name: name.to_string(),
            version: version.to_string(),
            lock: None,
            remove_on_drop: true,
        };
        // On error, drop removes the half-made directory.
        staging.lock = Some(staging.take_lock()?);
        Ok(staging)
    }

    fn take_lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        let file = open_lock(&path, true).map_err(|e| StoreError::io("create", &path, e))?;
        if !try_lock(&file, &path)? {
            return Err(StoreError::Lock { path, source: std::io::Error::other("held by another process") });
        }
        Ok(file)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// Publishes the directory as `STORE/NAME/VERSION` and returns that path.
    ///
    /// Writes `manifest.json` and one checksum list per `(algo, body)`
    /// (`SHA256SUMS` is required; every file it lists must be in the
    /// directory), fsyncs everything, renames without replacing, then moves
    /// the `latest` channel here and rewrites the index under the store lock.
    ///
    /// If another publisher got `name@version` first, this returns
    /// [`StoreError::VersionExists`] and the staging directory is removed.
    /// Errors after the rename are [`StoreError::PublishedWithoutMetadata`]:
    /// the version is visible then, only `latest`/the index lag behind.
    pub fn commit(
        mut self,
        manifest: &serde_json::Value,
        sums: &[(DigestAlgo, String)],
    ) -> Result<PathBuf, StoreError> {
        self.write_metadata(manifest, sums)?;
        fsio::sync_tree(&self.dir)?;
        pause_point("files-synced");
        let target = self.store.version_dir(&self.name, &self.version);
        pause_point("before-rename");
        self.rename_into_place(&target)?;
        pause_point("after-rename");
        self.finish(&target).map_err(|source| StoreError::PublishedWithoutMetadata {
            name: self.name.clone(),
            version: self.version.clone(),
            source: Box::new(source),
        })?;
        Ok(target)
    }

    fn write_metadata(&self, manifest: &serde_json::Value, sums: &[(DigestAlgo, String)]) -> Result<(), StoreError> {
        if !sums.iter().any(|(algo, _)| *algo == DigestAlgo::Sha256) {
            return Err(StoreError::MissingSha256Sums { dir: self.dir.clone() });
        }
        for (algo, body) in sums {
            self.write_sums(*algo, body)?;
        }
        let path = self.dir.join(MANIFEST_FILE);
        let mut bytes = serde_json::to_vec_pretty(manifest)
            .map_err(|source| StoreError::Serialize { path: path.clone(), source })?;
        bytes.push(b'\n');
        fs::write(&path, bytes).map_err(|e| StoreError::io("write", path, e))
    }

    /// Checks the list before writing it: a list naming a file that is not
    /// there would publish a version that can never verify.
    fn write_sums(&self, algo: DigestAlgo, body: &str) -> Result<(), StoreError> {
        let list = sums_file_name(algo);
        let path = self.dir.join(&list);
        for entry in parse_sums(body, &path, algo)? {
            if !self.dir.join(&entry.file).is_file() {
                return Err(StoreError::ListedFileMissing { list, file: entry.file, dir: self.dir.clone() });
            }
        }
        let mut text = body.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        fs::write(&path, text).map_err(|e| StoreError::io("write", path, e))
    }

    /// Exactly one of several publishers of the same version wins here.
    ///
    /// The lock file is removed and the directory renamed under the store
    /// lock: sweepers only look under it, so they never see this directory
    /// without a lock, and the published version carries no `.lock`.
    fn rename_into_place(&mut self, target: &Path) -> Result<(), StoreError> {
        let _store_lock = self.store.lock_store()?;
        let lock_path = self.dir.join(LOCK_FILE);
        fs::remove_file(&lock_path).map_err(|e| StoreError::io("remove", lock_path, e))?;
        let error = match fsio::rename_noreplace(&self.dir, target) {
            Ok(()) => {
                self.remove_on_drop = false;
                self.lock = None;
                return Ok(());
            }
            Err(RenameError::Exists) => {
                StoreError::VersionExists { name: self.name.clone(), version: self.version.clone() }
            }
            Err(RenameError::Other(source)) => {
                StoreError::Rename { from: self.dir.clone(), to: target.to_path_buf(), source }
            }
        };
        // Still ours until dropped: lock it again before a sweeper can look.
        match self.take_lock() {
            Ok(file) => self.lock = Some(file),
            Err(e) => tracing::warn!(error = %crate::error::chain(&e), "cannot re-lock the staging directory"),
        }
        Err(error)
    }

    /// After the rename: make it durable, then update `latest` and the index.
    fn finish(&self, target: &Path) -> Result<(), StoreError> {
        // The version dir itself (the lock file went), its parent (the
        // rename), and the root (the image directory may be new).
        fsio::sync_dir(target)?;
        fsio::sync_dir(&self.store.image_dir(&self.name))?;
        fsio::sync_dir(self.store.root())?;
        let _lock = self.store.lock_store()?;
        pause_point("before-channels");
        self.store.set_channel(&self.name, LATEST, &self.version)?;
        pause_point("after-channels");
        pause_point("before-index");
        self.store.rebuild_index(&self.name)
    }

    /// Test helper that simulates a crashed publisher: releases the lock and
    /// leaves the directory behind, as a killed process would.
    #[doc(hidden)]
    pub fn abandon(mut self) -> PathBuf {
        self.remove_on_drop = false;
        self.lock = None;
        self.dir.clone()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        // Best effort: a leftover is swept by the next `LocalStore::open`.
        if let Err(e) = fsio::remove_locked_dir(&self.dir) {
            tracing::warn!(error = %crate::error::chain(&e), "could not remove the staging directory");
        }
    }
}
