//! The single writer: one thread owns the write connection and commits appends in batches.
//!
//! SQLite has one writer at a time, so the store has exactly one: a dedicated thread that
//! owns the write connection and talks to SQLite directly (rusqlite), so a statement costs a
//! function call, not a hand-off between threads. It drains the queue of jobs, and for each
//! batch:
//!
//! 1. opens one `BEGIN IMMEDIATE` transaction (other processes on the same file wait for it,
//!    or it waits for them up to the busy timeout);
//! 2. reads what the batch touches — topics, partition heads, the versions of its streams,
//!    its command ids — into a [`Ledger`], inside the transaction, so another process's
//!    commits are seen;
//! 3. decides each request in order with [`Ledger::decide`] (so a later request sees an
//!    earlier one of the same batch): the command id first, then the expected version;
//! 4. writes the accepted requests with multi-row `INSERT`s from cached prepared statements,
//!    advances the partition heads, writes the batch's snapshots, and commits once;
//! 5. answers each caller with its own result: a conflict or a replay answers only its
//!    caller, and a database failure rolls the whole batch back and fails each of its callers.
//!
//! An atomic append to several streams ([`EventStore::append_all`](crate::EventStore::append_all))
//! is one job of the batch: its appends are decided together with
//! [`Ledger::decide_all`] (the first refusal undoes the others' effects on the ledger, so
//! later jobs of the batch never see them) and written with the rest of the batch, in its one
//! transaction — all of them or none.
//!
//! Offsets come from the partition heads read and advanced inside the transaction, so they
//! are dense and in commit order whichever process writes.
//!
//! Between batches the writer keeps the write-ahead log bounded, even while readers never
//! stop (they would starve SQLite's own checkpoints): a passive checkpoint after every
//! [`CHECKPOINT_EVERY`] commits; when a commit leaves the WAL past its limit
//! ([`DEFAULT_WAL_LIMIT`] unless configured), a
//! truncating one that waits for readers (longer after each failure, holding writes back
//! meanwhile); and a truncating one when the queue has been idle for [`IDLE`]. The WAL's size
//! is published in the store's stats after every commit.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Statement};
use tokio::sync::{mpsc, oneshot, watch};

use super::{packed, to_i64};
use crate::envelope::Fingerprint;
use crate::ids::{Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::ledger::{Decision, Ledger};
use crate::store::{AppendRequest, Appended, CommandRecord, Error, Result, TopicInfo, validate};

/// Commits between two passive WAL checkpoints.
pub(super) const CHECKPOINT_EVERY: u64 = 256;

/// How long the queue must be empty before the writer truncates the WAL.
pub(super) const IDLE: Duration = Duration::from_millis(200);

/// Past this size the WAL is checkpointed and truncated, waiting for readers if need be; a
/// WAL restarted by SQLite itself is cut back to it (`journal_size_limit`).
pub(super) const DEFAULT_WAL_LIMIT: u64 = 16 * 1024 * 1024;

/// Work for the writer.
pub(super) enum Job {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<Appended>>,
    },
    /// Appends to several streams, all or none.
    AppendAll {
        requests: Vec<AppendRequest>,
        reply: oneshot::Sender<Result<Vec<Appended>>>,
    },
    /// Save a snapshot, in the next batch's transaction.
    Snapshot {
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<()>>,
    },
    EnsureTopic {
        topic: Topic,
        partitions: u32,
        reply: oneshot::Sender<Result<TopicInfo>>,
    },
    /// Finish what was queued before, close the connection, stop.
    Shutdown,
}

/// Counters and signals shared between the writer and the store handle.
pub(super) struct Shared {
    pub(super) commits: watch::Sender<u64>,
    pub(super) transactions: AtomicU64,
    pub(super) appends: AtomicU64,
    /// The `-wal` file's size after the last checkpoint, in bytes.
    pub(super) wal_bytes: AtomicU64,
    pub(super) checkpoints: AtomicU64,
}

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) jobs: mpsc::Receiver<Job>,
    pub(super) shared: Arc<Shared>,
    pub(super) default_partitions: u32,
    pub(super) max_batch: usize,
    pub(super) wal_path: std::path::PathBuf,
    pub(super) busy_timeout: Duration,
    pub(super) wal_limit: u64,
}

/// One batch failure, shared by every caller in the batch.
#[derive(Debug, Clone)]
struct BatchFailed(Arc<rusqlite::Error>);

impl std::fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// One caller's appends in a batch: a single append, or appends to several streams that
/// commit together or not at all.
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
}

/// What the batch decided for one caller.
enum Outcome {
    One(Result<Decision>),
    All(Result<Vec<Decision>>),
}

impl Outcome {
    /// The decisions to write, if any.
    fn decisions(&self) -> &[Decision] {
        match self {
            Self::One(Ok(d)) => std::slice::from_ref(d),
            Self::All(Ok(ds)) => ds,
            Self::One(Err(_)) | Self::All(Err(_)) => &[],
        }
    }
}

fn answer(decision: Decision) -> Appended {
    match decision {
        Decision::Replay(a) | Decision::Write { appended: a, .. } => a,
    }
}
type PendingSnapshot = (Snapshot, oneshot::Sender<Result<()>>);

/// What one batch does besides its appends: each accepted snapshot (a later one of a stream
/// replaces an earlier one) and each snapshot's answer.
struct SnapshotPlan<'a> {
    writes: Vec<&'a Snapshot>,
    answers: Vec<Result<()>>,
}

/// What a batch decided: each caller's and each snapshot's answer, and whether it wrote.
type BatchOutcome = (Vec<Outcome>, Vec<Result<()>>, bool);

impl Writer {
    /// Runs the writer on the calling thread until shutdown or until every sender is gone.
    pub(super) fn run(mut self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "the sqlite writer cannot start its timer");
                return;
            }
        };
        runtime.block_on(self.serve());
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the sqlite write connection failed");
        }
        tracing::debug!("sqlite writer stopped");
    }

    async fn serve(&mut self) {
        let mut since_checkpoint = 0u64;
        let mut over_limit = 0u32;
        let mut dirty = false;
        loop {
            let first = if dirty {
                match tokio::time::timeout(IDLE, self.jobs.recv()).await {
                    Ok(job) => job,
                    Err(_) => {
                        // Quiet: fold the WAL back and truncate it. Readers may be in the
                        // way: try again after the next quiet spell, waiting longer.
                        let wait = Duration::from_millis(20 << over_limit.min(6));
                        if self.checkpoint("TRUNCATE", wait) {
                            over_limit = 0;
                            since_checkpoint = 0;
                            dirty = false;
                        } else {
                            over_limit += 1;
                        }
                        continue;
                    }
                }
            } else {
                self.jobs.recv().await
            };
            let Some(job) = first else { break };
            let mut batch: Vec<Pending> = Vec::new();
            let mut snapshots: Vec<PendingSnapshot> = Vec::new();
            let mut stopping = false;
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Append { request, reply } => batch.push(Pending::One(request, reply)),
                    Job::AppendAll { requests, reply } => {
                        batch.push(Pending::All(requests, reply));
                    }
                    Job::Snapshot { snapshot, reply } => snapshots.push((snapshot, reply)),
                    Job::EnsureTopic {
                        topic,
                        partitions,
                        reply,
                    } => {
                        // Keep order: commit what was gathered before, then the topic.
                        self.commit_batch(
                            std::mem::take(&mut batch),
                            std::mem::take(&mut snapshots),
                        );
                        let _ = reply.send(self.ensure_topic(&topic, partitions));
                    }
                    Job::Shutdown => stopping = true,
                }
                if batch.len() + snapshots.len() < self.max_batch && !stopping {
                    next = self.jobs.try_recv().ok();
                }
            }
            if self.commit_batch(batch, snapshots) {
                dirty = true;
                since_checkpoint += 1;
                let wal = self.wal_size();
                if wal > self.wal_limit {
                    // Readers keep the WAL from restarting: wait for them, longer each time it
                    // fails (writes wait too: that is the back-pressure).
                    let wait = Duration::from_millis(10 << over_limit.min(7));
                    if self.checkpoint("TRUNCATE", wait) {
                        over_limit = 0;
                        since_checkpoint = 0;
                    } else {
                        over_limit += 1;
                    }
                } else if since_checkpoint >= CHECKPOINT_EVERY {
                    self.checkpoint("PASSIVE", Duration::ZERO);
                    since_checkpoint = 0;
                }
            }
            if stopping {
                self.checkpoint("TRUNCATE", Duration::from_millis(20));
                break;
            }
        }
    }

    /// Runs a WAL checkpoint (`PASSIVE` never waits; the others wait up to `wait` for
    /// readers) and publishes the WAL's size; `true` when it completed.
    fn checkpoint(&mut self, mode: &str, wait: Duration) -> bool {
        if mode != "PASSIVE" {
            let _ = self.conn.busy_timeout(wait);
        }
        // (busy, frames in the WAL, frames checkpointed)
        let result = self
            .conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        if mode != "PASSIVE" {
            let _ = self.conn.busy_timeout(self.busy_timeout);
        }
        let done = match result {
            Ok((0, _, _)) => {
                self.shared.checkpoints.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(mode, error = %e, "wal checkpoint did not complete");
                false
            }
        };
        self.wal_size();
        done
    }

    /// Measures the WAL file and publishes its size.
    fn wal_size(&self) -> u64 {
        let size = std::fs::metadata(&self.wal_path).map_or(0, |m| m.len());
        self.shared.wal_bytes.store(size, Ordering::Relaxed);
        size
    }

    fn ensure_topic(&mut self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        validate::check_partitions(topic, partitions)?;
        let result: rusqlite::Result<Option<i64>> = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR IGNORE INTO keel_topics (topic, partitions) VALUES (?1, ?2)",
                (topic.as_str(), i64::from(partitions)),
            )?;
            let existing = tx
                .query_row(
                    "SELECT partitions FROM keel_topics WHERE topic = ?1",
                    [topic.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            tx.commit()?;
            Ok(existing)
        })();
        let existing = result.map_err(|e| Error::backend("create topic", e))?;
        let existing = existing.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        if existing != partitions {
            return Err(Error::PartitionCount {
                topic: topic.clone(),
                existing,
                requested: partitions,
            });
        }
        Ok(TopicInfo {
            topic: topic.clone(),
            partitions,
        })
    }

    /// Commits one batch and answers its callers; `true` when it wrote anything.
    #[tracing::instrument(level = "debug", skip_all, fields(size = batch.len(), snapshots = snapshots.len()))]
    fn commit_batch(&mut self, batch: Vec<Pending>, snapshots: Vec<PendingSnapshot>) -> bool {
        if batch.is_empty() && snapshots.is_empty() {
            return false;
        }
        let appends: usize = batch.iter().map(|p| p.requests().len()).sum();
        self.shared
            .appends
            .fetch_add(appends as u64, Ordering::Relaxed);
        let snaps: Vec<&Snapshot> = snapshots.iter().map(|(s, _)| s).collect();
        match self.write(&batch, &snaps) {
            Ok((outcomes, snapshot_answers, committed)) => {
                let wrote = outcomes.iter().any(|o| {
                    o.decisions()
                        .iter()
                        .any(|d| matches!(d, Decision::Write { .. }))
                });
                if committed {
                    self.shared.transactions.fetch_add(1, Ordering::Relaxed);
                }
                if wrote {
                    self.shared.commits.send_modify(|n| *n += 1);
                }
                for (pending, outcome) in batch.into_iter().zip(outcomes) {
                    match (pending, outcome) {
                        (Pending::One(_, reply), Outcome::One(decision)) => {
                            let _ = reply.send(decision.map(answer));
                        }
                        (Pending::All(_, reply), Outcome::All(decisions)) => {
                            let _ = reply
                                .send(decisions.map(|ds| ds.into_iter().map(answer).collect()));
                        }
                        // `write` answers each caller in kind.
                        (Pending::One(_, reply), Outcome::All(_)) => {
                            let _ = reply.send(Err(Error::Closed));
                        }
                        (Pending::All(_, reply), Outcome::One(_)) => {
                            let _ = reply.send(Err(Error::Closed));
                        }
                    }
                }
                for ((_, reply), answer) in snapshots.into_iter().zip(snapshot_answers) {
                    let _ = reply.send(answer);
                }
                committed
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                tracing::error!(error = %e, "append batch failed; rolled back");
                let shared = BatchFailed(Arc::new(e));
                for pending in batch {
                    let error = Error::backend("append", shared.clone());
                    match pending {
                        Pending::One(_, reply) => {
                            let _ = reply.send(Err(error));
                        }
                        Pending::All(_, reply) => {
                            let _ = reply.send(Err(error));
                        }
                    }
                }
                for (_, reply) in snapshots {
                    let _ = reply.send(Err(Error::backend("save a snapshot", shared.clone())));
                }
                false
            }
        }
    }

    /// Decides and writes a batch in one transaction; the outer error is a database failure
    /// (the caller rolls back), the inner ones are each caller's own answer.
    fn write(
        &mut self,
        batch: &[Pending],
        snapshots: &[&Snapshot],
    ) -> rusqlite::Result<BatchOutcome> {
        self.exec("BEGIN IMMEDIATE")?;
        let requests: Vec<&AppendRequest> = batch.iter().flat_map(Pending::requests).collect();
        let mut ledger = self.load(&requests, snapshots)?;
        let outcomes: Vec<Outcome> = batch
            .iter()
            .map(|pending| match pending {
                Pending::One(request, _) => Outcome::One(ledger.decide(request)),
                Pending::All(requests, _) => Outcome::All(ledger.decide_all(requests)),
            })
            .collect();
        let plan = plan_snapshots(snapshots, &ledger);
        let decided: Vec<(&AppendRequest, &Decision)> = batch
            .iter()
            .zip(&outcomes)
            .flat_map(|(pending, outcome)| pending.requests().iter().zip(outcome.decisions()))
            .collect();
        let writes: Vec<(&AppendRequest, &Appended)> = decided
            .iter()
            .filter_map(|(r, d)| match d {
                Decision::Write { appended, .. } => Some((*r, appended)),
                Decision::Replay(_) => None,
            })
            .collect();
        if writes.is_empty() && plan.writes.is_empty() {
            self.exec("COMMIT")?;
            return Ok((outcomes, plan.answers, false));
        }
        if !writes.is_empty() {
            for (request, decision) in &decided {
                if let Decision::Write {
                    new_topic: Some(n), ..
                } = decision
                {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO keel_topics (topic, partitions) VALUES (?1, ?2)",
                        )?
                        .execute((request.stream.topic().as_str(), i64::from(*n)))?;
                }
            }
            self.insert_events(&writes)?;
            self.upsert_streams(&writes, &ledger)?;
            self.insert_commands(&writes)?;
            self.upsert_heads(&writes, &ledger)?;
        }
        self.upsert_snapshots(&plan.writes)?;
        self.exec("COMMIT")?;
        Ok((outcomes, plan.answers, true))
    }

    /// Runs a statement without parameters or rows, prepared once.
    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.raw_execute().map(|_| ())
    }

    /// Reads what the batch touches, inside its transaction.
    fn load(&self, batch: &[&AppendRequest], snapshots: &[&Snapshot]) -> rusqlite::Result<Ledger> {
        let mut ledger = Ledger::new(self.default_partitions);
        let mut topics = self
            .conn
            .prepare_cached("SELECT topic, partitions FROM keel_topics")?;
        let mut rows = topics.query([])?;
        while let Some(row) = rows.next()? {
            let topic: String = row.get(0)?;
            let partitions: i64 = row.get(1)?;
            ledger.topics.insert(
                Topic::unchecked(&topic),
                u32::try_from(partitions).unwrap_or(0),
            );
        }
        let mut heads = self
            .conn
            .prepare_cached("SELECT topic, part, next_offset FROM keel_partitions")?;
        let mut rows = heads.query([])?;
        while let Some(row) = rows.next()? {
            let topic: String = row.get(0)?;
            let part: i64 = row.get(1)?;
            let next: i64 = row.get(2)?;
            ledger.heads.insert(
                (
                    Topic::unchecked(&topic),
                    Partition(u32::try_from(part).unwrap_or(u32::MAX)),
                ),
                Offset(u64::try_from(next).unwrap_or(0)),
            );
        }

        let mut version = self.conn.prepare_cached(
            "SELECT version FROM keel_streams WHERE topic = ?1 AND stream_id = ?2",
        )?;
        let streams = batch
            .iter()
            .map(|r| &r.stream)
            .chain(snapshots.iter().map(|s| &s.stream));
        for stream in streams {
            if ledger.streams.contains_key(stream) {
                continue;
            }
            let v: Option<i64> = version
                .query_row((stream.kind(), stream.id()), |r| r.get(0))
                .optional()?;
            ledger.streams.insert(
                stream.clone(),
                StreamVersion(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)),
            );
        }

        let mut command = self.conn.prepare_cached(
            "SELECT fingerprint, part, first_version, first_offset, count FROM keel_commands \
             WHERE topic = ?1 AND stream_id = ?2 AND command_id = ?3",
        )?;
        for request in batch {
            let Some(meta) = &request.command else {
                continue;
            };
            let key = (request.stream.clone(), meta.id.clone());
            if ledger.commands.contains_key(&key) {
                continue;
            }
            let record = command
                .query_row(
                    (request.stream.kind(), request.stream.id(), meta.id.as_str()),
                    |row| command_record(&request.stream, row),
                )
                .optional()?;
            if let Some(record) = record {
                ledger.commands.insert(key, record);
            }
        }
        Ok(ledger)
    }

    fn insert_events(&self, writes: &[(&AppendRequest, &Appended)]) -> rusqlite::Result<()> {
        const COLUMNS: &str = "topic, stream_id, version, part, log_offset, event_type, \
                               schema_version, payload, envelope";
        let rows: Vec<_> = writes
            .iter()
            .flat_map(|(request, appended)| {
                request
                    .events
                    .iter()
                    .zip(appended.offsets.iter().zip(appended.versions()))
                    .map(move |(event, (offset, version))| {
                        let command = request.command.as_ref();
                        let metadata = validate::metadata_json(event).unwrap_or_default();
                        let envelope = packed::pack(
                            event.event_id,
                            event.timestamp,
                            command.map(|c| &c.id),
                            command.and_then(|c| c.correlation_id),
                            command.and_then(|c| c.causation_id),
                            &metadata,
                        );
                        (*request, *appended, event, *offset, version, envelope)
                    })
            })
            .collect();
        for_chunks(
            &self.conn,
            "keel_events",
            COLUMNS,
            9,
            &rows,
            |stmt, at, row| {
                let (request, appended, event, offset, version, envelope) = row;
                stmt.raw_bind_parameter(at, request.stream.kind())?;
                stmt.raw_bind_parameter(at + 1, request.stream.id())?;
                stmt.raw_bind_parameter(at + 2, to_i64(version.0))?;
                stmt.raw_bind_parameter(at + 3, i64::from(appended.partition.0))?;
                stmt.raw_bind_parameter(at + 4, to_i64(offset.0))?;
                stmt.raw_bind_parameter(at + 5, event.event_type.as_str())?;
                stmt.raw_bind_parameter(at + 6, i64::from(event.schema_version))?;
                stmt.raw_bind_parameter(at + 7, event.payload.as_slice())?;
                stmt.raw_bind_parameter(at + 8, envelope.as_slice())?;
                Ok(())
            },
        )
    }

    fn upsert_streams(
        &self,
        writes: &[(&AppendRequest, &Appended)],
        ledger: &Ledger,
    ) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO keel_streams (topic, stream_id, version, part) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (topic, stream_id) DO UPDATE SET version = excluded.version",
        )?;
        let mut done: HashMap<&StreamId, ()> = HashMap::new();
        for (request, appended) in writes {
            if done.insert(&request.stream, ()).is_some() {
                continue;
            }
            let version = ledger
                .streams
                .get(&request.stream)
                .copied()
                .unwrap_or_default();
            stmt.execute((
                request.stream.kind(),
                request.stream.id(),
                to_i64(version.0),
                i64::from(appended.partition.0),
            ))?;
        }
        Ok(())
    }

    fn insert_commands(&self, writes: &[(&AppendRequest, &Appended)]) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO keel_commands (topic, stream_id, command_id, fingerprint, part, \
             first_version, first_offset, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for (request, appended) in writes {
            let Some(command) = &request.command else {
                continue;
            };
            stmt.execute((
                request.stream.kind(),
                request.stream.id(),
                command.id.as_str(),
                command.fingerprint.0.as_slice(),
                i64::from(appended.partition.0),
                to_i64(appended.first_version.0),
                to_i64(appended.offsets.first().map_or(0, |o| o.0)),
                to_i64(appended.offsets.len() as u64),
            ))?;
        }
        Ok(())
    }

    /// Writes snapshots; the `WHERE` keeps a stored one of the same shape that is newer.
    fn upsert_snapshots(&self, snapshots: &[&Snapshot]) -> rusqlite::Result<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO keel_snapshots (topic, stream_id, version, shape, payload, timestamp) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (topic, stream_id) DO UPDATE SET version = excluded.version, \
             shape = excluded.shape, payload = excluded.payload, timestamp = excluded.timestamp \
             WHERE excluded.shape != keel_snapshots.shape OR excluded.version >= keel_snapshots.version",
        )?;
        for s in snapshots {
            stmt.execute((
                s.stream.kind(),
                s.stream.id(),
                to_i64(s.version.0),
                i64::from(s.shape),
                s.payload.as_slice(),
                s.timestamp.0,
            ))?;
        }
        Ok(())
    }

    fn upsert_heads(
        &self,
        writes: &[(&AppendRequest, &Appended)],
        ledger: &Ledger,
    ) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO keel_partitions (topic, part, next_offset) VALUES (?1, ?2, ?3) \
             ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset",
        )?;
        let mut done: HashMap<(&Topic, Partition), ()> = HashMap::new();
        for (request, appended) in writes {
            let key = (request.stream.topic(), appended.partition);
            if done.insert(key, ()).is_some() {
                continue;
            }
            let head = ledger
                .heads
                .get(&(key.0.clone(), key.1))
                .copied()
                .unwrap_or_default();
            stmt.execute((key.0.as_str(), i64::from(key.1.0), to_i64(head.0)))?;
        }
        Ok(())
    }
}

/// Rows per multi-row `INSERT`, largest first: a batch is written with the fewest
/// statements of these sizes, so their prepared statements are reused. 256 rows of 9 values
/// stay far below SQLite's limit of 32,766 bound values.
const CHUNK_SIZES: [usize; 4] = [256, 32, 4, 1];

/// The text of a multi-row `INSERT` of `rows` rows into `table`, built once per size.
fn insert_sql(table: &str, columns: &str, width: usize, size_index: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        CHUNK_SIZES
            .iter()
            .map(|&rows| {
                let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
                for r in 0..rows {
                    sql.push_str(if r == 0 { "(" } else { ",(" });
                    for c in 0..width {
                        let _ = write!(
                            sql,
                            "{}?{}",
                            if c == 0 { "" } else { "," },
                            r * width + c + 1
                        );
                    }
                    sql.push(')');
                }
                sql
            })
            .collect()
    });
    all.get(size_index).map_or("", String::as_str)
}

/// Inserts `rows` into `keel_events` with multi-row `INSERT`s of the [`CHUNK_SIZES`], binding
/// each row's `width` values with `bind`.
fn for_chunks<T>(
    conn: &Connection,
    table: &str,
    columns: &str,
    width: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut Statement<'_>, usize, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let (index, size) = CHUNK_SIZES
            .iter()
            .copied()
            .enumerate()
            .find(|&(_, s)| s <= rest.len())
            .unwrap_or((CHUNK_SIZES.len() - 1, 1));
        let (chunk, tail) = rest.split_at(size);
        let mut stmt = conn.prepare_cached(insert_sql(table, columns, width, index))?;
        for (r, row) in chunk.iter().enumerate() {
            bind(&mut stmt, r * width + 1, row)?;
        }
        stmt.raw_execute()?;
        rest = tail;
    }
    Ok(())
}

/// Which snapshots of a batch to write: each is checked against its stream's version after
/// the batch's appends; a later accepted snapshot of a stream replaces an earlier one.
fn plan_snapshots<'a>(snapshots: &[&'a Snapshot], ledger: &Ledger) -> SnapshotPlan<'a> {
    let mut latest: HashMap<&StreamId, &'a Snapshot> = HashMap::new();
    let mut order: Vec<&StreamId> = Vec::new();
    let answers = snapshots
        .iter()
        .map(|snapshot| {
            let actual = ledger
                .streams
                .get(&snapshot.stream)
                .copied()
                .unwrap_or_default();
            if snapshot.version > actual {
                return Err(Error::SnapshotAhead {
                    stream: snapshot.stream.clone(),
                    version: snapshot.version,
                    actual,
                });
            }
            match latest.get(&snapshot.stream) {
                Some(earlier) if !snapshot.supersedes(earlier) => {}
                Some(_) => {
                    latest.insert(&snapshot.stream, snapshot);
                }
                None => {
                    order.push(&snapshot.stream);
                    latest.insert(&snapshot.stream, snapshot);
                }
            }
            Ok(())
        })
        .collect();
    SnapshotPlan {
        writes: order
            .iter()
            .filter_map(|s| latest.get(s).copied())
            .collect(),
        answers,
    }
}

/// Rebuilds a command record from a row of `fingerprint, part, first_version, first_offset,
/// count`.
pub(super) fn command_record(
    stream: &StreamId,
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<CommandRecord> {
    let fingerprint: Vec<u8> = row.get(0)?;
    let part: i64 = row.get(1)?;
    let first_version: i64 = row.get(2)?;
    let first_offset: i64 = row.get(3)?;
    let count: i64 = row.get(4)?;
    let mut fp = [0u8; 32];
    if fingerprint.len() == fp.len() {
        fp.copy_from_slice(&fingerprint);
    }
    let first_offset = u64::try_from(first_offset).unwrap_or(0);
    let count = u64::try_from(count).unwrap_or(0);
    Ok(CommandRecord {
        fingerprint: Fingerprint(fp),
        appended: Appended {
            stream: stream.clone(),
            partition: Partition(u32::try_from(part).unwrap_or(0)),
            first_version: StreamVersion(u64::try_from(first_version).unwrap_or(0)),
            offsets: (first_offset..first_offset + count).map(Offset).collect(),
            replayed: false,
        },
    })
}
