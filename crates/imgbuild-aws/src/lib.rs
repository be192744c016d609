//! AWS support for imgbuild: the EC2 calls of the `ec2` builder and `gc`
//! ([`ec2`]), and the S3 publish target ([`S3Store`]).
//!
//! [`S3Store`] keeps versioned images in a bucket in the layout of the local
//! store (`imgbuild::store`, see `docs/store.md`), under a key prefix:
//!
//! ```text
//! s3://BUCKET/PREFIX/
//!   index.json                 {"schema_version":1,"images":{NAME:{"versions":[..],"updated_at":".."}}}
//!   NAME/
//!     channels.json            {"latest": "1.4.0", "stable": "1.3.0"}
//!     VERSION/
//!       NAME-VERSION.qcow2     artifacts, each with x-amz-meta-sha256
//!       SHA256SUMS             always; SHA512SUMS optional
//!       manifest.json          written last: its presence makes the version visible
//! ```
//!
//! Guarantees, in S3 terms:
//!
//! * **A version is either invisible or complete.** Readers count a version
//!   only if its `manifest.json` exists, and [`S3Store::publish`] writes it
//!   after every artifact and checksum list. A publisher killed mid-upload
//!   leaves an open multipart upload (or completed files without a
//!   manifest), never a visible version; [`S3Store::cleanup_stale_uploads`]
//!   removes both.
//! * **Published versions are immutable.** Every object is written with
//!   `If-None-Match: *`; nothing is ever overwritten. Of two publishers of
//!   the same version exactly one wins; the other gets an "already exists"
//!   error ([`S3Error::is_already_exists`]).
//! * **Metadata updates do not lose writes.** `channels.json` and
//!   `index.json` are rewritten with `If-Match` on the ETag that was read,
//!   and retried when another writer got in between. The index is derived
//!   data, rebuilt per image from a listing, and never read to find versions.
//! * **Bounded memory.** Large files go up as multipart uploads read from
//!   disk part by part: at most `concurrency` parts (default 4 × 8 MiB) are
//!   in memory. Each part carries its SHA-256 for S3 to check; the file is
//!   re-hashed on the way and the upload is aborted if it does not match the
//!   digest the caller recorded.
//!
//! Names, versions, channels, their order and the `SHA256SUMS` format are
//! the local store's: both use `imgbuild-store-format`.

mod config;
pub mod ec2;
mod error;
mod names;
mod publish;
mod store;
mod sums;
mod verify;

pub use config::{EndpointError, load as load_sdk_config, sdk_loader};
pub use error::{BoxError, S3Error};
/// The channel every publish moves, and what a bare image name resolves to.
pub use imgbuild_store_format::{InvalidInput, LATEST};
pub use names::{compare as compare_versions, validate_channel, validate_name, validate_version};
pub use publish::{ArtifactFile, Progress, Published, SHA256_METADATA};
pub use store::{
    CleanupReport, DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE, MAX_PART_SIZE, MIN_PART_SIZE, S3Store, S3Target, VersionInfo,
};
pub use sums::{Algo, SumsEntry, format_sums, parse_sums};
pub use verify::{AtUrl, METADATA_SOURCE, Problem, VerifyReport};

/// The manifest object of every version; its presence publishes the version.
pub const MANIFEST_FILE: &str = "manifest.json";
/// `PREFIX/NAME/channels.json`.
pub const CHANNELS_FILE: &str = "channels.json";
/// `PREFIX/index.json`.
pub const INDEX_FILE: &str = "index.json";
pub(crate) const INDEX_SCHEMA_VERSION: u32 = 1;

/// An error and its sources, joined with `: ` (for reports and logs).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
