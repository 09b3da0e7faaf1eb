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

use crate::envelope::{CommandMeta, Fingerprint, NewEvent};
use crate::event::{DecodeError, DecodeErrorKind, EncodeError, Event};
use crate::ids::{CommandId, IdError, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::limits;
use crate::store::{AppendRequest, Appended, Error, EventStore, ExpectedVersion, InvalidEvent};

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
            streams_land_in_their_murmur2_partition,
            reopening_a_topic_with_another_partition_count_fails,
            concurrent_appenders_share_commits,
            one_bad_caller_does_not_fail_the_others,
            undecodable_records_are_typed_errors_naming_where,
            bad_input_is_refused_and_changes_nothing,
            acknowledged_appends_survive_reopening,
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

/// Case 1: k events to a new stream get versions 1..k and k positions in one partition, and
/// read back intact.
pub async fn append_to_new_stream_returns_versions_and_positions<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "alice");
    let sent = events(0..3)
        .into_iter()
        .map(|e| e.with_metadata("who", "suite"))
        .collect::<Vec<_>>();
    let cmd = command("open-alice", "open");
    let appended = store
        .append(append(&s, ExpectedVersion::NoStream, sent.clone()).with_command(cmd.clone()))
        .await
        .expect("append to a new stream");
    assert_eq!(appended.first_version, StreamVersion(1));
    assert_eq!(appended.last_version(), StreamVersion(3));
    assert_eq!(appended.offsets.len(), 3);
    assert!(!appended.replayed);
    assert_eq!(
        appended.partition,
        crate::partitioner::partition_for(b"alice", 4),
        "the stream's partition is murmur2(id) mod 4"
    );
    let read = store
        .read_stream(&s, StreamVersion(1))
        .await
        .expect("read the stream");
    assert_eq!(
        read.len(),
        3,
        "read_stream returns exactly the appended events"
    );
    for (i, (record, sent)) in read.iter().zip(&sent).enumerate() {
        assert_eq!(record.version, StreamVersion(i as u64 + 1));
        assert_eq!(record.stream, s);
        assert_eq!(
            record.position,
            appended.positions().nth(i).expect("a position")
        );
        assert_eq!(record.event_type, sent.event_type);
        assert_eq!(record.schema_version, sent.schema_version);
        assert_eq!(record.payload, sent.payload);
        assert_eq!(record.event_id, sent.event_id);
        assert_eq!(record.timestamp, sent.timestamp);
        assert_eq!(record.metadata, sent.metadata);
        assert_eq!(record.command_id.as_ref(), Some(&cmd.id));
    }
    let tail = store
        .read_stream(&s, StreamVersion(3))
        .await
        .expect("read from version 3");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].version, StreamVersion(3));
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
}

/// Case 2: when one event of an append is invalid, none is written, and the error names it.
pub async fn append_is_atomic<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "atomic");
    let mut bad_name = events(0..3);
    bad_name[1].event_type = "bad type!".into();
    let err = store
        .append(append(&s, ExpectedVersion::Any, bad_name))
        .await
        .expect_err("an event with a bad type name fails the append");
    assert!(
        matches!(
            &err,
            Error::InvalidEvent {
                index: 1,
                reason: InvalidEvent::TypeName(_),
                ..
            }
        ),
        "the error names event 1 and its type name: {err}"
    );
    let mut too_big = events(0..3);
    too_big[2].payload = vec![b' '; limits::MAX_PAYLOAD_BYTES + 1];
    let err = store
        .append(append(&s, ExpectedVersion::Any, too_big))
        .await
        .expect_err("an oversized event fails the append");
    assert!(
        matches!(
            &err,
            Error::InvalidEvent {
                index: 2,
                reason: InvalidEvent::PayloadTooLarge { .. },
                ..
            }
        ),
        "the error names event 2 and its size: {err}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    assert!(
        store
            .read_stream(&s, StreamVersion(1))
            .await
            .expect("read")
            .is_empty()
    );
}

/// Case 3: `Exact` and `NoStream` mismatches are conflicts naming the actual version and
/// write nothing; `Any` always appends.
pub async fn stale_expected_version_is_a_conflict_naming_the_actual_version<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "conflicted");
    store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)))
        .await
        .expect("first append");
    for expected in [
        ExpectedVersion::Exact(StreamVersion(1)),
        ExpectedVersion::Exact(StreamVersion(3)),
        ExpectedVersion::NoStream,
    ] {
        let err = store
            .append(append(&s, expected, events(10..11)))
            .await
            .expect_err("a stale expectation conflicts");
        match err {
            Error::Conflict {
                stream,
                expected: e,
                actual,
            } => {
                assert_eq!(stream, s);
                assert_eq!(e, expected);
                assert_eq!(
                    actual,
                    StreamVersion(2),
                    "the conflict carries the actual version"
                );
            }
            other => panic!("expected a conflict, got {other}"),
        }
    }
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2)
    );
    let ok = store
        .append(append(
            &s,
            ExpectedVersion::Exact(StreamVersion(2)),
            events(2..3),
        ))
        .await
        .expect("the right expectation appends");
    assert_eq!(ok.first_version, StreamVersion(3));
    let any = store
        .append(append(&s, ExpectedVersion::Any, events(3..4)))
        .await
        .expect("Any appends");
    assert_eq!(any.first_version, StreamVersion(4));
    let fresh_any = store
        .append(append(
            &stream("account", "new"),
            ExpectedVersion::Any,
            events(0..1),
        ))
        .await
        .expect("Any appends to a new stream");
    assert_eq!(fresh_any.first_version, StreamVersion(1));
}

/// Case 4: 16 tasks appending with `Exact` in a loop end with versions 1..16m, no gap or
/// duplicate, and every loser was told the actual version.
pub async fn concurrent_exact_appenders_leave_no_gap<B: Backend>() {
    const TASKS: u64 = 16;
    const EACH: u64 = 5;
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let s = stream("account", "contended");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut expected = store.stream_version(&s).await.expect("version");
            let mut written = 0;
            let mut conflicts = 0u64;
            while written < EACH {
                let n = task * 1000 + written;
                match store
                    .append(append(&s, ExpectedVersion::Exact(expected), vec![event(n)]))
                    .await
                {
                    Ok(a) => {
                        assert_eq!(
                            a.first_version,
                            expected.next(),
                            "a win lands right after the expectation"
                        );
                        expected = a.first_version;
                        written += 1;
                    }
                    Err(Error::Conflict {
                        actual,
                        expected: e,
                        ..
                    }) => {
                        assert_eq!(e, ExpectedVersion::Exact(expected));
                        assert!(
                            actual > expected,
                            "the loser is told a newer actual version ({actual} > {expected})"
                        );
                        assert!(actual.0 <= TASKS * EACH, "the actual version exists");
                        expected = actual;
                        conflicts += 1;
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
                tokio::task::yield_now().await;
            }
            conflicts
        }));
    }
    for h in handles {
        h.await.expect("an appender task");
    }
    let read = store.read_stream(&s, StreamVersion(1)).await.expect("read");
    let versions: Vec<u64> = read.iter().map(|r| r.version.0).collect();
    assert_eq!(
        versions,
        (1..=TASKS * EACH).collect::<Vec<_>>(),
        "versions 1..=N, no gap, no duplicate"
    );
    let mut per_task: HashMap<u64, Vec<u64>> = HashMap::new();
    for r in &read {
        let n = n_of(r);
        per_task.entry(n / 1000).or_default().push(n % 1000);
    }
    assert_eq!(per_task.len() as u64, TASKS);
    for (task, ns) in per_task {
        assert_eq!(
            ns,
            (0..EACH).collect::<Vec<_>>(),
            "task {task} wrote each of its events once, in order"
        );
    }
}

/// Case 5: an empty append is rejected and never creates a stream or topic.
pub async fn empty_append_is_rejected_and_creates_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("ghost", "nobody");
    let err = store
        .append(append(&s, ExpectedVersion::NoStream, Vec::new()))
        .await
        .expect_err("an empty append is rejected");
    assert!(
        matches!(&err, Error::EmptyAppend { stream } if *stream == s),
        "{err}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(0)
    );
    let topics = store.topics().await.expect("topics");
    assert!(
        topics.iter().all(|t| t.topic.as_str() != "ghost"),
        "no topic was created: {topics:?}"
    );
}

/// Case 6: the same `(stream, command id)` and fingerprint writes once; the second call
/// returns the first call's versions and positions.
pub async fn duplicate_command_id_appends_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "dup");
    let cmd = command("cmd-1", "deposit 5");
    let first = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("first append");
    let second = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("the retry is answered, not refused");
    assert!(second.replayed, "the retry is marked as replayed");
    assert_eq!(second.first_version, first.first_version);
    assert_eq!(second.offsets, first.offsets);
    assert_eq!(second.partition, first.partition);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2),
        "nothing new written"
    );
    let head = store.head(s.topic(), first.partition).await.expect("head");
    assert_eq!(head, first.offsets[1].next(), "the partition did not grow");
    let stored = store
        .command(&s, &cmd.id)
        .await
        .expect("command")
        .expect("the command is recorded");
    assert_eq!(stored.fingerprint, cmd.fingerprint);
    assert_eq!(stored.appended.offsets, first.offsets);
}

/// Case 7: a committed command's retry returns the first result even after the stream moved
/// on and with a stale expectation: no conflict for a committed command.
pub async fn committed_command_replays_even_when_stale<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "moved");
    let cmd = command("cmd-7", "x");
    let first = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..1)).with_command(cmd.clone()))
        .await
        .expect("first append");
    store
        .append(append(
            &s,
            ExpectedVersion::Exact(StreamVersion(1)),
            events(1..3),
        ))
        .await
        .expect("move on");
    let retry = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..1)).with_command(cmd))
        .await
        .expect("a stale retry of a committed command is answered");
    assert!(retry.replayed);
    assert_eq!(retry.first_version, first.first_version);
    assert_eq!(retry.offsets, first.offsets);
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
}

/// Case 8: the same command id with another fingerprint is `CommandIdReused` and writes
/// nothing.
pub async fn reused_command_id_with_another_fingerprint_is_refused<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("account", "reuse");
    store
        .append(
            append(&s, ExpectedVersion::Any, events(0..1)).with_command(command("c", "deposit 5")),
        )
        .await
        .expect("first append");
    let err = store
        .append(
            append(&s, ExpectedVersion::Any, events(1..2)).with_command(command("c", "deposit 6")),
        )
        .await
        .expect_err("another command under the same id is refused");
    assert!(
        matches!(&err, Error::CommandIdReused { stream, command_id } if *stream == s && command_id.as_str() == "c"),
        "{err}"
    );
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(1),
        "nothing written"
    );
}

/// Case 9: the same command id on two streams is two independent commands.
pub async fn same_command_id_on_two_streams_is_two_commands<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let a = stream("account", "a");
    let b = stream("account", "b");
    let cmd = command("shared-id", "same");
    let ra = store
        .append(append(&a, ExpectedVersion::Any, events(0..1)).with_command(cmd.clone()))
        .await
        .expect("append to a");
    let rb = store
        .append(append(&b, ExpectedVersion::Any, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("append to b");
    assert!(!ra.replayed && !rb.replayed, "both commands were written");
    assert_eq!(
        store.stream_version(&a).await.expect("version"),
        StreamVersion(1)
    );
    assert_eq!(
        store.stream_version(&b).await.expect("version"),
        StreamVersion(2)
    );
    let other_fingerprint = command("shared-id", "different");
    let rc = store
        .append(
            append(&stream("account", "c"), ExpectedVersion::Any, events(0..1))
                .with_command(other_fingerprint),
        )
        .await
        .expect("a third stream does not see the other streams' fingerprints");
    assert!(!rc.replayed);
}

/// Case 10: 16 concurrent sends of one command id write one set of events, and all 16 get
/// the same answer.
pub async fn concurrent_duplicate_commands_write_once<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let s = stream("account", "stampede");
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut handles = Vec::new();
    for _ in 0..16 {
        let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .append(
                    append(&s, ExpectedVersion::NoStream, events(0..3))
                        .with_command(command("once", "f")),
                )
                .await
                .expect("every duplicate gets an answer")
        }));
    }
    let mut answers: Vec<Appended> = Vec::new();
    for h in handles {
        answers.push(h.await.expect("task"));
    }
    let writers = answers.iter().filter(|a| !a.replayed).count();
    assert_eq!(writers, 1, "exactly one call wrote");
    for a in &answers {
        assert_eq!(a.first_version, answers[0].first_version);
        assert_eq!(
            a.offsets, answers[0].offsets,
            "all 16 got the same positions"
        );
    }
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(3)
    );
    assert_eq!(
        store
            .read_stream(&s, StreamVersion(1))
            .await
            .expect("read")
            .len(),
        3
    );
}

/// Case 11: after closing and reopening, a committed command still replays, another
/// fingerprint is still refused. A non-durable backend states it and starts empty.
pub async fn idempotency_survives_reopening<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let durable = store.capabilities().durable;
    let s = stream("account", "durable");
    let cmd = command("persisted", "f1");
    let first = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd.clone()))
        .await
        .expect("first append");
    backend.close(store).await;
    let store = backend.open().await;
    if !durable {
        assert_eq!(
            store.stream_version(&s).await.expect("version"),
            StreamVersion(0),
            "a backend that says it is not durable starts empty"
        );
        return;
    }
    let again = store
        .append(append(&s, ExpectedVersion::NoStream, events(0..2)).with_command(cmd))
        .await
        .expect("the retry after reopening is answered");
    assert!(again.replayed);
    assert_eq!(again.offsets, first.offsets);
    assert_eq!(again.first_version, first.first_version);
    let err = store
        .append(
            append(&s, ExpectedVersion::Any, events(0..1)).with_command(command("persisted", "f2")),
        )
        .await
        .expect_err("another fingerprint is still refused after reopening");
    assert!(matches!(err, Error::CommandIdReused { .. }), "{err}");
    assert_eq!(
        store.stream_version(&s).await.expect("version"),
        StreamVersion(2)
    );
    backend.close(store).await;
}

async fn fill_one_partition<S: EventStore>(
    store: &S,
    kind: &str,
    streams: u64,
    each: u64,
) -> Topic {
    let topic = Topic::new(kind).expect("topic");
    store
        .ensure_topic(&topic, 1)
        .await
        .expect("create a one-partition topic");
    for round in 0..each {
        for i in 0..streams {
            store
                .append(append(
                    &stream(kind, &format!("s{i}")),
                    ExpectedVersion::Any,
                    vec![event(i * 100 + round)],
                ))
                .await
                .expect("append");
        }
    }
    topic
}

/// Case 12: reading a partition from 0 yields every record in strictly increasing offset
/// order, each once; from the offset after any record, exactly the rest.
pub async fn read_partition_yields_every_record_once_in_order<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let topic = fill_one_partition(&store, "ledger", 4, 5).await;
    let p = Partition(0);
    let mut all = Vec::new();
    let mut from = Offset(0);
    loop {
        let page = store
            .read_partition(&topic, p, from, 7)
            .await
            .expect("read a page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7, "the limit is honoured");
        from = page.last().expect("non-empty").offset().next();
        all.extend(page);
    }
    assert_eq!(all.len(), 20, "every committed record, once");
    assert!(
        all.windows(2).all(|w| w[0].offset() < w[1].offset()),
        "strictly increasing offsets"
    );
    assert_eq!(
        store.head(&topic, p).await.expect("head"),
        all[19].offset().next()
    );
    for (i, record) in all.iter().enumerate() {
        let rest = store
            .read_partition(&topic, p, record.offset().next(), 100)
            .await
            .expect("read the rest");
        assert_eq!(
            rest,
            all[i + 1..].to_vec(),
            "reading after offset {} yields exactly the rest",
            record.offset()
        );
    }
    let err = store
        .read_partition(&topic, Partition(1), Offset(0), 1)
        .await
        .expect_err("partition 1 of 1");
    assert!(
        matches!(err, Error::UnknownPartition { partitions: 1, .. }),
        "{err}"
    );
}

/// Case 13 (SQL): offsets are dense from 0 in commit order. Backends without dense offsets
/// (Kafka) promise strictly increasing offsets instead, which this checks.
pub async fn offsets_are_dense_in_commit_order<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let dense = store.capabilities().dense_offsets;
    let topic = Topic::new("dense").expect("topic");
    store.ensure_topic(&topic, 2).await.expect("topic");
    let mut acked: BTreeMap<u32, Vec<Offset>> = BTreeMap::new();
    for i in 0..30u64 {
        let a = store
            .append(append(
                &stream("dense", &format!("d{}", i % 7)),
                ExpectedVersion::Any,
                events(i..i + 1 + i % 3),
            ))
            .await
            .expect("append");
        acked.entry(a.partition.0).or_default().extend(a.offsets);
    }
    for (p, offsets) in acked {
        let read: Vec<Offset> = store
            .read_partition(&topic, Partition(p), Offset(0), 1000)
            .await
            .expect("read")
            .iter()
            .map(crate::RecordedEvent::offset)
            .collect();
        assert_eq!(
            read, offsets,
            "partition {p} holds the acknowledged offsets in commit order"
        );
        if dense {
            assert_eq!(
                read,
                (0..read.len() as u64).map(Offset).collect::<Vec<_>>(),
                "dense from 0"
            );
        } else {
            assert!(read.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        }
    }
}

/// Case 14: a reader tailing a partition while 8 tasks append concurrently sees every event
/// once, in offset order, with no gap in any stream's versions.
pub async fn tail_sees_every_concurrent_append_once_in_order<B: Backend>() {
    const TASKS: u64 = 8;
    const EACH: u64 = 25;
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let topic = Topic::new("tailed").expect("topic");
    store.ensure_topic(&topic, 1).await.expect("topic");
    let tail = Arc::clone(&store).tail(topic, Partition(0), Offset(0));
    let reader = tokio::spawn(async move {
        tail.take((TASKS * EACH) as usize)
            .map(|r| r.expect("the tail yields records"))
            .collect::<Vec<_>>()
            .await
    });
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                store
                    .append(append(
                        &stream("tailed", &format!("w{t}")),
                        ExpectedVersion::Any,
                        vec![event(t * 1000 + i)],
                    ))
                    .await
                    .expect("append");
                if i % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the tail caught up within 30 s")
        .expect("reader task");
    assert!(
        seen.windows(2).all(|w| w[0].offset() < w[1].offset()),
        "offset order, no repeat"
    );
    let mut versions: HashMap<StreamId, Vec<u64>> = HashMap::new();
    for r in &seen {
        versions
            .entry(r.stream.clone())
            .or_default()
            .push(r.version.0);
    }
    assert_eq!(versions.len() as u64, TASKS);
    for (s, v) in versions {
        assert_eq!(
            v,
            (1..=EACH).collect::<Vec<_>>(),
            "stream {s}: every version once, in order"
        );
    }
}

/// Case 16: a stream lands in partition `murmur2(id) mod N`, as Kafka's Java client puts a
/// keyed record (reference values from Kafka 4.1.1).
pub async fn streams_land_in_their_murmur2_partition<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let six = Topic::new("six").expect("topic");
    let eight = Topic::new("eight").expect("topic");
    store.ensure_topic(&six, 6).await.expect("topic of 6");
    store.ensure_topic(&eight, 8).await.expect("topic of 8");
    // (key, partition of 6, partition of 8); the empty key and "héllo" are not valid stream
    // ids and are covered by the partitioner's unit test.
    let cases = [
        ("a", 4, 4),
        ("21", 0, 4),
        ("foobar", 0, 6),
        ("account-1", 2, 4),
        ("acc-42", 1, 5),
        ("0192f0c4-7a1e-7c3b-9d2e-5f6a7b8c9d0e", 5, 1),
    ];
    for (key, of6, of8) in cases {
        for (kind, want) in [("six", of6), ("eight", of8)] {
            let s = stream(kind, key);
            let a = store
                .append(append(&s, ExpectedVersion::Any, events(0..1)))
                .await
                .expect("append");
            assert_eq!(a.partition, Partition(want), "{key:?} in topic {kind}");
            let again = store
                .append(append(&s, ExpectedVersion::Any, events(1..2)))
                .await
                .expect("append");
            assert_eq!(
                again.partition, a.partition,
                "a stream always lands in the same partition"
            );
            let records = store
                .read_partition(s.topic(), Partition(want), Offset(0), 1000)
                .await
                .expect("read");
            assert_eq!(records.iter().filter(|r| r.stream == s).count(), 2);
        }
    }
}

/// Case 17: opening an existing topic with another partition count is an error naming both.
pub async fn reopening_a_topic_with_another_partition_count_fails<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let topic = Topic::new("fixed").expect("topic");
    let info = store.ensure_topic(&topic, 3).await.expect("create");
    assert_eq!(info.partitions, 3);
    store
        .ensure_topic(&topic, 3)
        .await
        .expect("the same count is fine");
    let err = store
        .ensure_topic(&topic, 5)
        .await
        .expect_err("another count is refused");
    assert!(
        matches!(
            err,
            Error::PartitionCount {
                existing: 3,
                requested: 5,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains('3') && text.contains('5'),
        "the message names both counts: {text}"
    );
    // A topic created by an append has the default count, and keeps it.
    store
        .append(append(
            &stream("auto", "x"),
            ExpectedVersion::Any,
            events(0..1),
        ))
        .await
        .expect("append creates the topic");
    let auto = Topic::new("auto").expect("topic");
    let err = store
        .ensure_topic(&auto, 7)
        .await
        .expect_err("the default count is stored");
    assert!(
        matches!(
            err,
            Error::PartitionCount {
                existing: 4,
                requested: 7,
                ..
            }
        ),
        "{err}"
    );
    if store.capabilities().durable {
        backend.close(store).await;
        let store = backend.open().await;
        let err = store
            .ensure_topic(&topic, 5)
            .await
            .expect_err("the count survives reopening");
        assert!(
            matches!(
                err,
                Error::PartitionCount {
                    existing: 3,
                    requested: 5,
                    ..
                }
            ),
            "{err}"
        );
        backend.close(store).await;
    }
}

/// Case 18: 64 concurrent appenders each get their own result, and a group-committing store
/// commits fewer transactions than appends.
pub async fn concurrent_appenders_share_commits<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    store
        .append(append(
            &stream("warm", "up"),
            ExpectedVersion::Any,
            events(0..1),
        ))
        .await
        .expect("warm up");
    let before = store.stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut handles = Vec::new();
    for i in 0..64u64 {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            let s = stream("crowd", &format!("c{i}"));
            barrier.wait().await;
            let a = store
                .append(append(&s, ExpectedVersion::NoStream, events(i..i + 1)))
                .await
                .expect("append");
            (s, i, a)
        }));
    }
    for h in handles {
        let (s, i, a) = h.await.expect("task");
        assert_eq!(a.stream, s, "each caller gets its own result");
        assert_eq!(a.first_version, StreamVersion(1));
        let read = store.read_stream(&s, StreamVersion(1)).await.expect("read");
        assert_eq!(read.len(), 1);
        assert_eq!(n_of(&read[0]), i, "each caller's own event was written");
    }
    let after = store.stats();
    let commits = after.commits - before.commits;
    if store.capabilities().group_commit {
        assert!(
            commits < 64,
            "64 appends shared commits: {commits} transactions"
        );
    } else {
        assert_eq!(
            commits, 64,
            "a store without group commit commits each append"
        );
    }
}

/// Case 19: among concurrent callers, a stale expectation gets its conflict, an oversized
/// event its error, a reused command id its refusal, and everyone else succeeds.
pub async fn one_bad_caller_does_not_fail_the_others<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let existing = stream("mixed", "existing");
    store
        .append(
            append(&existing, ExpectedVersion::NoStream, events(0..1))
                .with_command(command("used", "a")),
        )
        .await
        .expect("set up");
    let barrier = Arc::new(tokio::sync::Barrier::new(33));
    let mut handles = Vec::new();
    for i in 0..33u64 {
        let (store, barrier, existing) =
            (Arc::clone(&store), Arc::clone(&barrier), existing.clone());
        handles.push(tokio::spawn(async move {
            let request = match i {
                0 => append(&existing, ExpectedVersion::NoStream, events(0..1)),
                1 => {
                    let mut evs = events(0..2);
                    evs[1].payload = vec![b'x'; limits::MAX_PAYLOAD_BYTES + 1];
                    append(&stream("mixed", "big"), ExpectedVersion::Any, evs)
                }
                2 => append(&existing, ExpectedVersion::Any, events(0..1))
                    .with_command(command("used", "b")),
                _ => append(
                    &stream("mixed", &format!("ok{i}")),
                    ExpectedVersion::NoStream,
                    events(i..i + 2),
                ),
            };
            barrier.wait().await;
            (i, store.append(request).await)
        }));
    }
    for h in handles {
        match h.await.expect("task") {
            (0, r) => assert!(
                matches!(
                    r,
                    Err(Error::Conflict {
                        actual: StreamVersion(1),
                        ..
                    })
                ),
                "{r:?}"
            ),
            (1, r) => assert!(
                matches!(r, Err(Error::InvalidEvent { index: 1, .. })),
                "{r:?}"
            ),
            (2, r) => assert!(matches!(r, Err(Error::CommandIdReused { .. })), "{r:?}"),
            (i, r) => {
                let a = r.unwrap_or_else(|e| panic!("caller {i} failed: {e}"));
                assert_eq!(a.offsets.len(), 2);
            }
        }
    }
    assert_eq!(
        store.stream_version(&existing).await.expect("version"),
        StreamVersion(1)
    );
    assert_eq!(
        store
            .stream_version(&stream("mixed", "big"))
            .await
            .expect("version"),
        StreamVersion(0)
    );
}

/// Case 21: a stored payload that no longer decodes, or an unknown type, is a typed error
/// naming topic, partition, offset, stream and type; other records still read.
pub async fn undecodable_records_are_typed_errors_naming_where<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let s = stream("legacy", "old-1");
    let evs = vec![
        event(1),
        NewEvent::raw("Tested", 1, br#"{"n":"not a number"}"#.to_vec()),
        NewEvent::raw("Retired", 1, b"{}".to_vec()),
        event(4),
    ];
    store
        .append(append(&s, ExpectedVersion::NoStream, evs))
        .await
        .expect("append");
    let records = store
        .read_stream(&s, StreamVersion(1))
        .await
        .expect("reading does not decode payloads");
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0].decode::<Probe>().expect("fine"),
        Probe::Tested { n: 1 }
    );
    assert_eq!(
        records[3].decode::<Probe>().expect("fine"),
        Probe::Tested { n: 4 }
    );
    for (record, unknown) in [(&records[1], false), (&records[2], true)] {
        let err = record.decode::<Probe>().expect_err("does not decode");
        assert_eq!(
            err.position.as_ref(),
            Some(&record.position),
            "names the position"
        );
        assert_eq!(
            err.stream.as_ref().map(|(s, v)| (s.clone(), *v)),
            Some((s.clone(), record.version))
        );
        assert_eq!(err.event_type, record.event_type);
        match (&err.kind, unknown) {
            (DecodeErrorKind::UnknownType { known }, true) => assert!(known.contains("Tested")),
            (DecodeErrorKind::Payload(_), false) => {}
            (kind, _) => panic!("wrong kind of error: {kind}"),
        }
        let text = err.to_string();
        for part in [
            record.event_type.as_str(),
            "legacy/old-1",
            &format!("partition {}", record.partition()),
            &format!("offset {}", record.offset()),
            "topic legacy",
        ] {
            assert!(text.contains(part), "{text:?} names {part:?}");
        }
    }
}

/// Case 22: ids, type names, payloads and metadata beyond the limits, empty ids, ids with
/// SQL metacharacters or invalid UTF-8 get typed errors and change nothing stored.
pub async fn bad_input_is_refused_and_changes_nothing<B: Backend>() {
    let (_b, store) = fresh::<B>(4).await;
    let good = stream("account", "good");
    store
        .append(append(&good, ExpectedVersion::NoStream, events(0..1)))
        .await
        .expect("set up");
    let before = store
        .read_stream(&good, StreamVersion(1))
        .await
        .expect("read");

    for (kind, id) in [
        ("account", String::new()),
        ("account", "x".repeat(limits::MAX_ID_BYTES + 1)),
        ("account", "a'); DROP TABLE keel_events; --".to_owned()),
        ("account", "a b".to_owned()),
        ("", "x".to_owned()),
        ("acc/ount", "x".to_owned()),
    ] {
        let err = StreamId::new(kind, &id).expect_err("refused");
        assert!(
            matches!(
                err,
                IdError::Empty { .. } | IdError::TooLong { .. } | IdError::BadCharacter { .. }
            ),
            "{err}"
        );
    }
    assert!(matches!(
        StreamId::from_bytes("account", b"ab\xff"),
        Err(IdError::InvalidUtf8 { .. })
    ));
    assert!(CommandId::new("x".repeat(limits::MAX_ID_BYTES + 1)).is_err());

    let cases: Vec<(Vec<NewEvent>, &str)> = vec![
        (vec![NewEvent::raw("", 1, b"{}".to_vec())], "empty type"),
        (
            vec![NewEvent::raw(
                "x".repeat(limits::MAX_NAME_BYTES + 1),
                1,
                b"{}".to_vec(),
            )],
            "long type",
        ),
        (
            vec![NewEvent::raw("Drop'Table", 1, b"{}".to_vec())],
            "type with a quote",
        ),
        (
            vec![NewEvent::raw("T", 0, b"{}".to_vec())],
            "schema version 0",
        ),
        (
            vec![NewEvent::raw(
                "T",
                1,
                vec![0; limits::MAX_PAYLOAD_BYTES + 1],
            )],
            "big payload",
        ),
        (
            vec![
                NewEvent::raw("T", 1, b"{}".to_vec())
                    .with_metadata("k", "v".repeat(limits::MAX_METADATA_BYTES)),
            ],
            "big metadata",
        ),
        (
            events(0..limits::MAX_EVENTS_PER_APPEND as u64 + 1),
            "too many events",
        ),
    ];
    for (evs, what) in cases {
        let err = store
            .append(append(&good, ExpectedVersion::Any, evs))
            .await
            .expect_err(what);
        assert!(
            matches!(
                err,
                Error::InvalidEvent { .. } | Error::TooManyEvents { .. }
            ),
            "{what}: {err}"
        );
    }
    for n in [0, limits::MAX_PARTITIONS + 1] {
        let err = store
            .ensure_topic(&Topic::new("bad-count").expect("topic"), n)
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::BadPartitionCount { .. }), "{err}");
    }
    assert_eq!(
        store
            .read_stream(&good, StreamVersion(1))
            .await
            .expect("read"),
        before,
        "nothing changed"
    );
    let topics: HashSet<String> = store
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .map(|t| t.topic.to_string())
        .collect();
    assert_eq!(
        topics,
        HashSet::from(["account".to_owned()]),
        "no topic created by refused input"
    );
}

/// Case 20, in-process part: everything acknowledged before a close is there after reopening,
/// in the same positions. (The SIGKILL half runs per durable backend in `keel-tests`.)
pub async fn acknowledged_appends_survive_reopening<B: Backend>() {
    let (backend, store) = fresh::<B>(4).await;
    let store = Arc::new(store);
    let mut handles = Vec::new();
    for t in 0..8u64 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let s = stream("durable", &format!("t{t}-{}", i % 3));
                let a = store
                    .append(append(&s, ExpectedVersion::Any, events(i..i + 2)))
                    .await
                    .expect("append");
                acked.push(a);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for h in handles {
        acked.extend(h.await.expect("task"));
    }
    let durable = store.capabilities().durable;
    let Ok(store) = Arc::try_unwrap(store) else {
        panic!("no other handle to the store is left");
    };
    backend.close(store).await;
    let store = backend.open().await;
    if !durable {
        assert!(
            store.topics().await.expect("topics").is_empty(),
            "a non-durable store starts empty"
        );
        return;
    }
    for a in &acked {
        let read = store
            .read_stream(&a.stream, a.first_version)
            .await
            .expect("read");
        let offsets: Vec<Offset> = read
            .iter()
            .take(a.offsets.len())
            .map(crate::RecordedEvent::offset)
            .collect();
        assert_eq!(
            offsets, a.offsets,
            "acknowledged append to {} is where it was acknowledged",
            a.stream
        );
    }
    backend.close(store).await;
}
