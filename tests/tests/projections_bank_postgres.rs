//! The bank's views in PostgreSQL (`bank::projections::postgres`) against its views in SQLite
//! and against the views computed straight from the log: the two stores run the same folds
//! through different SQL, so on one log — many batches, every kind of event — they must show
//! the same balances and statements, before and after a rebuild. The log is in PostgreSQL too,
//! on a database of its own on the server named by `KEEL_TEST_POSTGRES_URL`.

mod common;

use std::sync::Arc;

use bank::AccountEvent;
use bank::projections::{self, postgres as pg};
use common::{account_id, expected_balances, expected_movements, fill_log, guard, read_log};
use keel::store::postgres::PostgresStore;
use keel::testing::postgres;
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamId};
use keel_projections::store::postgres::PostgresViews;
use keel_projections::{Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

/// 120 accounts of 40 events over the store's partitions, applied 97 events at a time: each
/// batch holds several events of several accounts.
const ACCOUNTS: usize = 120;
const EVENTS_EACH: usize = 40;
const BATCH: usize = 97;

/// A movement as `read_statement` returns it, with its account: account, version, kind,
/// amount, offset, time.
type Line = (String, u64, String, i64, u64, i64);

/// Every movement of the active statement view in PostgreSQL, ordered by account and version.
async fn statement_lines(views: &PostgresViews) -> anyhow::Result<Vec<Line>> {
    let mut out = Vec::new();
    for i in 0..ACCOUNTS {
        let account = account_id(i);
        for m in pg::read_statement(views, &account).await? {
            out.push((account.clone(), m.version, m.kind, m.amount, m.offset, m.at));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn postgres_views_show_what_sqlite_views_and_the_log_show() -> anyhow::Result<()> {
    let url = postgres::create_database("bank_views").await;
    let log: Arc<dyn EventStore> = Arc::new(PostgresStore::connect(&url).await?);
    fill_log(&log, 0..ACCOUNTS, EVENTS_EACH, 7).await?;
    // Close a few accounts, and make one account's closing and a later deposit share a batch.
    for i in [3, 50, 99] {
        let stream = StreamId::new("account", account_id(i))?;
        let events = [AccountEvent::Closed, AccountEvent::Deposited { amount: 1 }]
            .iter()
            .map(NewEvent::from_event)
            .collect::<Result<Vec<_>, _>>()?;
        log.append(AppendRequest::new(stream, ExpectedVersion::Any, events))
            .await?;
    }
    let records = read_log(&*log).await?;
    assert_eq!(records.len(), ACCOUNTS * EVENTS_EACH + 6);
    let expected = expected_balances(&records)?;
    let expected_statement = expected_movements(&records)?
        .into_iter()
        .map(|(account, version, kind, amount, _, offset, at)| {
            Ok((
                account,
                u64::try_from(version)?,
                kind,
                amount,
                u64::try_from(offset)?,
                at,
            ))
        })
        .collect::<anyhow::Result<Vec<Line>>>()?;

    let config = RunnerConfig {
        batch_size: BATCH,
        ..RunnerConfig::default()
    };
    let (pg_projections, pg_views) =
        pg::bank_projections(Arc::clone(&log), &url, config.clone()).await?;
    for p in pg_projections.iter() {
        guard("catch up in PostgreSQL", p.catch_up()).await??;
    }
    let dir = tempfile::tempdir()?;
    let (sqlite_projections, sqlite_views) =
        projections::bank_projections(Arc::clone(&log), dir.path().join("views.db"), config)
            .await?;
    for p in sqlite_projections.iter() {
        guard("catch up in SQLite", p.catch_up()).await??;
    }

    let in_postgres = pg::read_balances(&pg_views).await?;
    assert_eq!(in_postgres, expected, "PostgreSQL views against the log");
    assert_eq!(
        projections::read_balances(&sqlite_views).await?,
        in_postgres,
        "SQLite and PostgreSQL views agree"
    );
    let closed: Vec<_> = in_postgres
        .iter()
        .filter(|r| r.status == "closed")
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(closed, [account_id(3), account_id(50), account_id(99)]);
    assert_eq!(
        pg::read_balance(&pg_views, &account_id(50)).await?.as_ref(),
        expected.iter().find(|r| r.id == account_id(50))
    );
    assert_eq!(pg::read_balance(&pg_views, "nobody").await?, None);
    assert_eq!(statement_lines(&pg_views).await?, expected_statement);
    for i in [0, 3, 77] {
        assert_eq!(
            pg::read_statement(&pg_views, &account_id(i)).await?,
            projections::read_statement(&sqlite_views, &account_id(i)).await?,
            "account {i}'s statement"
        );
    }

    // A rebuild beside the active generation, in bigger batches, lands on the same views.
    let rebuild = Runner::new(pg::Balances, Arc::clone(&log), Arc::new(pg_views.clone()));
    guard("rebuild", rebuild.rebuild(false, CancellationToken::new())).await??;
    assert_eq!(
        pg::read_balances(&pg_views).await?,
        expected,
        "after a rebuild"
    );

    pg_views.close().await;
    sqlite_views.close().await;
    Ok(())
}
