//! Wakes this server when another process commits events: another API replica on the same
//! PostgreSQL, a `fleet` CLI on the same instance. Blocks in `Store::wait_for_events` (LISTEN/
//! NOTIFY on PostgreSQL; SQLite polls) on a blocking thread, and raises the same signals this
//! process's own commits raise: the SSE streams' wake-up and the epic driver's.

use crate::Fleet;
use std::time::Duration;

/// How long one wait lasts: a stop is noticed within it.
const WAIT: Duration = Duration::from_secs(1);

/// After a failed wait (the store unreachable for a moment), the pause before the next.
const RETRY: Duration = Duration::from_secs(1);

pub(crate) async fn watch(fleet: Fleet, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let after = *fleet.events.borrow();
        let store = fleet.store().clone();
        let waited =
            fleet_store::pg::spawn_blocking(move || store.wait_for_events(after, WAIT)).await;
        match waited {
            Ok(Ok(newest)) => {
                // Newer than what this process published: someone else wrote. (Own commits
                // were published by the pipeline's observer already.)
                if newest > *fleet.events.borrow() {
                    fleet.published(newest);
                    fleet.work.notify_one();
                }
            }
            _ => {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}
