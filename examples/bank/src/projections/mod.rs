//! The bank's read models, fed from the log by `keel-projections`.
//!
//! - [`Balances`]: one row per account — owner, status, balance, version — in SQLite.
//! - [`StatementView`]: one row per movement of every account, in SQLite.
//! - [`postgres::Balances`] and [`postgres::StatementView`]: the same two views in
//!   PostgreSQL (the bank's views when it runs with `--database-url`), read with
//!   [`postgres::read_balances`], [`postgres::read_balance`] and [`postgres::read_statement`].
//! - [`BalancesInMemory`]: the balances as a map in memory (for caches, tests and benches).
//!
//! Both stores run the same projection logic, here: each batch of events is folded in memory
//! first (`account_changes`, `movement_rows`) and written with multi-row statements, so a
//! batch of thousands of deposits to a few accounts becomes a few upserts. Only the SQL differs
//! (SQLite binds rows of values, PostgreSQL whole columns through `unnest`).

use std::collections::HashMap;

use keel::Topic;
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::{BoxError, Envelope, Projection};

use crate::account::{Account, AccountEvent};

pub mod postgres;
pub mod sqlite;

pub use sqlite::{
    Balances, StatementView, bank_projections, read_balance, read_balances, read_statement,
};

/// The topics every bank projection reads: the account topic.
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

/// One account's net change within a batch: the row the balances view upserts.
///
/// The upsert keeps the stored owner when `owner` is empty (no `Opened` in the batch), keeps
/// `closed` once set, adds `delta` to the balance and keeps the higher version.
struct AccountChange<'a> {
    id: &'a str,
    /// The owner when the batch opened the account, else empty.
    owner: String,
    /// `closed` when the batch closed the account, else `open`.
    status: &'static str,
    delta: i64,
    version: i64,
}

/// Folds a batch into one change per account.
///
/// # Errors
///
/// When an account's net change in the batch overflows `i64`; the runner then applies the
/// batch's events one at a time, each of which fits.
fn account_changes(events: &[Envelope<AccountEvent>]) -> Result<Vec<AccountChange<'_>>, BoxError> {
    /// Summed in `i128`: each balance fits `i64`, but a batch's deposits and withdrawals
    /// together may not.
    #[derive(Default)]
    struct Fold {
        owner: Option<String>,
        status: Option<&'static str>,
        delta: i128,
        version: u64,
    }
    let mut folds: HashMap<&str, Fold> = HashMap::new();
    for e in events {
        let fold = folds.entry(e.id()).or_default();
        fold.version = e.version().0;
        match &e.event {
            AccountEvent::Opened { owner, .. } => {
                fold.owner = Some(owner.clone());
                fold.status = Some("open");
            }
            AccountEvent::Deposited { amount } => fold.delta += i128::from(*amount),
            AccountEvent::Withdrawn { amount } => fold.delta -= i128::from(*amount),
            AccountEvent::Closed => fold.status = Some("closed"),
        }
    }
    folds
        .into_iter()
        .map(|(id, fold)| {
            let delta = i64::try_from(fold.delta)
                .map_err(|_| format!("the net change to account {id} in one batch overflows"))?;
            Ok(AccountChange {
                id,
                owner: fold.owner.unwrap_or_default(),
                status: fold.status.unwrap_or("open"),
                delta,
                version: i64::try_from(fold.version).unwrap_or(i64::MAX),
            })
        })
        .collect()
}

/// The `ON CONFLICT` clause of the balances upsert into `table`, whose new row is
/// `excluded`; `greatest` is the SQL dialect's two-argument maximum (`max` in SQLite,
/// `GREATEST` in PostgreSQL).
fn upsert_account(table: &str, greatest: &str) -> String {
    // `owner`/`status` change only when the batch held an `Opened`/`Closed`.
    format!(
        " ON CONFLICT (id) DO UPDATE SET \
         owner = CASE WHEN excluded.owner <> '' THEN excluded.owner ELSE {table}.owner END, \
         status = CASE WHEN excluded.status = 'closed' OR {table}.status <> 'closed' \
                  THEN excluded.status ELSE {table}.status END, \
         balance = {table}.balance + excluded.balance, \
         version = {greatest}({table}.version, excluded.version)"
    )
}

/// A row of the statement view.
struct MovementRow<'a> {
    account: &'a str,
    version: i64,
    kind: &'static str,
    amount: i64,
    partition: i64,
    offset: i64,
    at: i64,
}

/// The statement view's rows for a batch, one per event.
fn movement_rows(events: &[Envelope<AccountEvent>]) -> impl Iterator<Item = MovementRow<'_>> {
    events.iter().map(|e| {
        let (kind, amount) = match &e.event {
            AccountEvent::Opened { .. } => ("opened", 0),
            AccountEvent::Deposited { amount } => ("deposit", signed(*amount)),
            AccountEvent::Withdrawn { amount } => ("withdrawal", -signed(*amount)),
            AccountEvent::Closed => ("closed", 0),
        };
        MovementRow {
            account: e.id(),
            version: i64::try_from(e.version().0).unwrap_or(i64::MAX),
            kind,
            amount,
            partition: i64::from(e.partition().0),
            offset: i64::try_from(e.offset().0).unwrap_or(i64::MAX),
            at: e.record.timestamp.as_micros(),
        }
    })
}

/// The columns both stores read an account from, in [`account_row`]'s order.
const ACCOUNT_COLUMNS: &str = "id, owner, status, balance, version";
/// The columns both stores read a movement from, in [`movement`]'s order.
const MOVEMENT_COLUMNS: &str = "version, kind, amount, log_offset, at";

/// An [`AccountRow`] from a row of [`ACCOUNT_COLUMNS`], on either store.
fn account_row<R: sqlx::Row>(r: &R) -> Result<AccountRow, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AccountRow {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        status: r.try_get(2)?,
        balance: r.try_get(3)?,
        version: u64::try_from(r.try_get::<i64, _>(4)?).unwrap_or(0),
    })
}

/// A [`Movement`] from a row of [`MOVEMENT_COLUMNS`], on either store.
fn movement<R: sqlx::Row>(r: &R) -> Result<Movement, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Movement {
        version: u64::try_from(r.try_get::<i64, _>(0)?).unwrap_or(0),
        kind: r.try_get(1)?,
        amount: r.try_get(2)?,
        offset: u64::try_from(r.try_get::<i64, _>(3)?).unwrap_or(0),
        at: r.try_get(4)?,
    })
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
