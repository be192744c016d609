//! File-system primitives of the store: fsync, atomic replace, no-clobber
//! directory rename, flock and lock-aware removal.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// The lock file inside the store root and inside staging and trash dirs.
pub(crate) const LOCK_FILE: &str = ".lock";

/// Flushes a file's data and metadata to disk.
pub(crate) fn sync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| StoreError::io("fsync", path, e))
}

/// Makes renames and creations inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    // On Linux a directory opened read-only can be fsynced.
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// fsyncs every regular file below `dir` (artifacts were written by someone
/// else, who may not have synced them), then the directories themselves.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in read_dir(dir)? {
        let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| StoreError::io("stat", &path, e))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            sync_file(&path)?;
        }
    }
    sync_dir(dir)
}

pub(crate) fn read_dir(dir: &Path) -> Result<fs::ReadDir, StoreError> {
    fs::read_dir(dir).map_err(|e| StoreError::io("read directory", dir, e))
}

/// Replaces `path` with `bytes` so that readers see the old or the new
/// content, never a mix: temp file in the same directory, fsync, rename,
/// fsync the directory.
///
/// Temp files are named `.<file name>.tmp-*`. Callers hold the store lock,
/// which is what lets `LocalStore::open` delete leftovers of a crash.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = parent(path);
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.tmp-"))
        .tempfile_in(dir)
        .map_err(|e| StoreError::io("create a temporary file in", dir, e))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| StoreError::io("write", temp.path().to_path_buf(), e))?;
    temp.persist(path).map_err(|e| StoreError::io("replace", path, e.error))?;
    sync_dir(dir)
}

/// Whether a temp file name was made by [`write_atomic`].
pub(crate) fn is_atomic_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Why a no-clobber rename did not happen.
pub(crate) enum RenameError {
    /// The target exists (and, for directories, is not empty).
    Exists,
    Other(io::Error),
}

/// Renames `from` to `to` unless `to` exists: `renameat2(RENAME_NOREPLACE)`,
/// falling back to `rename(2)` on file systems that do not support the flag.
/// The fallback is only safe for directories whose target would be non-empty
/// (version directories always hold `manifest.json`): `rename` then fails
/// with `ENOTEMPTY`/`EEXIST` instead of replacing.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<(), RenameError> {
    match renameat2_noreplace(from, to) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            tracing::debug!(error = %e, "renameat2 unsupported here; using rename");
            fs::rename(from, to).map_err(classify_rename)
        }
        Err(e) => Err(classify_rename(e)),
    }
}

fn classify_rename(e: io::Error) -> RenameError {
    if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) {
        RenameError::Exists
    } else {
        RenameError::Other(e)
    }
}

#[cfg(target_os = "linux")]
fn renameat2_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // The raw syscall works with glibc and musl alike (musl has no wrapper).
    // SAFETY: both pointers are NUL-terminated strings that outlive the call;
    // the flags argument is a plain integer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn renameat2_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// Opens (creating if asked) a lock file.
pub(crate) fn open_lock(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)
}

/// Blocks until the exclusive flock is ours. Released when the file closes,
/// including when the process dies.
pub(crate) fn lock(file: &File, path: &Path) -> Result<(), StoreError> {
    // Fully qualified: `File::lock` in newer std would shadow the trait method.
    fs4::FileExt::lock(file).map_err(|source| StoreError::Lock { path: path.to_path_buf(), source })
}

/// `Ok(false)` when another open file (in any process) holds the lock.
pub(crate) fn try_lock(file: &File, path: &Path) -> Result<bool, StoreError> {
    match fs4::FileExt::try_lock(file) {
        Ok(()) => Ok(true),
        Err(fs4::TryLockError::WouldBlock) => Ok(false),
        Err(fs4::TryLockError::Error(source)) => Err(StoreError::Lock { path: path.to_path_buf(), source }),
    }
}

/// A random suffix for staging and trash directory names.
pub(crate) fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Removes a staging or trash directory, deleting its `.lock` last so the
/// directory never looks abandoned-without-lock while content remains.
/// Entries already gone (a concurrent sweeper) are not an error.
pub(crate) fn remove_locked_dir(dir: &Path) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io("read directory", dir, e))?;
        if entry.file_name() != LOCK_FILE {
            remove_any(&entry.path())?;
        }
    }
    let lock = dir.join(LOCK_FILE);
    ignore_missing(fs::remove_file(&lock)).map_err(|e| StoreError::io("remove", lock, e))?;
    ignore_missing(fs::remove_dir(dir)).map_err(|e| StoreError::io("remove directory", dir, e))
}

fn remove_any(path: &Path) -> Result<(), StoreError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("stat", path, e)),
    };
    let result = if meta.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) };
    ignore_missing(result).map_err(|e| StoreError::io("remove", PathBuf::from(path), e))
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_file(path: &Path) {
        fs::create_dir(path).unwrap();
        fs::write(path.join("f"), b"x").unwrap();
    }

    #[test]
    fn never_replaces_a_non_empty_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        dir_with_file(&a);
        dir_with_file(&b);
        assert!(matches!(rename_noreplace(&a, &b), Err(RenameError::Exists)));
        assert!(a.join("f").is_file());
        fs::remove_dir_all(&b).unwrap();
        assert!(rename_noreplace(&a, &b).is_ok());
        assert!(b.join("f").is_file() && !a.exists());
    }

    /// With `RENAME_NOREPLACE` even an empty target survives (plain `rename`
    /// would replace it). A file system without the flag fails under CI (see `crate::testing`).
    #[cfg(target_os = "linux")]
    #[test]
    fn renameat2_refuses_an_empty_target() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        dir_with_file(&a);
        fs::create_dir(&b).unwrap();
        match renameat2_noreplace(&a, &b) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                crate::testing::require(
                    false,
                    &format!("renameat2(RENAME_NOREPLACE) on {}", tmp.path().display()),
                    "run the tests on a file system with RENAME_NOREPLACE (ext4, xfs, btrfs, tmpfs)",
                );
            }
            other => assert_eq!(other.map_err(|e| e.raw_os_error()), Err(Some(libc::EEXIST))),
        }
    }

    #[test]
    fn removal_tolerates_missing_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        dir_with_file(&dir);
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join(LOCK_FILE), b"").unwrap();
        remove_locked_dir(&dir).unwrap();
        assert!(!dir.exists());
        remove_locked_dir(&dir).unwrap();
    }
}
