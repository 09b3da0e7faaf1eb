//! Leases through the bank's projections: several projections run side by side in one process
//! and stop cleanly, releasing their leases; and PostgreSQL's generations switch atomically
//! under a read, with keyed state and parked events. (A second runner refused while the first
//! holds the lease, zombie runners, stale checkpoints and `take_over`, on every view store, are
//! cases of the view-store suite, `keel_tests::views`.)

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bank::Bank;
use bank::projections::{Balances, read_balances};
use common::{
    account_topic, active_checkpoints, bank_wave, expected_balances, expected_movements, guard,
    heads, read_log, read_movements,
};
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Offset, Partition};
use keel_projections::store::postgres::PostgresViews;
use keel_projections::store::{CheckpointMove, Commit, Generation, ViewId, ViewStore};
use keel_projections::{Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_millis(200);

/// A one-table view `zombie` for driving a view store by hand: returns its active
/// generation. (`create` makes the table inside a batch on SQLite; memory needs nothing.)
async fn zombie_view<S: ViewStore>(
    views: &S,
    create: impl AsyncFnOnce(&mut S::Batch) -> anyhow::Result<()>,
) -> anyhow::Result<ViewId> {
    let generation: Generation = views.create_generation("zombie", 1).await?;
    let lease = views.claim("zombie", "setup", TTL).await?;
    let mut batch = views.begin(&generation.id()).await?;
    create(&mut batch).await?;
    views.commit(batch, &lease, Commit::default()).await?;
    views.activate(&generation.id()).await?;
    views.release(&lease).await?;
    Ok(generation.id())
}

fn moving(from: u64, to: u64) -> Commit {
    Commit {
        moves: vec![CheckpointMove {
            topic: account_topic(),
            partition: Partition(0),
            from: Offset(from),
            to: Offset(to),
        }],
        ..Commit::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_projections_run_side_by_side_in_one_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    let config = RunnerConfig {
        batch_size: 64,
        poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    };
    let (projections, views) =
        bank::projections::bank_projections(Arc::clone(&log), dir.path().join("views.db"), config)
            .await?;
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (projections, cancel) = (projections.clone(), cancel.clone());
        async move {
            projections
                .run(cancel)
                .await
                .into_iter()
                .map(|(name, e)| format!("{name}: {e:#}"))
                .collect::<Vec<_>>()
        }
    });

    let bank = Bank::<dyn EventStore>::new(Arc::clone(&log));
    for wave in 0..3 {
        bank_wave(&bank, 0..30 + 30 * wave, 4, wave as u64).await?;
    }
    let heads = heads(log.as_ref()).await?;
    guard("both projections catching up", async {
        for p in projections.iter() {
            loop {
                let status = p.status().await?;
                if status.active.is_some() && status.lag == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    for name in ["balances", "statement"] {
        let checkpoints: BTreeMap<u32, u64> =
            active_checkpoints(&views, log.as_ref(), name).await?;
        assert_eq!(checkpoints, heads, "{name}");
    }
    let records = read_log(log.as_ref()).await?;
    assert_eq!(read_balances(&views).await?, expected_balances(&records)?);
    assert_eq!(read_movements(&views).await?, expected_movements(&records)?);

    cancel.cancel();
    let errors = guard("stopping", running).await??;
    assert_eq!(errors, Vec::<String>::new());
    // Stopped cleanly: the leases are released, so another runner may start at once.
    let again =
        Runner::new(Balances, Arc::clone(&log), Arc::new(views.clone())).config(RunnerConfig {
            claim_timeout: Duration::ZERO,
            ..RunnerConfig::default()
        });
    guard("a new runner", again.catch_up()).await??;
    assert_eq!(
        again.progress().borrow().applied,
        0,
        "nothing left to apply"
    );
    views.close().await;
    store.close().await;
    Ok(())
}

/// A view store in a fresh database of the test server (fails, saying how to start one,
/// without `KEEL_TEST_POSTGRES_URL`).
async fn postgres_views() -> anyhow::Result<PostgresViews> {
    let url = keel::testing::postgres::create_database("views").await;
    Ok(PostgresViews::connect(&url).await?)
}

/// Generations side by side in PostgreSQL: readers see the active one only; a read begun
/// before a switch keeps its tables until it finishes (the switch waits for it); keyed state
/// and parked events commit with the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_generations_switch_atomically_under_a_read() -> anyhow::Result<()> {
    use keel_projections::keyed::KeyedStore;

    let views = postgres_views().await?;
    let first = zombie_view(&views, async |batch| {
        sqlx::query(&format!("CREATE TABLE {} (n BIGINT)", batch.table("rows")))
            .execute(batch.conn())
            .await?;
        sqlx::query(&format!("INSERT INTO {} VALUES (1)", batch.table("rows")))
            .execute(batch.conn())
            .await?;
        Ok(())
    })
    .await?;
    let second = views.create_generation("zombie", 2).await?;
    let lease = views
        .claim("zombie", "builder", Duration::from_secs(30))
        .await?;
    let mut batch = views.begin(&second.id()).await?;
    sqlx::query(&format!("CREATE TABLE {} (n BIGINT)", batch.table("rows")))
        .execute(batch.conn())
        .await?;
    sqlx::query(&format!("INSERT INTO {} VALUES (2)", batch.table("rows")))
        .execute(batch.conn())
        .await?;
    PostgresViews::setup_keyed(&mut batch).await?;
    PostgresViews::put(&mut batch, "s", "b", b"2").await?;
    PostgresViews::put(&mut batch, "s", "a", b"1").await?;
    assert_eq!(
        PostgresViews::scan(&mut batch, "s", "", 10).await?,
        [
            ("a".to_owned(), b"1".to_vec()),
            ("b".to_owned(), b"2".to_vec())
        ],
        "a batch reads its own writes, in key order"
    );
    let event = keel_projections::EventRef {
        topic: account_topic(),
        partition: Partition(0),
        offset: Offset(4),
        stream: keel::StreamId::new(account_topic().as_str(), "acc-1")?,
        version: keel::StreamVersion(1),
        event_type: "Opened".into(),
    };
    views
        .commit(
            batch,
            &lease,
            Commit {
                park: vec![keel_projections::store::Parked {
                    event: event.clone(),
                    error: "bad".into(),
                }],
                ..moving(0, 5)
            },
        )
        .await?;
    assert_eq!(views.parked(&second.id()).await?.len(), 1);

    // A read in progress on the first generation.
    let mut read = views.begin_read().await?;
    let table = read.table("zombie", "rows").await?.expect("an active view");
    let switch = {
        let views = views.clone();
        let id = second.id();
        tokio::spawn(async move { views.activate(&id).await })
    };
    let n: i64 = sqlx::query_scalar(&format!("SELECT n FROM {table}"))
        .fetch_one(read.conn())
        .await?;
    assert_eq!(n, 1, "the read sees the generation it began on");
    assert!(!switch.is_finished(), "the switch waits for the read");
    read.finish().await?;
    switch.await??;

    let mut read = views.begin_read().await?;
    let table = read.table("zombie", "rows").await?.expect("an active view");
    let n: i64 = sqlx::query_scalar(&format!("SELECT n FROM {table}"))
        .fetch_one(read.conn())
        .await?;
    read.finish().await?;
    assert_eq!(n, 2, "readers see the new generation after the switch");
    assert_eq!(
        views.read_key("zombie", "s", "b").await?,
        Some(b"2".to_vec())
    );
    let gens = views.generations("zombie").await?;
    assert_eq!(gens.len(), 1, "the old generation was dropped: {gens:?}");
    assert!(
        views.checkpoints(&first).await?.is_empty(),
        "with its checkpoints"
    );
    views.release(&lease).await?;
    views.close().await;
    Ok(())
}
