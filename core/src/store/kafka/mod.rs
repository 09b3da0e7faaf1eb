//! The log on Apache Kafka (feature `kafka`): fenced single writers, exactly-once appends,
//! topics any Kafka consumer can read.
//!
//! Kafka has no conditional append, so the store applies the single-writer principle. How it
//! meets the [event store contract](crate::store):
//!
//! - **One writer per partition.** A store *owns* partitions — on its own, all partitions
//!   of the topics it uses, or the set given to [`KafkaStoreBuilder::own_partitions`]
//!   ([`KafkaStore::take_partition`] and [`KafkaStore::release_partition`] move ownership
//!   explicitly); in a [`Service`](crate::kafka::Service), the partitions the consumer group
//!   assigns it. Each owned partition has a writer task with its own transactional
//!   producer, `transactional.id = <group>-<events topic>-<partition>`. A writer fenced by
//!   another lets its partition go (later appends: [`Error::NotOwner`]).
//! - **Takeover order.** Taking a partition calls `init_transactions` *first* — fencing any
//!   earlier writer with that id and aborting its open transaction — and *then* reads
//!   (`read_committed`) the latest writer-state snapshot and the partition from the offset
//!   it covers to the end, rebuilding the stream-version and command-id indexes. Reading
//!   before fencing could miss a zombie's last commit. A fenced writer's appends fail with
//!   [`Error::Fenced`] and write nothing.
//! - **Atomic, checked appends.** The writer decides each append against its indexes
//!   (command id and fingerprint first, then the expected version: the same decision the
//!   memory and SQLite stores make) and writes a batch of appends in one Kafka transaction
//!   (`acks=all`, idempotence on). Concurrent appends to a partition share a transaction
//!   (group commit); one caller's conflict or bad input never fails the others.
//! - **Writer-state snapshots** (the stream-version index and the command ids within the
//!   window, with the offset they cover) go to a compacted topic in the same transaction as a
//!   batch of events, so a takeover reads a snapshot and a short tail.
//! - **Command ids are remembered for a window** ([`KafkaStoreBuilder::command_window`],
//!   one hour by default): within it, a retry is answered with the first result, across
//!   restarts and takeovers; after it, the same id is a new command.
//! - **Local state** (as Kafka Streams keeps RocksDB): the owner of a partition keeps an
//!   embedded SQLite file per partition with its records, stream index, command ids and
//!   aggregate snapshots. `read_stream`, `stream_version`, `command` and `load_snapshot` are
//!   served from it, never by scanning the partition. It is derived data, rebuilt from Kafka.
//! - **Reads** of a partition use `read_committed` consumers. Positions are Kafka's offsets,
//!   which are **not dense**: transaction markers take offsets
//!   ([`Capabilities::dense_offsets`](crate::store::Capabilities) is `false`); resume from the
//!   last offset seen plus one. [`head`](crate::EventStore::head) is the partition's last
//!   stable offset (or past this store's own last commit, whichever is later).
//! - **Aggregate snapshots** go to a compacted topic keyed by stream id, in the partition of
//!   the stream, through the same writer; loads are served by the local state.
//! - **Records any consumer can read**: key = stream id, value = the JSON payload, the
//!   envelope in UTF-8 headers (see `keel.*` in the record format below).
//!
//! # Without transactions
//!
//! [`KafkaStoreBuilder::transactional(false)`](KafkaStoreBuilder::transactional) uses the
//! idempotent producer alone, for brokers that refuse transactions. The guarantee is weaker,
//! and these are the differences:
//! - **No fencing**: nothing stops a second writer of the same partition. Run exactly one
//!   store per partition by other means, or versions can conflict (a takeover then reports
//!   the conflict as [`Error::Corrupt`] rather than guessing).
//! - **Not atomic under failure**: an append of several events that fails midway (broker
//!   failure, process crash) can leave some of its events in the log. The writer re-reads
//!   the partition after such a failure so its indexes match the log, and answers the caller
//!   with an error; a retry with the same command id then sees what was written.
//! - Offsets are dense (no transaction markers), but readers should not rely on it.
//!
//! When transactions are asked for (the default) and the cluster refuses them,
//! [`KafkaStoreBuilder::open`] fails with an error saying so and naming this switch.
//!
//! # Record format
//!
//! Each Keel topic (an aggregate kind) is three Kafka topics with the same partition count,
//! so the owner of partition `p` of the events owns partition `p` of the other two:
//!
//! | Kafka topic | holds | settings |
//! |---|---|---|
//! | `<prefix><topic>` | the events | `retention.ms=-1`, `retention.bytes=-1`, `cleanup.policy=delete` |
//! | `<prefix><topic>.keel-writer-state` | writer-state snapshots | `cleanup.policy=compact` |
//! | `<prefix><topic>.keel-snapshots` | aggregate snapshots, keyed by stream id | `cleanup.policy=compact` |
//!
//! An events record's key is the stream id, its value the payload (JSON for derived events),
//! its partition `murmur2(key) mod N` (set explicitly, as Kafka's Java client would choose),
//! and the envelope is in headers whose values are UTF-8 text:
//!
//! | header | value |
//! |---|---|
//! | `keel.type` | event type name |
//! | `keel.schema` | schema version of the payload (decimal) |
//! | `keel.version` | the event's version in its stream (decimal) |
//! | `keel.event-id` | event id (UUID) |
//! | `keel.timestamp` | when the event was decided, microseconds since the Unix epoch |
//! | `keel.command-id` | the command that wrote it (absent without one) |
//! | `keel.fingerprint` | the command's fingerprint, hex (with `keel.command-id`) |
//! | `keel.correlation-id`, `keel.causation-id` | UUIDs (absent when not given) |
//! | `keel.metadata` | metadata as a JSON object of strings (absent when empty) |
//!
//! A record of an `account` stream `alice`, as Kafka's console consumer prints it (headers,
//! key and value, separated by tabs):
//!
//! ```text
//! keel.type:Opened,keel.schema:1,keel.version:1,keel.event-id:01a237f5-…,keel.timestamp:1796235178197191,keel.command-id:open-alice,keel.fingerprint:5e1463…  alice  {"overdraft_limit":100,"owner":"Alice"}
//! ```
//!
//! # Example
//!
//! ```no_run
//! use keel::store::kafka::KafkaStore;
//!
//! # async fn run() -> Result<(), keel::store::Error> {
//! let store = KafkaStore::builder("127.0.0.1:9092")
//!     .group("bank")
//!     .replication_factor(1) // a single broker; 3 in production
//!     .open()
//!     .await?;
//! # Ok(()) }
//! ```

mod builder;
pub(crate) mod commands;
mod ownership;
mod reader;
mod record;
mod snapshot;
mod state;
mod takeover;
mod topics;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use tokio::sync::{Mutex, oneshot, watch};

use crate::envelope::RecordedEvent;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{
    AppendRequest, Appended, Capabilities, CommandRecord, Error, EventStore, Result, StoreStats,
    TopicInfo, validate,
};

pub(crate) use self::topics::Admin;
pub(crate) use self::topics::Names;
pub(crate) use self::writer::Ctx;
use self::writer::{Job, Owned};

pub use self::builder::{KafkaStoreBuilder, KafkaStoreError};
pub use self::topics::{COMMANDS_SUFFIX, REPLIES_SUFFIX, SNAPSHOTS_SUFFIX, WRITER_STATE_SUFFIX};

/// An event store on Apache Kafka. See the [module docs](self).
pub struct KafkaStore {
    ctx: Arc<Ctx>,
    admin: Admin,
    default_partitions: u32,
    own: Option<BTreeSet<u32>>,
    /// Partition counts of the topics resolved so far (they never change).
    topics: RwLock<HashMap<Topic, u32>>,
    owned: RwLock<HashMap<(Topic, Partition), Arc<Owned>>>,
    /// Producers that fenced a partition's earlier writers (in a consumer group's rebalance
    /// callback), waiting for the takeover that reads the partition.
    fenced: std::sync::Mutex<HashMap<(Topic, Partition), rdkafka::producer::FutureProducer>>,
    /// Serialises topic resolution, so a partition is taken once.
    resolving: Mutex<()>,
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for KafkaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaStore")
            .field("bootstrap", &self.ctx.bootstrap)
            .field("group", &self.ctx.group)
            .field("prefix", &self.ctx.names.prefix)
            .finish_non_exhaustive()
    }
}

impl KafkaStore {
    /// Options for a store on the cluster at `bootstrap` (`host:port[,host:port…]`).
    pub fn builder(bootstrap: impl Into<String>) -> KafkaStoreBuilder {
        KafkaStoreBuilder::new(bootstrap.into())
    }

    /// The bootstrap servers the store connects to.
    pub fn bootstrap(&self) -> &str {
        &self.ctx.bootstrap
    }

    /// The Kafka topic holding a Keel topic's events.
    pub fn kafka_topic(&self, topic: &Topic) -> String {
        self.ctx.names.events(topic)
    }

    /// The partition count of `topic`, resolving it on first use: creating it when `create`
    /// (with `requested` partitions or the default), checking it, and taking the partitions
    /// this store owns. `None` when it does not exist and may not be created.
    async fn partitions(
        &self,
        topic: &Topic,
        create: bool,
        requested: Option<u32>,
    ) -> Result<Option<u32>> {
        if let Some(n) = self.known(topic, requested)? {
            return Ok(Some(n));
        }
        let _guard = self.resolving.lock().await;
        if let Some(n) = self.known(topic, requested)? {
            return Ok(Some(n));
        }
        let Some(n) = self
            .admin
            .ensure(topic, requested, self.default_partitions, create)
            .await?
        else {
            return Ok(None);
        };
        let taking = (0..n)
            .filter(|p| self.own.as_ref().is_none_or(|own| own.contains(p)))
            .map(|p| self.take(topic, n, Partition(p)));
        for result in futures::future::join_all(taking).await {
            result?;
        }
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.clone(), n);
        Ok(Some(n))
    }

    /// The partition count of a topic resolved before (checked against `requested`).
    fn known(&self, topic: &Topic, requested: Option<u32>) -> Result<Option<u32>> {
        let known = self
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .copied();
        match (known, requested) {
            (Some(n), Some(r)) if r != n => Err(Error::PartitionCount {
                topic: topic.clone(),
                existing: n,
                requested: r,
            }),
            (known, _) => Ok(known),
        }
    }

    /// The owner of a stream's partition, resolving its topic first.
    async fn owner(&self, stream: &StreamId, create: bool) -> Result<Option<Arc<Owned>>> {
        let topic = stream.topic();
        let Some(n) = self.partitions(topic, create, None).await? else {
            return Ok(None);
        };
        let partition = validate::partition_of(stream, n);
        self.owned(topic, partition).map(Some)
    }

    /// The owner of a stream's partition, once its local store holds every record.
    async fn complete_owner(&self, stream: &StreamId) -> Result<Option<Arc<Owned>>> {
        let Some(owned) = self.owner(stream, false).await? else {
            return Ok(None);
        };
        let mut complete = owned.shared.complete.subscribe();
        complete.wait_for(|c| *c).await.map_err(|_| Error::Closed)?;
        Ok(Some(owned))
    }

    async fn send<T>(
        owned: &Owned,
        job: impl FnOnce(oneshot::Sender<Result<T>>) -> Job,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        owned.jobs.send(job(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

async fn release(owned: &Owned) {
    let (tx, rx) = oneshot::channel();
    if owned.jobs.send(Job::Release { reply: tx }).await.is_ok() {
        let _ = rx.await;
    }
    let task = owned
        .task
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(task) = task {
        let _ = task.await;
    }
}

#[async_trait]
impl EventStore for KafkaStore {
    #[tracing::instrument(level = "debug", skip_all, fields(stream = %request.stream, events = request.events.len()))]
    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        validate::check_append(&request)?;
        let owned =
            self.owner(&request.stream, true)
                .await?
                .ok_or_else(|| Error::UnknownTopic {
                    topic: request.stream.topic().clone(),
                })?;
        // Inside a routed command's run (a service's consumer), an append of that command
        // carries it: its answer and consumer offset commit with the events.
        let routed = commands::CONSUMED.try_with(Clone::clone).ok().filter(|c| {
            c.stream == request.stream
                && request
                    .command
                    .as_ref()
                    .is_some_and(|m| m.id == c.command_id)
        });
        Self::send(&owned, |reply| Job::Append {
            request,
            routed,
            reply,
        })
        .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>> {
        match self.complete_owner(stream).await? {
            Some(owned) => owned.state.read_stream(stream, from).await,
            None => Ok(Vec::new()),
        }
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        match self.owner(stream, false).await? {
            Some(owned) => owned.state.stream_version(stream).await,
            None => Ok(StreamVersion::INITIAL),
        }
    }

    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>> {
        match self.owner(stream, false).await? {
            Some(owned) => {
                owned
                    .state
                    .command(stream, command, self.ctx.window_start())
                    .await
            }
            None => Ok(None),
        }
    }

    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let n = self
            .partitions(topic, false, None)
            .await?
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.clone(),
            })?;
        validate::check_partition(topic, partition, n)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reach = self
            .read_owned()
            .get(&(topic.clone(), partition))
            .map_or(Offset(0), |o| {
                Offset(o.shared.committed_end.load(Ordering::Acquire))
            });
        let messages = self
            .ctx
            .reader
            .read(&self.ctx.names.events(topic), partition, from, limit, reach)
            .await?;
        messages
            .iter()
            .map(|m| record::decode(topic, m).map(|d| d.record))
            .collect()
    }

    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset> {
        let n = self
            .partitions(topic, false, None)
            .await?
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.clone(),
            })?;
        validate::check_partition(topic, partition, n)?;
        let end = self
            .ctx
            .reader
            .end(&self.ctx.names.events(topic), partition)
            .await?;
        let own = self
            .read_owned()
            .get(&(topic.clone(), partition))
            .map_or(Offset(0), |o| {
                Offset(o.shared.committed_end.load(Ordering::Acquire))
            });
        Ok(end.max(own))
    }

    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        validate::check_partitions(topic, partitions)?;
        let n = self
            .partitions(topic, true, Some(partitions))
            .await?
            .unwrap_or(partitions);
        Ok(TopicInfo {
            topic: topic.clone(),
            partitions: n,
        })
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let all = self.admin.all_partitions(None).await?;
        let prefix = &self.admin.names().prefix;
        let mut topics: Vec<TopicInfo> = all
            .iter()
            .filter_map(|(name, n)| {
                let keel = name.strip_prefix(prefix.as_str())?;
                if keel.ends_with(topics::WRITER_STATE_SUFFIX)
                    || keel.ends_with(topics::SNAPSHOTS_SUFFIX)
                    || keel.ends_with(topics::COMMANDS_SUFFIX)
                    || keel.ends_with(topics::REPLIES_SUFFIX)
                {
                    return None;
                }
                let companion = format!("{name}{}", topics::WRITER_STATE_SUFFIX);
                all.iter().any(|(t, _)| *t == companion).then_some(())?;
                Some(TopicInfo {
                    topic: Topic::new(keel).ok()?,
                    partitions: *n,
                })
            })
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        validate::check_snapshot(&snapshot)?;
        let owned =
            self.owner(&snapshot.stream, false)
                .await?
                .ok_or_else(|| Error::SnapshotAhead {
                    stream: snapshot.stream.clone(),
                    version: snapshot.version,
                    actual: StreamVersion::INITIAL,
                })?;
        Self::send(&owned, |reply| Job::Snapshot { snapshot, reply }).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        match self.owner(stream, false).await? {
            Some(owned) => owned.state.load_snapshot(stream).await,
            None => Ok(None),
        }
    }

    fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.ctx.commits.subscribe()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            dense_offsets: false,
            group_commit: true,
            multi_stream_append: false,
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            appends: self.ctx.appends.load(Ordering::Relaxed),
            commits: self.ctx.transactions.load(Ordering::Relaxed),
            wal_bytes: None,
        }
    }
}
