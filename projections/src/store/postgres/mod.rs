//! Views in PostgreSQL tables (sqlx), with checkpoints, leases and parked events in the same
//! schema.
//!
//! A batch is one transaction: the projection's statements, the lease renewal and the
//! checkpoint compare-and-set commit together, so a crash at any point keeps view and
//! checkpoint in step. Each generation's tables are named `<projection>__g<generation>__<table>`
//! (side by side in the connection's schema): a projection names them through
//! [`PgBatch::table`], readers through [`PostgresViews::table`] or [`PostgresViews::begin_read`],
//! which resolve the active generation — so a generation being built beside it is never seen
//! half-built. [`ViewStore::activate`] switches generations holding table `keel_view_switch` in
//! `ACCESS EXCLUSIVE` mode, which every [`PostgresViews::begin_read`] locks in `ACCESS SHARE`
//! mode (needing only `SELECT` on it) before its snapshot is taken, so a read never sees a table
//! dropped under it. The lock comes before the snapshot: a repeatable-read transaction takes its
//! snapshot at its first query, and a read whose snapshot predated a switch it then waited for
//! would look up the old generation's tables after they were dropped. `LOCK TABLE` is not a
//! query; a `SELECT` of an advisory lock would be.
//!
//! The database may be the event store's own or another one.

use std::time::Duration;

use async_trait::async_trait;
use keel::{Checkpoint, Offset, Partition, StreamId, StreamVersion, Topic};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use crate::error::{Error, EventRef, Result};
use crate::store::sql::{fail, prefix, quoted, to_i64};
use crate::store::{
    Commit, Generation, Lease, LeaseHolder, Parked, Stopped, ViewId, ViewState, ViewStore, now_ms,
};

/// Readers lock this table in `ACCESS SHARE` mode, generation switches and drops in
/// `ACCESS EXCLUSIVE`.
const LOCK_SWITCH_EXCLUSIVE: &str = "LOCK TABLE keel_view_switch IN ACCESS EXCLUSIVE MODE";
/// The advisory lock key serializing schema creation.
const SCHEMA_LOCK: i64 = 0x6b65_656c_7673_6368; // "keelvsch"

/// Projection and table names become parts of SQL identifiers: only `[a-z0-9_]`, 1 to 40
/// characters, without `__` (the separator in generation tables' names).
fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 40 || name.contains("__") || !identifier_chars(name) {
        return Err(Error::store(
            "check a name",
            format!("{what} {name:?} must be 1 to 40 characters of a-z, 0-9 and _, without `__`"),
        ));
    }
    Ok(())
}

/// A schema name becomes an SQL identifier: only `[a-z0-9_]`, 1 to 63 characters
/// (PostgreSQL's limit), not starting with a digit.
fn check_schema(schema: &str) -> Result<()> {
    if schema.is_empty()
        || schema.len() > 63
        || schema.starts_with(|c: char| c.is_ascii_digit())
        || !identifier_chars(schema)
    {
        return Err(Error::store(
            "check a name",
            format!(
                "schema name {schema:?} must be 1 to 63 characters of a-z, 0-9 and _, not starting with a digit"
            ),
        ));
    }
    Ok(())
}

fn identifier_chars(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A PostgreSQL view store.
#[derive(Debug, Clone)]
pub struct PostgresViews {
    pool: PgPool,
}

/// An open batch on a [`PostgresViews`] generation: a write transaction.
pub struct PgBatch {
    tx: Transaction<'static, Postgres>,
    view: ViewId,
    prefix: String,
}

impl std::fmt::Debug for PgBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBatch")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl PgBatch {
    /// The quoted name of this generation's table `name` (`[a-z0-9_]`), for SQL text:
    /// `"balances__g2__accounts"`.
    pub fn table(&self, name: &str) -> String {
        quoted(&self.prefix, name)
    }

    /// The transaction's connection, to run statements on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// A consistent read of a [`PostgresViews`] schema; see [`PostgresViews::begin_read`].
pub struct ViewRead {
    tx: Transaction<'static, Postgres>,
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
    pub fn conn(&mut self) -> &mut PgConnection {
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
    conn: &mut PgConnection,
    projection: &str,
    table: &str,
) -> Result<Option<String>> {
    let generation: Option<i64> = sqlx::query_scalar(
        "SELECT generation FROM keel_view_generations WHERE name = $1 AND state = 'active'",
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

impl PostgresViews {
    /// Connects to the database at `url` (`postgres://user:pass@host/db`) and creates the view
    /// store's tables if needed.
    ///
    /// ```no_run
    /// # async fn open() -> Result<(), Box<dyn std::error::Error>> {
    /// use keel_projections::store::postgres::PostgresViews;
    /// let views = PostgresViews::connect("postgres://keel@localhost/keel").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the server cannot be reached or the schema not created.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(fail("connect to the view store"))?;
        Self::with_pool(pool).await
    }

    /// Connects to the database at `url` and keeps the views in its PostgreSQL schema `schema`
    /// (`[a-z0-9_]`, 1 to 63 characters, not starting with a digit; created if missing), creating the view store's
    /// tables there if needed. The user in the URL needs the right to create the schema, or
    /// the schema must exist and belong to it. Use a schema of the views' own, not an event
    /// store's.
    ///
    /// ```no_run
    /// # async fn open() -> Result<(), Box<dyn std::error::Error>> {
    /// use keel_projections::store::postgres::PostgresViews;
    /// let views = PostgresViews::connect_schema("postgres://keel@localhost/keel", "views").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the name is not a valid schema name, the server cannot be reached,
    /// or the schema or its tables cannot be created.
    pub async fn connect_schema(url: &str, schema: &str) -> Result<Self> {
        check_schema(schema)?;
        let options: PgConnectOptions = url.parse().map_err(fail("connect to the view store"))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options.options([("search_path", schema)]))
            .await
            .map_err(fail("connect to the view store"))?;
        let mut tx = pool
            .begin()
            .await
            .map_err(fail("create the view store schema"))?;
        // Under the schema lock: two processes creating it at once would otherwise race.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(fail("create the view store schema"))?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut *tx)
            .await
            .map_err(fail("create the view store schema"))?;
        tx.commit()
            .await
            .map_err(fail("create the view store schema"))?;
        Self::with_pool(pool).await
    }

    /// The view store on a pool of your own (whose connections' `search_path` picks the schema),
    /// creating its tables if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the schema cannot be created.
    pub async fn with_pool(pool: PgPool) -> Result<Self> {
        let mut tx = pool
            .begin()
            .await
            .map_err(fail("create the view store schema"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(fail("create the view store schema"))?;
        sqlx::Executor::execute(&mut *tx, include_str!("schema.sql"))
            .await
            .map_err(fail("create the view store schema"))?;
        tx.commit()
            .await
            .map_err(fail("create the view store schema"))?;
        Ok(Self { pool })
    }

    /// The connection pool, for queries of your own.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a consistent read of the views: one repeatable-read transaction holding off
    /// generation switches, so a switch to a rebuilt generation can never land between looking
    /// a table up and reading it.
    ///
    /// ```no_run
    /// # async fn read(views: &keel_projections::store::postgres::PostgresViews) -> Result<(), Box<dyn std::error::Error>> {
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
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(fail("begin a read"))?;
        // Before the first query, which takes the transaction's snapshot: see the module docs.
        sqlx::query("LOCK TABLE keel_view_switch IN ACCESS SHARE MODE")
            .execute(&mut *tx)
            .await
            .map_err(fail("begin a read"))?;
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

    async fn drop_tables(conn: &mut PgConnection, view: &ViewId) -> sqlx::Result<()> {
        let pattern = format!("{}%", prefix(view).replace('_', "\\_"));
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename LIKE $1 ESCAPE '\\'",
        )
        .bind(pattern)
        .fetch_all(&mut *conn)
        .await?;
        for t in tables {
            sqlx::query(&format!("DROP TABLE IF EXISTS \"{}\"", t.replace('"', "")))
                .execute(&mut *conn)
                .await?;
        }
        for sql in [
            "DELETE FROM keel_view_checkpoints WHERE name = $1 AND generation = $2",
            "DELETE FROM keel_view_parked WHERE name = $1 AND generation = $2",
            "DELETE FROM keel_view_stops WHERE name = $1 AND generation = $2",
            "DELETE FROM keel_view_generations WHERE name = $1 AND generation = $2",
        ] {
            sqlx::query(sql)
                .bind(&view.name)
                .bind(to_i64(view.generation))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Serializes lease changes of projection `name` within a transaction.
    async fn lock_name(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
            .bind(name)
            .execute(conn)
            .await
            .map(|_| ())
    }
}

fn generation_of(row: &sqlx::postgres::PgRow) -> sqlx::Result<Generation> {
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

/// The lease's holder and expiry, locked for the rest of the transaction.
async fn lease_row(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<(String, i64)>> {
    sqlx::query_as("SELECT owner, expires_at FROM keel_view_leases WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(conn)
        .await
}

/// Gives the lease of `name` to `owner` until `ttl` from now.
async fn set_lease(
    conn: &mut PgConnection,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> sqlx::Result<()> {
    let expires = now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    sqlx::query(
        "INSERT INTO keel_view_leases (name, owner, expires_at) VALUES ($1, $2, $3) \
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
impl ViewStore for PostgresViews {
    type Batch = PgBatch;

    async fn generations(&self, name: &str) -> Result<Vec<Generation>> {
        let rows = sqlx::query(
            "SELECT g.name, g.generation, g.version, g.state, s.stopped_at, s.error \
             FROM keel_view_generations g LEFT JOIN keel_view_stops s \
             ON s.name = g.name AND s.generation = g.generation \
             WHERE g.name = $1 ORDER BY g.generation",
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
            .begin()
            .await
            .map_err(fail("create a generation"))?;
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO keel_view_names (name, last_generation) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET last_generation = keel_view_names.last_generation + 1 \
             RETURNING last_generation",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail("create a generation"))?;
        sqlx::query(
            "INSERT INTO keel_view_generations (name, generation, version, state) \
             VALUES ($1, $2, $3, 'building')",
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
            .begin()
            .await
            .map_err(fail("activate a generation"))?;
        // Waits for reads in progress; reads starting now wait for the switch.
        sqlx::query(LOCK_SWITCH_EXCLUSIVE)
            .execute(&mut *tx)
            .await
            .map_err(fail("activate a generation"))?;
        let others: Vec<i64> = sqlx::query_scalar(
            "SELECT generation FROM keel_view_generations WHERE name = $1 AND generation <> $2",
        )
        .bind(&view.name)
        .bind(to_i64(view.generation))
        .fetch_all(&mut *tx)
        .await
        .map_err(fail("activate a generation"))?;
        let updated = sqlx::query(
            "UPDATE keel_view_generations SET state = 'active' WHERE name = $1 AND generation = $2",
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
        let mut tx = self.pool.begin().await.map_err(fail("drop a generation"))?;
        sqlx::query(LOCK_SWITCH_EXCLUSIVE)
            .execute(&mut *tx)
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
            .begin()
            .await
            .map_err(fail("claim a projection"))?;
        Self::lock_name(&mut tx, name)
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
        let mut tx = self.pool.begin().await.map_err(fail("take a lease over"))?;
        Self::lock_name(&mut tx, name)
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
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, expires_at FROM keel_view_leases WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(fail("read a lease"))?;
        Ok(row.map(|(owner, expires_at_ms)| LeaseHolder {
            owner,
            expires_at_ms,
        }))
    }

    async fn set_stopped(&self, view: &ViewId, stopped: Option<&Stopped>) -> Result<()> {
        let generation = to_i64(view.generation);
        let query = match stopped {
            Some(stop) => sqlx::query(
                "INSERT INTO keel_view_stops (name, generation, stopped_at, error) \
                 SELECT name, generation, $3, $4 FROM keel_view_generations \
                 WHERE name = $1 AND generation = $2 \
                 ON CONFLICT (name, generation) DO UPDATE \
                 SET stopped_at = excluded.stopped_at, error = excluded.error",
            )
            .bind(&view.name)
            .bind(generation)
            .bind(stop.at_ms)
            .bind(&stop.error),
            None => sqlx::query("DELETE FROM keel_view_stops WHERE name = $1 AND generation = $2")
                .bind(&view.name)
                .bind(generation),
        };
        query
            .execute(&self.pool)
            .await
            .map_err(fail("record why a runner stopped"))?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        sqlx::query("DELETE FROM keel_view_leases WHERE name = $1 AND owner = $2")
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
             WHERE name = $1 AND generation = $2",
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

    async fn begin(&self, view: &ViewId) -> Result<PgBatch> {
        let tx = self.pool.begin().await.map_err(fail("begin a batch"))?;
        Ok(PgBatch {
            tx,
            view: view.clone(),
            prefix: prefix(view),
        })
    }

    async fn commit(&self, batch: PgBatch, lease: &Lease, commit: Commit) -> Result<()> {
        let PgBatch { mut tx, view, .. } = batch;
        let (name, generation) = (view.name.as_str(), to_i64(view.generation));
        let lost = || Error::LeaseLost {
            projection: lease.name.clone(),
        };
        let now = now_ms();
        let renewed = sqlx::query(
            "UPDATE keel_view_leases SET expires_at = $1 WHERE name = $2 AND owner = $3",
        )
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
        // this batch began: nothing may be committed into it then. The row lock holds off a
        // drop until this batch is done.
        let exists: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM keel_view_generations WHERE name = $1 AND generation = $2 FOR SHARE",
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
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, generation, topic, part) \
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
                    "UPDATE keel_view_checkpoints SET next_offset = $1 WHERE name = $2 \
                     AND generation = $3 AND topic = $4 AND part = $5 AND next_offset = $6",
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
                "INSERT INTO keel_view_parked (name, generation, topic, part, log_offset, \
                 stream_id, version, event_type, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (name, generation, topic, part, log_offset) DO UPDATE SET \
                 stream_id = excluded.stream_id, version = excluded.version, \
                 event_type = excluded.event_type, error = excluded.error",
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
                "DELETE FROM keel_view_parked WHERE name = $1 AND generation = $2 AND topic = $3 \
                 AND part = $4 AND log_offset = $5",
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

    async fn rollback(&self, batch: PgBatch) -> Result<()> {
        batch.tx.rollback().await.map_err(fail("roll back a batch"))
    }

    async fn parked(&self, view: &ViewId) -> Result<Vec<Parked>> {
        let rows = sqlx::query(
            "SELECT topic, part, log_offset, stream_id, version, event_type, error \
             FROM keel_view_parked WHERE name = $1 AND generation = $2 \
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

#[cfg(test)]
mod tests {
    use super::{check_name, check_schema};

    #[test]
    fn schema_names_are_plain_identifiers_up_to_postgres_limit() {
        assert!(check_schema("bank_views").is_ok());
        assert!(check_schema(&"v".repeat(63)).is_ok());
        for bad in ["", "Views", "bank-views", "1views", "a\"b", &"v".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn projection_names_stay_short_and_without_the_separator() {
        assert!(check_name("projection name", "balances").is_ok());
        for bad in ["", "a__b", "Balances", &"p".repeat(41)] {
            assert!(check_name("projection name", bad).is_err(), "{bad:?}");
        }
    }
}
