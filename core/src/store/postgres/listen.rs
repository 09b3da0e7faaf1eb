//! Waking live readers across processes: every batch that writes sends a `NOTIFY` on the store's
//! channel (PostgreSQL delivers it when, and only if, the batch commits), and every store runs one
//! listener that `LISTEN`s on it and bumps the commit counter that tails wait on.
//!
//! Notifications are a wake-up, never the data: a tail re-reads its partition from the last
//! offset it saw, so a lost or merged notification costs latency, not records. A listener whose
//! connection drops bumps the counter (it may have missed some), reconnects with a backoff, and
//! listens again; tails also poll at a bounded interval, which covers the time it is away.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Listens on `channel` until the task is aborted, bumping `commits` on every notification.
pub(super) async fn run(pool: PgPool, channel: String, commits: watch::Sender<u64>) {
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
