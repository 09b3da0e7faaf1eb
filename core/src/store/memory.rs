//! An in-memory event store, for tests and benches: the whole contract minus durability.
//!
//! Appends are serialised under one lock and commit one at a time, so it reports
//! `group_commit: false`. An [`append_all`](EventStore::append_all) to several streams is
//! decided and written under that one lock: atomic.
//!
//! ```
//! use keel::store::{AppendRequest, EventStore, ExpectedVersion, memory::MemoryStore};
//! use keel::{NewEvent, StreamId, StreamVersion};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keel::store::Error> {
//! let store = MemoryStore::new();
//! let stream = StreamId::new("account", "alice")?;
//! let event = NewEvent::raw("Opened", 1, br#"{"owner":"Alice"}"#.to_vec());
//! let appended = store
//!     .append(AppendRequest::new(stream.clone(), ExpectedVersion::NoStream, vec![event]))
//!     .await?;
//! assert_eq!(appended.first_version, StreamVersion(1));
//! assert_eq!(store.read_stream(&stream, StreamVersion(1)).await?.len(), 1);
//! # Ok(()) }
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::envelope::RecordedEvent;
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::ledger::{Decision, Ledger};
use crate::store::{
    AppendRequest, Appended, Capabilities, CommandRecord, Error, EventStore, FastMap, Result,
    StoreStats, TopicInfo, validate,
};

/// The default partition count of topics created by an append.
pub const DEFAULT_PARTITIONS: u32 = 4;

#[derive(Default)]
struct State {
    ledger: Ledger,
    /// Records per partition, index = offset.
    partitions: FastMap<(Topic, Partition), Log>,
    /// Offsets of each stream's records, index = version - 1.
    streams: FastMap<StreamId, (Partition, Vec<Offset>)>,
    /// The latest snapshot of each stream.
    snapshots: FastMap<StreamId, Snapshot>,
}

/// How many records a chunk of a partition's log holds.
const CHUNK: usize = 1024;

/// A partition's records, index = offset, in fixed-size chunks: growing it never moves what
/// it already holds.
#[derive(Default)]
struct Log {
    chunks: Vec<Vec<RecordedEvent>>,
}

impl Log {
    fn len(&self) -> usize {
        self.chunks
            .last()
            .map_or(0, |last| (self.chunks.len() - 1) * CHUNK + last.len())
    }

    fn get(&self, index: usize) -> Option<&RecordedEvent> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    fn push(&mut self, record: RecordedEvent) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
    }
}

/// An in-memory event store. Cheap to create; everything is lost on drop.
pub struct MemoryStore {
    state: Mutex<State>,
    commits: watch::Sender<u64>,
    committed: AtomicU64,
    appends: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store whose new topics get [`DEFAULT_PARTITIONS`] partitions.
    pub fn new() -> Self {
        Self::with_default_partitions(DEFAULT_PARTITIONS)
    }

    /// An empty store whose new topics get `partitions` partitions.
    pub fn with_default_partitions(partitions: u32) -> Self {
        Self {
            state: Mutex::new(State {
                ledger: Ledger::new(partitions),
                ..State::default()
            }),
            commits: watch::Sender::new(0),
            committed: AtomicU64::new(0),
            appends: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied append: every mutation
        // happens after all checks, without a fallible step. So a poisoned lock is usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_partition(state: &State, topic: &Topic, partition: Partition) -> Result<()> {
        let partitions =
            state
                .ledger
                .topics
                .get(topic)
                .copied()
                .ok_or_else(|| Error::UnknownTopic {
                    topic: topic.clone(),
                })?;
        validate::check_partition(topic, partition, partitions)
    }
}

impl State {
    /// Stores the records of a decided append.
    fn write(&mut self, request: AppendRequest, appended: &Appended) {
        let topic = request.stream.topic().clone();
        let command = request.command.as_ref();
        self.streams
            .entry(request.stream.clone())
            .or_insert_with(|| (appended.partition, Vec::new()))
            .1
            .extend(appended.offsets.iter().copied());
        let log = self
            .partitions
            .entry((topic.clone(), appended.partition))
            .or_default();
        for (event, (&offset, version)) in request
            .events
            .into_iter()
            .zip(appended.offsets.iter().zip(appended.versions()))
        {
            log.push(RecordedEvent {
                position: Position {
                    topic: topic.clone(),
                    partition: appended.partition,
                    offset,
                },
                stream: request.stream.clone(),
                version,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                event_id: event.event_id,
                command_id: command.map(|c| c.id.clone()),
                correlation_id: command.and_then(|c| c.correlation_id),
                causation_id: command.and_then(|c| c.causation_id),
                timestamp: event.timestamp,
                metadata: event.metadata,
            });
        }
    }
}

impl MemoryStore {
    /// Counts a commit and wakes live readers.
    fn notify(&self) {
        let commits = self.committed.fetch_add(1, Ordering::Relaxed) + 1;
        // Only live readers need waking; without any, skip the notification.
        if self.commits.receiver_count() > 0 {
            self.commits.send_replace(commits);
        }
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        validate::check_append(&request)?;
        let mut state = self.lock();
        let appended = match state.ledger.decide(&request)? {
            Decision::Replay(appended) => return Ok(appended),
            Decision::Write { appended, .. } => appended,
        };
        state.write(request, &appended);
        drop(state);
        self.notify();
        Ok(appended)
    }

    async fn append_all(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        self.appends
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        validate::check_append_all(&requests)?;
        let mut state = self.lock();
        let decisions = state.ledger.decide_all(&requests)?;
        let mut wrote = false;
        let mut answers = Vec::with_capacity(requests.len());
        for (request, decision) in requests.into_iter().zip(decisions) {
            match decision {
                Decision::Replay(appended) => answers.push(appended),
                Decision::Write { appended, .. } => {
                    state.write(request, &appended);
                    answers.push(appended);
                    wrote = true;
                }
            }
        }
        drop(state);
        if wrote {
            self.notify();
        }
        Ok(answers)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>> {
        let state = self.lock();
        let Some((partition, offsets)) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from.0.saturating_sub(1)).unwrap_or(usize::MAX);
        let log = state.partitions.get(&(stream.topic().clone(), *partition));
        Ok(offsets
            .iter()
            .skip(skip)
            .filter_map(|o| log.and_then(|l| l.get(usize::try_from(o.0).ok()?)).cloned())
            .collect())
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        Ok(self
            .lock()
            .ledger
            .streams
            .get(stream)
            .copied()
            .unwrap_or_default())
    }

    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>> {
        Ok(self
            .lock()
            .ledger
            .commands
            .get(&(stream.clone(), command.clone()))
            .cloned())
    }

    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let state = self.lock();
        Self::check_partition(&state, topic, partition)?;
        let Some(log) = state.partitions.get(&(topic.clone(), partition)) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(from.0).unwrap_or(usize::MAX).min(log.len());
        let end = start.saturating_add(limit).min(log.len());
        Ok((start..end).filter_map(|i| log.get(i)).cloned().collect())
    }

    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset> {
        let state = self.lock();
        Self::check_partition(&state, topic, partition)?;
        Ok(state
            .ledger
            .heads
            .get(&(topic.clone(), partition))
            .copied()
            .unwrap_or_default())
    }

    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        validate::check_partitions(topic, partitions)?;
        let mut state = self.lock();
        match state.ledger.topics.get(topic) {
            Some(&existing) if existing != partitions => Err(Error::PartitionCount {
                topic: topic.clone(),
                existing,
                requested: partitions,
            }),
            _ => {
                state.ledger.topics.insert(topic.clone(), partitions);
                Ok(TopicInfo {
                    topic: topic.clone(),
                    partitions,
                })
            }
        }
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let mut topics: Vec<TopicInfo> = self
            .lock()
            .ledger
            .topics
            .iter()
            .map(|(topic, &partitions)| TopicInfo {
                topic: topic.clone(),
                partitions,
            })
            .collect();
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(topics)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        validate::check_snapshot(&snapshot)?;
        let mut state = self.lock();
        let actual = state
            .ledger
            .streams
            .get(&snapshot.stream)
            .copied()
            .unwrap_or_default();
        if snapshot.version > actual {
            return Err(Error::SnapshotAhead {
                stream: snapshot.stream,
                version: snapshot.version,
                actual,
            });
        }
        match state.snapshots.get(&snapshot.stream) {
            Some(stored) if !snapshot.supersedes(stored) => {}
            _ => {
                state.snapshots.insert(snapshot.stream.clone(), snapshot);
            }
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        Ok(self.lock().snapshots.get(stream).cloned())
    }

    fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: false,
            dense_offsets: true,
            group_commit: false,
            multi_stream_append: true,
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            appends: self.appends.load(Ordering::Relaxed),
            commits: self.committed.load(Ordering::Relaxed),
            wal_bytes: None,
        }
    }
}
