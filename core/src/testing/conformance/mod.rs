//! The event store contract, case by case (`CONFORMANCE.md`). Every backend runs every case.
//!
//! A backend implements [`Backend`] (how to make a fresh store, close it and open it again)
//! and instantiates the suite in a test target:
//!
//! ```text
//! keel::conformance_suite!(keel::testing::conformance::SqliteBackend);
//! ```
//!
//! Each case is a public async function that panics with a message naming the broken
//! guarantee. Where a backend cannot honour a case, it says so in its
//! [`Capabilities`](crate::store::Capabilities) and the case checks the weaker promise the
//! backend states instead.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use async_trait::async_trait;

use crate::envelope::{CommandMeta, Fingerprint, NewEvent};
use crate::event::{DecodeError, DecodeErrorKind, EncodeError, Event};
use crate::ids::{CommandId, IdError, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::limits;
use crate::store::{AppendRequest, Appended, Error, EventStore, ExpectedVersion, InvalidEvent};

mod append;
mod faults;
mod group_commit;
mod idempotency;
mod multi_stream;
mod partitions;
mod snapshots;

pub use append::*;
pub use faults::*;
pub use group_commit::*;
pub use idempotency::*;
pub use multi_stream::*;
pub use partitions::*;
pub use snapshots::*;

#[cfg(feature = "postgres")]
pub use crate::testing::postgres::PostgresBackend;

/// How the suite makes, closes and reopens stores of one backend.
pub trait Backend: Sized + Send + Sync + 'static {
    /// The store type.
    type Store: EventStore;

    /// Prepares a fresh, empty place for a store (a temp file, a new database) whose topics
    /// created by an append get `partitions` partitions.
    fn create(partitions: u32) -> impl Future<Output = Self> + Send;

    /// Opens the store in that place; called again after [`close`](Self::close) to reopen.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;

    /// Closes a store, waiting for its writes to finish.
    fn close(&self, store: Self::Store) -> impl Future<Output = ()> + Send;

    /// Opens an append transaction from a separate connection (as another process would),
    /// writes `event` in it as version 1 of `stream` (a new stream) at the head of `partition`,
    /// the way the store's own appends do, and holds it open until
    /// [`HeldAppend::commit`]. The store's appends to that partition meanwhile must not let a
    /// tailing reader skip the held record (case 15).
    ///
    /// `None` (the default) where there is no such transaction to hold (an in-memory store, a
    /// log without SQL transactions): case 15 then checks the weaker promise that a tail sees
    /// concurrent appends once, in order.
    fn hold_append<'a>(
        &'a self,
        store: &'a Self::Store,
        stream: &'a StreamId,
        partition: Partition,
        event: &'a NewEvent,
    ) -> impl Future<Output = Option<Box<dyn HeldAppend + 'a>>> + Send + 'a {
        let _ = (store, stream, partition, event);
        async { None }
    }
}

/// An append transaction held open by [`Backend::hold_append`].
#[async_trait]
pub trait HeldAppend: Send {
    /// How many of the store's appends are waiting for this transaction to end, as far as the
    /// backend can tell (0 while none is).
    async fn waiting(&mut self) -> usize;

    /// Commits the held transaction: its record becomes visible, the waiting appends go on.
    async fn commit(self: Box<Self>);
}

/// The in-memory backend: reopening gives an empty store (it is not durable).
#[derive(Debug)]
pub struct MemoryBackend {
    partitions: u32,
}

impl Backend for MemoryBackend {
    type Store = crate::store::memory::MemoryStore;

    async fn create(partitions: u32) -> Self {
        Self { partitions }
    }

    async fn open(&self) -> Self::Store {
        crate::store::memory::MemoryStore::with_default_partitions(self.partitions)
    }

    async fn close(&self, store: Self::Store) {
        drop(store);
    }
}

/// The SQLite backend, on a file in a fresh temporary directory.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub struct SqliteBackend {
    dir: tempfile::TempDir,
    partitions: u32,
}

#[cfg(feature = "sqlite")]
impl SqliteBackend {
    /// The file the store lives in.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("events.db")
    }
}

#[cfg(feature = "sqlite")]
impl Backend for SqliteBackend {
    type Store = crate::store::sqlite::SqliteStore;

    async fn create(partitions: u32) -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            partitions,
        }
    }

    async fn open(&self) -> Self::Store {
        crate::store::sqlite::SqliteStore::builder(self.path())
            .default_partitions(self.partitions)
            .open()
            .await
            .expect("open the SQLite store")
    }

    async fn close(&self, store: Self::Store) {
        store.close().await;
    }

    async fn hold_append<'a>(
        &'a self,
        store: &'a Self::Store,
        stream: &'a StreamId,
        partition: Partition,
        event: &'a NewEvent,
    ) -> Option<Box<dyn HeldAppend + 'a>> {
        let path = self.path();
        let (topic, id, part) = (
            stream.kind().to_owned(),
            stream.id().to_owned(),
            i64::from(partition.0),
        );
        let event = event.clone();
        let conn =
            tokio::task::spawn_blocking(move || -> rusqlite::Result<rusqlite::Connection> {
                let conn = rusqlite::Connection::open(&path)?;
                conn.busy_timeout(Duration::from_secs(30))?;
                conn.execute_batch("BEGIN IMMEDIATE")?;
                // The envelope as `store/sqlite/packed.rs` lays it out: format 1, no optional
                // field, the event id, the timestamp.
                let mut envelope = vec![1u8, 0];
                envelope.extend_from_slice(event.event_id.as_bytes());
                envelope.extend_from_slice(&event.timestamp.0.to_le_bytes());
                conn.execute(
                    "INSERT INTO keel_events (topic, stream_id, version, part, log_offset, \
                 event_type, schema_version, payload, envelope) \
                 SELECT ?1, ?2, 1, ?3, next_offset, ?4, ?5, ?6, ?7 FROM keel_partitions \
                 WHERE topic = ?1 AND part = ?3",
                    rusqlite::params![
                        topic,
                        id,
                        part,
                        event.event_type,
                        i64::from(event.schema_version),
                        event.payload,
                        envelope
                    ],
                )?;
                conn.execute(
                "INSERT INTO keel_streams (topic, stream_id, version, part) VALUES (?1, ?2, 1, ?3)",
                rusqlite::params![topic, id, part],
            )?;
                conn.execute(
                    "UPDATE keel_partitions SET next_offset = next_offset + 1 \
                 WHERE topic = ?1 AND part = ?2",
                    rusqlite::params![topic, part],
                )?;
                Ok(conn)
            })
            .await
            .expect("the blocking task")
            .expect(
                "hold an append transaction on the SQLite file (the partition must have records)",
            );
        Some(Box::new(SqliteHeld {
            conn,
            store,
            taken: store.stats().appends,
        }))
    }
}

/// The SQLite file's write lock, held by another connection.
#[cfg(feature = "sqlite")]
struct SqliteHeld<'a> {
    conn: rusqlite::Connection,
    store: &'a crate::store::sqlite::SqliteStore,
    /// The store's append count when the lock was taken.
    taken: u64,
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl HeldAppend for SqliteHeld<'_> {
    /// The appends the store's writer has taken into a batch since: it counts them before it
    /// asks for the write lock, which it cannot get while this holds it.
    async fn waiting(&mut self) -> usize {
        usize::try_from(self.store.stats().appends - self.taken).unwrap_or(usize::MAX)
    }

    async fn commit(self: Box<Self>) {
        let conn = self.conn;
        tokio::task::spawn_blocking(move || conn.execute_batch("COMMIT"))
            .await
            .expect("the blocking task")
            .expect("COMMIT the held append");
    }
}

/// The address of the Kafka broker the tests use, from `KEEL_TEST_KAFKA`.
///
/// # Panics
///
/// When the variable is not set, with a message saying how to start a broker: a test that
/// needs Kafka fails rather than passing without it.
#[cfg(feature = "kafka")]
pub fn kafka_bootstrap() -> String {
    kafka_env("KEEL_TEST_KAFKA", "a single Kafka node")
}

/// Reads a broker address from the environment, or panics saying how to start one.
#[cfg(feature = "kafka")]
#[doc(hidden)]
pub fn kafka_env(var: &str, what: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{var} is not set: this test needs {what}. Run the tests through \
             `scripts/kafka.sh run cargo test ...` (or `bash scripts/test.sh`), which starts \
             Kafka from Maven Central's jars and sets {var}; or point {var} at your own broker."
        ),
    }
}

/// The Kafka backend: each instance is a fresh set of topics (a unique topic prefix) on the
/// broker at `KEEL_TEST_KAFKA`; reopening is a new [`KafkaStore`] of the same group taking
/// every partition over (fencing the old one), with an empty local state directory, so it
/// rebuilds from the writer-state snapshot and the partition's tail.
///
/// [`KafkaStore`]: crate::store::kafka::KafkaStore
#[cfg(feature = "kafka")]
#[derive(Debug)]
pub struct KafkaBackend {
    bootstrap: String,
    prefix: String,
    partitions: u32,
}

#[cfg(feature = "kafka")]
impl KafkaBackend {
    /// The builder every store of this backend starts from: its prefix and group, one
    /// replica, a writer-state snapshot every few appends (so reopening exercises them).
    pub fn builder(&self) -> crate::store::kafka::KafkaStoreBuilder {
        crate::store::kafka::KafkaStore::builder(&self.bootstrap)
            .topic_prefix(&self.prefix)
            .group(self.prefix.trim_end_matches('.'))
            .default_partitions(self.partitions)
            .replication_factor(1)
            .writer_snapshot_every(5)
    }

    /// The Kafka topic name of a Keel topic of this backend.
    pub fn kafka_topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }
}

#[cfg(feature = "kafka")]
impl Backend for KafkaBackend {
    type Store = crate::store::kafka::KafkaStore;

    async fn create(partitions: u32) -> Self {
        Self {
            bootstrap: kafka_bootstrap(),
            prefix: format!("keel-test-{}.", uuid::Uuid::now_v7().simple()),
            partitions,
        }
    }

    async fn open(&self) -> Self::Store {
        self.builder().open().await.expect("open the Kafka store")
    }

    async fn close(&self, store: Self::Store) {
        store.close().await;
    }
}

/// Instantiates every conformance case as a `#[tokio::test]` for a [`Backend`].
///
/// The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) as a dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:ty) => {
        $crate::conformance_suite!(@cases $backend;
            append_to_new_stream_returns_versions_and_positions,
            append_is_atomic,
            stale_expected_version_is_a_conflict_naming_the_actual_version,
            concurrent_exact_appenders_leave_no_gap,
            empty_append_is_rejected_and_creates_nothing,
            duplicate_command_id_appends_nothing,
            committed_command_replays_even_when_stale,
            reused_command_id_with_another_fingerprint_is_refused,
            same_command_id_on_two_streams_is_two_commands,
            concurrent_duplicate_commands_write_once,
            idempotency_survives_reopening,
            read_partition_yields_every_record_once_in_order,
            offsets_are_dense_in_commit_order,
            tail_sees_every_concurrent_append_once_in_order,
            held_open_append_never_lets_a_tail_skip,
            streams_land_in_their_murmur2_partition,
            reopening_a_topic_with_another_partition_count_fails,
            concurrent_appenders_share_commits,
            one_bad_caller_does_not_fail_the_others,
            undecodable_records_are_typed_errors_naming_where,
            bad_input_is_refused_and_changes_nothing,
            acknowledged_appends_survive_reopening,
            snapshot_is_found_by_the_next_load,
            snapshot_of_another_shape_is_ignored,
            snapshot_ahead_of_its_stream_is_refused,
            snapshots_survive_reopening,
            snapshots_change_nothing_about_appends_and_command_ids,
            multi_stream_append_writes_every_stream,
            multi_stream_conflict_on_one_stream_writes_nothing,
            multi_stream_append_is_idempotent,
            concurrent_multi_stream_appends_are_all_or_nothing,
        );
    };
    (@cases $backend:ty; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testing::conformance::$case::<$backend>().await;
            }
        )*
    };
}

/// The event type the suite writes and decodes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Probe {
    /// A numbered event.
    Tested {
        /// Its number.
        n: u64,
    },
}

impl Event for Probe {
    const EVENT_TYPES: &'static [&'static str] = &["Tested"];

    fn event_type(&self) -> &'static str {
        "Tested"
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        crate::event::encode_variant(self, "Tested")
    }

    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        match event_type {
            "Tested" => crate::event::decode_variant("Tested", event_type, schema_version, payload),
            _ => Err(DecodeError::unknown_type(
                event_type,
                schema_version,
                Self::EVENT_TYPES,
            )),
        }
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent::from_event(&Probe::Tested { n }).expect("a probe encodes")
}

fn events(range: std::ops::Range<u64>) -> Vec<NewEvent> {
    range.map(event).collect()
}

fn stream(kind: &str, id: &str) -> StreamId {
    StreamId::new(kind, id).expect("a valid stream id")
}

fn command(id: &str, fingerprint: &str) -> CommandMeta {
    CommandMeta::new(
        CommandId::new(id).expect("a valid command id"),
        Fingerprint::of_bytes(fingerprint.as_bytes()),
    )
}

fn append(s: &StreamId, expected: ExpectedVersion, evs: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(s.clone(), expected, evs)
}

fn n_of(record: &crate::RecordedEvent) -> u64 {
    match record.decode::<Probe>().expect("a probe decodes") {
        Probe::Tested { n } => n,
    }
}

async fn fresh<B: Backend>(partitions: u32) -> (B, B::Store) {
    let backend = B::create(partitions).await;
    let store = backend.open().await;
    (backend, store)
}
