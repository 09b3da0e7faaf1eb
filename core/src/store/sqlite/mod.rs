//! The embedded default: an event store in one SQLite file (WAL, `synchronous=FULL`).
//!
//! SQLite has one writer at a time, so the store has one writer task that owns the write
//! connection and commits concurrent appends in shared transactions (group commit); each
//! caller still gets its own answer. Reads go through a separate read-only pool and never
//! wait for the writer. Offsets come from the writer, so they are dense and in commit order.
//!
//! ```no_run
//! use keel::store::sqlite::SqliteStore;
//!
//! # async fn run() -> Result<(), keel::store::Error> {
//! let store = SqliteStore::builder("bank.db").default_partitions(4).open().await?;
//! # Ok(()) }
//! ```

mod row;
mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::RecordedEvent;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{
    AppendRequest, Appended, Capabilities, CommandRecord, Error, EventStore, Result, StoreStats,
    TopicInfo, validate,
};

use self::writer::{Job, Shared, Writer};

/// The largest group commit: its statements bind up to 8 values per append, and SQLite
/// allows 32,766 bound values per statement.
pub const MAX_BATCH: usize = 2048;

/// The schema this version of Keel reads and writes.
const SCHEMA_VERSION: &str = "1";

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

    /// Size of the read-only connection pool (default 4).
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How long a write waits for another process holding the file's write lock (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating if needed) the file and starts the writer task.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the file cannot be opened or its schema is of another version.
    pub async fn open(self) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| Error::backend("open the SQLite file", e))?
            .filename(&self.path)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(self.busy_timeout)
            .foreign_keys(false);
        let write_opts = base
            .clone()
            .create_if_missing(true)
            .synchronous(match self.synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            });
        let mut conn: SqliteConnection = write_opts
            .connect()
            .await
            .map_err(|e| Error::backend("open the SQLite file", e))?;
        migrate(&mut conn).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(self.readers)
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| Error::backend("open the SQLite read pool", e))?;

        let shared = Arc::new(Shared {
            commits: watch::Sender::new(0),
            transactions: AtomicU64::new(0),
            appends: AtomicU64::new(0),
        });
        let (jobs, rx) = mpsc::channel(4 * self.max_batch);
        let task = tokio::spawn(
            Writer {
                conn,
                jobs: rx,
                shared: Arc::clone(&shared),
                default_partitions: self.default_partitions,
                max_batch: self.max_batch,
            }
            .run(),
        );
        Ok(SqliteStore {
            path: self.path,
            jobs,
            readers,
            shared,
            task: std::sync::Mutex::new(Some(task)),
            topics: std::sync::RwLock::new(std::collections::HashMap::new()),
        })
    }
}

async fn migrate(conn: &mut SqliteConnection) -> Result<()> {
    let fail = |e| Error::backend("create the SQLite schema", e);
    sqlx::Executor::execute(&mut *conn, include_str!("schema.sql"))
        .await
        .map_err(fail)?;
    let version: String =
        sqlx::query_scalar("SELECT value FROM keel_meta WHERE key = 'schema_version'")
            .fetch_one(&mut *conn)
            .await
            .map_err(fail)?;
    if version != SCHEMA_VERSION {
        return Err(Error::backend(
            "open the SQLite file",
            format!("the file has schema version {version}; this keel reads {SCHEMA_VERSION}"),
        ));
    }
    Ok(())
}

/// An event store in one SQLite file. See the [module docs](self).
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    readers: SqlitePool,
    shared: Arc<Shared>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Partition counts never change once a topic exists, so they are cached.
    topics: std::sync::RwLock<std::collections::HashMap<Topic, u32>>,
}

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

    /// Finishes the queued appends, stops the writer and closes every connection. Later
    /// calls on the store fail with [`Error::Closed`] or a backend error.
    pub async fn close(&self) {
        self.readers.close().await;
        let _ = self.jobs.send(Job::Shutdown).await;
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
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
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
        {
            return Ok(n);
        }
        let n: Option<i64> =
            sqlx::query_scalar("SELECT partitions FROM keel_topics WHERE topic = ?")
                .bind(topic.as_str())
                .fetch_optional(&self.readers)
                .await
                .map_err(|e| Error::backend("read topics", e))?;
        let n = n
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.clone(),
            })?;
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.clone(), n);
        Ok(n)
    }

    async fn check_partition(&self, topic: &Topic, partition: Partition) -> Result<()> {
        validate::check_partition(topic, partition, self.partitions(topic).await?)
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
        let sql = format!(
            "SELECT {} FROM keel_events WHERE topic = ? AND stream_id = ? AND version >= ? ORDER BY version",
            row::COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(stream.kind())
            .bind(stream.id())
            .bind(to_i64(from.0))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| Error::backend("read a stream", e))?;
        rows.iter()
            .map(|r| row::record(r, stream.topic(), Some(stream)))
            .collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM keel_streams WHERE topic = ? AND stream_id = ?",
        )
        .bind(stream.kind())
        .bind(stream.id())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| Error::backend("read a stream version", e))?;
        Ok(StreamVersion(
            v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        ))
    }

    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>> {
        let row = sqlx::query(
            "SELECT fingerprint, part, first_version, first_offset, count FROM keel_commands \
             WHERE topic = ? AND stream_id = ? AND command_id = ?",
        )
        .bind(stream.kind())
        .bind(stream.id())
        .bind(command.as_str())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| Error::backend("read a command", e))?;
        row.map(|r| writer::command_record(stream, &r))
            .transpose()
            .map_err(|e| Error::backend("read a command", e))
    }

    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.check_partition(topic, partition).await?;
        let sql = format!(
            "SELECT {} FROM keel_events WHERE topic = ? AND part = ? AND log_offset >= ? \
             ORDER BY log_offset LIMIT ?",
            row::COLUMNS
        );
        let rows = sqlx::query(&sql)
            .bind(topic.as_str())
            .bind(i64::from(partition.0))
            .bind(to_i64(from.0))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.readers)
            .await
            .map_err(|e| Error::backend("read a partition", e))?;
        rows.iter().map(|r| row::record(r, topic, None)).collect()
    }

    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset> {
        self.check_partition(topic, partition).await?;
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT next_offset FROM keel_partitions WHERE topic = ? AND part = ?",
        )
        .bind(topic.as_str())
        .bind(i64::from(partition.0))
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| Error::backend("read a partition head", e))?;
        Ok(Offset(
            next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        ))
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
        let rows = sqlx::query("SELECT topic, partitions FROM keel_topics ORDER BY topic")
            .fetch_all(&self.readers)
            .await
            .map_err(|e| Error::backend("read topics", e))?;
        rows.iter()
            .map(|r| {
                let topic: String = r.try_get(0).map_err(|e| Error::backend("read topics", e))?;
                let n: i64 = r.try_get(1).map_err(|e| Error::backend("read topics", e))?;
                Ok(TopicInfo {
                    topic: Topic::new(&topic)?,
                    partitions: u32::try_from(n).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        validate::check_snapshot(&snapshot)?;
        self.send(|reply| Job::Snapshot { snapshot, reply }).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT version, shape, payload, timestamp FROM keel_snapshots \
             WHERE topic = ? AND stream_id = ?",
        )
        .bind(stream.kind())
        .bind(stream.id())
        .fetch_optional(&self.readers)
        .await
        .map_err(|e| Error::backend("read a snapshot", e))?;
        row.map(|r| row::snapshot(&r, stream)).transpose()
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
        }
    }
}
