//! imgbuild: build, verify and publish golden machine images from JSON
//! templates. The binary (`src/main.rs`) only parses arguments and calls
//! [`app::run`].

pub mod app;
pub mod build;
pub mod builder;
pub mod changed;
pub mod cli;
pub mod communicator;
pub mod digest;
pub mod diskimage;
pub mod error;
pub mod export;
pub mod fmt;
pub mod inputs;
pub mod lint;
pub mod machine;
pub mod metrics;
pub mod process;
pub mod provision;
pub mod redact;
pub mod runner;
pub mod signals;
pub mod source;
pub mod store;
pub mod template;
#[doc(hidden)]
pub mod testing;
pub mod ui;
pub mod verify;
