//! Membership of a Kafka consumer group, on a thread of its own.
//!
//! A [`Member`] subscribes a consumer to some topics with the **cooperative-sticky**
//! assignor: a member joining or leaving moves only the partitions that must move. Its
//! thread polls the consumer; librdkafka runs the rebalance callbacks on it, so they may
//! block without stalling the async runtime:
//!
//! - **assigned**: the `on_assign` hook runs first, before the consumer fetches the new
//!   partitions' committed offsets (a service fences the partitions' earlier writers there,
//!   so nobody can commit past those offsets any more); then the assignment is applied and
//!   [`Event::Assigned`] is sent;
//! - **revoked** (or lost, when the member was thrown out of the group): [`Event::Revoked`]
//!   is sent and the callback waits until its receiver says it is done (or drops it), at
//!   most `revoke_timeout`: the group hands the partitions to another member only after that.
//!
//! Messages of the assigned partitions are sent as [`Event::Message`] in order, unless the
//! member only holds partitions (`consume = false`: a projection's runner reads the log
//! itself), in which case every assigned partition is paused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use crate::store::{Error, Result};

/// A Kafka topic's partition, as librdkafka names it.
pub(crate) type KafkaPartition = (String, i32);

/// What happens to a member.
#[derive(Debug)]
pub(crate) enum Event {
    /// These partitions were assigned to this member.
    Assigned(Vec<KafkaPartition>),
    /// These partitions are being taken away; the group waits until `done` is sent (or
    /// dropped). `lost` when the member was thrown out of the group: another member may hold
    /// them already.
    Revoked {
        partitions: Vec<KafkaPartition>,
        lost: bool,
        done: std::sync::mpsc::SyncSender<()>,
    },
    /// A record of an assigned partition.
    Message(OwnedMessage),
}

/// How a member joins.
pub(crate) struct MemberConfig {
    /// Bootstrap servers and the user's settings.
    pub(crate) base: ClientConfig,
    pub(crate) group: String,
    /// The member's `client.id`: its instance id, shown by the group's description.
    pub(crate) instance: String,
    pub(crate) session_timeout: Duration,
    pub(crate) topics: Vec<String>,
    pub(crate) consume: bool,
    pub(crate) revoke_timeout: Duration,
}

type AssignHook = Box<dyn Fn(&[KafkaPartition]) + Send + Sync>;

struct MemberContext {
    events: mpsc::Sender<Event>,
    on_assign: Option<AssignHook>,
    consume: bool,
    revoke_timeout: Duration,
    group: String,
}

fn partitions(tpl: &TopicPartitionList) -> Vec<KafkaPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Some(hook) = &self.on_assign {
                    hook(&partitions(tpl));
                }
            }
            Rebalance::Revoke(tpl) => {
                let revoked = partitions(tpl);
                if revoked.is_empty() {
                    return;
                }
                let lost = consumer.assignment_lost();
                tracing::info!(group = %self.group, partitions = ?revoked, lost, "partitions revoked");
                let (done, wait) = std::sync::mpsc::sync_channel(1);
                let event = Event::Revoked {
                    partitions: revoked,
                    lost,
                    done,
                };
                if self.events.blocking_send(event).is_ok()
                    && wait.recv_timeout(self.revoke_timeout)
                        == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                {
                    tracing::warn!(group = %self.group, timeout = ?self.revoke_timeout,
                        "revoked partitions were not let go in time; giving them up anyway");
                }
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "consumer group rebalance failed");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = partitions(tpl);
            if assigned.is_empty() {
                return;
            }
            if !self.consume
                && let Err(e) = consumer.pause(tpl)
            {
                tracing::warn!(group = %self.group, error = %e, "cannot pause assigned partitions");
            }
            tracing::info!(group = %self.group, partitions = ?assigned, "partitions assigned");
            let _ = self.events.blocking_send(Event::Assigned(assigned));
        }
    }
}

/// A member of a consumer group (see the module docs). [`leave`](Self::leave) (or dropping
/// it) leaves the group: its partitions are revoked first (their [`Event::Revoked`] is sent
/// as usual, so whoever receives the events must keep receiving until the thread ends).
pub(crate) struct Member {
    consumer: Arc<BaseConsumer<MemberContext>>,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").finish_non_exhaustive()
    }
}

impl Member {
    /// Joins `config.group`, subscribed to `config.topics`. Events go to `events`.
    pub(crate) fn join(
        config: MemberConfig,
        events: mpsc::Sender<Event>,
        on_assign: Option<AssignHook>,
    ) -> Result<Self> {
        let mut client = config.base.clone();
        client
            .set("group.id", &config.group)
            .set("client.id", &config.instance)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 4)
                    .max(100)
                    .to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20");
        let context = MemberContext {
            events,
            on_assign,
            consume: config.consume,
            revoke_timeout: config.revoke_timeout,
            group: config.group.clone(),
        };
        let consumer: BaseConsumer<MemberContext> = client
            .create_with_context(context)
            .map_err(|e| Error::backend("create a Kafka consumer", e))?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            Error::backend(
                "join a consumer group",
                format!("group {} topics {topics:?}: {e}", config.group),
            )
        })?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (Arc::clone(&consumer), Arc::clone(&stop));
            let name = format!("keel-group-{}", config.group);
            std::thread::Builder::new()
                .name(name.chars().take(15).collect())
                .spawn(move || poll(&consumer, &stop, config.revoke_timeout))
                .map_err(|e| Error::backend("start a consumer group thread", e))?
        };
        Ok(Self {
            consumer,
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Changes the topics the member is subscribed to (a rebalance follows).
    pub(crate) fn subscribe(&self, topics: &[String]) -> Result<()> {
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|e| Error::backend("join a consumer group", format!("topics {topics:?}: {e}")))
    }

    /// The group's metadata now (generation and member id), for
    /// `send_offsets_to_transaction`. `None` while the member is not in the group.
    pub(crate) fn metadata_fn(
        &self,
    ) -> Box<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync> {
        let consumer = Arc::clone(&self.consumer);
        Box::new(move || consumer.group_metadata())
    }

    /// Leaves the group and waits for the thread to end: its partitions are revoked first
    /// (waiting for the events' receiver, as usual). Blocks: call it off the runtime, while
    /// the events are still received.
    pub(crate) fn leave(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // Never joins here (a drop may run where the events are received): the thread
        // leaves the group on its own.
        self.stop.store(true, Ordering::Release);
    }
}

fn poll(consumer: &BaseConsumer<MemberContext>, stop: &AtomicBool, revoke_timeout: Duration) {
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let _ = consumer
                    .context()
                    .events
                    .blocking_send(Event::Message(m.detach()));
            }
            Some(Err(e)) => tracing::debug!(error = %e, "consumer group member: error report"),
            None => {}
        }
    }
    // Leave cleanly: give the partitions up through the revocation callback, then close.
    consumer.unsubscribe();
    let deadline = Instant::now() + revoke_timeout + Duration::from_secs(5);
    while Instant::now() < deadline {
        let _ = consumer.poll(Duration::from_millis(50));
        if consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(true)
        {
            break;
        }
    }
}

/// The members of `group` and their partitions, from the coordinator (see [`Member::describe`]).
pub(crate) fn describe<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    group: &str,
    timeout: Duration,
) -> Result<Vec<(String, Vec<KafkaPartition>)>> {
    let list = consumer
        .fetch_group_list(Some(group), timeout)
        .map_err(|e| Error::backend("describe a consumer group", format!("group {group}: {e}")))?;
    let mut out = Vec::new();
    for g in list.groups().iter().filter(|g| g.name() == group) {
        for m in g.members() {
            let assigned = m.assignment().map(decode_assignment).unwrap_or_default();
            out.push((m.client_id().to_owned(), assigned));
        }
    }
    Ok(out)
}

/// Decodes a consumer protocol assignment: `version: i16`, then an array of
/// `(topic: string, partitions: [i32])` (then user data, ignored). Garbage decodes to nothing.
fn decode_assignment(bytes: &[u8]) -> Vec<KafkaPartition> {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = tail;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
        }
        fn i32(&mut self) -> Option<i32> {
            Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
    }
    let mut r = R(bytes);
    let mut out = Vec::new();
    let parsed = (|| {
        r.i16()?;
        let topics = r.i32()?;
        for _ in 0..topics.max(0) {
            let len = usize::try_from(r.i16()?).ok()?;
            let topic = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
            let n = r.i32()?;
            for _ in 0..n.max(0) {
                out.push((topic.clone(), r.i32()?));
            }
        }
        Some(())
    })();
    if parsed.is_none() {
        tracing::debug!("a consumer group member's assignment does not decode");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_decode_as_the_consumer_protocol_writes_them() {
        let mut bytes = vec![0, 1]; // version 1
        bytes.extend(2i32.to_be_bytes()); // two topics
        for (topic, parts) in [("a.keel-commands", &[0i32, 3][..]), ("b", &[5][..])] {
            bytes.extend(i16::try_from(topic.len()).unwrap_or(0).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend(i32::try_from(parts.len()).unwrap_or(0).to_be_bytes());
            for p in parts {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(
            decode_assignment(&bytes),
            vec![
                ("a.keel-commands".to_owned(), 0),
                ("a.keel-commands".to_owned(), 3),
                ("b".to_owned(), 5)
            ]
        );
        assert!(decode_assignment(&[0, 1, 0]).is_empty());
    }
}
