//! The artifact store: published images, their versions and channels.
//!
//! Layout of a local store:
//!
//! ```text
//! STORE/
//!   .lock                    flock: guards channels.json and index.json updates
//!   index.json               {"schema_version":1,"images":{NAME:{"versions":[..],"updated_at":".."}}}
//!   NAME/
//!     channels.json          {"latest": "1.4.0", "stable": "1.3.0"}
//!     VERSION/               artifact files, manifest.json, SHA256SUMS[, SHA512SUMS]
//!     .staging-<random>/     a publish in progress (holds a flock on .lock)
//!     .trash-<random>/       a version being deleted by prune
//! ```
//!
//! Publishing ([`LocalStore::begin`] → write files → [`Staging::commit`])
//! renames a fully written and fsynced staging directory into place with
//! `renameat2(RENAME_NOREPLACE)`, so a version is either absent or complete,
//! and of two publishers of the same version exactly one wins. Readers skip
//! dot-directories and directories without `manifest.json`.
//!
//! A process killed mid-publish leaves a `.staging-*` directory whose flock
//! died with it; the next [`LocalStore::open`] deletes it. Live publishers
//! hold their flock, so they are never disturbed.
//!
//! `manifest.json` is written by the caller; the store reads `created_at`
//! (RFC 3339 text) and `artifacts[]`, each with `file` (or `name`) and
//! `digests`: `{"sha256": "<hex>", "sha512": "<hex>"}` (values may also be
//! `sha256:<hex>`) or an array of `algo:<hex>` strings.

pub mod any;
mod error;
mod fsio;
mod local;
mod meta;
pub mod s3;
mod staging;
mod sums;
mod verify;
mod versions;

use std::io::Write;
use std::time::Duration;

pub use error::StoreError;
pub use imgbuild_store_format::{ChannelError, Day, InvalidInput, LATEST};
pub use local::{LocalStore, VersionInfo};
pub use staging::Staging;
pub use sums::{SumsEntry, format_sums, sums_file_name};
pub(crate) use verify::verify_dir;
pub use verify::{InDir, Problem, VerifyReport};
pub use versions::{compare as compare_versions, validate_channel, validate_name, validate_version};

/// Today in the local time zone: the day of the `auto` versions a build takes.
pub fn today() -> Day {
    let date = jiff::Zoned::now().date();
    // jiff's civil dates are years -9999..=9999; an `auto` version needs a four-digit year.
    Day { year: u16::try_from(date.year()).unwrap_or(0), month: date.month() as u8, day: date.day() as u8 }
}

/// The manifest file in every version directory.
pub const MANIFEST_FILE: &str = "manifest.json";

const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";

/// Environment variable naming the stage at which [`pause_point`] stops.
pub const PAUSE_ENV: &str = "IMGBUILD_TEST_PAUSE_AT";
/// How long [`pause_point`] sleeps (long enough for a test to `kill -9`).
pub const PAUSE_DURATION: Duration = Duration::from_secs(60);
/// The stages of a publish, in order, at which [`pause_point`] can stop:
///
/// * `staged` — after `begin` created and locked the staging directory
/// * `files-synced` — manifest and checksum lists written, everything fsynced
/// * `before-rename` / `after-rename` — around the rename into place
/// * `before-channels` / `after-channels` — around the `latest` update (store
///   lock held)
/// * `before-index` — before the index rewrite (store lock held)
/// * `s3-uploading` — an S3 publish has uploaded its first part of a
///   multipart upload; the upload is open, more parts are in flight
/// * `s3-before-manifest` — the artifact files and `SHA256SUMS` of an S3
///   publish are complete; `manifest.json` is not written yet
pub const PAUSE_STAGES: &[&str] = &[
    "staged",
    "files-synced",
    "before-rename",
    "after-rename",
    "before-channels",
    "after-channels",
    "before-index",
    "s3-uploading",
    "s3-before-manifest",
];

/// Crash-test hook, inert unless `IMGBUILD_TEST_PAUSE_AT` equals `stage`.
///
/// Then it prints `IMGBUILD_PAUSED <stage>` on stderr and sleeps for
/// [`PAUSE_DURATION`], so a test can wait for that line and `kill -9` the
/// process at a known point of a publish:
///
/// ```text
/// IMGBUILD_TEST_PAUSE_AT=before-rename imgbuild publish ...   # wait for the
/// # line on stderr, SIGKILL, then check the store and that `open` sweeps.
/// ```
pub fn pause_point(stage: &str) {
    let Some(wanted) = std::env::var_os(PAUSE_ENV) else {
        return;
    };
    if wanted != stage {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "IMGBUILD_PAUSED {stage}");
    let _ = err.flush();
    drop(err);
    std::thread::sleep(PAUSE_DURATION);
}
