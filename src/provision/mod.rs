//! Provisioners: the steps that configure the machine.

mod local;
pub mod remote;

use crate::build::BuildState;
use crate::communicator::Raced;
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
    Machine(#[from] crate::machine::MachineError),
    /// The machine went away under the provisioner (its builder says how).
    #[error(transparent)]
    MachineGone(#[from] crate::communicator::MachineGone),
}

impl ProvisionError {
    /// A failure that a machine going away also causes.
    fn connection_lost(&self) -> bool {
        matches!(self, ProvisionError::Ssh(_) | ProvisionError::Machine(_))
    }
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
    // A machine that dies mid-provision fails the step at once, not at a timeout.
    let watch = state.machine.as_ref().and_then(|m| m.watch());
    let work = async {
        match &provisioner.kind {
            ProvisionerKind::ShellLocal(local) => local::run(&label, local, state).await,
            ProvisionerKind::Shell(shell) => remote::run_shell(&label, index, shell, state).await,
            ProvisionerKind::File(file) => remote::run_file(file, state).await,
        }
    };
    match crate::communicator::unless_gone(watch.as_deref(), work, ProvisionError::connection_lost).await {
        Ok(()) => Ok(()),
        Err(Raced::Failed(e)) => Err(e),
        Err(Raced::Gone(gone)) => Err(gone.into()),
    }
}
