//! The local state store of one owned partition: an embedded SQLite file, the way Kafka
//! Streams keeps a RocksDB store per task. It holds the partition's records, the writer's
//! stream index and command ids (within the window), and the aggregate snapshots, so
//! `read_stream`, `stream_version`, `command` and `load_snapshot` never scan the partition.
//!
//! It is derived data. Its checkpoint (`next_offset`) says which prefix of the partition it
//! has folded; a takeover reads the partition from there (or from the writer-state snapshot,
//! when that is newer) and the file is rebuilt from nothing when it is missing, of another
//! topic, or ahead of the partition. When a takeover starts from a writer-state snapshot the
//! records before it are missing: `gap` names them, a background task fills them, and reads
//! of streams wait for it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::envelope::{Fingerprint, Metadata, RecordedEvent, Timestamp};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{Appended, CommandRecord, Error, Result};

use super::snapshot::WriterSnapshot;

const SCHEMA_VERSION: &str = "1";

fn fail(operation: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::backend(operation, e)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Where the local store stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Every record below this offset is folded into the index.
    pub(crate) next_offset: Offset,
    /// Every record of the snapshots topic below this offset is applied.
    pub(crate) snapshots_next: Offset,
    /// Records in `[from, to)` are missing from the events table (a takeover started from a
    /// writer-state snapshot); a background task fills them.
    pub(crate) gap: Option<(Offset, Offset)>,
}

/// A command committed in a batch, for the index.
pub(crate) struct CommittedCommand {
    pub(crate) stream: StreamId,
    pub(crate) id: CommandId,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) first_version: StreamVersion,
    pub(crate) offsets: Vec<Offset>,
    pub(crate) committed_at: Timestamp,
}

/// What one commit (or one page of a replayed tail) changes.
#[derive(Default)]
pub(crate) struct Commit {
    pub(crate) events: Vec<RecordedEvent>,
    pub(crate) streams: HashMap<StreamId, StreamVersion>,
    pub(crate) commands: Vec<CommittedCommand>,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) next_offset: Option<Offset>,
    pub(crate) snapshots_next: Option<Offset>,
}

/// A commit written to the local store but not committed yet (see [`LocalState::stage`]).
pub(crate) struct Staged(sqlx::Transaction<'static, Sqlite>);

impl Staged {
    /// Commits it.
    pub(crate) async fn finish(self) -> Result<()> {
        self.0.commit().await.map_err(fail("write the local state"))
    }
}

/// The local state store of one partition.
#[derive(Clone, Debug)]
pub(crate) struct LocalState {
    pool: SqlitePool,
    topic: Topic,
    partition: Partition,
}

impl LocalState {
    /// Opens (creating if needed) the file at `path` for `kafka_topic`'s `partition`; a file
    /// of another topic or partition, or of another schema, is emptied first.
    pub(crate) async fn open(
        path: &Path,
        topic: &Topic,
        kafka_topic: &str,
        partition: Partition,
    ) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(fail("open the local state store"))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Derived data: a commit survives a crash of the process, and a file lost to a
            // power cut is rebuilt from Kafka.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(fail("open the local state store"))?;
        let state = Self {
            pool,
            topic: topic.clone(),
            partition,
        };
        sqlx::raw_sql(include_str!("state.sql"))
            .execute(&state.pool)
            .await
            .map_err(fail("create the local state schema"))?;
        let identity = format!("{kafka_topic}/{partition}");
        let stored = state.get("identity").await?;
        let schema = state.get("schema_version").await?;
        if stored.as_deref() != Some(identity.as_str()) || schema.as_deref() != Some(SCHEMA_VERSION)
        {
            if stored.is_some() {
                tracing::info!(path = %path.display(), %identity, "local state of another partition or schema: rebuilding it");
            }
            state.reset().await?;
            state.set("identity", &identity).await?;
        }
        Ok(state)
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM keel_meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(fail("read the local state"))
    }

    async fn set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO keel_meta (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(fail("write the local state"))
    }

    /// Empties the store (its data is derived: it is rebuilt from Kafka).
    pub(crate) async fn reset(&self) -> Result<()> {
        sqlx::raw_sql(
            "BEGIN IMMEDIATE; DELETE FROM keel_events; DELETE FROM keel_streams; \
             DELETE FROM keel_commands; DELETE FROM keel_snapshots; DELETE FROM keel_meta; \
             INSERT INTO keel_meta (key, value) VALUES ('schema_version', '1'); COMMIT;",
        )
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(fail("reset the local state"))
    }

    /// Where the store stands.
    pub(crate) async fn meta(&self) -> Result<Meta> {
        let offset = |v: Option<String>| Offset(v.and_then(|v| v.parse().ok()).unwrap_or(0));
        let next_offset = offset(self.get("next_offset").await?);
        let snapshots_next = offset(self.get("snapshots_next").await?);
        let gap = match (self.get("gap_from").await?, self.get("gap_to").await?) {
            (Some(from), Some(to)) => Some((offset(Some(from)), offset(Some(to)))),
            _ => None,
        };
        Ok(Meta {
            next_offset,
            snapshots_next,
            gap,
        })
    }

    /// The versions of `streams` and the commands among `commands` committed at or after
    /// `since`, for deciding a batch.
    pub(crate) async fn ledger(
        &self,
        streams: &[&StreamId],
        commands: &[(&StreamId, &CommandId)],
        since: Timestamp,
    ) -> Result<(
        HashMap<StreamId, StreamVersion>,
        HashMap<(StreamId, CommandId), CommandRecord>,
    )> {
        let mut versions = HashMap::new();
        for chunk in streams.chunks(4000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT stream_id, version FROM keel_streams WHERE stream_id IN (",
            );
            let mut list = q.separated(", ");
            for s in chunk {
                list.push_bind(s.id());
            }
            q.push(")");
            let by_id: HashMap<&str, &StreamId> = chunk.iter().map(|s| (s.id(), *s)).collect();
            for row in q
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(fail("read the stream index"))?
            {
                let id: &str = row.try_get(0).map_err(fail("read the stream index"))?;
                let version: i64 = row.try_get(1).map_err(fail("read the stream index"))?;
                if let Some(stream) = by_id.get(id) {
                    versions.insert((*stream).clone(), StreamVersion(to_u64(version)));
                }
            }
        }
        let mut found = HashMap::new();
        for chunk in commands.chunks(4000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT stream_id, command_id, fingerprint, first_version, offsets FROM keel_commands \
                 WHERE committed_at >= ",
            );
            q.push_bind(since.0);
            q.push(" AND (stream_id, command_id) IN (");
            q.push_values(chunk, |mut b, (s, c)| {
                b.push_bind(s.id()).push_bind(c.as_str());
            });
            q.push(")");
            let by_key: HashMap<(&str, &str), (&StreamId, &CommandId)> = chunk
                .iter()
                .map(|&(s, c)| ((s.id(), c.as_str()), (s, c)))
                .collect();
            for row in q
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(fail("read the command index"))?
            {
                let id: &str = row.try_get(0).map_err(fail("read the command index"))?;
                let command: &str = row.try_get(1).map_err(fail("read the command index"))?;
                if let Some(&(stream, command_id)) = by_key.get(&(id, command)) {
                    let record = self.command_record(stream, &row)?;
                    found.insert((stream.clone(), command_id.clone()), record);
                }
            }
        }
        Ok((versions, found))
    }

    fn command_record(&self, stream: &StreamId, row: &SqliteRow) -> Result<CommandRecord> {
        let damaged = |e: &dyn std::fmt::Display| {
            Error::backend(
                "read the command index",
                format!("damaged command of stream {stream} in the local state: {e}"),
            )
        };
        let fingerprint: Vec<u8> = row.try_get("fingerprint").map_err(|e| damaged(&e))?;
        let first_version: i64 = row.try_get("first_version").map_err(|e| damaged(&e))?;
        let offsets: &str = row.try_get("offsets").map_err(|e| damaged(&e))?;
        let offsets: Vec<u64> = serde_json::from_str(offsets).map_err(|e| damaged(&e))?;
        let fingerprint: [u8; 32] = fingerprint
            .as_slice()
            .try_into()
            .map_err(|_| damaged(&"fingerprint is not 32 bytes"))?;
        Ok(CommandRecord {
            fingerprint: Fingerprint(fingerprint),
            appended: Appended {
                stream: stream.clone(),
                partition: self.partition,
                first_version: StreamVersion(to_u64(first_version)),
                offsets: offsets.into_iter().map(Offset).collect(),
                replayed: false,
            },
        })
    }

    /// Applies a commit in one local transaction.
    pub(crate) async fn commit(&self, commit: &Commit) -> Result<()> {
        self.stage(commit).await?.finish().await
    }

    /// Writes a commit in a local transaction left open: [`Staged::finish`] commits it,
    /// dropping it rolls it back. The writer stages a batch while its Kafka transaction
    /// commits, so the two overlap. It holds the store's write lock until then.
    pub(crate) async fn stage(&self, commit: &Commit) -> Result<Staged> {
        let op = "write the local state";
        let mut tx = self.pool.begin().await.map_err(fail(op))?;
        for chunk in commit.events.chunks(2000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO keel_events (log_offset, stream_id, version, event_type, \
                 schema_version, payload, event_id, command_id, correlation_id, causation_id, \
                 timestamp, metadata) ",
            );
            q.push_values(chunk, |mut b, r| {
                let metadata = (!r.metadata.is_empty())
                    .then(|| serde_json::to_string(&r.metadata).unwrap_or_default());
                b.push_bind(to_i64(r.offset().0))
                    .push_bind(r.stream.id())
                    .push_bind(to_i64(r.version.0))
                    .push_bind(r.event_type.as_str())
                    .push_bind(i64::from(r.schema_version))
                    .push_bind(r.payload.as_slice())
                    .push_bind(r.event_id.as_bytes().as_slice())
                    .push_bind(r.command_id.as_ref().map(CommandId::as_str))
                    .push_bind(r.correlation_id.map(|u| u.as_bytes().to_vec()))
                    .push_bind(r.causation_id.map(|u| u.as_bytes().to_vec()))
                    .push_bind(r.timestamp.0)
                    .push_bind(metadata);
            });
            q.build().execute(&mut *tx).await.map_err(fail(op))?;
        }
        let streams: Vec<(&StreamId, &StreamVersion)> = commit.streams.iter().collect();
        for chunk in streams.chunks(8000) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO keel_streams (stream_id, version) ");
            q.push_values(chunk, |mut b, (s, v)| {
                b.push_bind(s.id()).push_bind(to_i64(v.0));
            });
            q.push(
                " ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version \
                 WHERE excluded.version > keel_streams.version",
            );
            q.build().execute(&mut *tx).await.map_err(fail(op))?;
        }
        for chunk in commit.commands.chunks(4000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO keel_commands (stream_id, command_id, fingerprint, \
                 first_version, offsets, committed_at) ",
            );
            q.push_values(chunk, |mut b, c| {
                let offsets: Vec<u64> = c.offsets.iter().map(|o| o.0).collect();
                b.push_bind(c.stream.id())
                    .push_bind(c.id.as_str())
                    .push_bind(c.fingerprint.0.as_slice())
                    .push_bind(to_i64(c.first_version.0))
                    .push_bind(serde_json::to_string(&offsets).unwrap_or_default())
                    .push_bind(c.committed_at.0);
            });
            q.build().execute(&mut *tx).await.map_err(fail(op))?;
        }
        for s in &commit.snapshots {
            sqlx::query(
                "INSERT INTO keel_snapshots (stream_id, version, shape, payload, timestamp) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET \
                 version = excluded.version, shape = excluded.shape, payload = excluded.payload, \
                 timestamp = excluded.timestamp WHERE excluded.shape != keel_snapshots.shape \
                 OR excluded.version >= keel_snapshots.version",
            )
            .bind(s.stream.id())
            .bind(to_i64(s.version.0))
            .bind(i64::from(s.shape))
            .bind(s.payload.as_slice())
            .bind(s.timestamp.0)
            .execute(&mut *tx)
            .await
            .map_err(fail(op))?;
        }
        for (key, value) in [
            ("next_offset", commit.next_offset),
            ("snapshots_next", commit.snapshots_next),
        ] {
            if let Some(v) = value {
                sqlx::query("INSERT OR REPLACE INTO keel_meta (key, value) VALUES (?, ?)")
                    .bind(key)
                    .bind(v.0.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(fail(op))?;
            }
        }
        Ok(Staged(tx))
    }

    /// Replaces the index with a writer-state snapshot covering the records below
    /// `snapshot.covers`, and records the gap of events this store has not seen.
    pub(crate) async fn import(&self, snapshot: &WriterSnapshot, meta: Meta) -> Result<()> {
        let op = "import a writer-state snapshot";
        let mut tx = self.pool.begin().await.map_err(fail(op))?;
        sqlx::query("DELETE FROM keel_streams")
            .execute(&mut *tx)
            .await
            .map_err(fail(op))?;
        sqlx::query("DELETE FROM keel_commands")
            .execute(&mut *tx)
            .await
            .map_err(fail(op))?;
        tx.commit().await.map_err(fail(op))?;
        let mut commit = Commit {
            streams: snapshot
                .streams
                .iter()
                .filter_map(|(id, v)| Some((StreamId::in_topic(&self.topic, id).ok()?, *v)))
                .collect(),
            ..Commit::default()
        };
        for c in &snapshot.commands {
            let (Ok(stream), Ok(id)) = (
                StreamId::in_topic(&self.topic, &c.stream),
                CommandId::new(&c.command),
            ) else {
                continue;
            };
            commit.commands.push(CommittedCommand {
                stream,
                id,
                fingerprint: c.fingerprint,
                first_version: c.first_version,
                offsets: c.offsets.clone(),
                committed_at: c.committed_at,
            });
        }
        commit.next_offset = Some(snapshot.covers);
        self.commit(&commit).await?;
        let gap_from = meta
            .gap
            .map_or(meta.next_offset, |(from, _)| from.min(meta.next_offset));
        if gap_from < snapshot.covers {
            self.set("gap_from", &gap_from.0.to_string()).await?;
            self.set("gap_to", &snapshot.covers.0.to_string()).await?;
        }
        Ok(())
    }

    /// Stores records of the gap, up to `filled` (exclusive); closes the gap when it is full.
    pub(crate) async fn fill_gap(&self, records: &[RecordedEvent], filled: Offset) -> Result<()> {
        let commit = Commit {
            events: records.to_vec(),
            ..Commit::default()
        };
        self.commit(&commit).await?;
        let meta = self.meta().await?;
        if let Some((_, to)) = meta.gap {
            if filled >= to {
                sqlx::query("DELETE FROM keel_meta WHERE key IN ('gap_from', 'gap_to')")
                    .execute(&self.pool)
                    .await
                    .map_err(fail("write the local state"))?;
            } else {
                self.set("gap_from", &filled.0.to_string()).await?;
            }
        }
        Ok(())
    }

    /// Forgets commands committed before `before` (outside the window).
    pub(crate) async fn forget_commands(&self, before: Timestamp) -> Result<u64> {
        sqlx::query("DELETE FROM keel_commands WHERE committed_at < ?")
            .bind(before.0)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(fail("forget old command ids"))
    }

    /// The whole index, for a writer-state snapshot.
    pub(crate) async fn export(&self, since: Timestamp) -> Result<WriterSnapshot> {
        let op = "export the writer state";
        let meta = self.meta().await?;
        let streams = sqlx::query("SELECT stream_id, version FROM keel_streams ORDER BY stream_id")
            .fetch_all(&self.pool)
            .await
            .map_err(fail(op))?
            .iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                let v: i64 = r.try_get(1)?;
                Ok((id, StreamVersion(to_u64(v))))
            })
            .collect::<sqlx::Result<Vec<_>>>()
            .map_err(fail(op))?;
        let mut commands = Vec::new();
        for r in sqlx::query(
            "SELECT stream_id, command_id, fingerprint, first_version, offsets, committed_at \
             FROM keel_commands WHERE committed_at >= ? ORDER BY stream_id, command_id",
        )
        .bind(since.0)
        .fetch_all(&self.pool)
        .await
        .map_err(fail(op))?
        {
            let stream: String = r.try_get(0).map_err(fail(op))?;
            let command: String = r.try_get(1).map_err(fail(op))?;
            let committed_at: i64 = r.try_get(5).map_err(fail(op))?;
            let Ok(sid) = StreamId::in_topic(&self.topic, &stream) else {
                continue;
            };
            let record = self.command_record(&sid, &r)?;
            commands.push(super::snapshot::SnapshotCommand {
                stream,
                command,
                fingerprint: record.fingerprint,
                first_version: record.appended.first_version,
                offsets: record.appended.offsets,
                committed_at: Timestamp(committed_at),
            });
        }
        Ok(WriterSnapshot {
            covers: meta.next_offset,
            streams,
            commands,
        })
    }

    /// A stream's records with versions from `from` on.
    pub(crate) async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
    ) -> Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(
            "SELECT log_offset, stream_id, version, event_type, schema_version, payload, event_id, \
             command_id, correlation_id, causation_id, timestamp, metadata FROM keel_events \
             WHERE stream_id = ? AND version >= ? ORDER BY version",
        )
        .bind(stream.id())
        .bind(to_i64(from.0))
        .fetch_all(&self.pool)
        .await
        .map_err(fail("read a stream from the local state"))?;
        rows.iter().map(|r| self.record(r, stream)).collect()
    }

    fn record(&self, row: &SqliteRow, stream: &StreamId) -> Result<RecordedEvent> {
        let offset: i64 = row.try_get(0).map_err(fail("read the local state"))?;
        let corrupt = |detail: String| Error::Corrupt {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: Offset(to_u64(offset)),
            detail: format!("in the local state store: {detail}"),
        };
        let get = |col: usize| -> Result<i64> {
            row.try_get::<i64, _>(col)
                .map_err(|e| corrupt(format!("column {col}: {e}")))
        };
        let uuid = |col: usize| -> Result<Option<Uuid>> {
            let bytes: Option<&[u8]> = row
                .try_get(col)
                .map_err(|e| corrupt(format!("column {col}: {e}")))?;
            bytes
                .map(|b| Uuid::from_slice(b).map_err(|e| corrupt(format!("column {col}: {e}"))))
                .transpose()
        };
        let command_id: Option<&str> = row
            .try_get(7)
            .map_err(|e| corrupt(format!("command id: {e}")))?;
        let metadata: Option<&str> = row
            .try_get(11)
            .map_err(|e| corrupt(format!("metadata: {e}")))?;
        Ok(RecordedEvent {
            position: Position {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: Offset(to_u64(offset)),
            },
            stream: stream.clone(),
            version: StreamVersion(to_u64(get(2)?)),
            event_type: row
                .try_get(3)
                .map_err(|e| corrupt(format!("event type: {e}")))?,
            schema_version: u32::try_from(get(4)?)
                .map_err(|e| corrupt(format!("schema version: {e}")))?,
            payload: row
                .try_get(5)
                .map_err(|e| corrupt(format!("payload: {e}")))?,
            event_id: uuid(6)?.ok_or_else(|| corrupt("event id is null".into()))?,
            command_id: command_id
                .map(|c| CommandId::new(c).map_err(|e| corrupt(format!("command id: {e}"))))
                .transpose()?,
            correlation_id: uuid(8)?,
            causation_id: uuid(9)?,
            timestamp: Timestamp(get(10)?),
            metadata: match metadata {
                None | Some("") => Metadata::new(),
                Some(json) => {
                    serde_json::from_str(json).map_err(|e| corrupt(format!("metadata: {e}")))?
                }
            },
        })
    }

    /// A stream's version (0 when it does not exist).
    pub(crate) async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT version FROM keel_streams WHERE stream_id = ?")
                .bind(stream.id())
                .fetch_optional(&self.pool)
                .await
                .map_err(fail("read a stream version"))?;
        Ok(StreamVersion(v.map_or(0, to_u64)))
    }

    /// The command, when it was committed at or after `since`.
    pub(crate) async fn command(
        &self,
        stream: &StreamId,
        command: &CommandId,
        since: Timestamp,
    ) -> Result<Option<CommandRecord>> {
        let row = sqlx::query(
            "SELECT fingerprint, first_version, offsets FROM keel_commands \
             WHERE stream_id = ? AND command_id = ? AND committed_at >= ?",
        )
        .bind(stream.id())
        .bind(command.as_str())
        .bind(since.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(fail("read a command"))?;
        row.map(|r| self.command_record(stream, &r)).transpose()
    }

    /// The offset of a stream's event at `version`, when the local store holds it (not in a
    /// gap left by a takeover from a writer-state snapshot).
    pub(crate) async fn offset_of(
        &self,
        stream: &StreamId,
        version: StreamVersion,
    ) -> Result<Option<Offset>> {
        let offset: Option<i64> = sqlx::query_scalar(
            "SELECT log_offset FROM keel_events WHERE stream_id = ? AND version = ?",
        )
        .bind(stream.id())
        .bind(to_i64(version.0))
        .fetch_optional(&self.pool)
        .await
        .map_err(fail("read an event's offset"))?;
        Ok(offset.map(|o| Offset(to_u64(o))))
    }

    /// The stream's latest aggregate snapshot.
    pub(crate) async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT version, shape, payload, timestamp FROM keel_snapshots WHERE stream_id = ?",
        )
        .bind(stream.id())
        .fetch_optional(&self.pool)
        .await
        .map_err(fail("read a snapshot"))?;
        let Some(row) = row else { return Ok(None) };
        let damaged = |e: &dyn std::fmt::Display| {
            Error::backend(
                "read a snapshot",
                format!("damaged snapshot of stream {stream} in the local state: {e}"),
            )
        };
        let version: i64 = row.try_get(0).map_err(|e| damaged(&e))?;
        let shape: i64 = row.try_get(1).map_err(|e| damaged(&e))?;
        Ok(Some(Snapshot {
            stream: stream.clone(),
            version: StreamVersion(to_u64(version)),
            shape: u32::try_from(shape).map_err(|e| damaged(&e))?,
            payload: row.try_get(2).map_err(|e| damaged(&e))?,
            timestamp: Timestamp(row.try_get(3).map_err(|e| damaged(&e))?),
        }))
    }

    /// Closes the file's connections.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}
