//! imgbuild: build, verify and publish golden machine images from JSON
//! templates. The library prints nothing: it returns data and reports
//! through [`report::BuildReporter`]. The command-line face ([`face`])
//! prints and chooses exit codes; the binary (`src/main.rs`) only calls it.

pub mod build;
pub mod builder;
pub mod changed;
pub mod communicator;
pub mod digest;
pub mod diskimage;
pub mod error;
pub mod export;
pub mod face;
pub mod fmt;
pub mod inputs;
pub mod lint;
pub mod machine;
pub mod metrics;
pub mod process;
pub mod provision;
pub mod redact;
pub mod report;
pub mod runner;
pub mod source;
pub mod store;
pub mod template;
#[doc(hidden)]
pub mod testing;
pub mod verify;
