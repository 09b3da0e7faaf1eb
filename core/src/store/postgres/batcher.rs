//! Group commit: one batcher task gathers concurrent appends into shared commits.
//!
//! How an append meets the contract on PostgreSQL:
//!
//! - **Batch**: the batcher drains its queue (up to `max_batch` appends, waiting at most
//!   `batch_wait` for more), across any topics and partitions, and commits them together on
//!   its own connection. Each statement takes whole arrays (`unnest`), so a batch costs the
//!   same round trips whether it holds one append or five hundred: two when no one else writes
//!   the batch's partitions (below), four when others keep doing so.
//! - **Offsets dense and in commit order**: every partition has a head row holding its next
//!   offset. A batch takes its offsets from the heads and advances them in the transaction
//!   that writes its events, holding the head rows' locks (`SELECT … FOR UPDATE`, in one
//!   global order so writers never deadlock) until that transaction commits. A second writer
//!   of the same partition (another process, a hand-written transaction) waits for the lock,
//!   so the appends to a partition commit one after the other, and a reader that sees offset n
//!   sees every offset below it. A sequence read by position would let a later append commit
//!   before an earlier one and a tailing reader skip it; there is none here.
//! - **Read, decide, write-if-unchanged**: `read.sql` reads, in one snapshot, the heads of the
//!   batch's partitions, the version of every stream (its highest event's, an index probe, so
//!   no table of versions is rewritten on every append) and the stored answer of every command
//!   id. The shared [`Ledger`] decides each append in queue order, exactly as the SQLite
//!   writer does: the command id first (a committed one replays its first answer, another
//!   fingerprint is [`Error::CommandIdReused`]), then the expected version, then the
//!   placement; a later append of the batch sees the earlier ones. `write_verified.sql` then
//!   locks the heads and, in the same statement (one transaction of its own), writes the
//!   events, the command ids (whose primary key makes them count once, across processes and
//!   restarts) and the new heads only if every head is still the one read. Every append
//!   advances its partition's head and heads only grow, so unchanged heads mean nothing the
//!   decisions rest on has changed. Otherwise it writes nothing, and the batch is read and
//!   decided again.
//! - **From what it knows**: a batcher remembers the heads and stream versions its own commits
//!   left (see [`Known`]). A batch whose partitions and streams it all knows skips `read.sql`
//!   and goes straight to `write_verified.sql`: one round trip. The head check proves that
//!   knowledge still true; when another writer moved a head, or the primary key refuses a
//!   command id committed out of its sight, nothing is written and the batch is read as above.
//! - **Under contention**: after a few such tries the batch takes the locks first, in one
//!   transaction: `BEGIN`, `lock_and_read.sql` (the locked heads and the reads, plus the heads
//!   as the statement's snapshot saw them: when they differ, another writer committed while
//!   the batch waited, and `read.sql` reads again after the locks), `write_batch.sql`,
//!   `COMMIT`. After the commit the partitions written go to the notifier (see `notify.rs`).
//! - **Atomic appends to several streams**: an `append_all` is one unit of the batch, decided
//!   with [`Ledger::decide_all`] (all or none; a refusal undoes the unit's effects on the
//!   ledger, so the later appends of the batch do not see them) and written in the batch's one
//!   transaction, so it commits whole or not at all.
//! - **Each caller its own answer**: a conflict, a replay or a refused command id answers its
//!   own caller only. Input a validation missed and the database refuses fails the batch; the
//!   batcher then commits its appends one by one, so only the bad one fails.
//! - **Faults**: a deadlock or serialization failure retries the batch. A connection lost
//!   before the committing statement was sent committed nothing: the batcher reconnects and
//!   retries once, then answers [`Error::Backend`]. A connection lost during it leaves the
//!   outcome unknown; the callers are told so (a retry with the same command id is safe). The
//!   next batch connects again, so the store recovers by itself when the server is back.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use tokio::sync::{mpsc, oneshot, watch};

use super::notify::Pending as PendingNotifications;
use super::row;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::store::ledger::{Decision, Ledger};
use crate::store::{AppendRequest, Appended, Error, ExpectedVersion, FastMap, Result, validate};

/// Work for the batcher.
pub(super) enum Job {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<Appended>>,
    },
    /// Appends to several streams that commit together or not at all (one unit of a batch).
    AppendAll {
        requests: Vec<AppendRequest>,
        reply: oneshot::Sender<Result<Vec<Appended>>>,
    },
    /// Finish what was queued before, close the connection, stop.
    Shutdown,
}

/// Counters, signals and the topic cache, shared between the batcher and the store handle.
pub(super) struct Shared {
    pub(super) commits: watch::Sender<u64>,
    pub(super) transactions: AtomicU64,
    pub(super) appends: AtomicU64,
    /// Partition counts never change once a topic exists, so they are cached.
    pub(super) topics: std::sync::RwLock<HashMap<Topic, u32>>,
}

impl Shared {
    pub(super) fn cached_partitions(&self, topic: &Topic) -> Option<u32> {
        self.topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .copied()
    }

    pub(super) fn cache_topic(&self, topic: &Topic, partitions: u32) {
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(topic.clone(), partitions);
    }
}

pub(super) struct Batcher {
    pub(super) options: PgConnectOptions,
    pub(super) connect_timeout: Duration,
    pub(super) conn: Option<PgConnection>,
    pub(super) jobs: mpsc::Receiver<Job>,
    pub(super) shared: Arc<Shared>,
    pub(super) default_partitions: u32,
    pub(super) max_batch: usize,
    pub(super) batch_wait: Duration,
    pub(super) notifications: Arc<PendingNotifications>,
    /// What its own commits taught it (see [`Known`]).
    pub(super) known: Known,
}

/// One unit of a batch: a single append, or appends that commit together or not at all.
enum Pending {
    One(AppendRequest, oneshot::Sender<Result<Appended>>),
    All(Vec<AppendRequest>, oneshot::Sender<Result<Vec<Appended>>>),
}

impl Pending {
    fn requests(&self) -> &[AppendRequest] {
        match self {
            Self::One(request, _) => std::slice::from_ref(request),
            Self::All(requests, _) => requests,
        }
    }

    /// Answers the caller from the decisions of its requests (in order). An atomic unit gets
    /// the first refusal, which the decider puts first (see [`decide`]).
    fn answer(self, decisions: impl IntoIterator<Item = Result<Appended>>) {
        match self {
            Self::One(_, reply) => {
                let answer = decisions.into_iter().next().unwrap_or(Err(Error::Closed));
                let _ = reply.send(answer);
            }
            Self::All(_, reply) => {
                let _ = reply.send(decisions.into_iter().collect());
            }
        }
    }

    fn fail(self, error: impl FnOnce() -> Error) {
        match self {
            Self::One(_, reply) => {
                let _ = reply.send(Err(error()));
            }
            Self::All(_, reply) => {
                let _ = reply.send(Err(error()));
            }
        }
    }
}

/// The number of requests of each unit of a batch, in order.
type Spans = [usize];

/// How many times a batch is tried again after a deadlock or a serialization failure.
const MAX_RETRIES: u32 = 5;

/// Where a batch failed, which says whether it may have committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the statement that commits was sent: nothing was committed.
    Work,
    /// During the statement that commits (`COMMIT`, or the optimistic write, which is its own
    /// transaction): lost there, the connection leaves the outcome unknown.
    Commit,
}

/// One batch failure, shared by every caller of the batch.
#[derive(Debug, Clone)]
struct BatchFailed {
    error: Arc<sqlx::Error>,
    unknown_outcome: bool,
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unknown_outcome {
            write!(
                f,
                "the connection to PostgreSQL failed during COMMIT, so the append may or may not \
                 have committed (retrying with the same command id is safe): {}",
                self.error
            )
        } else {
            write!(f, "nothing was written: {}", self.error)
        }
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Whether an error means the connection is gone (the server stopped, the network failed).
pub(super) fn is_connection_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: the server is shutting down or starting.
            code.starts_with("08") || code.starts_with("57P")
        }),
        _ => false,
    }
}

/// Whether running the batch again may succeed: a deadlock or a serialization failure.
fn is_transient(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

/// Whether the database refused the data itself (a value it cannot store).
fn is_data_error(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Batcher {
    pub(super) async fn run(mut self) {
        let mut stopping = false;
        while !stopping {
            let (batch, stop) = self.gather().await;
            stopping = stop;
            self.commit_batch(batch).await;
        }
        if let Some(conn) = self.conn.take()
            && let Err(e) = sqlx::Connection::close(conn).await
        {
            tracing::debug!(error = %e, "closing the PostgreSQL batcher connection failed");
        }
        tracing::debug!("postgres batcher stopped");
    }

    /// Gathers a batch: the first job (waiting for it), then what is queued, up to
    /// `max_batch`, waiting at most `batch_wait` for more. The flag says the batcher must stop
    /// after this batch (a shutdown, or the store dropped).
    async fn gather(&mut self) -> (Vec<Pending>, bool) {
        let jobs = &mut self.jobs;
        let mut batch: Vec<Pending> = Vec::new();
        match jobs.recv().await {
            Some(Job::Append { request, reply }) => batch.push(Pending::One(request, reply)),
            Some(Job::AppendAll { requests, reply }) => {
                batch.push(Pending::All(requests, reply));
            }
            Some(Job::Shutdown) | None => return (batch, true),
        }
        let deadline = tokio::time::Instant::now() + self.batch_wait;
        while batch.len() < self.max_batch {
            let next = match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Disconnected) => return (batch, true),
                Err(mpsc::error::TryRecvError::Empty) if self.batch_wait.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, jobs.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            match next {
                Some(Job::Append { request, reply }) => batch.push(Pending::One(request, reply)),
                Some(Job::AppendAll { requests, reply }) => {
                    batch.push(Pending::All(requests, reply));
                }
                Some(Job::Shutdown) => return (batch, true),
                None => break,
            }
        }
        (batch, false)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(size = batch.len()))]
    async fn commit_batch(&mut self, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let requests: Vec<&AppendRequest> = batch.iter().flat_map(Pending::requests).collect();
        let spans: Vec<usize> = batch.iter().map(|p| p.requests().len()).collect();
        self.shared
            .appends
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        match self.run_batch(&requests, &spans).await {
            Ok(decisions) => {
                let mut decisions = decisions.into_iter();
                for (unit, n) in batch.into_iter().zip(spans) {
                    // Taken whole: an atomic unit's answer stops at its first refusal.
                    let own: Vec<_> = decisions.by_ref().take(n).collect();
                    unit.answer(own);
                }
            }
            Err((e, _)) if batch.len() > 1 && is_data_error(&e) => {
                tracing::warn!(error = %e, "the database refused a batch; committing its appends one by one");
                for unit in batch {
                    let requests: Vec<&AppendRequest> = unit.requests().iter().collect();
                    match self.run_batch(&requests, &[requests.len()]).await {
                        Ok(decisions) => unit.answer(decisions),
                        Err((e, stage)) => unit.fail(|| failed(e, stage)),
                    }
                }
            }
            Err((e, stage)) => {
                tracing::error!(error = %e, "append batch failed");
                let error = BatchFailed {
                    unknown_outcome: stage == Stage::Commit && is_connection_error(&e),
                    error: Arc::new(e),
                };
                for unit in batch {
                    unit.fail(|| Error::backend("append", error.clone()));
                }
            }
        }
    }

    /// Runs a batch, retrying after deadlocks and, once, after a connection lost before
    /// `COMMIT`. The inner results are each request's own answer.
    async fn run_batch(
        &mut self,
        batch: &[&AppendRequest],
        spans: &Spans,
    ) -> Result<Vec<Result<Appended>>, (sqlx::Error, Stage)> {
        let mut retries = 0;
        let mut reconnected = false;
        loop {
            if let Err(e) = self.connect().await {
                return Err((e, Stage::Work));
            }
            let Some(conn) = self.conn.as_mut() else {
                return Err((sqlx::Error::PoolClosed, Stage::Work));
            };
            let outcome = try_batch(
                conn,
                batch,
                spans,
                self.default_partitions,
                &self.shared,
                &mut self.known,
            )
            .await;
            if outcome.is_err() {
                self.known.forget();
            }
            match outcome {
                Ok((decisions, committed)) => {
                    if committed {
                        self.shared.transactions.fetch_add(1, Ordering::Relaxed);
                        self.shared.commits.send_modify(|n| *n += 1);
                        self.notifications
                            .add(decisions.iter().filter_map(|d| match d {
                                Ok(Decision::Write { appended, .. }) => {
                                    Some((appended.stream.topic().clone(), appended.partition))
                                }
                                _ => None,
                            }));
                    }
                    return Ok(decisions
                        .into_iter()
                        .map(|d| {
                            d.map(|d| match d {
                                Decision::Replay(a) | Decision::Write { appended: a, .. } => a,
                            })
                        })
                        .collect());
                }
                Err((e, stage)) => {
                    if is_connection_error(&e) {
                        self.conn = None;
                        if stage == Stage::Work && !reconnected {
                            reconnected = true;
                            tracing::warn!(error = %e, "lost the PostgreSQL connection; reconnecting");
                            continue;
                        }
                        return Err((e, stage));
                    }
                    if is_transient(&e) && retries < MAX_RETRIES {
                        retries += 1;
                        tracing::debug!(error = %e, retries, "retrying an append batch");
                        continue;
                    }
                    return Err((e, stage));
                }
            }
        }
    }

    /// Connects when the batcher has no connection (at the start, or after one was lost).
    async fn connect(&mut self) -> sqlx::Result<()> {
        if self.conn.is_none() {
            let conn = tokio::time::timeout(
                self.connect_timeout,
                sqlx::ConnectOptions::connect(&self.options),
            )
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "connecting to PostgreSQL took longer than {:?}",
                        self.connect_timeout
                    ),
                ))
            })??;
            self.conn = Some(conn);
        }
        Ok(())
    }
}

fn failed(e: sqlx::Error, stage: Stage) -> Error {
    Error::backend(
        "append",
        BatchFailed {
            unknown_outcome: stage == Stage::Commit && is_connection_error(&e),
            error: Arc::new(e),
        },
    )
}

type Decisions = Vec<Result<Decision>>;

/// Decides a batch's requests in order, unit by unit: a single append as
/// [`Ledger::decide`] does, an atomic unit as [`Ledger::decide_all`] does (all or none). A
/// refused atomic unit gets its refusal as its first request's decision, and
/// [`Error::Closed`] (never shown: the unit answers with its first refusal) as the others'.
fn decide(ledger: &mut Ledger, batch: &[&AppendRequest], spans: &Spans) -> Decisions {
    let mut decisions = Vec::with_capacity(batch.len());
    let mut start = 0;
    for &n in spans {
        let unit = batch.get(start..start + n).unwrap_or_default();
        start += n;
        if let [request] = unit {
            decisions.push(ledger.decide(request));
            continue;
        }
        match ledger.decide_all(unit.iter().copied()) {
            Ok(all) => decisions.extend(all.into_iter().map(Ok)),
            Err(error) => {
                decisions.push(Err(error));
                decisions.extend((1..n).map(|_| Err(Error::Closed)));
            }
        }
    }
    decisions
}

/// How many times a batch is read, decided and written optimistically (two round trips) before
/// it takes the head locks first (four): only other writers on the database make it try again.
const OPTIMISTIC_TRIES: u32 = 3;

/// The keys a batch reads and locks, each once, in the order the statements take them.
struct Keys<'a> {
    /// The partitions it may write, sorted (the order every writer locks them in).
    parts: Vec<(&'a Topic, Partition)>,
    streams: Vec<&'a StreamId>,
    commands: Vec<(&'a StreamId, &'a CommandId)>,
}

impl<'a> Keys<'a> {
    fn of(batch: &[&'a AppendRequest], topics: &HashMap<Topic, u32>) -> Self {
        let mut parts: Vec<(&Topic, Partition)> = dedup(batch.iter().filter_map(|r| {
            let n = topics.get(r.stream.topic())?;
            Some((r.stream.topic(), validate::partition_of(&r.stream, *n)))
        }));
        parts.sort();
        Self {
            parts,
            streams: dedup(batch.iter().map(|r| &r.stream)),
            commands: dedup(
                batch
                    .iter()
                    .filter_map(|r| r.command.as_ref().map(|c| (&r.stream, &c.id))),
            ),
        }
    }
}

/// Heads read by `read.sql` ('seen') or `lock_and_read.sql` ('locked' and 'seen').
#[derive(Default)]
struct Heads {
    locked: FastMap<(Topic, Partition), Offset>,
    seen: FastMap<(Topic, Partition), Offset>,
}

/// One try of a batch: from what the batcher already knows when that covers the whole batch
/// (one round trip, see [`Known`]), else optimistic (read, decide, then write only if no head
/// moved, in one statement that is its own transaction), with the head locks taken first when
/// other writers keep moving the heads. Returns each request's decision and whether anything
/// was committed. On error the connection is out of any transaction (or is to be dropped).
async fn try_batch(
    conn: &mut PgConnection,
    batch: &[&AppendRequest],
    spans: &Spans,
    default_partitions: u32,
    shared: &Shared,
    known: &mut Known,
) -> Result<(Decisions, bool), (sqlx::Error, Stage)> {
    let work = |e| (e, Stage::Work);
    let topics = resolve_topics(conn, batch, default_partitions, shared)
        .await
        .map_err(work)?;
    let keys = Keys::of(batch, &topics);
    if let Some(mut ledger) = known.take_covering(&keys) {
        ledger
            .topics
            .extend(topics.iter().map(|(t, n)| (t.clone(), *n)));
        let seen = ledger.heads.clone();
        let decisions = decide(&mut ledger, batch, spans);
        let writes = writes_of(batch, &decisions);
        // Refusals alone are answered only from a fresh read: nothing would verify them.
        if !writes.is_empty() {
            match write_verified(conn, &writes, &keys, &seen, &ledger.heads).await {
                Ok(true) => {
                    known.keep(ledger);
                    return Ok((decisions, true));
                }
                Ok(false) => {
                    tracing::debug!("another writer moved the batch's heads; reading them again");
                }
                Err(e) if is_connection_error(&e.0) => return Err(e),
                // A command id committed before the batcher knew of it (its primary key
                // refused it), or bad input: the read below tells which.
                Err((e, _)) => {
                    tracing::debug!(error = %e, "the batch from known state failed; reading")
                }
            }
        }
    }
    for _ in 0..OPTIMISTIC_TRIES {
        let mut ledger = Ledger::new(default_partitions);
        ledger
            .topics
            .extend(topics.iter().map(|(t, n)| (t.clone(), *n)));
        let rows = bind_keys(sqlx::query(include_str!("sql/read.sql")), &keys, true)
            .fetch_all(&mut *conn)
            .await
            .map_err(work)?;
        let heads = fill(&mut ledger, &keys, &rows).map_err(work)?;
        ledger.heads.clone_from(&heads.seen);
        check_heads(&keys, &ledger).map_err(work)?;
        let decisions = decide(&mut ledger, batch, spans);
        let writes = writes_of(batch, &decisions);
        if writes.is_empty() {
            return Ok((decisions, false));
        }
        if write_verified(conn, &writes, &keys, &heads.seen, &ledger.heads).await? {
            cache_topics(shared, &topics);
            known.absorb(&heads.seen, ledger);
            return Ok((decisions, true));
        }
        tracing::debug!("another writer moved the batch's heads since its read; deciding again");
    }
    // Other writers keep moving these heads: what the batcher knows is stale.
    known.forget();
    match locked_batch(conn, batch, spans, &keys, default_partitions, &topics).await {
        Ok(outcome) => {
            cache_topics(shared, &topics);
            Ok(outcome)
        }
        Err((e, stage)) => {
            if !is_connection_error(&e)
                && let Err(rollback) = sqlx::Executor::execute(&mut *conn, "ROLLBACK").await
            {
                // The caller drops a connection that fails with a connection error.
                return Err((rollback, Stage::Work));
            }
            Err((e, stage))
        }
    }
}

/// `write_verified.sql`: writes `writes` and moves the heads of the batch's partitions from
/// `seen` to `after` if and only if every head is still at `seen`. A connection lost during
/// this statement leaves its commit unknown.
async fn write_verified(
    conn: &mut PgConnection,
    writes: &[(&AppendRequest, &Appended)],
    keys: &Keys<'_>,
    seen: &FastMap<(Topic, Partition), Offset>,
    after: &FastMap<(Topic, Partition), Offset>,
) -> Result<bool, (sqlx::Error, Stage)> {
    let verified = bind_writes(sqlx::query(include_str!("sql/write_verified.sql")), writes)
        .bind(
            keys.parts
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.parts
                .iter()
                .map(|(_, p)| to_i32(p.0))
                .collect::<Vec<_>>(),
        )
        .bind(head_values(keys, seen))
        .bind(head_values(keys, after))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| (e, Stage::Commit))?;
    verified
        .try_get::<bool, _>(0)
        .map_err(|e| (e, Stage::Commit))
}

/// Most streams the batcher remembers between batches; past it, it forgets them all.
const KNOWN_STREAMS: usize = 100_000;

/// What the batcher knows from its own commits: heads of partitions and versions of streams in
/// them, each pair true as long as the partition's head has not moved (every append moves its
/// partition's head). A batch whose partitions and streams are all known skips `read.sql`: it
/// is decided from this and written by `write_verified.sql`, whose check of the heads proves
/// that knowledge still true, or writes nothing (another writer moved a head; a command id
/// committed before the batcher knew of it is refused by its primary key) and the batch is
/// read and decided again. Command ids are not kept: a new one is checked by that key.
#[derive(Default)]
pub(super) struct Known {
    ledger: Option<Ledger>,
}

impl Known {
    /// The knowledge, taken out, when it covers every partition and stream of `keys`.
    fn take_covering(&mut self, keys: &Keys<'_>) -> Option<Ledger> {
        let ledger = self.ledger.as_ref()?;
        let covers = keys
            .parts
            .iter()
            .all(|(t, p)| ledger.heads.contains_key(&((*t).clone(), *p)))
            && keys.streams.iter().all(|s| ledger.streams.contains_key(*s));
        if covers { self.ledger.take() } else { None }
    }

    /// Keeps `ledger` after its batch committed from it.
    fn keep(&mut self, mut ledger: Ledger) {
        ledger.commands.clear();
        if ledger.streams.len() <= KNOWN_STREAMS {
            self.ledger = Some(ledger);
        }
    }

    /// Adds what a batch read (`seen`: the heads its reads saw) and committed (`after`). When
    /// a head it saw is not the one known, another writer moved it: what is known of that
    /// partition's streams may be stale, so everything known is forgotten first.
    fn absorb(&mut self, seen: &FastMap<(Topic, Partition), Offset>, after: Ledger) {
        let current = match self.ledger.take() {
            Some(known)
                if seen
                    .iter()
                    .all(|(key, head)| known.heads.get(key).is_none_or(|h| h == head)) =>
            {
                Some(known)
            }
            _ => None,
        };
        let Some(mut known) = current else {
            self.keep(after);
            return;
        };
        known.heads.extend(after.heads);
        known.streams.extend(after.streams);
        known.topics.extend(after.topics);
        self.keep(known);
    }

    /// Forgets everything (after a failure, or a batch committed under locks).
    fn forget(&mut self) {
        self.ledger = None;
    }
}

/// A batch under contention, in one transaction that takes the head locks before it reads:
/// `BEGIN`, `lock_and_read.sql` (and `read.sql` again when another writer committed while the
/// locks were awaited), `write_batch.sql`, `COMMIT`.
async fn locked_batch(
    conn: &mut PgConnection,
    batch: &[&AppendRequest],
    spans: &Spans,
    keys: &Keys<'_>,
    default_partitions: u32,
    topics: &HashMap<Topic, u32>,
) -> Result<(Decisions, bool), (sqlx::Error, Stage)> {
    let work = |e| (e, Stage::Work);
    sqlx::Executor::execute(&mut *conn, "BEGIN")
        .await
        .map_err(work)?;
    let mut ledger = Ledger::new(default_partitions);
    ledger
        .topics
        .extend(topics.iter().map(|(t, n)| (t.clone(), *n)));
    let rows = bind_keys(
        sqlx::query(include_str!("sql/lock_and_read.sql")),
        keys,
        true,
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(work)?;
    let heads = fill(&mut ledger, keys, &rows).map_err(work)?;
    ledger.heads.clone_from(&heads.locked);
    check_heads(keys, &ledger).map_err(work)?;
    if heads.locked != heads.seen {
        let rows = bind_keys(sqlx::query(include_str!("sql/read.sql")), keys, false)
            .fetch_all(&mut *conn)
            .await
            .map_err(work)?;
        fill(&mut ledger, keys, &rows).map_err(work)?;
    }
    let decisions = decide(&mut ledger, batch, spans);
    let writes = writes_of(batch, &decisions);
    let wrote = !writes.is_empty();
    if wrote {
        let mut written: Vec<(&Topic, Partition)> =
            dedup(writes.iter().map(|(r, a)| (r.stream.topic(), a.partition)));
        written.sort();
        let next: Vec<i64> = written
            .iter()
            .map(|(t, p)| to_i64(ledger.heads.get(&((*t).clone(), *p)).map_or(0, |o| o.0)))
            .collect();
        bind_writes(sqlx::query(include_str!("sql/write_batch.sql")), &writes)
            .bind(written.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>())
            .bind(written.iter().map(|(_, p)| to_i32(p.0)).collect::<Vec<_>>())
            .bind(next)
            .execute(&mut *conn)
            .await
            .map_err(work)?;
    }
    sqlx::Executor::execute(&mut *conn, "COMMIT")
        .await
        .map_err(|e| (e, Stage::Commit))?;
    Ok((decisions, wrote))
}

/// The partition count of every topic of the batch: from the cache, else from the table, else
/// created (with its head rows) for the appends that may write. An append expecting a version
/// above 0 of a stream in a topic that does not exist is a conflict, and creates nothing.
async fn resolve_topics(
    conn: &mut PgConnection,
    batch: &[&AppendRequest],
    default_partitions: u32,
    shared: &Shared,
) -> sqlx::Result<HashMap<Topic, u32>> {
    let mut topics = HashMap::new();
    for topic in dedup(batch.iter().map(|r| r.stream.topic())) {
        if let Some(n) = shared.cached_partitions(topic) {
            topics.insert(topic.clone(), n);
            continue;
        }
        let may_write = batch.iter().any(|r| {
            r.stream.topic() == topic
                && !matches!(r.expected, ExpectedVersion::Exact(v) if v > StreamVersion::INITIAL)
        });
        let found: Option<i32> = if may_write {
            create_topic(conn, topic, default_partitions).await?
        } else {
            sqlx::query_scalar("SELECT partitions FROM topics WHERE topic = $1")
                .bind(topic.as_str())
                .fetch_optional(&mut *conn)
                .await?
        };
        if let Some(n) = found.and_then(|n| u32::try_from(n).ok()) {
            topics.insert(topic.clone(), n);
        }
    }
    Ok(topics)
}

/// Caches the partition counts of topics found or created (they never change).
fn cache_topics(shared: &Shared, topics: &HashMap<Topic, u32>) {
    for (topic, n) in topics {
        if shared.cached_partitions(topic).is_none() {
            shared.cache_topic(topic, *n);
        }
    }
}

/// Binds the keys' arrays: partitions (when `parts`), streams, commands.
fn bind_keys<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    keys: &Keys<'q>,
    parts: bool,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let (topics, numbers): (Vec<&str>, Vec<i32>) = if parts {
        keys.parts
            .iter()
            .map(|(t, p)| (t.as_str(), to_i32(p.0)))
            .unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    query
        .bind(topics)
        .bind(numbers)
        .bind(keys.streams.iter().map(|s| s.kind()).collect::<Vec<_>>())
        .bind(keys.streams.iter().map(|s| s.id()).collect::<Vec<_>>())
        .bind(
            keys.commands
                .iter()
                .map(|(s, _)| s.kind())
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.commands
                .iter()
                .map(|(s, _)| s.id())
                .collect::<Vec<_>>(),
        )
        .bind(
            keys.commands
                .iter()
                .map(|(_, c)| c.as_str())
                .collect::<Vec<_>>(),
        )
}

/// Reads the rows of `read.sql` or `lock_and_read.sql` into `ledger` (streams, commands) and
/// returns the heads.
fn fill(ledger: &mut Ledger, keys: &Keys<'_>, rows: &[PgRow]) -> sqlx::Result<Heads> {
    let by_stream: HashMap<(&str, &str), &StreamId> = keys
        .streams
        .iter()
        .map(|s| ((s.kind(), s.id()), *s))
        .collect();
    let by_command: HashMap<(&str, &str, &str), (&StreamId, &CommandId)> = keys
        .commands
        .iter()
        .map(|&(s, c)| ((s.kind(), s.id(), c.as_str()), (s, c)))
        .collect();
    let mut heads = Heads::default();
    for row in rows {
        let kind: &str = row.try_get("kind")?;
        let topic: &str = row.try_get("topic")?;
        match kind {
            "locked" | "seen" => {
                let part: i32 = row.try_get("part")?;
                let next: i64 = row.try_get("version")?;
                let key = (
                    Topic::unchecked(topic),
                    Partition(u32::try_from(part).unwrap_or(u32::MAX)),
                );
                let next = Offset(u64::try_from(next).unwrap_or(0));
                if kind == "locked" {
                    heads.locked.insert(key, next);
                } else {
                    heads.seen.insert(key, next);
                }
            }
            "command" => {
                let id: &str = row.try_get("stream_id")?;
                let command: &str = row.try_get("command_id")?;
                let Some(&(stream, command_id)) = by_command.get(&(topic, id, command)) else {
                    continue;
                };
                let record = row::command_record(row, stream)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                ledger
                    .commands
                    .insert((stream.clone(), command_id.clone()), record);
            }
            _ => {
                let id: &str = row.try_get("stream_id")?;
                // None: a new stream.
                if let (Some(&stream), Some(version)) = (
                    by_stream.get(&(topic, id)),
                    row.try_get::<Option<i64>, _>("version")?,
                ) {
                    ledger.streams.insert(
                        stream.clone(),
                        StreamVersion(u64::try_from(version).unwrap_or(0)),
                    );
                }
            }
        }
    }
    Ok(heads)
}

/// Fails when a partition of the batch has no head row (a damaged schema).
fn check_heads(keys: &Keys<'_>, ledger: &Ledger) -> sqlx::Result<()> {
    match keys
        .parts
        .iter()
        .find(|(t, p)| !ledger.heads.contains_key(&((*t).clone(), *p)))
    {
        Some((topic, part)) => Err(sqlx::Error::Protocol(format!(
            "topic {topic} has no head row for partition {part}: the schema is damaged"
        ))),
        None => Ok(()),
    }
}

/// The batch's accepted appends, with where they go.
fn writes_of<'a>(
    batch: &[&'a AppendRequest],
    decisions: &'a Decisions,
) -> Vec<(&'a AppendRequest, &'a Appended)> {
    batch
        .iter()
        .zip(decisions)
        .filter_map(|(r, d)| match d {
            Ok(Decision::Write { appended, .. }) => Some((*r, appended)),
            _ => None,
        })
        .collect()
}

/// Each of the keys' partitions' offset in `heads`, in the keys' order.
fn head_values(keys: &Keys<'_>, heads: &FastMap<(Topic, Partition), Offset>) -> Vec<i64> {
    keys.parts
        .iter()
        .map(|(t, p)| to_i64(heads.get(&((*t).clone(), *p)).map_or(0, |o| o.0)))
        .collect()
}

/// Creates `topic` with `partitions` partitions, or finds it; its partition count.
pub(super) async fn create_topic(
    conn: &mut PgConnection,
    topic: &Topic,
    partitions: u32,
) -> sqlx::Result<Option<i32>> {
    // Empty only when a concurrent transaction created the topic after the statement's
    // snapshot: the next statement sees it.
    for _ in 0..3 {
        let found: Option<i32> = sqlx::query_scalar(include_str!("sql/create_topic.sql"))
            .bind(topic.as_str())
            .bind(to_i32(partitions))
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Binds the accepted appends as the columns `$1`-`$22` of `write_batch.sql` and
/// `write_verified.sql`: the events, then the command ids.
fn bind_writes<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    writes: &[(&'q AppendRequest, &'q Appended)],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let rows: usize = writes.iter().map(|(r, _)| r.events.len()).sum();
    let mut e_topic = Vec::with_capacity(rows);
    let mut e_part = Vec::with_capacity(rows);
    let mut e_offset = Vec::with_capacity(rows);
    let mut e_stream = Vec::with_capacity(rows);
    let mut e_version = Vec::with_capacity(rows);
    let mut e_type = Vec::with_capacity(rows);
    let mut e_schema = Vec::with_capacity(rows);
    let mut e_payload = Vec::with_capacity(rows);
    let mut e_id = Vec::with_capacity(rows);
    let mut e_command = Vec::with_capacity(rows);
    let mut e_correlation = Vec::with_capacity(rows);
    let mut e_causation = Vec::with_capacity(rows);
    let mut e_timestamp = Vec::with_capacity(rows);
    let mut e_metadata = Vec::with_capacity(rows);
    for (request, appended) in writes {
        let command = request.command.as_ref();
        for (event, (offset, version)) in request
            .events
            .iter()
            .zip(appended.offsets.iter().zip(appended.versions()))
        {
            e_topic.push(request.stream.kind());
            e_part.push(to_i32(appended.partition.0));
            e_offset.push(to_i64(offset.0));
            e_stream.push(request.stream.id());
            e_version.push(to_i64(version.0));
            e_type.push(event.event_type.as_str());
            e_schema.push(i64::from(event.schema_version));
            e_payload.push(event.payload.as_slice());
            e_id.push(event.event_id);
            e_command.push(command.map(|c| c.id.as_str()));
            e_correlation.push(command.and_then(|c| c.correlation_id));
            e_causation.push(command.and_then(|c| c.causation_id));
            e_timestamp.push(event.timestamp.0);
            e_metadata.push(
                validate::metadata_json(event)
                    .ok()
                    .filter(|m| !m.is_empty()),
            );
        }
    }

    let commands: Vec<_> = writes
        .iter()
        .filter_map(|(r, a)| r.command.as_ref().map(|c| (*r, *a, c)))
        .collect();

    query
        .bind(e_topic)
        .bind(e_part)
        .bind(e_offset)
        .bind(e_stream)
        .bind(e_version)
        .bind(e_type)
        .bind(e_schema)
        .bind(e_payload)
        .bind(e_id)
        .bind(e_command)
        .bind(e_correlation)
        .bind(e_causation)
        .bind(e_timestamp)
        .bind(e_metadata)
        .bind(
            commands
                .iter()
                .map(|(r, _, _)| r.stream.kind())
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(r, _, _)| r.stream.id())
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(_, _, c)| c.id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(_, _, c)| c.fingerprint.0.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(_, a, _)| to_i32(a.partition.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(_, a, _)| to_i64(a.first_version.0))
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(_, a, _)| to_i64(a.offsets.first().map_or(0, |o| o.0)))
                .collect::<Vec<_>>(),
        )
        .bind(
            commands
                .iter()
                .map(|(_, a, _)| i32::try_from(a.offsets.len()).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
}

fn dedup<T: Eq + std::hash::Hash + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|i| seen.insert(*i)).collect()
}
