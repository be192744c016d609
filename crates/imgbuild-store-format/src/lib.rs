//! The artifact store format shared by imgbuild's local store and its S3
//! store (and the template's name rule): what a valid image name, version
//! and channel is, how versions are ordered, and the checksum lists
//! (`SHA256SUMS`) every version carries. Pure functions, no I/O, so both
//! stores and the template decoder agree by construction.

pub mod index;
pub mod names;
pub mod sums;
pub mod verify;

pub use index::{Index, IndexEntry};
pub use names::{Day, Version, check_name, compare, is_valid_channel, is_valid_version};
pub use sums::{Algo, BadLine, SumsEntry, format_sums, is_safe_file_name, parse_sums};
pub use verify::{MANIFEST_FILE, Plan, Problem, bad_files};
