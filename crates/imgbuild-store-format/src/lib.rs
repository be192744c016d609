//! The artifact store shared by imgbuild's local store and its S3 store
//! (and the template's name rule): what a valid image name, version and
//! channel is, how versions are ordered, the checksum lists (`SHA256SUMS`)
//! every version carries, the one file hasher, and the store [`policy`]
//! (resolve, channels, promote, prune, `auto` versions) written once over a
//! backend trait that the local directory and S3 implement. It opens no
//! files and sends no requests itself, so both stores and the template
//! decoder agree by construction.

pub mod hash;
pub mod index;
pub mod names;
pub mod policy;
pub mod sums;
pub mod verify;

pub use hash::{Digests, MultiHasher, hash_reader, sha256_hex};
pub use index::{Index, IndexEntry};
pub use names::{Day, Version, check_name, compare, is_valid_channel, is_valid_version};
pub use policy::{Backend, ChannelError, InvalidInput, IoFailure, LATEST, Listed, Listing, Refusal};
pub use sums::{Algo, BadLine, SumsEntry, format_sums, is_safe_file_name, parse_sums};
pub use verify::{MANIFEST_FILE, Plan, Problem, VerifyReport, bad_files};
