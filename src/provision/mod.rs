//! Provisioners: the steps that configure the machine.

mod local;
pub mod remote;

use crate::build::BuildState;
use crate::runner::StepContext;
use crate::template::{Provisioner, ProvisionerKind, units::Dur};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("did not finish within {timeout}")]
    Timeout { timeout: Dur },
    #[error("cannot read script {path}")]
    ReadScript {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error("{what} exited with {status}{}", tail_text(.tail))]
    ExitStatus { what: String, status: String, tail: Vec<String> },
    #[error(transparent)]
    Missing(#[from] crate::build::MissingState),
    #[error(transparent)]
    Ssh(#[from] crate::communicator::SshError),
    #[error(transparent)]
    Machine(#[from] crate::builder::qemu::QemuError),
    #[error("QEMU exited ({status}) during provisioning\n--- serial console (last lines) ---\n{console}")]
    VmExited { status: String, console: String },
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        return String::new();
    }
    format!("; last output:\n      {}", tail.join("\n      "))
}

/// A provisioner failure, naming the provisioner by its place in the template.
#[derive(Debug, thiserror::Error)]
#[error("provisioners[{index}] ({kind}) failed")]
pub struct StepFailed {
    pub index: usize,
    pub kind: &'static str,
    #[source]
    pub source: ProvisionError,
}

pub async fn run(
    index: usize,
    provisioner: &Provisioner,
    state: &mut BuildState,
    _cx: &mut StepContext,
) -> Result<(), ProvisionError> {
    let label = format!("provisioners[{index}]");
    match &provisioner.kind {
        ProvisionerKind::ShellLocal(local) => local::run(&label, local, state).await,
        ProvisionerKind::Shell(shell) => remote::run_shell(&label, index, shell, state).await,
        ProvisionerKind::File(file) => remote::run_file(file, state).await,
    }
}
