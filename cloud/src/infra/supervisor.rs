//! Background work, supervised: every task the cloud runs beside HTTP is tracked, told to stop,
//! and awaited with a deadline (tokio-util's `TaskTracker` and `CancellationToken`, as mini-redis'
//! shutdown does it).
//!
//! Design: two kinds of work. Loops whose every round is one transaction (sweeps, roll-ups, the
//! broker's credential checks) are simply dropped at their next await when the cloud stops: an
//! interrupted round is rolled back and redone after the restart. Work that must not stop halfway —
//! ingest (a message stored must be acknowledged) and notification delivery (a webhook sent must be
//! marked sent) — receives the token and stops itself between units of work.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` until it ends or the cloud stops, whichever comes first.
    pub fn spawn(&self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => tracing::debug!(task = name, "stopped"),
                () = work => tracing::debug!(task = name, "ended"),
            }
        });
    }

    /// Runs work that stops itself when the token it is given is cancelled, after finishing what
    /// it is doing.
    pub fn spawn_cooperative<F>(
        &self,
        name: &'static str,
        work: impl FnOnce(CancellationToken) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let work = work(self.stop.clone());
        self.tracker.spawn(async move {
            work.await;
            tracing::debug!(task = name, "stopped");
        });
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Tells every task to stop and waits up to `deadline` for them. Returns the number still
    /// running at the deadline (0 when all stopped in time).
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = self.tracker.len(),
                "background work did not stop within {deadline:?}"
            );
        }
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_loops_at_once_and_lets_cooperative_work_finish_its_unit() {
        let supervisor = Supervisor::new();
        supervisor.spawn("forever", std::future::pending());
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        supervisor.spawn_cooperative("unit of work", move |stop| async move {
            loop {
                // One unit of work takes a second and is never cut in half.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = done_tx.send(());
                if stop.is_cancelled() {
                    return;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(supervisor.running(), 2);
        assert_eq!(supervisor.shutdown(Duration::from_secs(5)).await, 0);
        let mut units = 0;
        while done_rx.try_recv().is_ok() {
            units += 1;
        }
        assert_eq!(
            units, 2,
            "the unit under way when told to stop was finished"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ignores_the_stop_is_reported_at_the_deadline() {
        let supervisor = Supervisor::new();
        supervisor.spawn_cooperative("stubborn", |_stop| std::future::pending());
        assert_eq!(supervisor.shutdown(Duration::from_secs(3)).await, 1);
    }
}
