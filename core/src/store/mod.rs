//! The event store: a partitioned, replayable log with idempotent, offset-tracked appends.
//!
//! Every backend implements [`EventStore`] and passes the same conformance suite
//! (`keel::testing::conformance`, with the `testing` feature). What every implementation
//! guarantees:
//!
//! - **Atomic**: an append writes all its events or none.
//! - **Optimistic concurrency**: [`ExpectedVersion`] is checked against the stream; a
//!   mismatch is [`Error::Conflict`] carrying the actual version.
//! - **Idempotent per stream**: the key is `(stream, command id)`. An append whose command id
//!   is already committed on that stream writes nothing and returns the first result
//!   ([`Appended::replayed`] is `true`), checked *before* the expected version. The same id
//!   with another [`Fingerprint`](crate::Fingerprint) is [`Error::CommandIdReused`].
//! - **Offset-tracked**: an append returns the [`Position`] of each event. Offsets grow
//!   strictly in commit order within a partition; reading a partition from an offset yields
//!   every committed record from there, in order, each once.
//! - **Partitioned by stream**: a stream always lands in partition
//!   `murmur2(id bytes) mod N` of the topic named after its kind (see
//!   [`partitioner`](crate::partitioner)).
//! - **Empty appends are rejected** with [`Error::EmptyAppend`]; they never create a stream.
//! - **Atomic across streams, where the backend can** ([`Capabilities::multi_stream_append`]):
//!   [`EventStore::append_all`] commits appends to several streams, each with its own
//!   expected version and command, in one transaction — all of them or none. The memory,
//!   SQLite and PostgreSQL stores can; a backend that cannot (Kafka: a record batch spans one
//!   partition's writer) refuses with [`Error::Unsupported`] and writes nothing.
//! - **Snapshots**: [`EventStore::save_snapshot`] keeps each stream's latest snapshot, never
//!   one ahead of its stream (see [`snapshot`](crate::snapshot) for the rules).
//! - **Bad input** (ids, type names, sizes beyond [`limits`](crate::limits)) is refused with
//!   a typed error before anything is written.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::envelope::{CommandMeta, NewEvent, RecordedEvent};
use crate::ids::{CommandId, IdError, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;

mod error;
#[cfg(feature = "kafka")]
pub mod kafka;
mod ledger;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod tail;
pub(crate) mod validate;

pub use error::{Error, InvalidEvent, Result};

/// The hash map the stores keep their indexes in: keys are ids we validated, so a fast,
/// randomly seeded hasher is enough.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub use tail::tail;

/// What the writer expects the stream's version to be before the append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ExpectedVersion {
    /// No check: append whatever the version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version (0 is the same as [`Self::NoStream`]).
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn admits(self, actual: StreamVersion) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == StreamVersion::INITIAL,
            Self::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// One append: events for one stream, the expectation, and the command they answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendRequest {
    /// The stream to append to.
    pub stream: StreamId,
    /// The version the stream must be at.
    pub expected: ExpectedVersion,
    /// The events, in order; at least one.
    pub events: Vec<NewEvent>,
    /// The command, for idempotency and correlation. Without it the append is not
    /// idempotent: a retry appends again.
    pub command: Option<CommandMeta>,
}

impl AppendRequest {
    /// An append without a command id.
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        Self {
            stream,
            expected,
            events,
            command: None,
        }
    }

    /// Makes the append idempotent under this command.
    #[must_use]
    pub fn with_command(mut self, command: CommandMeta) -> Self {
        self.command = Some(command);
        self
    }
}

/// The result of a committed append (or of the first commit of its command id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream.
    pub stream: StreamId,
    /// The partition the stream lives in.
    pub partition: Partition,
    /// The version of the first event written.
    pub first_version: StreamVersion,
    /// The offset of each event written, in order.
    pub offsets: Vec<Offset>,
    /// `true` when this command id was already committed and nothing new was written.
    pub replayed: bool,
}

impl Appended {
    /// The stream's version after the append.
    pub fn last_version(&self) -> StreamVersion {
        StreamVersion(self.first_version.0 + self.offsets.len() as u64 - 1)
    }

    /// The position of each event, in order.
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        self.offsets.iter().map(|&offset| Position {
            topic: self.stream.topic().clone(),
            partition: self.partition,
            offset,
        })
    }

    /// The version of each event, in order.
    pub fn versions(&self) -> impl Iterator<Item = StreamVersion> + '_ {
        (0..self.offsets.len() as u64).map(|i| StreamVersion(self.first_version.0 + i))
    }

    /// The same result, marked as the answer to a retry.
    #[must_use]
    pub fn into_replayed(mut self) -> Self {
        self.replayed = true;
        self
    }
}

/// A topic's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub topic: Topic,
    /// Its partition count, fixed when it was created.
    pub partitions: u32,
}

/// What a backend can promise beyond the common contract. The conformance suite reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Acknowledged appends survive a crash of the process.
    pub durable: bool,
    /// Offsets in a partition are dense from 0 (SQL backends).
    pub dense_offsets: bool,
    /// Concurrent appends share commits ([`StoreStats::commits`] < appends).
    pub group_commit: bool,
    /// [`EventStore::append_all`] commits appends to several streams atomically (memory,
    /// SQLite, PostgreSQL). Without it, `append_all` refuses with [`Error::Unsupported`].
    pub multi_stream_append: bool,
}

/// Counters a store keeps about its own work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Append requests answered (committed, replayed or refused).
    pub appends: u64,
    /// Write transactions committed.
    pub commits: u64,
    /// The size of the backend's write-ahead log in bytes, where it keeps one on the side
    /// (SQLite's `-wal` file, measured after each checkpoint).
    pub wal_bytes: Option<u64>,
}

/// The stored answer to a command id on a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    /// The fingerprint it was committed with.
    pub fingerprint: crate::Fingerprint,
    /// What it wrote.
    pub appended: Appended,
}

/// A partitioned, replayable log of events. See the [module docs](self) for the contract.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel event store",
    note = "use `keel::store::memory::MemoryStore`, `keel::store::sqlite::SqliteStore`, or implement `keel::EventStore`"
)]
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to one stream, atomically and idempotently.
    ///
    /// # Errors
    ///
    /// [`Error::Conflict`], [`Error::CommandIdReused`], [`Error::EmptyAppend`],
    /// [`Error::InvalidEvent`], [`Error::TooManyEvents`], [`Error::PartitionCount`], or a
    /// backend failure.
    async fn append(&self, request: AppendRequest) -> Result<Appended>;

    /// Appends to several streams in one transaction: every append is decided as
    /// [`append`](Self::append) decides one (its command id first, then its expected
    /// version), in order, so a later one sees an earlier one's effect on a shared stream —
    /// and then all of them are written, or none is.
    ///
    /// Returns one result per request, in order. An append whose command id was committed
    /// before is answered with its first result ([`Appended::replayed`]) and writes nothing
    /// again; so retrying a whole call after a success writes nothing. An empty list writes
    /// nothing and returns no results.
    ///
    /// Only backends with [`Capabilities::multi_stream_append`] do this; the default refuses.
    ///
    /// ```
    /// use keel::store::{AppendRequest, EventStore, ExpectedVersion, memory::MemoryStore};
    /// use keel::{NewEvent, StreamId, StreamVersion};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keel::store::Error> {
    /// let store = MemoryStore::new();
    /// let (alice, bob) = (StreamId::new("account", "alice")?, StreamId::new("account", "bob")?);
    /// let event = |t: &str| NewEvent::raw(t, 1, b"{}".to_vec());
    /// let both = store
    ///     .append_all(vec![
    ///         AppendRequest::new(alice.clone(), ExpectedVersion::NoStream, vec![event("Withdrawn")]),
    ///         AppendRequest::new(bob.clone(), ExpectedVersion::NoStream, vec![event("Deposited")]),
    ///     ])
    ///     .await?;
    /// assert_eq!(both.len(), 2);
    /// // A stale expectation on one stream refuses the whole append: nothing is written.
    /// let refused = store
    ///     .append_all(vec![
    ///         AppendRequest::new(alice.clone(), ExpectedVersion::Exact(StreamVersion(1)), vec![event("Withdrawn")]),
    ///         AppendRequest::new(bob.clone(), ExpectedVersion::NoStream, vec![event("Deposited")]),
    ///     ])
    ///     .await;
    /// assert!(refused.is_err_and(|e| e.is_conflict()));
    /// assert_eq!(store.stream_version(&alice).await?, StreamVersion(1));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] on a backend without the capability; otherwise the first
    /// failing append's error ([`Error::Conflict`] naming its stream,
    /// [`Error::CommandIdReused`], [`Error::InvalidEvent`]…) or [`Error::TooManyStreams`]. On
    /// any error nothing of the call is written.
    async fn append_all(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        let _ = requests;
        Err(Error::Unsupported {
            operation: "an atomic append to several streams",
            backend: std::any::type_name::<Self>(),
        })
    }

    /// Reads a stream's events with versions from `from` on (1 for all), in version order.
    ///
    /// # Errors
    ///
    /// A backend failure or a damaged record.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>>;

    /// A stream's current version (0 when it does not exist).
    ///
    /// # Errors
    ///
    /// A backend failure.
    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion>;

    /// The stored answer to `command` on `stream`, if that command id was committed there.
    ///
    /// # Errors
    ///
    /// A backend failure.
    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>>;

    /// Reads up to `limit` committed records of a partition with offsets `>= from`, in offset
    /// order. Returns fewer (or none) when the partition has no more yet.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], a backend failure or a damaged
    /// record.
    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The offset the next record of a partition will get (its length on SQL backends).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`] or a backend failure.
    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset>;

    /// Creates a topic with `partitions` partitions, or checks an existing one has that many.
    /// Appending to a topic that does not exist creates it with the store's default count.
    ///
    /// # Errors
    ///
    /// [`Error::PartitionCount`] naming both counts when the topic exists with another count.
    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> Result<TopicInfo>;

    /// The topics that exist, with their partition counts.
    ///
    /// # Errors
    ///
    /// A backend failure.
    async fn topics(&self) -> Result<Vec<TopicInfo>>;

    /// Saves a snapshot of a stream's aggregate, replacing an older one (see
    /// [`snapshot`](crate::snapshot) for which one wins).
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotAhead`] when the snapshot's version is above the stream's,
    /// [`Error::InvalidSnapshot`] (version 0, too large), or a backend failure. Nothing is
    /// saved on error.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()>;

    /// The stream's latest snapshot, whatever its shape (the caller checks the shape).
    ///
    /// # Errors
    ///
    /// A backend failure or a damaged snapshot row.
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>>;

    /// What loading an aggregate needs, in one round trip where the backend can: the stream's
    /// latest snapshot when it has shape `shape` (none is looked for when `shape` is `None`),
    /// and the stream's events after it (from version 1 without one), read consistently.
    ///
    /// The default reads [`load_snapshot`](Self::load_snapshot) then
    /// [`read_stream`](Self::read_stream).
    ///
    /// # Errors
    ///
    /// A backend failure, a damaged record or snapshot.
    async fn read_from_snapshot(
        &self,
        stream: &StreamId,
        shape: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        let snapshot = match shape {
            Some(shape) => self
                .load_snapshot(stream)
                .await?
                .filter(|s| s.shape == shape),
            None => None,
        };
        let from = snapshot
            .as_ref()
            .map_or(StreamVersion(1), |s| s.version.next());
        let events = self.read_stream(stream, from).await?;
        Ok((snapshot, events))
    }

    /// A counter that changes after every commit, to wake live readers. Readers must not rely
    /// on seeing every value; they re-read the partition when it changes.
    fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Tails a partition from `from`: every committed record once, in offset order, then
    /// new records as they commit. The default reads in batches and wakes on
    /// [`subscribe_commits`](Self::subscribe_commits), polling every 250 ms for appends by
    /// other processes.
    fn tail(self: Arc<Self>, topic: Topic, partition: Partition, from: Offset) -> Tail {
        tail::tail(
            self,
            topic,
            partition,
            from,
            std::time::Duration::from_millis(250),
        )
    }

    /// What this backend promises beyond the common contract.
    fn capabilities(&self) -> Capabilities;

    /// Counters about the store's own work.
    fn stats(&self) -> StoreStats;
}

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        (**self).append(request).await
    }
    async fn append_all(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        (**self).append_all(requests).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>> {
        (**self).read_stream(stream, from).await
    }
    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        (**self).stream_version(stream).await
    }
    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>> {
        (**self).command(stream, command).await
    }
    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        (**self).read_partition(topic, partition, from, limit).await
    }
    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset> {
        (**self).head(topic, partition).await
    }
    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        (**self).ensure_topic(topic, partitions).await
    }
    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        (**self).topics().await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        (**self).save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        (**self).load_snapshot(stream).await
    }
    async fn read_from_snapshot(
        &self,
        stream: &StreamId,
        shape: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        (**self).read_from_snapshot(stream, shape).await
    }
    fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        (**self).subscribe_commits()
    }
    fn tail(self: Arc<Self>, topic: Topic, partition: Partition, from: Offset) -> Tail {
        S::tail(Arc::clone(&*self), topic, partition, from)
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn stats(&self) -> StoreStats {
        (**self).stats()
    }
}

/// A live, never-ending stream of a partition's records from an offset: every committed
/// record once, in offset order, then new ones as they commit.
pub type Tail = BoxStream<'static, Result<RecordedEvent>>;

impl From<IdError> for Error {
    fn from(e: IdError) -> Self {
        Self::InvalidId(e)
    }
}
