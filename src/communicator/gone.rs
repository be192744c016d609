//! The machine at the other end of an SSH session can go away (QEMU killed,
//! an instance terminated). Then every SSH operation fails with a lost
//! connection or hangs until a timeout, neither of which says what
//! happened. Operations on a build machine therefore race against its
//! builder's [`MachineWatch`], and the machine's end is the error reported.

use std::future::Future;
use std::time::Duration;

/// How a build machine went away, in its builder's words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}{details}")]
pub struct MachineGone {
    /// One line: what ended and how, e.g. `QEMU exited (signal: 9 (SIGKILL))`.
    pub what: String,
    /// Further lines (a console tail, starting with a newline), or empty.
    pub details: String,
}

/// A builder's view of whether its machine still runs.
#[async_trait::async_trait]
pub trait MachineWatch: Send + Sync {
    /// Resolves once the machine is gone; pending for as long as it runs.
    async fn gone(&self) -> MachineGone;
}

/// After an operation failed on a lost connection: how long the machine's
/// end may take to be observed (the connection usually drops a moment
/// before the builder reaps the process).
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Why [`unless_gone`] did not return the operation's result.
#[derive(Debug)]
pub enum Raced<E> {
    /// The operation failed while the machine was up.
    Failed(E),
    /// The machine went away first (or just after the operation lost its connection).
    Gone(MachineGone),
}

/// Runs `op` unless the machine goes away first. An error for which
/// `connection_lost` holds is often the first sign of the machine's end, so
/// it is reported as such when the end follows within [`EXIT_GRACE`].
/// Without a watch, `op` runs as it is.
pub async fn unless_gone<T, E>(
    watch: Option<&dyn MachineWatch>,
    op: impl Future<Output = Result<T, E>>,
    connection_lost: impl Fn(&E) -> bool,
) -> Result<T, Raced<E>> {
    race(watch, op, connection_lost, EXIT_GRACE).await
}

async fn race<T, E>(
    watch: Option<&dyn MachineWatch>,
    op: impl Future<Output = Result<T, E>>,
    connection_lost: impl Fn(&E) -> bool,
    grace: Duration,
) -> Result<T, Raced<E>> {
    let Some(watch) = watch else { return op.await.map_err(Raced::Failed) };
    let result = tokio::select! {
        gone = watch.gone() => return Err(Raced::Gone(gone)),
        result = op => result,
    };
    match result {
        Err(e) if connection_lost(&e) => match tokio::time::timeout(grace, watch.gone()).await {
            Ok(gone) => Err(Raced::Gone(gone)),
            Err(_) => Err(Raced::Failed(e)),
        },
        other => other.map_err(Raced::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gone after `after`, or never.
    struct Dies(Option<Duration>);

    #[async_trait::async_trait]
    impl MachineWatch for Dies {
        async fn gone(&self) -> MachineGone {
            match self.0 {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
            MachineGone { what: "machine exited".into(), details: String::new() }
        }
    }

    fn lost(e: &&str) -> bool {
        *e == "lost"
    }

    const SOON: Duration = Duration::from_millis(20);
    const GRACE: Duration = Duration::from_millis(500);

    #[tokio::test]
    async fn the_machines_end_wins_over_a_hanging_operation() {
        let hang = std::future::pending::<Result<(), &str>>();
        let r = race(Some(&Dies(Some(SOON))), hang, lost, GRACE).await;
        assert!(matches!(r, Err(Raced::Gone(g)) if g.what == "machine exited"));
    }

    #[tokio::test]
    async fn a_lost_connection_is_explained_by_an_end_that_follows() {
        let r = race(Some(&Dies(Some(SOON))), async { Err::<(), _>("lost") }, lost, GRACE).await;
        assert!(matches!(r, Err(Raced::Gone(_))));
        let r = race(Some(&Dies(None)), async { Err::<(), _>("lost") }, lost, SOON).await;
        assert!(matches!(r, Err(Raced::Failed("lost"))), "no end: the error stands");
    }

    #[tokio::test]
    async fn other_failures_and_successes_pass_through() {
        // Were there a grace wait for it, the end would come within it and win.
        let r = race(Some(&Dies(Some(SOON))), async { Err::<(), _>("exit 1") }, lost, GRACE).await;
        assert!(matches!(r, Err(Raced::Failed("exit 1"))));
        let r = unless_gone(None, async { Ok::<_, &str>(7) }, lost).await;
        assert!(matches!(r, Ok(7)));
    }
}
