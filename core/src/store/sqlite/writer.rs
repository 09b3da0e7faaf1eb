//! The single writer: one task owns the write connection and commits appends in batches.
//!
//! It drains the queue, opens one `BEGIN IMMEDIATE` transaction per batch, reads what the
//! batch touches (streams, command ids, topics, partition heads) into a [`Ledger`], decides
//! each request in order (so a later request sees an earlier one in the same batch), writes
//! the accepted ones with multi-row `INSERT`s, commits once and answers each caller. A
//! conflict or a replay answers only its own caller.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::sqlite::{Sqlite, SqliteConnection};
use sqlx::{QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot, watch};

use super::to_i64;
use crate::envelope::Fingerprint;
use crate::ids::{CommandId, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::ledger::{Decision, Ledger};
use crate::store::{AppendRequest, Appended, CommandRecord, Error, Result, TopicInfo, validate};

/// Work for the writer.
pub(super) enum Job {
    Append {
        request: AppendRequest,
        reply: oneshot::Sender<Result<Appended>>,
    },
    EnsureTopic {
        topic: Topic,
        partitions: u32,
        reply: oneshot::Sender<Result<TopicInfo>>,
    },
    /// Save a snapshot, in the next batch's transaction.
    Snapshot {
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Finish what was queued before, close the connection, stop.
    Shutdown,
}

/// Counters and signals shared between the writer and the store handle.
pub(super) struct Shared {
    pub(super) commits: watch::Sender<u64>,
    pub(super) transactions: AtomicU64,
    pub(super) appends: AtomicU64,
}

pub(super) struct Writer {
    pub(super) conn: SqliteConnection,
    pub(super) jobs: mpsc::Receiver<Job>,
    pub(super) shared: Arc<Shared>,
    pub(super) default_partitions: u32,
    pub(super) max_batch: usize,
}

/// One batch failure, shared by every caller in the batch.
#[derive(Debug, Clone)]
struct BatchFailed(Arc<sqlx::Error>);

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

type Pending = (AppendRequest, oneshot::Sender<Result<Appended>>);
type PendingSnapshot = (Snapshot, oneshot::Sender<Result<()>>);

/// What one batch does besides its appends: each accepted snapshot (a later one of a stream
/// replaces an earlier one) and each snapshot's answer.
struct SnapshotPlan<'a> {
    writes: Vec<&'a Snapshot>,
    answers: Vec<Result<()>>,
}

impl Writer {
    pub(super) async fn run(mut self) {
        let mut stopping = false;
        while let Some(job) = self.jobs.recv().await {
            let mut batch: Vec<Pending> = Vec::new();
            let mut snapshots: Vec<PendingSnapshot> = Vec::new();
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Append { request, reply } => batch.push((request, reply)),
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
                        )
                        .await;
                        let _ = reply.send(self.ensure_topic(&topic, partitions).await);
                    }
                    Job::Shutdown => stopping = true,
                }
                if batch.len() + snapshots.len() < self.max_batch && !stopping {
                    next = self.jobs.try_recv().ok();
                }
            }
            self.commit_batch(batch, snapshots).await;
            if stopping {
                break;
            }
        }
        if let Err(e) = sqlx::Connection::close(self.conn).await {
            tracing::warn!(error = %e, "closing the sqlite write connection failed");
        }
        tracing::debug!("sqlite writer stopped");
    }

    async fn exec(&mut self, sql: &str) -> sqlx::Result<()> {
        sqlx::query(sql).execute(&mut self.conn).await.map(|_| ())
    }

    async fn ensure_topic(&mut self, topic: &Topic, partitions: u32) -> Result<TopicInfo> {
        validate::check_partitions(topic, partitions)?;
        let result: sqlx::Result<Option<i64>> = async {
            self.exec("BEGIN IMMEDIATE").await?;
            sqlx::query("INSERT OR IGNORE INTO keel_topics (topic, partitions) VALUES (?, ?)")
                .bind(topic.as_str())
                .bind(i64::from(partitions))
                .execute(&mut self.conn)
                .await?;
            let existing = sqlx::query_scalar("SELECT partitions FROM keel_topics WHERE topic = ?")
                .bind(topic.as_str())
                .fetch_optional(&mut self.conn)
                .await?;
            self.exec("COMMIT").await?;
            Ok(existing)
        }
        .await;
        let existing = match result {
            Ok(e) => e,
            Err(e) => {
                let _ = self.exec("ROLLBACK").await;
                return Err(Error::backend("create topic", e));
            }
        };
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

    #[tracing::instrument(level = "debug", skip_all, fields(size = batch.len(), snapshots = snapshots.len()))]
    async fn commit_batch(&mut self, batch: Vec<Pending>, snapshots: Vec<PendingSnapshot>) {
        if batch.is_empty() && snapshots.is_empty() {
            return;
        }
        self.shared
            .appends
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let requests: Vec<&AppendRequest> = batch.iter().map(|(r, _)| r).collect();
        let snaps: Vec<&Snapshot> = snapshots.iter().map(|(s, _)| s).collect();
        match self.write(&requests, &snaps).await {
            Ok((decisions, snapshot_answers, committed)) => {
                let wrote = decisions
                    .iter()
                    .any(|d| matches!(d, Ok(Decision::Write { .. })));
                if committed {
                    self.shared.transactions.fetch_add(1, Ordering::Relaxed);
                }
                if wrote {
                    self.shared.commits.send_modify(|n| *n += 1);
                }
                for ((_, reply), decision) in batch.into_iter().zip(decisions) {
                    let answer = decision.map(|d| match d {
                        Decision::Replay(a) | Decision::Write { appended: a, .. } => a,
                    });
                    let _ = reply.send(answer);
                }
                for ((_, reply), answer) in snapshots.into_iter().zip(snapshot_answers) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                let _ = self.exec("ROLLBACK").await;
                tracing::error!(error = %e, "append batch failed; rolled back");
                let shared = BatchFailed(Arc::new(e));
                for (_, reply) in batch {
                    let _ = reply.send(Err(Error::backend("append", shared.clone())));
                }
                for (_, reply) in snapshots {
                    let _ = reply.send(Err(Error::backend("save a snapshot", shared.clone())));
                }
            }
        }
    }

    /// Decides and writes a batch in one transaction; the outer error is a database failure
    /// (the caller rolls back), the inner ones are each request's own answer. The flag says
    /// whether anything was written.
    async fn write(
        &mut self,
        batch: &[&AppendRequest],
        snapshots: &[&Snapshot],
    ) -> sqlx::Result<(Vec<Result<Decision>>, Vec<Result<()>>, bool)> {
        self.exec("BEGIN IMMEDIATE").await?;
        let mut ledger = self.load(batch, snapshots).await?;
        let decisions: Vec<Result<Decision>> = batch.iter().map(|r| ledger.decide(r)).collect();
        let plan = plan_snapshots(snapshots, &ledger);
        let writes: Vec<(&AppendRequest, &Appended)> = batch
            .iter()
            .zip(&decisions)
            .filter_map(|(r, d)| match d {
                Ok(Decision::Write { appended, .. }) => Some((*r, appended)),
                _ => None,
            })
            .collect();
        if writes.is_empty() && plan.writes.is_empty() {
            self.exec("COMMIT").await?;
            return Ok((decisions, plan.answers, false));
        }
        if !writes.is_empty() {
            let new_topics: Vec<(&Topic, u32)> = batch
                .iter()
                .zip(&decisions)
                .filter_map(|(r, d)| match d {
                    Ok(Decision::Write {
                        new_topic: Some(n), ..
                    }) => Some((r.stream.topic(), *n)),
                    _ => None,
                })
                .collect();
            self.insert_topics(&new_topics).await?;
            self.insert_events(&writes).await?;
            self.upsert_streams(&writes, &ledger).await?;
            self.insert_commands(&writes).await?;
            self.upsert_heads(&writes, &mut ledger).await?;
        }
        self.upsert_snapshots(&plan.writes).await?;
        self.exec("COMMIT").await?;
        Ok((decisions, plan.answers, true))
    }

    /// Reads what the batch touches, inside its transaction.
    async fn load(
        &mut self,
        batch: &[&AppendRequest],
        snapshots: &[&Snapshot],
    ) -> sqlx::Result<Ledger> {
        let mut ledger = Ledger::new(self.default_partitions);
        for row in sqlx::query("SELECT topic, partitions FROM keel_topics")
            .fetch_all(&mut self.conn)
            .await?
        {
            let topic: String = row.try_get(0)?;
            let partitions: i64 = row.try_get(1)?;
            ledger.topics.insert(
                Topic::unchecked(&topic),
                u32::try_from(partitions).unwrap_or(0),
            );
        }
        for row in sqlx::query("SELECT topic, part, next_offset FROM keel_partitions")
            .fetch_all(&mut self.conn)
            .await?
        {
            let topic: String = row.try_get(0)?;
            let part: i64 = row.try_get(1)?;
            let next: i64 = row.try_get(2)?;
            ledger.heads.insert(
                (
                    Topic::unchecked(&topic),
                    Partition(u32::try_from(part).unwrap_or(u32::MAX)),
                ),
                Offset(u64::try_from(next).unwrap_or(0)),
            );
        }

        let streams: Vec<&StreamId> = dedup(
            batch
                .iter()
                .map(|r| &r.stream)
                .chain(snapshots.iter().map(|s| &s.stream)),
        );
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT topic, stream_id, version FROM keel_streams WHERE (topic, stream_id) IN (",
        );
        q.push_values(&streams, |mut b, s| {
            b.push_bind(s.kind()).push_bind(s.id());
        });
        q.push(")");
        let by_key: HashMap<(&str, &str), &StreamId> =
            streams.iter().map(|s| ((s.kind(), s.id()), *s)).collect();
        for row in q.build().fetch_all(&mut self.conn).await? {
            let topic: String = row.try_get(0)?;
            let id: String = row.try_get(1)?;
            let version: i64 = row.try_get(2)?;
            if let Some(stream) = by_key.get(&(topic.as_str(), id.as_str())) {
                ledger.streams.insert(
                    (*stream).clone(),
                    StreamVersion(u64::try_from(version).unwrap_or(0)),
                );
            }
        }

        let commands: Vec<(&StreamId, &CommandId)> = dedup(
            batch
                .iter()
                .filter_map(|r| r.command.as_ref().map(|c| (&r.stream, &c.id))),
        );
        if !commands.is_empty() {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT topic, stream_id, command_id, fingerprint, part, first_version, \
                 first_offset, count FROM keel_commands WHERE (topic, stream_id, command_id) IN (",
            );
            q.push_values(&commands, |mut b, (s, c)| {
                b.push_bind(s.kind())
                    .push_bind(s.id())
                    .push_bind(c.as_str());
            });
            q.push(")");
            let by_key: HashMap<(&str, &str, &str), (&StreamId, &CommandId)> = commands
                .iter()
                .map(|&(s, c)| ((s.kind(), s.id(), c.as_str()), (s, c)))
                .collect();
            for row in q.build().fetch_all(&mut self.conn).await? {
                let topic: String = row.try_get(0)?;
                let id: String = row.try_get(1)?;
                let command: String = row.try_get(2)?;
                let Some(&(stream, command_id)) =
                    by_key.get(&(topic.as_str(), id.as_str(), command.as_str()))
                else {
                    continue;
                };
                let record = command_record(stream, &row)?;
                ledger
                    .commands
                    .insert((stream.clone(), command_id.clone()), record);
            }
        }
        Ok(ledger)
    }

    async fn insert_topics(&mut self, topics: &[(&Topic, u32)]) -> sqlx::Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO keel_topics (topic, partitions) ");
        q.push_values(topics, |mut b, (t, n)| {
            b.push_bind(t.as_str()).push_bind(i64::from(*n));
        });
        q.build().execute(&mut self.conn).await.map(|_| ())
    }

    async fn insert_events(&mut self, writes: &[(&AppendRequest, &Appended)]) -> sqlx::Result<()> {
        /// 14 bound values a row; SQLite allows 32,766 per statement.
        const ROWS_PER_INSERT: usize = 2000;
        let rows: Vec<_> = writes
            .iter()
            .flat_map(|(request, appended)| {
                request
                    .events
                    .iter()
                    .zip(appended.offsets.iter().zip(appended.versions()))
                    .map(move |(event, (offset, version))| {
                        (*request, *appended, event, *offset, version)
                    })
            })
            .collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO keel_events (topic, part, log_offset, stream_id, version, event_type, \
                 schema_version, payload, event_id, command_id, correlation_id, causation_id, \
                 timestamp, metadata) ",
            );
            q.push_values(
                chunk,
                |mut b, (request, appended, event, offset, version)| {
                    let command = request.command.as_ref();
                    b.push_bind(request.stream.kind())
                        .push_bind(i64::from(appended.partition.0))
                        .push_bind(to_i64(offset.0))
                        .push_bind(request.stream.id())
                        .push_bind(to_i64(version.0))
                        .push_bind(event.event_type.as_str())
                        .push_bind(i64::from(event.schema_version))
                        .push_bind(event.payload.as_slice())
                        .push_bind(event.event_id.as_bytes().as_slice())
                        .push_bind(command.map(|c| c.id.as_str()))
                        .push_bind(
                            command.and_then(|c| c.correlation_id.map(|u| u.as_bytes().to_vec())),
                        )
                        .push_bind(
                            command.and_then(|c| c.causation_id.map(|u| u.as_bytes().to_vec())),
                        )
                        .push_bind(event.timestamp.0)
                        .push_bind(
                            validate::metadata_json(event)
                                .ok()
                                .filter(|m| !m.is_empty()),
                        );
                },
            );
            q.build().execute(&mut self.conn).await?;
        }
        Ok(())
    }

    async fn upsert_streams(
        &mut self,
        writes: &[(&AppendRequest, &Appended)],
        ledger: &Ledger,
    ) -> sqlx::Result<()> {
        let streams: Vec<(&StreamId, Partition)> =
            dedup(writes.iter().map(|(r, a)| (&r.stream, a.partition)));
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO keel_streams (topic, stream_id, version, part) ",
        );
        q.push_values(&streams, |mut b, (s, p)| {
            let version = ledger.streams.get(*s).copied().unwrap_or_default();
            b.push_bind(s.kind())
                .push_bind(s.id())
                .push_bind(to_i64(version.0))
                .push_bind(i64::from(p.0));
        });
        q.push(" ON CONFLICT (topic, stream_id) DO UPDATE SET version = excluded.version");
        q.build().execute(&mut self.conn).await.map(|_| ())
    }

    async fn insert_commands(
        &mut self,
        writes: &[(&AppendRequest, &Appended)],
    ) -> sqlx::Result<()> {
        let commands: Vec<_> = writes
            .iter()
            .filter_map(|(r, a)| r.command.as_ref().map(|c| (*r, *a, c)))
            .collect();
        if commands.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO keel_commands (topic, stream_id, command_id, fingerprint, part, \
             first_version, first_offset, count) ",
        );
        q.push_values(&commands, |mut b, (r, a, c)| {
            b.push_bind(r.stream.kind())
                .push_bind(r.stream.id())
                .push_bind(c.id.as_str())
                .push_bind(c.fingerprint.0.as_slice())
                .push_bind(i64::from(a.partition.0))
                .push_bind(to_i64(a.first_version.0))
                .push_bind(to_i64(a.offsets.first().map_or(0, |o| o.0)))
                .push_bind(to_i64(a.offsets.len() as u64));
        });
        q.build().execute(&mut self.conn).await.map(|_| ())
    }

    /// Writes snapshots; the `WHERE` keeps a stored one of the same shape that is newer.
    async fn upsert_snapshots(&mut self, snapshots: &[&Snapshot]) -> sqlx::Result<()> {
        // 6 bound values a row; SQLite allows 32,766 per statement and a batch holds at most
        // `MAX_BATCH` jobs.
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO keel_snapshots (topic, stream_id, version, shape, payload, timestamp) ",
        );
        q.push_values(snapshots, |mut b, s| {
            b.push_bind(s.stream.kind())
                .push_bind(s.stream.id())
                .push_bind(to_i64(s.version.0))
                .push_bind(i64::from(s.shape))
                .push_bind(s.payload.as_slice())
                .push_bind(s.timestamp.0);
        });
        q.push(
            " ON CONFLICT (topic, stream_id) DO UPDATE SET version = excluded.version, \
             shape = excluded.shape, payload = excluded.payload, timestamp = excluded.timestamp \
             WHERE excluded.shape != keel_snapshots.shape OR excluded.version >= keel_snapshots.version",
        );
        q.build().execute(&mut self.conn).await.map(|_| ())
    }

    async fn upsert_heads(
        &mut self,
        writes: &[(&AppendRequest, &Appended)],
        ledger: &mut Ledger,
    ) -> sqlx::Result<()> {
        let touched: Vec<(&Topic, Partition)> =
            dedup(writes.iter().map(|(r, a)| (r.stream.topic(), a.partition)));
        let heads: Vec<(&Topic, Partition, Offset)> = touched
            .into_iter()
            .map(|(t, p)| {
                let head = ledger
                    .heads
                    .get(&(t.clone(), p))
                    .copied()
                    .unwrap_or_default();
                (t, p, head)
            })
            .collect();
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO keel_partitions (topic, part, next_offset) ");
        q.push_values(&heads, |mut b, (t, p, o)| {
            b.push_bind(t.as_str())
                .push_bind(i64::from(p.0))
                .push_bind(to_i64(o.0));
        });
        q.push(" ON CONFLICT (topic, part) DO UPDATE SET next_offset = excluded.next_offset");
        q.build().execute(&mut self.conn).await.map(|_| ())
    }
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

/// Rebuilds a command record from a `keel_commands` row (columns 3..8).
pub(super) fn command_record(
    stream: &StreamId,
    row: &sqlx::sqlite::SqliteRow,
) -> sqlx::Result<CommandRecord> {
    let fingerprint: Vec<u8> = row.try_get("fingerprint")?;
    let part: i64 = row.try_get("part")?;
    let first_version: i64 = row.try_get("first_version")?;
    let first_offset: i64 = row.try_get("first_offset")?;
    let count: i64 = row.try_get("count")?;
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

fn dedup<T: Eq + std::hash::Hash + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|i| seen.insert(*i)).collect()
}
