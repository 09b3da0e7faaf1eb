//! Live tailing built on [`EventStore::read_partition`] and the commit signal.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::ids::{Offset, Partition, Topic};
use crate::store::{EventStore, Tail};

/// How many records one read of a tail fetches.
const TAIL_BATCH: usize = 512;

/// Tails a partition from `from`: every committed record once, in offset order, then new
/// records as they commit. Wakes on the store's commit signal, and at least every `poll` to
/// see appends made by other processes.
///
/// The stream ends only after yielding an error (the reader decides whether to resume from
/// the last offset it saw).
pub fn tail<S: EventStore + ?Sized>(
    store: Arc<S>,
    topic: Topic,
    partition: Partition,
    from: Offset,
    poll: Duration,
) -> Tail {
    struct State<S: ?Sized> {
        store: Arc<S>,
        topic: Topic,
        partition: Partition,
        next: Offset,
        buffer: VecDeque<crate::RecordedEvent>,
        commits: tokio::sync::watch::Receiver<u64>,
        failed: bool,
    }
    let commits = store.subscribe_commits();
    let state = State {
        store,
        topic,
        partition,
        next: from,
        buffer: VecDeque::new(),
        commits,
        failed: false,
    };
    futures::stream::unfold(state, move |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(record) = s.buffer.pop_front() {
                s.next = record.offset().next();
                return Some((Ok(record), s));
            }
            // Mark the current commit count as seen *before* reading, so a commit that lands
            // after the read wakes us.
            s.commits.borrow_and_update();
            match s
                .store
                .read_partition(&s.topic, s.partition, s.next, TAIL_BATCH)
                .await
            {
                Ok(records) if !records.is_empty() => s.buffer.extend(records),
                Ok(_) => {
                    tokio::select! {
                        changed = s.commits.changed() => {
                            if changed.is_err() {
                                // The store is gone: keep polling slowly rather than spin.
                                tokio::time::sleep(poll).await;
                            }
                        }
                        () = tokio::time::sleep(poll) => {}
                    }
                }
                Err(e) => {
                    s.failed = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
    .boxed()
}
