//! The store's tables: created and migrated by the store itself, in a PostgreSQL schema of its own.
//!
//! The migrations are the `.sql` files in `migrations/`, applied by sqlx's migrator, which keeps
//! its `_sqlx_migrations` table in the same schema. Before migrating, the store checks what the
//! schema holds and refuses, with a message saying so:
//!
//! - a schema migrated by a newer Keel (a migration version this Keel does not know), rather
//!   than reading or writing tables whose meaning may have changed;
//! - a migration that Keel knows but whose text differs (an edited or foreign migration);
//! - a schema holding tables without Keel's migration record: another application's schema.
//!
//! Concurrent openers (several processes starting at once) serialize on an advisory lock, so the
//! schema is created and migrated once.

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgConnection;

use crate::store::{Error, Result};

static MIGRATOR: Migrator = sqlx::migrate!("src/store/postgres/migrations");

/// The first key of the advisory lock that serializes the openers of a schema (the second is
/// a hash of the schema's name). Spells "keel".
const LOCK_CLASS: i32 = 0x6b65_656c;

/// The newest schema version this Keel knows.
pub(super) fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Checks that `name` can name the store's schema (and its notification channel):
/// 1 to 48 bytes of lowercase ASCII letters, digits and `_`, not starting with a digit, and
/// not `pg_…`.
pub(super) fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with("pg_");
    if valid {
        Ok(())
    } else {
        Err(Error::backend(
            "open the PostgreSQL store",
            format!(
                "{name:?} cannot name the store's schema: use 1 to 48 lowercase ASCII letters, \
                 digits and underscores, not starting with a digit or `pg_`"
            ),
        ))
    }
}

/// Creates the schema if needed, checks what it holds and applies the missing migrations.
pub(super) async fn migrate(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let fail = |e: sqlx::Error| Error::backend("create the PostgreSQL schema", e);
    sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(schema)
        .execute(&mut *conn)
        .await
        .map_err(fail)?;
    let result = migrate_locked(conn, schema).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
        .bind(LOCK_CLASS)
        .bind(schema)
        .execute(&mut *conn)
        .await
        .map_err(fail);
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(conn: &mut PgConnection, schema: &str) -> Result<()> {
    let fail = |e: sqlx::Error| Error::backend("create the PostgreSQL schema", e);
    // The name was checked: lowercase letters, digits and underscores only.
    sqlx::Executor::execute(
        &mut *conn,
        format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str(),
    )
    .await
    .map_err(fail)?;
    let recorded: bool = sqlx::query_scalar(
        "SELECT to_regclass(format('%I._sqlx_migrations', $1::text)) IS NOT NULL",
    )
    .bind(schema)
    .fetch_one(&mut *conn)
    .await
    .map_err(fail)?;
    if recorded {
        let applied: Vec<(i64, String)> = sqlx::query_as(&format!(
            "SELECT version, description FROM \"{schema}\"._sqlx_migrations ORDER BY version"
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(fail)?;
        let latest = latest_version();
        if let Some((version, description)) = applied
            .iter()
            .find(|(v, _)| !MIGRATOR.iter().any(|m| m.version == *v))
        {
            let why = if *version > latest {
                format!(
                    "it holds Keel schema version {version} ({description}), newer than this \
                     Keel, which knows versions up to {latest}: upgrade Keel, or open another \
                     schema"
                )
            } else {
                format!(
                    "it holds schema version {version} ({description}), which is not a Keel \
                     schema version: open another schema"
                )
            };
            return Err(refused(schema, why));
        }
    } else {
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        )
        .bind(schema)
        .fetch_one(&mut *conn)
        .await
        .map_err(fail)?;
        if tables > 0 {
            return Err(refused(
                schema,
                format!(
                    "it holds {tables} tables but no Keel schema version: it belongs to \
                     something else; give the store a schema of its own"
                ),
            ));
        }
    }
    MIGRATOR.run_direct(conn).await.map_err(|e| match e {
        MigrateError::VersionMismatch(version) => refused(
            schema,
            format!(
                "its schema version {version} was applied from another text than this Keel's: \
                 the schema was edited or written by a different build"
            ),
        ),
        MigrateError::Dirty(version) => refused(
            schema,
            format!("migration to schema version {version} failed part way; repair it by hand"),
        ),
        other => Error::backend("migrate the PostgreSQL schema", other),
    })
}

fn refused(schema: &str, why: String) -> Error {
    Error::backend(
        "open the PostgreSQL store",
        format!("refusing the PostgreSQL schema {schema:?}: {why}"),
    )
}
