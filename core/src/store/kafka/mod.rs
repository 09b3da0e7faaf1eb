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

pub(crate) mod commands;
mod reader;
mod record;
mod snapshot;
mod state;
mod takeover;
mod topics;
mod writer;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use tokio::sync::{Mutex, oneshot, watch};

use crate::envelope::RecordedEvent;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{
    AppendRequest, Appended, Capabilities, CommandRecord, Error, EventStore, Result, StoreStats,
    TopicInfo, validate,
};

use self::reader::Reader;
pub(crate) use self::topics::Admin;
pub(crate) use self::topics::Names;
use self::topics::TopicSettings;
pub(crate) use self::writer::Ctx;
use self::writer::{Job, Owned};

pub use self::topics::{COMMANDS_SUFFIX, REPLIES_SUFFIX, SNAPSHOTS_SUFFIX, WRITER_STATE_SUFFIX};

/// Kafka-specific failures, carried as the source of
/// [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaStoreError {
    /// The cluster refused to start a transactional producer (transactions disabled, not
    /// authorised, or the transaction state topic cannot be created).
    #[error(
        "the Kafka cluster at {bootstrap} refused transactions for transactional.id {transactional_id}: {reason}. \
         Fix the broker, or open the store with KafkaStoreBuilder::transactional(false) to use the \
         idempotent producer alone (weaker guarantees: no fencing, multi-event appends not atomic \
         under failure; see keel::store::kafka)"
    )]
    TransactionsRefused {
        /// The bootstrap servers.
        bootstrap: String,
        /// The transactional id that was refused.
        transactional_id: String,
        /// What librdkafka reported.
        reason: String,
    },
}

/// Options of a [`KafkaStore`]; start from [`KafkaStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct KafkaStoreBuilder {
    bootstrap: String,
    group: String,
    prefix: String,
    default_partitions: u32,
    replication: i32,
    min_insync_replicas: Option<u32>,
    transactional: bool,
    window: Duration,
    snapshot_every: u64,
    max_batch: usize,
    linger: Duration,
    timeout: Duration,
    state_dir: Option<PathBuf>,
    own: Option<BTreeSet<u32>>,
    allow_finite_retention: bool,
    check_topic_configs: bool,
    config: Vec<(String, String)>,
}

impl KafkaStoreBuilder {
    /// The group this store's instances belong to (default `keel`): it names the
    /// transactional ids (`<group>-<topic>-<partition>`) and the local state files. Two
    /// stores with the same group fence each other on the partitions they both take.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// A prefix for every Kafka topic name (default none): Keel topic `account` is Kafka
    /// topic `<prefix>account`. Tests use it to keep their topics apart.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The partition count of topics created by an append (default 4).
    pub fn default_partitions(mut self, partitions: u32) -> Self {
        self.default_partitions = partitions;
        self
    }

    /// The replication factor of topics this store creates (default 3; 1 for a single
    /// broker). With more than 1, `min.insync.replicas` is set to 2 unless
    /// [`min_insync_replicas`](Self::min_insync_replicas) says otherwise.
    pub fn replication_factor(mut self, replicas: u16) -> Self {
        self.replication = i32::from(replicas.max(1));
        self
    }

    /// `min.insync.replicas` of the topics this store creates.
    pub fn min_insync_replicas(mut self, replicas: u32) -> Self {
        self.min_insync_replicas = Some(replicas.max(1));
        self
    }

    /// Whether appends use Kafka transactions (default `true`). `false` uses the idempotent
    /// producer alone, with the weaker guarantee stated in the [module docs](self).
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// How long a committed command id is remembered (default 1 hour). Within the window a
    /// retry is answered with the first result, across restarts and takeovers; after it the
    /// id is forgotten and the same id is a new command. Every remembered id is in each
    /// writer-state snapshot, so a longer window costs larger snapshots.
    pub fn command_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The fewest appends between two writer-state snapshots of a partition (default
    /// 1,000; a large index waits longer, see the `snapshot` module).
    pub fn writer_snapshot_every(mut self, appends: u64) -> Self {
        self.snapshot_every = appends.max(1);
        self
    }

    /// Most appends in one transaction (default 512).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.clamp(1, 4096);
        self
    }

    /// How long the writer waits for more appends before it starts a transaction (default
    /// 2 ms). A transaction costs a round trip to the coordinator whatever its size, so under
    /// load a short wait fills it; `Duration::ZERO` starts at once.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long a broker operation (a commit, a takeover's read, topic creation) may take
    /// before it fails (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the local state files live (default: a fresh temporary directory, so every
    /// open rebuilds them from Kafka). A directory that survives restarts makes a takeover
    /// read only what was appended since.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Own only these partitions of each topic (default: all of them).
    pub fn own_partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        self.own = Some(partitions.into_iter().collect());
        self
    }

    /// Accept existing events topics with finite retention or compaction (default: refuse
    /// them, naming the setting).
    pub fn allow_finite_retention(mut self, allow: bool) -> Self {
        self.allow_finite_retention = allow;
        self
    }

    /// Whether to read existing topics' settings (default `true`; turn off for brokers
    /// that do not answer `DescribeConfigs`, such as librdkafka's mock cluster).
    pub fn check_topic_configs(mut self, check: bool) -> Self {
        self.check_topic_configs = check;
        self
    }

    /// Adds a librdkafka setting to every client the store makes (security, timeouts…).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Connects to the cluster and, when transactional, checks that it accepts transactional
    /// producers. Topics are resolved, and their partitions taken, on first use.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a client cannot be created, the state directory cannot be
    /// made, or the cluster refuses transactions (its source is
    /// [`KafkaStoreError::TransactionsRefused`], naming [`transactional`](Self::transactional)).
    pub async fn open(self) -> Result<KafkaStore> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.config {
            base.set(k, v);
        }
        let mut producer = base.clone();
        let timeout_ms = self.timeout.as_millis().to_string();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", &timeout_ms);
        let (temp, state_dir) = match self.state_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("keel-kafka-state-")
                    .tempdir()
                    .map_err(|e| Error::backend("create the local state directory", e))?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let names = Names {
            prefix: self.prefix.clone(),
        };
        let min_isr = self
            .min_insync_replicas
            .or((self.replication > 1).then_some(2));
        let admin = Admin::new(
            &base,
            names.clone(),
            TopicSettings {
                replication: self.replication,
                min_insync_replicas: min_isr,
                allow_finite_retention: self.allow_finite_retention,
                check_configs: self.check_topic_configs,
            },
            self.timeout,
        )?;
        let ctx = Arc::new(Ctx {
            names,
            base: base.clone(),
            producer,
            group: self.group.clone(),
            transactional: self.transactional,
            window: self.window,
            snapshot_every: self.snapshot_every,
            max_batch: self.max_batch,
            linger: self.linger,
            timeout: self.timeout,
            state_dir,
            reader: Reader::new(&base, &self.group, self.timeout),
            bootstrap: self.bootstrap.clone(),
            commits: watch::Sender::new(0),
            transactions: Default::default(),
            appends: Default::default(),
        });
        if ctx.transactional {
            takeover::probe_transactions(&ctx).await?;
        }
        Ok(KafkaStore {
            ctx,
            admin,
            default_partitions: self.default_partitions,
            own: self.own,
            topics: RwLock::new(HashMap::new()),
            owned: RwLock::new(HashMap::new()),
            fenced: std::sync::Mutex::new(HashMap::new()),
            resolving: Mutex::new(()),
            _temp: temp,
        })
    }
}

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
        KafkaStoreBuilder {
            bootstrap: bootstrap.into(),
            group: "keel".into(),
            prefix: String::new(),
            default_partitions: 4,
            replication: 3,
            min_insync_replicas: None,
            transactional: true,
            window: Duration::from_secs(3600),
            snapshot_every: 1000,
            max_batch: 512,
            linger: Duration::from_millis(2),
            timeout: Duration::from_secs(30),
            state_dir: None,
            own: None,
            allow_finite_retention: false,
            check_topic_configs: true,
            config: Vec::new(),
        }
    }

    /// The bootstrap servers the store connects to.
    pub fn bootstrap(&self) -> &str {
        &self.ctx.bootstrap
    }

    /// The Kafka topic holding a Keel topic's events.
    pub fn kafka_topic(&self, topic: &Topic) -> String {
        self.ctx.names.events(topic)
    }

    /// The partitions this store owns (writes and serves from local state), in order.
    pub fn owned_partitions(&self) -> Vec<(Topic, Partition)> {
        let mut owned: Vec<_> = self
            .read_owned()
            .iter()
            .filter(|(_, o)| !o.shared.fenced.load(Ordering::Acquire))
            .map(|(k, _)| k.clone())
            .collect();
        owned.sort();
        owned
    }

    /// Whether this store owns a partition now: it writes it and serves its streams. (A
    /// fenced writer does not own its partition any more.)
    pub fn owns(&self, topic: &Topic, partition: Partition) -> bool {
        self.read_owned()
            .get(&(topic.clone(), partition))
            .is_some_and(|o| !o.shared.fenced.load(Ordering::Acquire))
    }

    /// The settings, counters and names every writer of this store shares.
    pub(crate) fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// The partition count of `topic`, creating it with `partitions` when missing (and
    /// checking it has that many when it exists).
    pub(crate) async fn resolve(&self, topic: &Topic, partitions: u32) -> Result<u32> {
        validate::check_partitions(topic, partitions)?;
        Ok(self
            .partitions(topic, true, Some(partitions))
            .await?
            .unwrap_or(partitions))
    }

    /// The partition count of a topic known to this store, resolving it (without creating
    /// it) when needed.
    pub(crate) async fn partition_count(&self, topic: &Topic) -> Result<u32> {
        self.partitions(topic, false, None)
            .await?
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.clone(),
            })
    }

    /// Topic creation and inspection.
    pub(crate) fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Fences the earlier writers of a partition, blocking (in a consumer group's rebalance
    /// callback): the next [`take_partition`](Self::take_partition) of it reads with this
    /// producer. Fencing before the consumer group hands the partition's committed command
    /// offsets over means no earlier owner can commit past them any more.
    pub(crate) fn fence_blocking(&self, topic: &Topic, partition: Partition) -> Result<()> {
        if self.owns(topic, partition) {
            return Ok(());
        }
        let producer = takeover::fence_blocking(&self.ctx, topic, partition)?;
        self.fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((topic.clone(), partition), producer);
        Ok(())
    }

    /// Gives an owned partition the commands partition whose consumer offsets commit with
    /// its transactions.
    pub(crate) fn attach_commands(
        &self,
        topic: &Topic,
        partition: Partition,
        offsets: Arc<commands::CommandOffsets>,
    ) -> Result<()> {
        let owned = self
            .read_owned()
            .get(&(topic.clone(), partition))
            .cloned()
            .ok_or_else(|| Error::NotOwner {
                topic: topic.clone(),
                partition,
            })?;
        *owned
            .shared
            .commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(offsets);
        Ok(())
    }

    /// Writes the answer to a routed command that wrote no events, with its consumer
    /// offset, in the partition's next transaction.
    pub(crate) async fn answer(
        &self,
        topic: &Topic,
        partition: Partition,
        answer: commands::Answer,
    ) -> Result<()> {
        let owned = self.owned(topic, partition)?;
        Self::send(&owned, |reply| Job::Answer { answer, reply }).await
    }

    /// An owned partition's figures for metrics: the offset after its writer's last commit,
    /// and the routed commands consumed and not answered yet.
    pub(crate) fn partition_figures(
        &self,
        topic: &Topic,
        partition: Partition,
    ) -> Option<(Offset, usize)> {
        let owned = self
            .read_owned()
            .get(&(topic.clone(), partition))
            .cloned()?;
        let end = Offset(owned.shared.committed_end.load(Ordering::Acquire));
        let pending = owned.shared.commands().map_or(0, |c| c.pending());
        Some((end, pending))
    }

    /// The writer of an owned partition (not fenced).
    fn owned(&self, topic: &Topic, partition: Partition) -> Result<Arc<Owned>> {
        let key = (topic.clone(), partition);
        let owned = self.read_owned().get(&key).cloned();
        match owned {
            Some(owned) if owned.shared.fenced.load(Ordering::Acquire) => {
                // Fenced: another writer owns the partition now. Let it go.
                let removed = {
                    let mut map = self.write_owned();
                    match map.get(&key) {
                        Some(o) if Arc::ptr_eq(o, &owned) => map.remove(&key),
                        _ => None,
                    }
                };
                if let Some(removed) = removed {
                    tracing::info!(%topic, %partition, "fenced by another writer: releasing the partition");
                    tokio::spawn(async move { release(&removed).await });
                }
                Err(Error::NotOwner {
                    topic: topic.clone(),
                    partition,
                })
            }
            Some(owned) => Ok(owned),
            None => Err(Error::NotOwner {
                topic: topic.clone(),
                partition,
            }),
        }
    }

    fn read_owned(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(Topic, Partition), Arc<Owned>>> {
        self.owned
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_owned(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(Topic, Partition), Arc<Owned>>> {
        self.owned
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a partition: fences any earlier writer, reads the partition to its end and
    /// starts writing it. Taking a partition this store owns already does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], or a broker failure (among
    /// them [`KafkaStoreError::TransactionsRefused`]).
    pub async fn take_partition(&self, topic: &Topic, partition: Partition) -> Result<()> {
        let partitions =
            self.partitions(topic, false, None)
                .await?
                .ok_or_else(|| Error::UnknownTopic {
                    topic: topic.clone(),
                })?;
        validate::check_partition(topic, partition, partitions)?;
        let _guard = self.resolving.lock().await;
        self.take(topic, partitions, partition).await
    }

    async fn take(&self, topic: &Topic, partitions: u32, partition: Partition) -> Result<()> {
        let key = (topic.clone(), partition);
        // Not owned, or fenced (and let go just now): take it.
        if self.owned(topic, partition).is_ok() {
            return Ok(());
        }
        let fenced = self
            .fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        let owned = takeover::take(
            Arc::clone(&self.ctx),
            topic.clone(),
            partitions,
            partition,
            fenced,
        )
        .await?;
        self.write_owned().insert(key, Arc::new(owned));
        Ok(())
    }

    /// Releases a partition: finishes its queued appends, writes a writer-state snapshot so
    /// the next owner reads a short tail, and stops writing it. Later appends to its streams
    /// fail with [`Error::NotOwner`]. A transaction whose outcome was unknown is not
    /// recovered any more (that would fence the next owner): its callers were told to retry.
    pub async fn release_partition(&self, topic: &Topic, partition: Partition) {
        let key = (topic.clone(), partition);
        self.fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        let owned = self.write_owned().remove(&key);
        if let Some(owned) = owned {
            owned.shared.assigned.store(false, Ordering::Release);
            release(&owned).await;
        }
    }

    /// Releases every partition (see [`release_partition`](Self::release_partition)) and
    /// waits for the writers to stop. Later calls fail with [`Error::NotOwner`].
    pub async fn close(&self) {
        let all: Vec<Arc<Owned>> = self.write_owned().drain().map(|(_, o)| o).collect();
        futures::future::join_all(all.iter().map(|o| release(o))).await;
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
