//! Waking live readers across processes with `LISTEN`/`NOTIFY` on the store's channel
//! (`<schema>_commits`).
//!
//! - **Notifier**: after a batch commits, the batcher adds the partitions it wrote to a pending
//!   set and wakes the notifier task, which sends one `pg_notify` for everything pending
//!   (payload: `topic:partition` pairs, or `*` when too many), on a connection of its own.
//!   Sending it after the commit, rather than inside the batch's transaction, keeps it off the
//!   append's critical path and out of PostgreSQL's commit: a `NOTIFY` inside a transaction
//!   takes a database-wide lock until the commit is flushed, which would serialize the commits
//!   of every writer on the database. Its own tiny transaction needs no durability
//!   (`synchronous_commit = off`).
//! - **Listener**: every store runs one task that `LISTEN`s on the channel and bumps the commit
//!   counter that tails wait on.
//!
//! Notifications are a wake-up, never the data: a tail re-reads its partition from the last
//! offset it saw, so a lost or merged notification costs latency, not records (one is lost when
//! a process dies between a commit and its notification, or while a connection is down). A
//! listener whose connection drops bumps the counter (it may have missed some), reconnects with
//! a backoff, and listens again; tails also poll at a bounded interval, which covers the rest.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::{Notify, watch};

use crate::ids::{Partition, Topic};

/// The partitions written since the last notification, and the notifier's wake-up.
#[derive(Default)]
pub(super) struct Pending {
    written: std::sync::Mutex<BTreeSet<(Topic, Partition)>>,
    wake: Notify,
}

impl Pending {
    /// Records committed writes to `partitions` and wakes the notifier.
    pub(super) fn add(&self, partitions: impl IntoIterator<Item = (Topic, Partition)>) {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(partitions);
        self.wake.notify_one();
    }

    fn take(&self) -> BTreeSet<(Topic, Partition)> {
        std::mem::take(
            &mut *self
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The longest payload PostgreSQL takes is 8000 bytes; past this one, the payload is `*`.
const MAX_PAYLOAD: usize = 7000;

/// Sends a notification for what is pending, each time a batch adds to it, until aborted.
pub(super) async fn notify(pool: PgPool, channel: String, pending: Arc<Pending>) {
    loop {
        pending.wake.notified().await;
        let written = pending.take();
        if written.is_empty() {
            continue;
        }
        let mut payload = written
            .iter()
            .map(|(topic, partition)| format!("{topic}:{partition}"))
            .collect::<Vec<_>>()
            .join(",");
        if payload.len() > MAX_PAYLOAD {
            payload = "*".to_owned();
        }
        // A connection broken by a server restart is dropped by the pool: try once more.
        for _ in 0..2 {
            match sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(&payload)
                .execute(&pool)
                .await
            {
                Ok(_) => break,
                Err(e) => tracing::debug!(error = %e, "NOTIFY failed; tails will poll"),
            }
        }
    }
}

/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Listens on `channel` until the task is aborted, bumping `commits` on every notification.
pub(super) async fn listen(pool: PgPool, channel: String, commits: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut listener = match connect(&pool, &channel).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "LISTEN failed; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        // Commits may have happened while no one listened.
        commits.send_modify(|n| *n += 1);
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => commits.send_modify(|n| *n += 1),
                Ok(None) => {
                    // The connection was lost and made again: notifications may be lost.
                    tracing::debug!("the LISTEN connection was lost and made again");
                    commits.send_modify(|n| *n += 1);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool, channel: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(channel).await?;
    Ok(listener)
}
