//! `imgbuild gc`: runs [`crate::builder::ec2::gc`] and maps its outcome to an exit code.

use super::cli::GcArgs;
use crate::error::ExitCode;

#[cfg(feature = "aws")]
pub async fn run(args: &GcArgs) -> ExitCode {
    use crate::builder::ec2::gc::{self, GcOptions};
    let options = GcOptions {
        regions: args.region.clone(),
        older_than: args.older_than.map(|d| d.0),
        dry_run: args.dry_run,
        endpoint_url: args.endpoint_url.clone(),
    };
    match gc::run(&options, &super::reporter()).await {
        Ok(true) => ExitCode::Success,
        Ok(false) => ExitCode::BuildFailed,
        Err(e) => {
            super::report_error(&crate::error::chain(&e));
            ExitCode::Usage
        }
    }
}

#[cfg(not(feature = "aws"))]
pub async fn run(_: &GcArgs) -> ExitCode {
    super::report_error("this imgbuild was built without AWS support (cargo feature `aws`)");
    ExitCode::Usage
}
