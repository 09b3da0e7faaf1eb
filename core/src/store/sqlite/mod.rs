//! The embedded default: an event store in one SQLite file (WAL, `synchronous=FULL`).
//!
//! SQLite has one writer at a time, so the store has one writer thread that owns the write
//! connection and commits concurrent appends in shared transactions (group commit); each
//! caller still gets its own answer (see [`writer`](self#the-writer)). Reads go through a
//! small pool of read-only connections on tokio's blocking threads and never wait for the
//! writer; aggregate loads go to two loader threads that serve concurrent loads in one read
//! transaction (group reads, the mirror of group commit). Offsets come from the writer, so they are dense and in commit order. Several
//! processes may open the same file: each batch reads the streams and heads it touches inside
//! its own `BEGIN IMMEDIATE` transaction.
//!
//! The store talks to SQLite through rusqlite, directly: a statement costs a function call on
//! the thread that runs it, not a message to another thread and back.
//!
//! # The writer
//!
//! One batch is one transaction: it reads what the batch touches into a ledger, decides each
//! request in order (command id first, then expected version), writes the accepted ones with
//! multi-row `INSERT`s, advances the partition heads, commits once and answers each caller. The
//! write-ahead log is kept bounded: a passive checkpoint every few hundred commits, and a
//! truncating one when the queue goes quiet; [`StoreStats::wal_bytes`] reports its size.
//!
//! ```no_run
//! use keel::store::sqlite::SqliteStore;
//!
//! # async fn run() -> Result<(), keel::store::Error> {
//! let store = SqliteStore::builder("bank.db").default_partitions(4).open().await?;
//! # Ok(()) }
//! ```

mod migrate;
mod packed;
mod row;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::envelope::RecordedEvent;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{
    AppendRequest, Appended, Capabilities, CommandRecord, Error, EventStore, FastMap, Result,
    StoreStats, TopicInfo, validate,
};

use self::writer::{Job, Shared, Writer};

/// The largest group commit, in jobs.
pub const MAX_BATCH: usize = 2048;

/// How hard a commit is pushed to disk (SQLite's `synchronous` pragma).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Synchronous {
    /// Every commit is fsync'd: an acknowledged append survives a power loss. The default.
    #[default]
    Full,
    /// Commits survive a crash of the process, not a power loss (faster).
    Normal,
}

/// Options of a [`SqliteStore`]; start from [`SqliteStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    default_partitions: u32,
    synchronous: Synchronous,
    max_batch: usize,
    readers: u32,
    busy_timeout: Duration,
    wal_limit: u64,
}

impl SqliteStoreBuilder {
    /// The partition count of topics created by an append (default 4).
    pub fn default_partitions(mut self, partitions: u32) -> Self {
        self.default_partitions = partitions;
        self
    }

    /// How hard commits are pushed to disk (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Most appends in one group commit (default 512, at most [`MAX_BATCH`]).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.clamp(1, MAX_BATCH);
        self
    }

    /// Most read-only connections, hence concurrent reads (default 4).
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How long a write waits for another process holding the file's write lock (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The size past which the write-ahead log is checkpointed and truncated, even if that
    /// means holding writes back until readers let go of it (default 16 MiB).
    pub fn wal_limit(mut self, bytes: u64) -> Self {
        self.wal_limit = bytes.max(64 * 1024);
        self
    }

    /// Opens (creating if needed) the file and starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the file cannot be opened or its schema is of another version.
    pub async fn open(self) -> Result<SqliteStore> {
        let builder = self.clone();
        let conn = tokio::task::spawn_blocking(move || builder.open_writer())
            .await
            .map_err(|e| Error::backend("open the SQLite file", e))??;

        let shared = Arc::new(Shared {
            commits: watch::Sender::new(0),
            transactions: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
        });
        let (jobs, rx) = mpsc::channel(4 * self.max_batch);
        let mut wal_path = self.path.clone().into_os_string();
        wal_path.push("-wal");
        let writer = Writer {
            conn,
            jobs: rx,
            shared: Arc::clone(&shared),
            default_partitions: self.default_partitions,
            max_batch: self.max_batch,
            wal_path: PathBuf::from(wal_path),
            busy_timeout: self.busy_timeout,
            wal_limit: self.wal_limit,
        };
        let thread = std::thread::Builder::new()
            .name("keel-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::backend("start the SQLite writer", e))?;
        let readers = Arc::new(Readers {
            path: self.path.clone(),
            busy_timeout: self.busy_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(self.readers as usize),
            closed: AtomicBool::new(false),
        });
        let (loads, load_jobs) = std::sync::mpsc::channel();
        let load_jobs = Arc::new(Mutex::new(load_jobs));
        for n in 0..LOADERS {
            let (readers, load_jobs) = (Arc::clone(&readers), Arc::clone(&load_jobs));
            std::thread::Builder::new()
                .name(format!("keel-sqlite-loader-{n}"))
                .spawn(move || serve_loads(&readers, &load_jobs))
                .map_err(|e| Error::backend("start the SQLite loaders", e))?;
        }
        Ok(SqliteStore {
            readers,
            loads: Mutex::new(Some(loads)),
            path: self.path,
            jobs,
            shared,
            thread: Mutex::new(Some(thread)),
            topics: RwLock::new(FastMap::default()),
        })
    }

    fn open_writer(&self) -> Result<Connection> {
        let fail = |e: rusqlite::Error| Error::backend("open the SQLite file", e);
        let mut conn = Connection::open(&self.path).map_err(fail)?;
        conn.busy_timeout(self.busy_timeout).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(
            None,
            "synchronous",
            match self.synchronous {
                Synchronous::Full => "FULL",
                Synchronous::Normal => "NORMAL",
            },
        )
        .map_err(fail)?;
        conn.pragma_update(
            None,
            "journal_size_limit",
            i64::try_from(self.wal_limit).unwrap_or(i64::MAX),
        )
        .map_err(fail)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate::migrate(&mut conn)?;
        Ok(conn)
    }
}

/// What a load asks for, and where its answer goes.
struct LoadJob {
    stream: StreamId,
    shape: Option<u32>,
    reply: oneshot::Sender<Result<(Option<Snapshot>, Vec<RecordedEvent>)>>,
}

/// Most loads one loader serves in one read transaction.
const LOAD_BATCH: usize = 64;

/// Serves loads ([`EventStore::read_from_snapshot`]) in batches, on threads of their own:
/// concurrent loads share one read transaction, so the pages the first one reads (a write
/// invalidates a reader's page cache) serve the rest, and a batch costs one hand-off between
/// threads instead of one per load.
fn serve_loads(readers: &Readers, jobs: &Mutex<std::sync::mpsc::Receiver<LoadJob>>) {
    let mut conn: Option<Connection> = None;
    loop {
        let batch: Vec<LoadJob> = {
            let jobs = jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(first) = jobs.recv() else { return };
            std::iter::once(first)
                .chain(std::iter::from_fn(|| jobs.try_recv().ok()).take(LOAD_BATCH - 1))
                .collect()
        };
        if readers.closed.load(Ordering::Acquire) {
            for job in batch {
                let _ = job.reply.send(Err(Error::Closed));
            }
            return;
        }
        if conn.is_none() {
            match readers.connect() {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    for job in batch {
                        let _ = job
                            .reply
                            .send(Err(Error::backend("read a stream", e.to_string())));
                    }
                    continue;
                }
            }
        }
        let Some(c) = &conn else { continue };
        // One read transaction for the batch (when there is more than one load).
        let together = batch.len() > 1 && c.execute_batch("BEGIN").is_ok();
        for job in batch {
            let _ = job.reply.send(load(c, &job.stream, job.shape));
        }
        // A connection left inside a transaction would read stale data: drop it.
        if (together && c.execute_batch("COMMIT").is_err()) || !c.is_autocommit() {
            conn = None;
        }
    }
}

/// The snapshot of shape `shape` and the events after it.
fn load(
    conn: &Connection,
    stream: &StreamId,
    shape: Option<u32>,
) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
    let Some(shape) = shape else {
        return Ok((None, stream_events(conn, stream, StreamVersion(1))?));
    };
    // Events never change once written and versions are dense: the events read after the
    // snapshot are exactly those after its version, whatever commits in between.
    let snapshot = stream_snapshot(conn, stream)?.filter(|s| s.shape == shape);
    let from = snapshot
        .as_ref()
        .map_or(StreamVersion(1), |s| s.version.next());
    Ok((snapshot, stream_events(conn, stream, from)?))
}

/// The read-only connections: opened on demand, at most as many at once as permits.
struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    closed: AtomicBool,
}

impl Readers {
    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `read` on a read-only connection, on a blocking thread.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        operation: &'static str,
        read: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let _permit = self.permits.acquire().await.map_err(|_| Error::Closed)?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let conn = match idle {
                Some(conn) => conn,
                None => readers
                    .connect()
                    .map_err(|e| Error::backend(operation, e))?,
            };
            let result = read(&conn);
            // A connection left inside a transaction would read a stale snapshot forever:
            // it is dropped rather than pooled.
            if conn.is_autocommit() && !readers.closed.load(Ordering::Acquire) {
                readers
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::backend(operation, e))?
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// An event store in one SQLite file. See the [module docs](self).
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    readers: Arc<Readers>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The queue of the loader threads (see [`serve_loads`]); `None` once closed.
    loads: Mutex<Option<std::sync::mpsc::Sender<LoadJob>>>,
    /// Partition counts never change once a topic exists, so they are cached.
    topics: RwLock<FastMap<Topic, u32>>,
}

/// How many threads serve loads.
const LOADERS: usize = 2;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Options for the store at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            default_partitions: 4,
            synchronous: Synchronous::Full,
            max_batch: 512,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            wal_limit: writer::DEFAULT_WAL_LIMIT,
        }
    }

    /// Opens the store at `path` with default options.
    ///
    /// # Errors
    ///
    /// See [`SqliteStoreBuilder::open`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder(path).open().await
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes the queued appends, checkpoints the WAL, stops the writer and closes every
    /// connection. Later calls on the store fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.readers.close();
        self.loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let _ = self.jobs.send(Job::Shutdown).await;
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn send<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn partitions(&self, topic: &Topic) -> Result<u32> {
        if let Some(&n) = self
            .topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return Ok(n);
        }
        let name = topic.clone();
        let n = self
            .readers
            .run("read topics", move |conn| {
                let n: Option<i64> = conn
                    .prepare_cached("SELECT partitions FROM keel_topics WHERE topic = ?1")
                    .and_then(|mut s| s.query_row([name.as_str()], |r| r.get(0)).optional())
                    .map_err(|e| Error::backend("read topics", e))?;
                n.and_then(|n| u32::try_from(n).ok())
                    .ok_or(Error::UnknownTopic { topic: name })
            })
            .await?;
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.clone(), n);
        Ok(n)
    }

    async fn check_partition(&self, topic: &Topic, partition: Partition) -> Result<()> {
        validate::check_partition(topic, partition, self.partitions(topic).await?)
    }
}

/// A stream's events from version `from`, in order.
fn stream_events(
    conn: &Connection,
    stream: &StreamId,
    from: StreamVersion,
) -> Result<Vec<RecordedEvent>> {
    let fail = |e| Error::backend("read a stream", e);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {} FROM keel_events WHERE topic = ?1 AND stream_id = ?2 \
             AND version >= ?3 ORDER BY version",
            row::COLUMNS
        ))
        .map_err(fail)?;
    let mut rows = stmt
        .query((stream.kind(), stream.id(), to_i64(from.0)))
        .map_err(fail)?;
    let mut records = Vec::new();
    while let Some(r) = rows.next().map_err(fail)? {
        records.push(row::record(r, stream.topic(), Some(stream))?);
    }
    Ok(records)
}

/// A stream's snapshot, whatever its shape.
fn stream_snapshot(conn: &Connection, stream: &StreamId) -> Result<Option<Snapshot>> {
    let fail = |e| Error::backend("read a snapshot", e);
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, shape, payload, timestamp FROM keel_snapshots \
             WHERE topic = ?1 AND stream_id = ?2",
        )
        .map_err(fail)?;
    let mut rows = stmt.query((stream.kind(), stream.id())).map_err(fail)?;
    match rows.next().map_err(fail)? {
        Some(r) => row::snapshot(r, stream).map(Some),
        None => Ok(None),
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for SqliteStore {
    #[tracing::instrument(level = "debug", skip_all, fields(stream = %request.stream, events = request.events.len()))]
    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        validate::check_append(&request)?;
        self.send(|reply| Job::Append { request, reply }).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>> {
        let stream = stream.clone();
        self.readers
            .run("read a stream", move |conn| {
                stream_events(conn, &stream, from)
            })
            .await
    }

    async fn read_from_snapshot(
        &self,
        stream: &StreamId,
        shape: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        let (reply, answer) = oneshot::channel();
        let job = LoadJob {
            stream: stream.clone(),
            shape,
            reply,
        };
        let sent = self
            .loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|loads| loads.send(job).is_ok());
        if !sent {
            return Err(Error::Closed);
        }
        answer.await.map_err(|_| Error::Closed)?
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        let stream = stream.clone();
        self.readers
            .run("read a stream version", move |conn| {
                let v: Option<i64> = conn
                    .prepare_cached(
                        "SELECT version FROM keel_streams WHERE topic = ?1 AND stream_id = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row((stream.kind(), stream.id()), |r| r.get(0))
                            .optional()
                    })
                    .map_err(|e| Error::backend("read a stream version", e))?;
                Ok(StreamVersion(
                    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
                ))
            })
            .await
    }

    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>> {
        let (stream, command) = (stream.clone(), command.clone());
        self.readers
            .run("read a command", move |conn| {
                conn.prepare_cached(
                    "SELECT fingerprint, part, first_version, first_offset, count FROM keel_commands \
                     WHERE topic = ?1 AND stream_id = ?2 AND command_id = ?3",
                )
                .and_then(|mut s| {
                    s.query_row((stream.kind(), stream.id(), command.as_str()), |r| {
                        writer::command_record(&stream, r)
                    })
                    .optional()
                })
                .map_err(|e| Error::backend("read a command", e))
            })
            .await
    }

    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.check_partition(topic, partition).await?;
        let topic = topic.clone();
        self.readers
            .run("read a partition", move |conn| {
                let fail = |e| Error::backend("read a partition", e);
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {} FROM keel_events WHERE topic = ?1 AND part = ?2 \
                         AND log_offset >= ?3 ORDER BY log_offset LIMIT ?4",
                        row::COLUMNS
                    ))
                    .map_err(fail)?;
                let mut rows = stmt
                    .query((
                        topic.as_str(),
                        i64::from(partition.0),
                        to_i64(from.0),
                        i64::try_from(limit).unwrap_or(i64::MAX),
                    ))
                    .map_err(fail)?;
                let mut records = Vec::with_capacity(limit.min(4096));
                while let Some(r) = rows.next().map_err(fail)? {
                    records.push(row::record(r, &topic, None)?);
                }
                Ok(records)
            })
            .await
    }

    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset> {
        self.check_partition(topic, partition).await?;
        let topic = topic.clone();
        self.readers
            .run("read a partition head", move |conn| {
                let next: Option<i64> = conn
                    .prepare_cached(
                        "SELECT next_offset FROM keel_partitions WHERE topic = ?1 AND part = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row((topic.as_str(), i64::from(partition.0)), |r| r.get(0))
                            .optional()
                    })
                    .map_err(|e| Error::backend("read a partition head", e))?;
                Ok(Offset(
                    next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                ))
            })
            .await
    }

    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        validate::check_partitions(topic, partitions)?;
        let topic = topic.clone();
        self.send(|reply| Job::EnsureTopic {
            topic,
            partitions,
            reply,
        })
        .await
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        self.readers
            .run("read topics", |conn| {
                let fail = |e| Error::backend("read topics", e);
                let mut stmt = conn
                    .prepare_cached("SELECT topic, partitions FROM keel_topics ORDER BY topic")
                    .map_err(fail)?;
                let mut rows = stmt.query([]).map_err(fail)?;
                let mut topics = Vec::new();
                while let Some(r) = rows.next().map_err(fail)? {
                    let topic: String = r.get(0).map_err(fail)?;
                    let n: i64 = r.get(1).map_err(fail)?;
                    topics.push(TopicInfo {
                        topic: Topic::new(&topic)?,
                        partitions: u32::try_from(n).unwrap_or(0),
                    });
                }
                Ok(topics)
            })
            .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        validate::check_snapshot(&snapshot)?;
        self.send(|reply| Job::Snapshot { snapshot, reply }).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let stream = stream.clone();
        self.readers
            .run("read a snapshot", move |conn| {
                stream_snapshot(conn, &stream)
            })
            .await
    }

    fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            durable: true,
            dense_offsets: true,
            group_commit: true,
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            appends: self.shared.appends.load(Ordering::Relaxed),
            commits: self.shared.transactions.load(Ordering::Relaxed),
            wal_bytes: Some(self.shared.wal_bytes.load(Ordering::Relaxed)),
        }
    }
}
