//! An event store on a PostgreSQL server, for services that already run one.
//!
//! How it meets the [contract](crate::store):
//!
//! - **Offsets dense per partition, in commit order**: each partition has a head row that an
//!   append locks in its transaction and advances before committing, so the appends to one
//!   partition commit one after the other (see the batcher's docs in `batcher.rs`). A reader
//!   never skips a record that commits late.
//! - **Idempotent across processes and restarts**: command ids are rows under a primary key,
//!   written in the append's transaction, checked before the expected version, with their
//!   fingerprint.
//! - **Group commit**: one batcher task per store gathers concurrent appends, across topics and
//!   partitions, into shared transactions of a few round trips each (arrays and `unnest`); each
//!   caller gets its own answer. An [`append_all`](EventStore::append_all) is one unit of a
//!   batch: decided all or none, written in the batch's transaction. Several stores
//!   (processes) on one database are safe: the head row locks order them.
//! - **Live tails across processes**: a committed batch is followed by a `NOTIFY`; every
//!   store `LISTEN`s and wakes its tails, which also poll at a bounded interval.
//! - **Durable**: an append is acknowledged after PostgreSQL's `COMMIT` returns (with the
//!   server's default `synchronous_commit = on`, after the WAL is flushed).
//! - **Schema**: the store creates and migrates its tables in a PostgreSQL schema of its own
//!   (`keel` unless [`schema`](PostgresStoreBuilder::schema) says otherwise), and refuses a
//!   schema written by a newer Keel, or by something else.
//! - **Reconnects by itself**: reads and the batcher connect again after the server restarts.
//!   Calls in flight when it went away fail with [`Error::Backend`] naming the operation; later
//!   calls work once the server is back.
//!
//! ```no_run
//! use keel::store::postgres::PostgresStore;
//!
//! # async fn run() -> Result<(), keel::store::Error> {
//! let store = PostgresStore::builder("postgres://app@localhost/bank")
//!     .schema("keel")
//!     .default_partitions(8)
//!     .open()
//!     .await?;
//! // … use it as any `EventStore` …
//! store.close().await;
//! # Ok(()) }
//! ```

mod batcher;
mod notify;
mod row;
mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::RecordedEvent;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{
    AppendRequest, Appended, Capabilities, CommandRecord, Error, EventStore, Result, StoreStats,
    Tail, TopicInfo, validate,
};

use self::batcher::{Batcher, Job, Shared, is_connection_error};

/// The largest group commit.
pub const MAX_BATCH: usize = 4096;

/// The schema the store uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "keel";

/// Options of a [`PostgresStore`]; start from [`PostgresStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PostgresStoreBuilder {
    url: String,
    schema: String,
    default_partitions: u32,
    max_batch: usize,
    batch_wait: Duration,
    readers: u32,
    poll_interval: Duration,
    connect_timeout: Duration,
}

impl PostgresStoreBuilder {
    /// The PostgreSQL schema holding the store's tables (default `keel`): 1 to 48 lowercase
    /// ASCII letters, digits and underscores. The store creates it if missing and must be its
    /// only user.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The partition count of topics created by an append (default 4).
    pub fn default_partitions(mut self, partitions: u32) -> Self {
        self.default_partitions = partitions;
        self
    }

    /// Most appends in one group commit (default 512, at most [`MAX_BATCH`]).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.clamp(1, MAX_BATCH);
        self
    }

    /// How long the batcher waits for more appends before committing a batch that is not full
    /// (default 0: it commits what is queued, and appends that arrive meanwhile form the next
    /// batch). Tokio's timers count in milliseconds, so a wait costs at least about one; 0 was
    /// the fastest on the benches, with 1 writer and with 64.
    pub fn batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// Size of the connection pool for reads (default 8).
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How often a tail re-reads its partition when no notification woke it (default 1 s).
    /// Notifications wake tails at once; the poll covers a listener that is reconnecting.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long connecting to the server may take before an operation fails (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Connects, creates or migrates the schema, and starts the batcher and the listener.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the URL does not parse, the server cannot be reached, or the
    /// schema is refused: written by a newer Keel, or holding tables that are not Keel's.
    pub async fn open(self) -> Result<PostgresStore> {
        schema::check_name(&self.schema)?;
        if self.default_partitions == 0 || self.default_partitions > crate::limits::MAX_PARTITIONS {
            return Err(Error::backend(
                "open the PostgreSQL store",
                format!(
                    "default partition count {}: a topic has 1 to {} partitions",
                    self.default_partitions,
                    crate::limits::MAX_PARTITIONS
                ),
            ));
        }
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| Error::backend("parse the PostgreSQL URL", e))?
            .application_name("keel")
            .options([("search_path", self.schema.as_str())]);

        let mut setup = tokio::time::timeout(self.connect_timeout, options.connect())
            .await
            .map_err(|_| {
                Error::backend(
                    "connect to PostgreSQL",
                    format!("no answer within {:?}", self.connect_timeout),
                )
            })?
            .map_err(|e| Error::backend("connect to PostgreSQL", e))?;
        schema::migrate(&mut setup, &self.schema).await?;
        if let Err(e) = sqlx::Connection::close(setup).await {
            tracing::debug!(error = %e, "closing the set-up connection failed");
        }

        let readers = PgPoolOptions::new()
            .max_connections(self.readers)
            .acquire_timeout(self.connect_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let listener_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.connect_timeout)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options.clone());

        // A notification's own transaction needs no durability: the data it announces is.
        let notifier_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.connect_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));

        let channel = format!("{}_commits", self.schema);
        let shared = Arc::new(Shared {
            commits: watch::Sender::new(0),
            transactions: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            topics: std::sync::RwLock::new(HashMap::new()),
        });
        let notifications = Arc::new(notify::Pending::default());
        let listener = tokio::spawn(notify::listen(
            listener_pool,
            channel.clone(),
            shared.commits.clone(),
        ));
        let notifier = tokio::spawn(notify::notify(
            notifier_pool,
            channel,
            Arc::clone(&notifications),
        ));
        let (jobs, rx) = mpsc::channel(4 * self.max_batch);
        let batcher = tokio::spawn(
            Batcher {
                // The batcher runs the same few statements all day: plan them once.
                options: options.options([("plan_cache_mode", "force_generic_plan")]),
                connect_timeout: self.connect_timeout,
                conn: None,
                jobs: rx,
                shared: Arc::clone(&shared),
                default_partitions: self.default_partitions,
                max_batch: self.max_batch,
                batch_wait: self.batch_wait,
                notifications,
                known: batcher::Known::default(),
            }
            .run(),
        );
        Ok(PostgresStore {
            schema: self.schema,
            jobs,
            readers,
            shared,
            batcher: std::sync::Mutex::new(Some(batcher)),
            background: [listener.abort_handle(), notifier.abort_handle()],
            poll_interval: self.poll_interval,
        })
    }
}

/// An event store on a PostgreSQL server. See the [module docs](self).
pub struct PostgresStore {
    schema: String,
    jobs: mpsc::Sender<Job>,
    readers: PgPool,
    shared: Arc<Shared>,
    batcher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The listener and the notifier.
    background: [tokio::task::AbortHandle; 2],
    poll_interval: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

impl PostgresStore {
    /// Options for a store on the server at `url` (`postgres://user:password@host:port/db`).
    pub fn builder(url: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            default_partitions: 4,
            max_batch: 512,
            batch_wait: Duration::ZERO,
            readers: 8,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Opens the store at `url` with default options.
    ///
    /// # Errors
    ///
    /// See [`PostgresStoreBuilder::open`].
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).open().await
    }

    /// The PostgreSQL schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The newest version of the store's tables this Keel knows (the highest migration).
    pub fn schema_version() -> i64 {
        schema::latest_version()
    }

    /// Finishes the queued appends, stops the batcher, the notifier and the listener, and
    /// closes every connection. Later calls on the store fail with [`Error::Closed`] or a
    /// backend error.
    pub async fn close(&self) {
        let _ = self.jobs.send(Job::Shutdown).await;
        let task = self
            .batcher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        for task in &self.background {
            task.abort();
        }
        self.readers.close().await;
    }

    async fn send<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T>>) -> Job) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(job(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Runs a read, again when the connection it got turns out to be broken (after a server
    /// restart every idle connection of the pool is), up to once per pooled connection.
    async fn read<T, F, Fut>(&self, operation: &'static str, mut query: F) -> Result<T>
    where
        F: FnMut(PgPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        let mut tries = 0;
        loop {
            match query(self.readers.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if is_connection_error(&e) && tries <= self.readers.size() => {
                    tries += 1;
                    tracing::debug!(error = %e, operation, "read failed on a broken connection; trying again");
                }
                Err(e) => return Err(Error::backend(operation, e)),
            }
        }
    }

    async fn partitions(&self, topic: &Topic) -> Result<u32> {
        if let Some(n) = self.shared.cached_partitions(topic) {
            return Ok(n);
        }
        let n: Option<i32> = self
            .read("read topics", |pool| async move {
                sqlx::query_scalar("SELECT partitions FROM topics WHERE topic = $1")
                    .bind(topic.as_str())
                    .fetch_optional(&pool)
                    .await
            })
            .await?;
        let n = n
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.clone(),
            })?;
        self.shared.cache_topic(topic, n);
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
impl EventStore for PostgresStore {
    #[tracing::instrument(level = "debug", skip_all, fields(stream = %request.stream, events = request.events.len()))]
    async fn append(&self, request: AppendRequest) -> Result<Appended> {
        validate::check_append(&request)?;
        self.send(|reply| Job::Append { request, reply }).await
    }

    /// Commits the appends in one transaction of the batcher, with the batch's other appends:
    /// each with its own expected version and command id, all or none.
    #[tracing::instrument(level = "debug", skip_all, fields(streams = requests.len()))]
    async fn append_all(&self, requests: Vec<AppendRequest>) -> Result<Vec<Appended>> {
        validate::check_append_all(&requests)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|reply| Job::AppendAll { requests, reply }).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = self
            .read("read a stream", |pool| async move {
                sqlx::query(include_str!("sql/read_stream.sql"))
                    .bind(stream.kind())
                    .bind(stream.id())
                    .bind(to_i64(from.0))
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        rows.iter()
            .map(|r| row::record(r, stream.topic(), Some(stream)))
            .collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        let v: Option<i64> = self
            .read("read a stream version", |pool| async move {
                sqlx::query_scalar(
                    "SELECT max(version) FROM events WHERE topic = $1 AND stream_id = $2",
                )
                .bind(stream.kind())
                .bind(stream.id())
                .fetch_one(&pool)
                .await
            })
            .await?;
        Ok(StreamVersion(
            v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        ))
    }

    async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
    ) -> Result<Option<CommandRecord>> {
        let row = self
            .read("read a command", |pool| async move {
                sqlx::query(
                    "SELECT fingerprint, part, first_version, first_offset, count FROM commands \
                     WHERE topic = $1 AND stream_id = $2 AND command_id = $3",
                )
                .bind(stream.kind())
                .bind(stream.id())
                .bind(command.as_str())
                .fetch_optional(&pool)
                .await
            })
            .await?;
        row.map(|r| row::command_record(&r, stream)).transpose()
    }

    async fn read_partition(
        &self,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.check_partition(topic, partition).await?;
        let rows = self
            .read("read a partition", |pool| async move {
                sqlx::query(include_str!("sql/read_partition.sql"))
                    .bind(topic.as_str())
                    .bind(i32::try_from(partition.0).unwrap_or(i32::MAX))
                    .bind(to_i64(from.0))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        rows.iter().map(|r| row::record(r, topic, None)).collect()
    }

    async fn head(&self, topic: &Topic, partition: Partition) -> Result<Offset> {
        self.check_partition(topic, partition).await?;
        let next: Option<i64> = self
            .read("read a partition head", |pool| async move {
                sqlx::query_scalar(
                    "SELECT next_offset FROM partitions WHERE topic = $1 AND part = $2",
                )
                .bind(topic.as_str())
                .bind(i32::try_from(partition.0).unwrap_or(i32::MAX))
                .fetch_optional(&pool)
                .await
            })
            .await?;
        Ok(Offset(
            next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        ))
    }

    async fn ensure_topic(&self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        validate::check_partitions(topic, partitions)?;
        let existing = self
            .read("create a topic", |pool| async move {
                let mut conn = pool.acquire().await?;
                batcher::create_topic(&mut conn, topic, partitions).await
            })
            .await?;
        let existing = existing.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        if existing != partitions {
            return Err(Error::PartitionCount {
                topic: topic.clone(),
                existing,
                requested: partitions,
            });
        }
        self.shared.cache_topic(topic, partitions);
        Ok(TopicInfo {
            topic: topic.clone(),
            partitions,
        })
    }

    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let rows = self
            .read("read topics", |pool| async move {
                sqlx::query("SELECT topic, partitions FROM topics ORDER BY topic")
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        rows.iter()
            .map(|r| {
                let topic: String = r.try_get(0).map_err(|e| Error::backend("read topics", e))?;
                let n: i32 = r.try_get(1).map_err(|e| Error::backend("read topics", e))?;
                Ok(TopicInfo {
                    topic: Topic::new(&topic)?,
                    partitions: u32::try_from(n).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        validate::check_snapshot(&snapshot)?;
        let snapshot = &snapshot;
        let actual: i64 = self
            .read("save a snapshot", |pool| async move {
                sqlx::query_scalar(include_str!("sql/save_snapshot.sql"))
                    .bind(snapshot.stream.kind())
                    .bind(snapshot.stream.id())
                    .bind(to_i64(snapshot.version.0))
                    .bind(i64::from(snapshot.shape))
                    .bind(snapshot.payload.as_slice())
                    .bind(snapshot.timestamp.0)
                    .fetch_one(&pool)
                    .await
            })
            .await?;
        let actual = StreamVersion(u64::try_from(actual).unwrap_or(0));
        if snapshot.version > actual {
            return Err(Error::SnapshotAhead {
                stream: snapshot.stream.clone(),
                version: snapshot.version,
                actual,
            });
        }
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = self
            .read("read a snapshot", |pool| async move {
                sqlx::query(
                    "SELECT version, shape, payload, timestamp_us FROM snapshots \
                     WHERE topic = $1 AND stream_id = $2",
                )
                .bind(stream.kind())
                .bind(stream.id())
                .fetch_optional(&pool)
                .await
            })
            .await?;
        row.map(|r| row::snapshot(&r, stream)).transpose()
    }

    /// The snapshot of that shape and the events after it, in one round trip.
    async fn read_from_snapshot(
        &self,
        stream: &StreamId,
        shape: Option<u32>,
    ) -> Result<(Option<Snapshot>, Vec<RecordedEvent>)> {
        let rows = self
            .read("load a stream", |pool| async move {
                sqlx::query(include_str!("sql/read_from_snapshot.sql"))
                    .bind(stream.kind())
                    .bind(stream.id())
                    .bind(shape.map(i64::from))
                    .fetch_all(&pool)
                    .await
            })
            .await?;
        let mut snapshot = None;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let is_snapshot: bool = r
                .try_get("is_snapshot")
                .map_err(|e| Error::backend("load a stream", e))?;
            if is_snapshot {
                snapshot = Some(row::snapshot_of_load(r, stream)?);
            } else {
                events.push(row::record(r, stream.topic(), Some(stream))?);
            }
        }
        events.sort_by_key(|e| e.version);
        Ok((snapshot, events))
    }

    fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    /// Tails a partition, woken by `NOTIFY` from any process on the database, and polling at
    /// the [poll interval](PostgresStoreBuilder::poll_interval) besides.
    fn tail(self: Arc<Self>, topic: Topic, partition: Partition, from: Offset) -> Tail {
        let poll = self.poll_interval;
        crate::store::tail(self, topic, partition, from, poll)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            multi_stream_append: true,
            durable: true,
            dense_offsets: true,
            group_commit: true,
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            appends: self.shared.appends.load(Ordering::Relaxed),
            commits: self.shared.transactions.load(Ordering::Relaxed),
            wal_bytes: None,
        }
    }
}
