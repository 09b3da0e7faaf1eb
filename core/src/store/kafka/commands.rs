//! Commands consumed from a commands topic meet the partition's writer here, so that a
//! routed command is handled consume-transform-produce in one transaction: its events, its
//! answer (on the replies topic) and its consumer offset commit together.
//!
//! - The service runs a consumed command through the repository inside
//!   [`CONSUMED`]`.scope(..)`. When that run appends to the command's stream with the command's
//!   id, [`KafkaStore::append`](super::KafkaStore) hands the writer the [`Consumed`] with the
//!   request: the writer builds the answer from the request and the offsets the broker gave,
//!   and writes it in the same transaction as the events.
//! - A command that writes nothing (rejected, replayed, failed) is answered with a
//!   [`Job::Answer`](super::writer::Job::Answer) instead, in the writer's next transaction.
//! - Commands of one partition run concurrently, so their offsets are committed as a low
//!   watermark: a transaction commits the lowest offset still unanswered ([`CommandOffsets`]),
//!   never one past a command that is still running. A command whose answer never committed
//!   (its owner died) is consumed again by the next owner; its command id makes that a replay.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rdkafka::consumer::ConsumerGroupMetadata;

use crate::ids::{CommandId, StreamId};

tokio::task_local! {
    /// The routed command the current task is running, if any.
    pub(crate) static CONSUMED: Consumed;
}

/// A command consumed from a commands topic, being run by the owner of its partition.
#[derive(Clone, Debug)]
pub(crate) struct Consumed {
    /// The stream it is for.
    pub(crate) stream: StreamId,
    /// Its id.
    pub(crate) command_id: CommandId,
    /// Its offset in the commands partition.
    pub(crate) offset: i64,
    /// Where its answer goes.
    pub(crate) reply_to: ReplyTo,
    /// Set once its answer committed in the transaction of the events it caused.
    pub(crate) answered: Arc<AtomicBool>,
}

/// The caller waiting for a command's answer.
#[derive(Clone, Debug)]
pub(crate) struct ReplyTo {
    /// The caller's partition of the replies topic.
    pub(crate) partition: i32,
    /// The send's id, which the answer names.
    pub(crate) request: String,
    /// The caller's instance id.
    pub(crate) instance: String,
}

/// The answer to a routed command that wrote no events.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The command.
    pub(crate) consumed: Consumed,
    /// The reply record's value.
    pub(crate) value: Vec<u8>,
    /// Its outcome, for the `keel.outcome` header.
    pub(crate) outcome: &'static str,
}

/// The consumer offsets of the commands partition a writer answers for.
pub(crate) struct CommandOffsets {
    /// The Kafka commands topic.
    pub(crate) topic: String,
    /// The partition (the same number as the events partition).
    pub(crate) partition: i32,
    /// The consumer group's current metadata (generation and member), for
    /// `send_offsets_to_transaction`.
    pub(crate) metadata: Box<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync>,
    state: std::sync::Mutex<Tracker>,
}

impl std::fmt::Debug for CommandOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandOffsets")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Tracker {
    /// Offsets consumed and not answered yet.
    pending: BTreeSet<i64>,
    /// One past the highest offset consumed.
    next: i64,
    /// The offset last committed with a transaction.
    committed: i64,
}

impl CommandOffsets {
    pub(crate) fn new(
        topic: String,
        partition: i32,
        metadata: Box<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync>,
    ) -> Self {
        Self {
            topic,
            partition,
            metadata,
            state: std::sync::Mutex::new(Tracker::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A command at `offset` was consumed: the watermark stays below it until it is answered.
    pub(crate) fn consumed(&self, offset: i64) {
        let mut t = self.lock();
        t.pending.insert(offset);
        t.next = t.next.max(offset + 1);
    }

    /// The offset to commit with a transaction that answers `answered`: the lowest offset
    /// still unanswered after it, or one past the highest consumed; `None` when that is no
    /// further than what is committed.
    pub(crate) fn watermark(&self, answered: &[i64]) -> Option<i64> {
        let t = self.lock();
        let lowest = t.pending.iter().find(|o| !answered.contains(o)).copied();
        let w = lowest.unwrap_or(t.next);
        (w > t.committed).then_some(w)
    }

    /// A transaction answering `answered` and committing `watermark` committed.
    pub(crate) fn committed(&self, answered: &[i64], watermark: Option<i64>) {
        let mut t = self.lock();
        for o in answered {
            t.pending.remove(o);
        }
        if let Some(w) = watermark {
            t.committed = t.committed.max(w);
        }
    }

    /// Commands consumed and not answered yet.
    pub(crate) fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_never_passes_a_command_still_running() {
        let offsets = CommandOffsets::new("c".into(), 0, Box::new(|| None));
        for o in [10, 11, 12] {
            offsets.consumed(o);
        }
        // 11 answers first: 10 still runs, so nothing can be committed past it.
        assert_eq!(offsets.watermark(&[11]), Some(10));
        offsets.committed(&[11], Some(10));
        assert_eq!(offsets.watermark(&[]), None, "10 is committed already");
        // 10 answers: 12 still runs.
        assert_eq!(offsets.watermark(&[10]), Some(12));
        offsets.committed(&[10], Some(12));
        assert_eq!(offsets.watermark(&[12]), Some(13));
        offsets.committed(&[12], Some(13));
        assert_eq!(offsets.pending(), 0);
        assert_eq!(offsets.watermark(&[]), None);
    }
}
