//! The workers this worker may read exchange outputs from: those registered with its driver.
//!
//! Only the driver can launch a task, and a task names the workers holding its inputs. A worker
//! still dials only endpoints its driver vouched for in its latest registration or heartbeat
//! answer, so a forged or corrupted task cannot make it connect to an arbitrary address (and
//! send it the cluster secret).

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// The registered workers' endpoints, as the driver last listed them.
#[derive(Debug)]
pub struct Peers {
    known: watch::Sender<HashSet<String>>,
    /// Asks the heartbeat loop for a fresh list now, instead of at its next beat.
    refresh: Notify,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            known: watch::Sender::new(HashSet::new()),
            refresh: Notify::new(),
        }
    }
}

impl Peers {
    /// Replaces the list with the driver's latest.
    pub fn set(&self, endpoints: Vec<String>) {
        self.known.send_replace(endpoints.into_iter().collect());
    }

    /// Completes when a task waits for a fresher list than the one held.
    pub async fn refresh_wanted(&self) {
        self.refresh.notified().await
    }

    /// Checks that every endpoint is a registered worker's. An unknown one may belong to a
    /// worker that registered after the last heartbeat, so the list is refreshed and awaited for
    /// up to `wait` before the endpoint is refused.
    pub async fn check<'a>(
        &self,
        endpoints: impl Iterator<Item = &'a str> + Clone,
        wait: Duration,
    ) -> Result<(), String> {
        let mut updates = self.known.subscribe();
        let unknown = |known: &HashSet<String>| {
            endpoints
                .clone()
                .find(|e| !known.contains(*e))
                .map(str::to_string)
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(endpoint) = unknown(&updates.borrow_and_update()) else {
                return Ok(());
            };
            self.refresh.notify_one();
            let changed = tokio::time::timeout_at(deadline, updates.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn known_endpoints_pass_and_unknown_ones_are_refused_after_a_refresh() {
        let peers = Peers::default();
        peers.set(vec![
            "http://127.0.0.1:1".into(),
            "http://127.0.0.2:1".into(),
        ]);
        let wait = Duration::from_millis(50);
        assert_eq!(
            peers
                .check(
                    ["http://127.0.0.2:1", "http://127.0.0.1:1"].into_iter(),
                    wait
                )
                .await,
            Ok(())
        );
        assert_eq!(peers.check(std::iter::empty(), wait).await, Ok(()));
        assert_eq!(
            peers
                .check(
                    ["http://127.0.0.1:1", "http://10.9.9.9:1"].into_iter(),
                    wait
                )
                .await,
            Err("http://10.9.9.9:1".to_string())
        );
        // The refused check asked for a refresh.
        tokio::time::timeout(Duration::from_secs(1), peers.refresh_wanted())
            .await
            .expect("a refresh was asked for");
    }

    #[tokio::test]
    async fn a_worker_that_registers_while_a_task_waits_is_accepted() {
        let peers = Arc::new(Peers::default());
        peers.set(vec!["http://127.0.0.1:1".into()]);
        let heartbeat = {
            let peers = peers.clone();
            tokio::spawn(async move {
                peers.refresh_wanted().await;
                peers.set(vec![
                    "http://127.0.0.1:1".into(),
                    "http://127.0.0.3:1".into(),
                ]);
            })
        };
        let checked = peers
            .check(["http://127.0.0.3:1"].into_iter(), Duration::from_secs(10))
            .await;
        assert_eq!(checked, Ok(()));
        heartbeat.await.unwrap();
    }
}
