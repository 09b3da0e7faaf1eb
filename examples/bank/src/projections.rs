//! The bank's read models, fed from the log by `keel-projections`.
//!
//! - [`Balances`]: one row per account — owner, status, balance, version — in SQLite.
//! - [`StatementView`]: one row per movement of every account, in SQLite.
//! - [`BalancesInMemory`]: the balances as a map in memory (for caches, tests and benches).
//!
//! Each batch of events is folded in memory first and written with multi-row statements:
//! a batch of thousands of deposits to a few accounts becomes a few upserts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use keel::{EventStore, Topic};
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};
use keel_projections::{BoxError, Envelope, Projection, Projections, Runner, RunnerConfig};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::account::{Account, AccountEvent};

/// Rows per multi-row statement: 8 values a row stays well under SQLite's 32,766.
const ROWS_PER_STATEMENT: usize = 1000;

fn account_topic() -> Vec<Topic> {
    vec![
        Topic::new(<Account as keel::Aggregate>::KIND)
            .unwrap_or_else(|_| unreachable!("the kind is a valid topic")),
    ]
}

fn signed(amount: u64) -> i64 {
    i64::try_from(amount).unwrap_or(i64::MAX)
}

/// An account as the balances view shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AccountRow {
    /// The account id.
    pub id: String,
    /// Who owns it.
    pub owner: String,
    /// `open` or `closed`.
    pub status: String,
    /// The balance.
    pub balance: i64,
    /// The account stream's version this row reflects.
    pub version: u64,
}

/// One account's changes within a batch.
#[derive(Default)]
struct Change {
    owner: Option<String>,
    status: Option<&'static str>,
    /// Summed in `i128`: each balance fits `i64`, but a batch's deposits and withdrawals
    /// together may not.
    delta: i128,
    version: u64,
}

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
        let mut changes: HashMap<&str, Change> = HashMap::new();
        for e in events {
            let change = changes.entry(e.id()).or_default();
            change.version = e.version().0;
            match &e.event {
                AccountEvent::Opened { owner, .. } => {
                    change.owner = Some(owner.clone());
                    change.status = Some("open");
                }
                AccountEvent::Deposited { amount } => change.delta += i128::from(*amount),
                AccountEvent::Withdrawn { amount } => change.delta -= i128::from(*amount),
                AccountEvent::Closed => change.status = Some("closed"),
            }
        }
        let table = view.table("accounts");
        let mut rows = Vec::with_capacity(changes.len());
        for (id, change) in changes {
            // A net change beyond i64 fails the batch; the runner then applies its events
            // one at a time, each of which fits.
            let delta = i64::try_from(change.delta)
                .map_err(|_| format!("the net change to account {id} in one batch overflows"))?;
            rows.push((id, change, delta));
        }
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO {table} (id, owner, status, balance, version) "
            ));
            q.push_values(chunk, |mut b, (id, c, delta)| {
                b.push_bind(*id)
                    .push_bind(c.owner.clone().unwrap_or_default())
                    .push_bind(c.status.unwrap_or("open"))
                    .push_bind(*delta)
                    .push_bind(i64::try_from(c.version).unwrap_or(i64::MAX));
            });
            // `owner`/`status` change only when the batch held an `Opened`/`Closed`.
            q.push(format!(
                " ON CONFLICT (id) DO UPDATE SET \
                 owner = CASE WHEN excluded.owner <> '' THEN excluded.owner ELSE {table}.owner END, \
                 status = CASE WHEN excluded.status = 'closed' OR {table}.status <> 'closed' \
                          THEN excluded.status ELSE {table}.status END, \
                 balance = {table}.balance + excluded.balance, \
                 version = max({table}.version, excluded.version)"
            ));
            q.build().execute(view.conn()).await?;
        }
        Ok(())
    }
}

/// A movement as the statement view shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Movement {
    /// The account's stream version of the event.
    pub version: u64,
    /// `opened`, `deposit`, `withdrawal` or `closed`.
    pub kind: String,
    /// The signed amount (0 for opening and closing).
    pub amount: i64,
    /// Where the event sits in the log.
    pub offset: u64,
    /// When it was decided, in microseconds since the Unix epoch.
    pub at: i64,
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
            q.push_values(chunk, |mut b, e| {
                let (kind, amount) = match &e.event {
                    AccountEvent::Opened { .. } => ("opened", 0),
                    AccountEvent::Deposited { amount } => ("deposit", signed(*amount)),
                    AccountEvent::Withdrawn { amount } => ("withdrawal", -signed(*amount)),
                    AccountEvent::Closed => ("closed", 0),
                };
                b.push_bind(e.id())
                    .push_bind(i64::try_from(e.version().0).unwrap_or(i64::MAX))
                    .push_bind(kind)
                    .push_bind(amount)
                    .push_bind(i64::from(e.partition().0))
                    .push_bind(i64::try_from(e.offset().0).unwrap_or(i64::MAX))
                    .push_bind(e.record.timestamp.as_micros());
            });
            q.build().execute(view.conn()).await?;
        }
        Ok(())
    }
}

/// Balance per account id, in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct BalancesInMemory;

impl Projection for BalancesInMemory {
    type Event = AccountEvent;
    type Store = MemoryViews<HashMap<String, i64>>;
    const NAME: &'static str = "balances_in_memory";

    fn topics(&self) -> Vec<Topic> {
        account_topic()
    }

    async fn apply(
        &self,
        view: &mut MemoryBatch<HashMap<String, i64>>,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            let delta = match e.event {
                AccountEvent::Deposited { amount } => signed(amount),
                AccountEvent::Withdrawn { amount } => -signed(amount),
                AccountEvent::Opened { .. } | AccountEvent::Closed => 0,
            };
            match view.get_mut(e.id()) {
                Some(balance) => *balance += delta,
                None => {
                    view.insert(e.id().to_owned(), delta);
                }
            }
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
        "SELECT id, owner, status, balance, version FROM {table} ORDER BY id"
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
        "SELECT id, owner, status, balance, version FROM {table} WHERE id = ?"
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

fn account_row(r: &sqlx::sqlite::SqliteRow) -> Result<AccountRow, sqlx::Error> {
    Ok(AccountRow {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        status: r.try_get(2)?,
        balance: r.try_get(3)?,
        version: u64::try_from(r.try_get::<i64, _>(4)?).unwrap_or(0),
    })
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
        "SELECT version, kind, amount, log_offset, at FROM {table} WHERE account = ? ORDER BY version"
    ))
    .bind(account)
    .fetch_all(read.conn())
    .await
    .map_err(|e| keel_projections::Error::store("read a statement", e))?;
    read.finish().await?;
    rows.iter()
        .map(|r| {
            Ok(Movement {
                version: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
                kind: r.try_get(1)?,
                amount: r.try_get(2)?,
                offset: u64::try_from(r.try_get::<i64, _>(3)?).unwrap_or(0),
                at: r.try_get(4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| keel_projections::Error::store("read a statement", e))
}
