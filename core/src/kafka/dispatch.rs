//! The owner's side of routing: what an instance does with the partitions the group
//! assigns it and the commands routed to them.
//!
//! - **Assigned** (after the rebalance callback fenced the partition's earlier writers): a
//!   worker task takes the partition over (reads the writer-state snapshot and the tail),
//!   attaches the commands partition's offsets to the writer, and then runs each command
//!   consumed from it, concurrently, through the aggregate's repository inside
//!   [`CONSUMED`]`.scope`, so that its answer and consumer offset commit with its events.
//! - **Revoked**: the worker stops taking commands, waits for the ones running, and releases
//!   the partition (its writer finishes what is queued and writes a writer-state snapshot);
//!   only then does the rebalance callback return and the group move the partition. Commands
//!   consumed but not started stay uncommitted: the next owner consumes them again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::aggregate::Handle;
use crate::ids::{Partition, Topic};
use crate::repository::{CommandOptions, Repository};
use crate::store::kafka::commands::{Answer, CONSUMED, CommandOffsets, Consumed, ReplyTo};
use crate::store::{Error, EventStore};

use super::group::Event;
use super::protocol::{self, Incoming};
use super::service::Inner;

/// Runs the routed commands of one aggregate type.
#[async_trait]
pub(crate) trait Handler: Send + Sync + 'static {
    /// Runs a command; returns its answer unless it was answered in the transaction of its
    /// events, or must not be answered here.
    async fn handle(
        &self,
        incoming: Incoming,
        consumed: &Consumed,
    ) -> Option<(&'static str, Vec<u8>)>;
}

pub(crate) struct RepositoryHandler<A: Handle, S: EventStore + ?Sized> {
    repository: Repository<A, S>,
}

impl<A: Handle, S: EventStore + ?Sized> RepositoryHandler<A, S> {
    pub(crate) fn new(repository: Repository<A, S>) -> Self {
        Self { repository }
    }
}

#[async_trait]
impl<A, S> Handler for RepositoryHandler<A, S>
where
    A: Handle,
    A::Error: Serialize,
    S: EventStore + ?Sized,
{
    async fn handle(
        &self,
        incoming: Incoming,
        consumed: &Consumed,
    ) -> Option<(&'static str, Vec<u8>)> {
        let command: A::Command = match serde_json::from_slice(&incoming.payload) {
            Ok(command) => command,
            Err(e) => {
                return Some((
                    protocol::FAILED,
                    protocol::failure(format!(
                        "the command does not decode as a command of {}: {e}",
                        A::KIND
                    )),
                ));
            }
        };
        let options = CommandOptions {
            command_id: Some(incoming.command_id.clone()),
            correlation_id: incoming.correlation_id,
            causation_id: incoming.causation_id,
            metadata: incoming.metadata,
            expect_new: incoming.expect_new,
        };
        let result = CONSUMED
            .scope(
                consumed.clone(),
                self.repository
                    .execute_with(incoming.stream.id(), command, options),
            )
            .await;
        if consumed.answered.load(Ordering::Acquire) {
            return None;
        }
        protocol::answer_of::<A>(&result)
    }
}

/// A partition being served.
struct Work {
    queue: mpsc::UnboundedSender<OwnedMessage>,
    stop: watch::Sender<bool>,
    offsets: Arc<CommandOffsets>,
    task: tokio::task::JoinHandle<()>,
}

/// The dispatcher: membership events in, partition workers out.
pub(crate) async fn run(inner: Weak<Inner>, mut events: mpsc::Receiver<Event>) {
    let mut work: HashMap<(Topic, Partition), Work> = HashMap::new();
    while let Some(event) = events.recv().await {
        let Some(inner) = inner.upgrade() else {
            // The service is gone: let revocations through, stop everything.
            for (_, w) in work.drain() {
                let _ = w.stop.send(true);
            }
            continue;
        };
        let names = &inner.store.ctx().names;
        match event {
            Event::Assigned(assigned) => {
                for (kafka, p) in assigned {
                    let (Some(topic), Ok(p)) = (names.of_commands(&kafka), u32::try_from(p)) else {
                        continue;
                    };
                    let key = (topic.clone(), Partition(p));
                    if work.contains_key(&key) {
                        continue;
                    }
                    let offsets = Arc::new(CommandOffsets::new(
                        kafka.clone(),
                        i32::try_from(p).unwrap_or(0),
                        inner.member().map_or_else(no_metadata, |m| m.metadata_fn()),
                    ));
                    let (queue, received) = mpsc::unbounded_channel();
                    let (stop, stopped) = watch::channel(false);
                    let task = tokio::spawn(serve_partition(
                        Arc::clone(&inner),
                        topic,
                        Partition(p),
                        Arc::clone(&offsets),
                        received,
                        stopped,
                    ));
                    work.insert(
                        key,
                        Work {
                            queue,
                            stop,
                            offsets,
                            task,
                        },
                    );
                }
            }
            Event::Revoked {
                partitions,
                lost,
                done,
            } => {
                let mut stopping = Vec::new();
                for (kafka, p) in partitions {
                    let (Some(topic), Ok(p)) = (names.of_commands(&kafka), u32::try_from(p)) else {
                        continue;
                    };
                    if let Some(w) = work.remove(&(topic.clone(), Partition(p))) {
                        tracing::info!(%topic, partition = p, lost, instance = %inner.instance,
                            "letting the partition go");
                        let _ = w.stop.send(true);
                        stopping.push(w.task);
                    }
                }
                let deadline = inner.revoke_timeout;
                let all = futures::future::join_all(stopping);
                if tokio::time::timeout(deadline, all).await.is_err() {
                    tracing::warn!(timeout = ?deadline, "revoked partitions took too long to let go");
                }
                drop(done);
            }
            Event::Message(m) => {
                let (Some(topic), Ok(p)) =
                    (names.of_commands(m.topic()), u32::try_from(m.partition()))
                else {
                    continue;
                };
                match work.get(&(topic, Partition(p))) {
                    Some(w) => {
                        w.offsets.consumed(m.offset());
                        let _ = w.queue.send(m);
                    }
                    None => tracing::debug!(
                        topic = m.topic(),
                        partition = m.partition(),
                        "a command of a partition not assigned here; the owner consumes it"
                    ),
                }
            }
        }
    }
}

fn no_metadata() -> Box<dyn Fn() -> Option<rdkafka::consumer::ConsumerGroupMetadata> + Send + Sync>
{
    Box::new(|| None)
}

/// Serves one partition: take it over, run its commands, let it go when told.
async fn serve_partition(
    inner: Arc<Inner>,
    topic: Topic,
    partition: Partition,
    offsets: Arc<CommandOffsets>,
    mut queue: mpsc::UnboundedReceiver<OwnedMessage>,
    mut stop: watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            inner.store.release_partition(&topic, partition).await;
            return;
        }
        match inner.store.take_partition(&topic, partition).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(%topic, %partition, error = %e, "taking the partition over failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    if let Err(e) = inner
        .store
        .attach_commands(&topic, partition, Arc::clone(&offsets))
    {
        tracing::warn!(%topic, %partition, error = %e, "the partition was let go during its takeover");
    }
    inner
        .serving
        .send_modify(|s| _ = s.insert((topic.clone(), partition)));
    tracing::info!(target: "keel::kafka::metrics", %topic, %partition, owner = %inner.instance,
        takeover_ms = started.elapsed().as_millis() as u64, "serving the partition");
    let handler = inner.handler(&topic);
    let mut running = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(_) = running.join_next(), if !running.is_empty() => {}
            m = queue.recv() => match m {
                Some(m) => {
                    running.spawn(run_command(
                        Arc::clone(&inner),
                        handler.clone(),
                        topic.clone(),
                        partition,
                        Arc::clone(&offsets),
                        m,
                    ));
                }
                None => break,
            },
        }
    }
    // Finish the commands that are running; those still queued go to the next owner.
    while running.join_next().await.is_some() {}
    inner
        .serving
        .send_modify(|s| _ = s.remove(&(topic.clone(), partition)));
    inner.store.release_partition(&topic, partition).await;
    tracing::info!(target: "keel::kafka::metrics", %topic, %partition, owner = %inner.instance,
        "let the partition go");
}

/// Runs one routed command and answers it.
async fn run_command(
    inner: Arc<Inner>,
    handler: Option<Arc<dyn Handler>>,
    topic: Topic,
    partition: Partition,
    offsets: Arc<CommandOffsets>,
    m: OwnedMessage,
) {
    let offset = m.offset();
    let incoming = match protocol::decode_command(&topic, &m) {
        Ok(incoming) => incoming,
        Err(why) => {
            // Nobody to answer: skip it, naming it.
            tracing::warn!(%topic, %partition, offset, error = %why, "skipping a command record that does not decode");
            offsets.committed(&[offset], None);
            return;
        }
    };
    let consumed = Consumed {
        stream: incoming.stream.clone(),
        command_id: incoming.command_id.clone(),
        offset,
        reply_to: ReplyTo {
            partition: incoming.reply_partition,
            request: incoming.request.clone(),
            instance: incoming.reply_to.clone(),
        },
        answered: Arc::new(AtomicBool::new(false)),
    };
    let answer = match &handler {
        Some(handler) => handler.handle(incoming, &consumed).await,
        None => Some((
            protocol::FAILED,
            protocol::failure(format!("this instance does not serve topic {topic}")),
        )),
    };
    let Some((outcome, value)) = answer else {
        return;
    };
    // Answer in the partition's next transaction, with the consumer offset; a transaction
    // that fails is tried again a few times (a consumer group rebalance aborts it).
    for attempt in 1..=3 {
        let answer = Answer {
            consumed: consumed.clone(),
            value: value.clone(),
            outcome,
        };
        match inner.store.answer(&topic, partition, answer).await {
            Ok(()) => return,
            // Not the owner any more: the next owner consumes the command again.
            Err(Error::NotOwner { .. } | Error::Fenced { .. } | Error::Closed) => return,
            Err(e) => {
                tracing::warn!(%topic, %partition, offset, attempt, error = %e, "answering a routed command failed");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
    }
}

/// Logs, every `every`, a metric line per partition this instance serves (see the module
/// docs of [`crate::kafka`]).
pub(crate) async fn metrics(inner: Weak<Inner>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let serving: Vec<(Topic, Partition)> = inner.serving.borrow().iter().cloned().collect();
        for (topic, partition) in serving {
            let Some((end, pending)) = inner.store.partition_figures(&topic, partition) else {
                continue;
            };
            tracing::info!(target: "keel::kafka::metrics", %topic, %partition, owner = %inner.instance,
                end = end.0, pending_commands = pending, "partition");
        }
    }
}
