//! PostgreSQL in tests: the server's URL from the environment, unique names so tests run in
//! parallel on one server, and the conformance [`Backend`] (a fresh schema per test).
//!
//! Tests find the server through `KEEL_TEST_POSTGRES_URL`. `scripts/test.sh` starts a throwaway
//! cluster and sets it; to run a test by hand, start one with
//! `scripts/postgres.sh start /tmp/keel-pg` and export the URL it prints.
//!
//! ```no_run
//! use keel::store::postgres::PostgresStore;
//! use keel::testing::postgres;
//!
//! # async fn run() -> Result<(), keel::store::Error> {
//! let store = PostgresStore::builder(postgres::url())
//!     .schema(postgres::unique_name("my_test"))
//!     .open()
//!     .await?;
//! # Ok(()) }
//! ```

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::conformance::{Backend, HeldAppend};
use crate::envelope::NewEvent;
use crate::ids::{Partition, StreamId};
use crate::store::postgres::PostgresStore;

/// The environment variable naming the test server.
pub const URL_VAR: &str = "KEEL_TEST_POSTGRES_URL";

/// The test server's URL, from `KEEL_TEST_POSTGRES_URL`.
///
/// # Panics
///
/// When the variable is not set, with a message saying how to start a server: a test that
/// needs PostgreSQL fails without one, it is never skipped.
pub fn url() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{URL_VAR} is not set, and this test needs a PostgreSQL server. Run the tests through \
             scripts/test.sh, which starts a throwaway one, or start one yourself: \
             `scripts/postgres.sh start /tmp/keel-pg` prints a URL to export as {URL_VAR} \
             (stop it with `scripts/postgres.sh stop /tmp/keel-pg`)"
        ),
    }
}

/// A name no other test uses: `prefix`, `_` and 32 hex digits (lowercase, a valid schema or
/// database name for a prefix of up to 15 lowercase letters, digits and `_`).
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Creates a fresh database on the test server and returns its URL.
///
/// # Panics
///
/// When there is no test server (see [`url`]) or it refuses.
pub async fn create_database(prefix: &str) -> String {
    let base = url();
    let name = unique_name(prefix);
    let mut conn = PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server at {base}: {e}"));
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
    let _ = conn.close().await;
    database_url(&base, &name)
}

/// `url` with its database replaced by `database`.
///
/// # Panics
///
/// When `url` is not a PostgreSQL URL.
pub fn database_url(url: &str, database: &str) -> String {
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let rest = head
        .strip_prefix("postgres://")
        .or_else(|| head.strip_prefix("postgresql://"))
        .unwrap_or_else(|| panic!("{url} is not a postgres:// URL"));
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    match query {
        Some(q) => format!("postgres://{authority}/{database}?{q}"),
        None => format!("postgres://{authority}/{database}"),
    }
}

/// A throwaway PostgreSQL cluster of a test's own, made by `scripts/postgres.sh` (for tests
/// that stop and restart the server, which they must not do to the shared one). Stopped and
/// deleted when dropped.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    script: std::path::PathBuf,
    url: String,
}

impl Cluster {
    /// Creates and starts a cluster with `script` (the path of `scripts/postgres.sh`, which
    /// installs PostgreSQL first when it is missing).
    ///
    /// # Panics
    ///
    /// When the script fails, with its output.
    pub async fn start(script: impl Into<std::path::PathBuf>) -> Self {
        let script = script.into();
        let dir = tempfile::tempdir().expect("a temporary directory for the cluster");
        let url = run_script(&script, &["start", &dir.path().to_string_lossy()]).await;
        Self {
            dir,
            script,
            url: url.trim().to_owned(),
        }
    }

    /// The cluster's URL (database `postgres`, user `postgres`, trust authentication).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server. `immediate` is a crash (no shutdown checkpoint; recovery on the next
    /// start replays the WAL); `fast` a clean shutdown.
    ///
    /// # Panics
    ///
    /// When the script fails.
    pub async fn stop(&self, mode: &str) {
        run_script(
            &self.script,
            &["stop", &self.dir.path().to_string_lossy(), mode],
        )
        .await;
    }

    /// Starts the stopped server again, on the same port.
    ///
    /// # Panics
    ///
    /// When the script fails.
    pub async fn restart(&self) {
        run_script(
            &self.script,
            &["restart", &self.dir.path().to_string_lossy()],
        )
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .arg("immediate")
            .output();
    }
}

async fn run_script(script: &std::path::Path, args: &[&str]) -> String {
    let mut command = std::process::Command::new("bash");
    command.arg(script).args(args);
    let shown = format!("bash {} {}", script.display(), args.join(" "));
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the script's task")
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The PostgreSQL backend of the conformance suite: every test gets a schema of its own on the
/// test server, so tests run in parallel.
#[derive(Debug)]
pub struct PostgresBackend {
    url: String,
    schema: String,
    partitions: u32,
}

impl PostgresBackend {
    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema this test's store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A connection to the server whose `search_path` is this test's schema.
    ///
    /// # Panics
    ///
    /// When the server cannot be reached.
    pub async fn connect(&self) -> PgConnection {
        PgConnectOptions::from_str(&self.url)
            .expect("a PostgreSQL URL")
            .options([("search_path", self.schema.as_str())])
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server at {}: {e}", self.url))
    }
}

impl Backend for PostgresBackend {
    type Store = PostgresStore;

    async fn create(partitions: u32) -> Self {
        Self {
            url: url(),
            schema: unique_name("keel_t"),
            partitions,
        }
    }

    async fn open(&self) -> PostgresStore {
        PostgresStore::builder(&self.url)
            .schema(&self.schema)
            .default_partitions(self.partitions)
            .open()
            .await
            .expect("open the PostgreSQL store")
    }

    async fn close(&self, store: PostgresStore) {
        store.close().await;
    }

    async fn hold_append<'a>(
        &'a self,
        _store: &'a PostgresStore,
        stream: &'a StreamId,
        partition: Partition,
        event: &'a NewEvent,
    ) -> Option<Box<dyn HeldAppend + 'a>> {
        let mut conn = self.connect().await;
        let observer = self.connect().await;
        let topic = stream.kind();
        let part = i32::try_from(partition.0).expect("a small partition");
        conn.execute("BEGIN").await.expect("BEGIN");
        let head: i64 = sqlx::query_scalar(
            "SELECT next_offset FROM partitions WHERE topic = $1 AND part = $2 FOR UPDATE",
        )
        .bind(topic)
        .bind(part)
        .fetch_one(&mut conn)
        .await
        .expect("lock the partition's head row (the topic must exist)");
        sqlx::query(
            "INSERT INTO events (topic, part, log_offset, stream_id, version, event_type, \
             schema_version, payload, event_id, timestamp_us) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, $9)",
        )
        .bind(topic)
        .bind(part)
        .bind(head)
        .bind(stream.id())
        .bind(&event.event_type)
        .bind(i64::from(event.schema_version))
        .bind(&event.payload)
        .bind(event.event_id)
        .bind(event.timestamp.0)
        .execute(&mut conn)
        .await
        .expect("write the held record");
        sqlx::query(
            "UPDATE partitions SET next_offset = next_offset + 1 WHERE topic = $1 AND part = $2",
        )
        .bind(topic)
        .bind(part)
        .execute(&mut conn)
        .await
        .expect("advance the head");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .expect("the holder's process id");
        Some(Box::new(HeldTransaction {
            conn,
            observer,
            pid,
        }))
    }
}

/// An append transaction held open on its own connection.
struct HeldTransaction {
    conn: PgConnection,
    /// A second connection, outside the transaction, to see who waits for it.
    observer: PgConnection,
    pid: i32,
}

#[async_trait]
impl HeldAppend for HeldTransaction {
    async fn waiting(&mut self) -> usize {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(self.pid)
        .fetch_one(&mut self.observer)
        .await
        .expect("count the sessions waiting for the held transaction");
        usize::try_from(n).unwrap_or(0)
    }

    async fn commit(mut self: Box<Self>) {
        self.conn
            .execute("COMMIT")
            .await
            .expect("COMMIT the held append");
    }
}
