//! The bank's views in PostgreSQL ([`PostgresViews`]), in the database's schema
//! [`VIEWS_SCHEMA`]: what the bank uses when its log is in PostgreSQL (`--database-url`).
//!
//! The projections are the SQLite ones' twins — same names, same tables, same folds — and
//! write each batch with one statement per table: whole columns bound as arrays and spread
//! into rows by `unnest`, however many rows the batch has.

use std::sync::Arc;

use keel::{EventStore, Topic};
use keel_projections::store::postgres::{PgBatch, PostgresViews};
use keel_projections::{BoxError, Envelope, Projection, Projections, Runner, RunnerConfig};

use super::{
    ACCOUNT_COLUMNS, AccountRow, MOVEMENT_COLUMNS, Movement, account_changes, account_row,
    account_topic, movement, movement_rows, upsert_account,
};
use crate::account::AccountEvent;

/// The PostgreSQL schema holding the bank's views (the log has schema `keel`).
pub const VIEWS_SCHEMA: &str = "bank_views";

/// Balance per account, in PostgreSQL table `accounts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balances;

impl Projection for Balances {
    type Event = AccountEvent;
    type Store = PostgresViews;
    const NAME: &'static str = super::Balances::NAME;

    fn topics(&self) -> Vec<Topic> {
        account_topic()
    }

    async fn setup(&self, view: &mut PgBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, \
             balance BIGINT NOT NULL, version BIGINT NOT NULL)",
            view.table("accounts")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut PgBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let changes = account_changes(events)?;
        let n = changes.len();
        let (mut ids, mut owners, mut statuses) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut deltas, mut versions) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for c in &changes {
            ids.push(c.id);
            owners.push(c.owner.as_str());
            statuses.push(c.status);
            deltas.push(c.delta);
            versions.push(c.version);
        }
        let table = view.table("accounts");
        let sql = format!(
            "INSERT INTO {table} (id, owner, status, balance, version) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[]){}",
            upsert_account(&table, "GREATEST")
        );
        sqlx::query(&sql)
            .bind(ids)
            .bind(owners)
            .bind(statuses)
            .bind(deltas)
            .bind(versions)
            .execute(view.conn())
            .await?;
        Ok(())
    }
}

/// Every movement of every account, in PostgreSQL table `movements`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementView;

impl Projection for StatementView {
    type Event = AccountEvent;
    type Store = PostgresViews;
    const NAME: &'static str = super::StatementView::NAME;

    fn topics(&self) -> Vec<Topic> {
        account_topic()
    }

    async fn setup(&self, view: &mut PgBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (account TEXT NOT NULL, version BIGINT NOT NULL, kind TEXT NOT NULL, \
             amount BIGINT NOT NULL, partition_no BIGINT NOT NULL, log_offset BIGINT NOT NULL, \
             at BIGINT NOT NULL, PRIMARY KEY (account, version))",
            view.table("movements")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut PgBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let n = events.len();
        let (mut accounts, mut versions, mut kinds, mut amounts) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut partitions, mut offsets, mut ats) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for m in movement_rows(events) {
            accounts.push(m.account);
            versions.push(m.version);
            kinds.push(m.kind);
            amounts.push(m.amount);
            partitions.push(m.partition);
            offsets.push(m.offset);
            ats.push(m.at);
        }
        let sql = format!(
            "INSERT INTO {} (account, version, kind, amount, partition_no, log_offset, at) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], \
             $6::int8[], $7::int8[])",
            view.table("movements")
        );
        sqlx::query(&sql)
            .bind(accounts)
            .bind(versions)
            .bind(kinds)
            .bind(amounts)
            .bind(partitions)
            .bind(offsets)
            .bind(ats)
            .execute(view.conn())
            .await?;
        Ok(())
    }
}

/// The bank's projections over `log`, with views in the PostgreSQL database at `url`
/// (`postgres://user:password@host/db`), schema [`VIEWS_SCHEMA`] (created if missing).
///
/// # Errors
///
/// When the view store cannot be opened.
pub async fn bank_projections(
    log: Arc<dyn EventStore>,
    url: &str,
    config: RunnerConfig,
) -> Result<(Projections, PostgresViews), keel_projections::Error> {
    let store = PostgresViews::connect_schema(url, VIEWS_SCHEMA).await?;
    let shared = Arc::new(store.clone());
    let projections = Projections::new()
        .with(Runner::new(Balances, Arc::clone(&log), Arc::clone(&shared)).config(config.clone()))
        .with(Runner::new(StatementView, log, shared).config(config));
    Ok((projections, store))
}

/// Reads every account of the active balances view, by id.
///
/// # Errors
///
/// A store failure.
pub async fn read_balances(
    views: &PostgresViews,
) -> Result<Vec<AccountRow>, keel_projections::Error> {
    // One read transaction: a rebuild switching generations waits for it to finish.
    let mut read = views.begin_read().await?;
    let Some(table) = read.table(Balances::NAME, "accounts").await? else {
        read.finish().await?;
        return Ok(Vec::new());
    };
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM {table} ORDER BY id"
    ))
    .fetch_all(read.conn())
    .await
    .map_err(|e| keel_projections::Error::store("read balances", e))?;
    read.finish().await?;
    rows.iter()
        .map(account_row)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| keel_projections::Error::store("read balances", e))
}

/// Reads one account of the active balances view: `None` when the view has no such account
/// (never opened, or not applied yet).
///
/// # Errors
///
/// A store failure.
pub async fn read_balance(
    views: &PostgresViews,
    account: &str,
) -> Result<Option<AccountRow>, keel_projections::Error> {
    let mut read = views.begin_read().await?;
    let Some(table) = read.table(Balances::NAME, "accounts").await? else {
        read.finish().await?;
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM {table} WHERE id = $1"
    ))
    .bind(account)
    .fetch_optional(read.conn())
    .await
    .map_err(|e| keel_projections::Error::store("read a balance", e))?;
    read.finish().await?;
    row.as_ref()
        .map(account_row)
        .transpose()
        .map_err(|e| keel_projections::Error::store("read a balance", e))
}

/// Reads an account's movements from the active statement view, in version order.
///
/// # Errors
///
/// A store failure.
pub async fn read_statement(
    views: &PostgresViews,
    account: &str,
) -> Result<Vec<Movement>, keel_projections::Error> {
    let mut read = views.begin_read().await?;
    let Some(table) = read.table(StatementView::NAME, "movements").await? else {
        read.finish().await?;
        return Ok(Vec::new());
    };
    let rows = sqlx::query(&format!(
        "SELECT {MOVEMENT_COLUMNS} FROM {table} WHERE account = $1 ORDER BY version"
    ))
    .bind(account)
    .fetch_all(read.conn())
    .await
    .map_err(|e| keel_projections::Error::store("read a statement", e))?;
    read.finish().await?;
    rows.iter()
        .map(movement)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| keel_projections::Error::store("read a statement", e))
}
