//! Builders: what boots the source. `qemu` runs a local guest.

pub mod qemu;
