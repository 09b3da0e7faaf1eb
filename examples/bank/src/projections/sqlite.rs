//! The bank's views in SQLite ([`SqliteViews`]): the default, in the file beside the log.

use std::path::Path;
use std::sync::Arc;

use keel::{EventStore, Topic};
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};
use keel_projections::{BoxError, Envelope, Projection, Projections, Runner, RunnerConfig};
use sqlx::{QueryBuilder, Sqlite};

use super::{
    ACCOUNT_COLUMNS, AccountRow, MOVEMENT_COLUMNS, Movement, account_changes, account_row,
    account_topic, movement, movement_rows, upsert_account,
};
use crate::account::AccountEvent;

/// Rows per multi-row statement: 8 values a row stays well under SQLite's 32,766.
const ROWS_PER_STATEMENT: usize = 1000;

/// Balance per account, in SQLite table `accounts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Balances;

impl Projection for Balances {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "balances";

    fn topics(&self) -> Vec<Topic> {
        account_topic()
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, status TEXT NOT NULL, \
             balance INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID",
            view.table("accounts")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let changes = account_changes(events)?;
        let table = view.table("accounts");
        let upsert = upsert_account(&table, "max");
        for chunk in changes.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO {table} (id, owner, status, balance, version) "
            ));
            q.push_values(chunk, |mut b, c| {
                b.push_bind(c.id)
                    .push_bind(c.owner.as_str())
                    .push_bind(c.status)
                    .push_bind(c.delta)
                    .push_bind(c.version);
            });
            q.push(&upsert);
            q.build().execute(view.conn()).await?;
        }
        Ok(())
    }
}

/// Every movement of every account, in SQLite table `movements`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatementView;

impl Projection for StatementView {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "statement";

    fn topics(&self) -> Vec<Topic> {
        account_topic()
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (account TEXT NOT NULL, version INTEGER NOT NULL, kind TEXT NOT NULL, \
             amount INTEGER NOT NULL, partition_no INTEGER NOT NULL, log_offset INTEGER NOT NULL, \
             at INTEGER NOT NULL, PRIMARY KEY (account, version)) WITHOUT ROWID",
            view.table("movements")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let table = view.table("movements");
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO {table} (account, version, kind, amount, partition_no, log_offset, at) "
            ));
            q.push_values(movement_rows(chunk), |mut b, m| {
                b.push_bind(m.account)
                    .push_bind(m.version)
                    .push_bind(m.kind)
                    .push_bind(m.amount)
                    .push_bind(m.partition)
                    .push_bind(m.offset)
                    .push_bind(m.at);
            });
            q.build().execute(view.conn()).await?;
        }
        Ok(())
    }
}

/// The bank's projections over `log`, with views in the SQLite file at `views`.
///
/// # Errors
///
/// When the view store cannot be opened.
pub async fn bank_projections(
    log: Arc<dyn EventStore>,
    views: impl AsRef<Path>,
    config: RunnerConfig,
) -> Result<(Projections, SqliteViews), keel_projections::Error> {
    let store = SqliteViews::open(views).await?;
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
    views: &SqliteViews,
) -> Result<Vec<AccountRow>, keel_projections::Error> {
    // One read transaction: a rebuild switching generations cannot drop the table between
    // the lookup and the query.
    let mut read = views.begin_read().await?;
    let Some(table) = read.table(Balances::NAME, "accounts").await? else {
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
    views: &SqliteViews,
    account: &str,
) -> Result<Option<AccountRow>, keel_projections::Error> {
    let mut read = views.begin_read().await?;
    let Some(table) = read.table(Balances::NAME, "accounts").await? else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM {table} WHERE id = ?"
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
    views: &SqliteViews,
    account: &str,
) -> Result<Vec<Movement>, keel_projections::Error> {
    let mut read = views.begin_read().await?;
    let Some(table) = read.table(StatementView::NAME, "movements").await? else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(&format!(
        "SELECT {MOVEMENT_COLUMNS} FROM {table} WHERE account = ? ORDER BY version"
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
