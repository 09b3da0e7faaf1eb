//! Views in SQLite tables (sqlx), with checkpoints, leases and parked events in the same file.
//!
//! A batch is one `BEGIN IMMEDIATE` transaction: the projection's statements, the lease
//! renewal and the checkpoint compare-and-set commit together, so a crash at any point keeps
//! view and checkpoint in step. Each generation's tables are named
//! `<projection>__g<generation>__<table>`: a projection names them through
//! [`SqliteBatch::table`], readers through [`SqliteViews::table`], which resolves the active
//! generation — so a generation being built beside it is never seen half-built.
//!
//! The file may be the event store's own file or another one.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use keel::{Checkpoint, Offset, Partition, StreamId, StreamVersion, Topic};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::error::{Error, EventRef, Result};
use crate::store::sql::{fail, prefix, quoted, to_i64};
use crate::store::{
    Commit, Generation, Lease, LeaseHolder, Parked, Stopped, ViewId, ViewState, ViewStore, now_ms,
};

/// Projection and table names become SQL identifiers: only `[a-z0-9_]`.
fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || name.contains("__")
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::store(
            "name a view table",
            format!("{what} {name:?} must be 1 to 64 characters of a-z, 0-9 and _, without `__`"),
        ));
    }
    Ok(())
}

/// A SQLite view store.
#[derive(Debug, Clone)]
pub struct SqliteViews {
    pool: SqlitePool,
}

/// An open batch on a [`SqliteViews`] generation: a write transaction.
pub struct SqliteBatch {
    tx: Transaction<'static, Sqlite>,
    view: ViewId,
    prefix: String,
}

impl std::fmt::Debug for SqliteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBatch")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SqliteBatch {
    /// The quoted name of this generation's table `name` (`[a-z0-9_]`), for SQL text:
    /// `"balances__g2__accounts"`.
    pub fn table(&self, name: &str) -> String {
        quoted(&self.prefix, name)
    }

    /// The transaction's connection, to run statements on.
    pub fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

/// A consistent read of a [`SqliteViews`] file; see [`SqliteViews::begin_read`].
pub struct ViewRead {
    tx: Transaction<'static, Sqlite>,
}

impl std::fmt::Debug for ViewRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewRead").finish_non_exhaustive()
    }
}

impl ViewRead {
    /// The quoted name of table `table` in the active generation of `projection`, as of this
    /// read; `None` before the projection's first build.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn table(&mut self, projection: &str, table: &str) -> Result<Option<String>> {
        active_table(&mut self.tx, projection, table).await
    }

    /// The read's connection, to run queries on.
    pub fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Ends the read.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn finish(self) -> Result<()> {
        self.tx.rollback().await.map_err(fail("end a read"))
    }
}

async fn active_table(
    conn: &mut SqliteConnection,
    projection: &str,
    table: &str,
) -> Result<Option<String>> {
    let generation: Option<i64> = sqlx::query_scalar(
        "SELECT generation FROM keel_view_generations WHERE name = ? AND state = 'active'",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await
    .map_err(fail("find the active generation"))?;
    Ok(generation.map(|g| {
        let view = ViewId {
            name: projection.to_owned(),
            generation: u64::try_from(g).unwrap_or(0),
        };
        quoted(&prefix(&view), table)
    }))
}

impl SqliteViews {
    /// Opens (creating if needed) the view store in the SQLite file at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the file cannot be opened or the schema not created.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(fail("open the view store"))?
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(fail("open the view store"))?;
        let views = Self { pool };
        sqlx::Executor::execute(&views.pool, include_str!("schema.sql"))
            .await
            .map_err(fail("create the view store schema"))?;
        Ok(views)
    }

    /// The connection pool, for queries of your own.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a consistent read of the views: one read transaction, so a switch to a rebuilt
    /// generation can never land between looking a table up and reading it.
    ///
    /// ```no_run
    /// # async fn read(views: &keel_projections::store::sqlite::SqliteViews) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut read = views.begin_read().await?;
    /// if let Some(table) = read.table("balances", "accounts").await? {
    ///     let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
    ///         .fetch_one(read.conn())
    ///         .await?;
    ///     println!("{n} accounts");
    /// }
    /// read.finish().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn begin_read(&self) -> Result<ViewRead> {
        let tx = self.pool.begin().await.map_err(fail("begin a read"))?;
        Ok(ViewRead { tx })
    }

    /// The quoted name of table `table` in the active generation of `projection`, for
    /// queries; `None` before the projection's first build. A rebuild may switch generations
    /// right after this returns and drop the table: read through [`Self::begin_read`] when
    /// that matters.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn table(&self, projection: &str, table: &str) -> Result<Option<String>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(fail("find the active generation"))?;
        active_table(&mut conn, projection, table).await
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn drop_tables(conn: &mut SqliteConnection, view: &ViewId) -> sqlx::Result<()> {
        let pattern = format!("{}%", prefix(view).replace('_', "\\_"));
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
        )
        .bind(pattern)
        .fetch_all(&mut *conn)
        .await?;
        for t in tables {
            sqlx::query(&format!("DROP TABLE \"{}\"", t.replace('"', "")))
                .execute(&mut *conn)
                .await?;
        }
        for sql in [
            "DELETE FROM keel_view_checkpoints WHERE name = ? AND generation = ?",
            "DELETE FROM keel_view_parked WHERE name = ? AND generation = ?",
            "DELETE FROM keel_view_stops WHERE name = ? AND generation = ?",
            "DELETE FROM keel_view_generations WHERE name = ? AND generation = ?",
        ] {
            sqlx::query(sql)
                .bind(&view.name)
                .bind(to_i64(view.generation))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

fn generation_of(row: &sqlx::sqlite::SqliteRow) -> sqlx::Result<Generation> {
    let state: String = row.try_get("state")?;
    let stopped_at: Option<i64> = row.try_get("stopped_at")?;
    let error: Option<String> = row.try_get("error")?;
    Ok(Generation {
        name: row.try_get("name")?,
        generation: u64::try_from(row.try_get::<i64, _>("generation")?).unwrap_or(0),
        version: u32::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
        state: ViewState::parse(&state).unwrap_or(ViewState::Building),
        stopped: stopped_at
            .zip(error)
            .map(|(at_ms, error)| Stopped { at_ms, error }),
    })
}

/// The lease's holder and expiry, inside a transaction.
async fn lease_row(conn: &mut SqliteConnection, name: &str) -> sqlx::Result<Option<(String, i64)>> {
    sqlx::query_as("SELECT owner, expires_at FROM keel_view_leases WHERE name = ?")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Gives the lease of `name` to `owner` until `ttl` from now.
async fn set_lease(
    conn: &mut SqliteConnection,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> sqlx::Result<()> {
    let expires = now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(
        "INSERT INTO keel_view_leases (name, owner, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
    )
    .bind(name)
    .bind(owner)
    .bind(expires)
    .execute(conn)
    .await
    .map(|_| ())
}

fn held(name: &str, holder: String, until: i64, now: i64) -> Error {
    Error::Held {
        projection: name.to_owned(),
        owner: holder,
        remaining_ms: u64::try_from(until - now).unwrap_or(0),
    }
}

#[async_trait]
impl ViewStore for SqliteViews {
    type Batch = SqliteBatch;

    async fn generations(&self, name: &str) -> Result<Vec<Generation>> {
        let rows = sqlx::query(
            "SELECT g.name, g.generation, g.version, g.state, s.stopped_at, s.error \
             FROM keel_view_generations g LEFT JOIN keel_view_stops s \
             ON s.name = g.name AND s.generation = g.generation \
             WHERE g.name = ? ORDER BY g.generation",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .map_err(fail("list generations"))?;
        rows.iter()
            .map(generation_of)
            .collect::<sqlx::Result<_>>()
            .map_err(fail("list generations"))
    }

    async fn create_generation(&self, name: &str, version: u32) -> Result<Generation> {
        check_name("projection name", name)?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail("create a generation"))?;
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO keel_view_names (name, last_generation) VALUES (?, 1) \
             ON CONFLICT (name) DO UPDATE SET last_generation = last_generation + 1 \
             RETURNING last_generation",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail("create a generation"))?;
        sqlx::query(
            "INSERT INTO keel_view_generations (name, generation, version, state) \
             VALUES (?, ?, ?, 'building')",
        )
        .bind(name)
        .bind(generation)
        .bind(i64::from(version))
        .execute(&mut *tx)
        .await
        .map_err(fail("create a generation"))?;
        tx.commit().await.map_err(fail("create a generation"))?;
        Ok(Generation {
            name: name.to_owned(),
            generation: u64::try_from(generation).unwrap_or(0),
            version,
            state: ViewState::Building,
            stopped: None,
        })
    }

    async fn activate(&self, view: &ViewId) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail("activate a generation"))?;
        let others: Vec<i64> = sqlx::query_scalar(
            "SELECT generation FROM keel_view_generations WHERE name = ? AND generation <> ?",
        )
        .bind(&view.name)
        .bind(to_i64(view.generation))
        .fetch_all(&mut *tx)
        .await
        .map_err(fail("activate a generation"))?;
        let updated = sqlx::query(
            "UPDATE keel_view_generations SET state = 'active' WHERE name = ? AND generation = ?",
        )
        .bind(&view.name)
        .bind(to_i64(view.generation))
        .execute(&mut *tx)
        .await
        .map_err(fail("activate a generation"))?;
        if updated.rows_affected() != 1 {
            return Err(Error::store(
                "activate a generation",
                format!("generation {view} does not exist"),
            ));
        }
        for g in others {
            let old = ViewId {
                name: view.name.clone(),
                generation: u64::try_from(g).unwrap_or(0),
            };
            Self::drop_tables(&mut tx, &old)
                .await
                .map_err(fail("drop the old generation"))?;
        }
        tx.commit().await.map_err(fail("activate a generation"))
    }

    async fn drop_generation(&self, view: &ViewId) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail("drop a generation"))?;
        Self::drop_tables(&mut tx, view)
            .await
            .map_err(fail("drop a generation"))?;
        tx.commit().await.map_err(fail("drop a generation"))
    }

    async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail("claim a projection"))?;
        let now = now_ms();
        if let Some((holder, until)) = lease_row(&mut tx, name)
            .await
            .map_err(fail("claim a projection"))?
            && holder != owner
            && until > now
        {
            return Err(held(name, holder, until, now));
        }
        set_lease(&mut tx, name, owner, ttl)
            .await
            .map_err(fail("claim a projection"))?;
        tx.commit().await.map_err(fail("claim a projection"))?;
        Ok(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            ttl,
        })
    }

    async fn take_over(&self, name: &str, from: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail("take a lease over"))?;
        if let Some((holder, until)) = lease_row(&mut tx, name)
            .await
            .map_err(fail("take a lease over"))?
            && holder != from
            && holder != owner
        {
            return Err(held(name, holder, until, now_ms()));
        }
        set_lease(&mut tx, name, owner, ttl)
            .await
            .map_err(fail("take a lease over"))?;
        tx.commit().await.map_err(fail("take a lease over"))?;
        Ok(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            ttl,
        })
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseHolder>> {
        let mut conn = self.pool.acquire().await.map_err(fail("read a lease"))?;
        Ok(lease_row(&mut conn, name)
            .await
            .map_err(fail("read a lease"))?
            .map(|(owner, expires_at_ms)| LeaseHolder {
                owner,
                expires_at_ms,
            }))
    }

    async fn set_stopped(&self, view: &ViewId, stopped: Option<&Stopped>) -> Result<()> {
        let generation = to_i64(view.generation);
        let query = match stopped {
            Some(stop) => sqlx::query(
                "INSERT INTO keel_view_stops (name, generation, stopped_at, error) \
                 SELECT name, generation, ?, ? FROM keel_view_generations \
                 WHERE name = ? AND generation = ? \
                 ON CONFLICT (name, generation) DO UPDATE \
                 SET stopped_at = excluded.stopped_at, error = excluded.error",
            )
            .bind(stop.at_ms)
            .bind(&stop.error),
            None => sqlx::query("DELETE FROM keel_view_stops WHERE name = ? AND generation = ?"),
        };
        query
            .bind(&view.name)
            .bind(generation)
            .execute(&self.pool)
            .await
            .map_err(fail("record why a runner stopped"))?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        sqlx::query("DELETE FROM keel_view_leases WHERE name = ? AND owner = ?")
            .bind(&lease.name)
            .bind(&lease.owner)
            .execute(&self.pool)
            .await
            .map_err(fail("release a projection"))?;
        Ok(())
    }

    async fn checkpoints(&self, view: &ViewId) -> Result<Vec<Checkpoint>> {
        let rows = sqlx::query(
            "SELECT topic, part, next_offset FROM keel_view_checkpoints \
             WHERE name = ? AND generation = ?",
        )
        .bind(&view.name)
        .bind(to_i64(view.generation))
        .fetch_all(&self.pool)
        .await
        .map_err(fail("read checkpoints"))?;
        rows.iter()
            .map(|r| {
                let topic: String = r.try_get(0).map_err(fail("read checkpoints"))?;
                let part: i64 = r.try_get(1).map_err(fail("read checkpoints"))?;
                let next: i64 = r.try_get(2).map_err(fail("read checkpoints"))?;
                Ok(Checkpoint {
                    topic: Topic::new(&topic).map_err(|e| Error::store("read checkpoints", e))?,
                    partition: Partition(u32::try_from(part).unwrap_or(0)),
                    next: Offset(u64::try_from(next).unwrap_or(0)),
                })
            })
            .collect()
    }

    async fn begin(&self, view: &ViewId) -> Result<SqliteBatch> {
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(fail("begin a batch"))?;
        Ok(SqliteBatch {
            tx,
            view: view.clone(),
            prefix: prefix(view),
        })
    }

    async fn commit(&self, batch: SqliteBatch, lease: &Lease, commit: Commit) -> Result<()> {
        let SqliteBatch { mut tx, view, .. } = batch;
        let (name, generation) = (view.name.as_str(), to_i64(view.generation));
        let lost = || Error::LeaseLost {
            projection: lease.name.clone(),
        };
        let now = now_ms();
        let renewed =
            sqlx::query("UPDATE keel_view_leases SET expires_at = ? WHERE name = ? AND owner = ?")
                .bind(now.saturating_add(i64::try_from(lease.ttl.as_millis()).unwrap_or(i64::MAX)))
                .bind(&lease.name)
                .bind(&lease.owner)
                .execute(&mut *tx)
                .await
                .map_err(fail("renew the lease"))?;
        if renewed.rows_affected() != 1 {
            tx.rollback().await.map_err(fail("roll back"))?;
            return Err(lost());
        }
        // The generation may have been dropped (a reset or rebuild by another runner) since
        // this batch began: nothing may be committed into it then.
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM keel_view_generations WHERE name = ? AND generation = ?",
        )
        .bind(name)
        .bind(generation)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail("check the generation"))?;
        if exists.is_none() {
            tx.rollback().await.map_err(fail("roll back"))?;
            return Err(lost());
        }
        for m in &commit.moves {
            let moved = if m.from == Offset(0) {
                sqlx::query(
                    "INSERT INTO keel_view_checkpoints (name, generation, topic, part, next_offset) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, generation, topic, part) \
                     DO UPDATE SET next_offset = excluded.next_offset \
                     WHERE keel_view_checkpoints.next_offset = 0",
                )
                .bind(name)
                .bind(generation)
                .bind(m.topic.as_str())
                .bind(i64::from(m.partition.0))
                .bind(to_i64(m.to.0))
                .execute(&mut *tx)
                .await
            } else {
                sqlx::query(
                    "UPDATE keel_view_checkpoints SET next_offset = ? WHERE name = ? \
                     AND generation = ? AND topic = ? AND part = ? AND next_offset = ?",
                )
                .bind(to_i64(m.to.0))
                .bind(name)
                .bind(generation)
                .bind(m.topic.as_str())
                .bind(i64::from(m.partition.0))
                .bind(to_i64(m.from.0))
                .execute(&mut *tx)
                .await
            }
            .map_err(fail("move a checkpoint"))?;
            if moved.rows_affected() != 1 {
                tx.rollback().await.map_err(fail("roll back"))?;
                return Err(lost());
            }
        }
        for p in &commit.park {
            let e = &p.event;
            sqlx::query(
                "INSERT OR REPLACE INTO keel_view_parked (name, generation, topic, part, log_offset, \
                 stream_id, version, event_type, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(name)
            .bind(generation)
            .bind(e.topic.as_str())
            .bind(i64::from(e.partition.0))
            .bind(to_i64(e.offset.0))
            .bind(e.stream.id())
            .bind(to_i64(e.version.0))
            .bind(&e.event_type)
            .bind(&p.error)
            .execute(&mut *tx)
            .await
            .map_err(fail("park an event"))?;
        }
        for (topic, partition, offset) in &commit.unpark {
            sqlx::query(
                "DELETE FROM keel_view_parked WHERE name = ? AND generation = ? AND topic = ? \
                 AND part = ? AND log_offset = ?",
            )
            .bind(name)
            .bind(generation)
            .bind(topic.as_str())
            .bind(i64::from(partition.0))
            .bind(to_i64(offset.0))
            .execute(&mut *tx)
            .await
            .map_err(fail("unpark an event"))?;
        }
        tx.commit().await.map_err(fail("commit a batch"))
    }

    async fn rollback(&self, batch: SqliteBatch) -> Result<()> {
        batch.tx.rollback().await.map_err(fail("roll back a batch"))
    }

    async fn parked(&self, view: &ViewId) -> Result<Vec<Parked>> {
        let rows = sqlx::query(
            "SELECT topic, part, log_offset, stream_id, version, event_type, error \
             FROM keel_view_parked WHERE name = ? AND generation = ? \
             ORDER BY topic, part, log_offset",
        )
        .bind(&view.name)
        .bind(to_i64(view.generation))
        .fetch_all(&self.pool)
        .await
        .map_err(fail("list parked events"))?;
        rows.iter()
            .map(|r| {
                let get_i =
                    |c: &str| -> Result<i64> { r.try_get(c).map_err(fail("list parked events")) };
                let get_s = |c: &str| -> Result<String> {
                    r.try_get(c).map_err(fail("list parked events"))
                };
                let topic = get_s("topic")?;
                Ok(Parked {
                    event: EventRef {
                        stream: StreamId::new(&topic, get_s("stream_id")?)
                            .map_err(|e| Error::store("list parked events", e))?,
                        topic: Topic::new(&topic)
                            .map_err(|e| Error::store("list parked events", e))?,
                        partition: Partition(u32::try_from(get_i("part")?).unwrap_or(0)),
                        offset: Offset(u64::try_from(get_i("log_offset")?).unwrap_or(0)),
                        version: StreamVersion(u64::try_from(get_i("version")?).unwrap_or(0)),
                        event_type: get_s("event_type")?,
                    },
                    error: get_s("error")?,
                })
            })
            .collect()
    }
}
