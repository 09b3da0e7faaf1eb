//! Regression tests for faults a review found in the projection runner and the SQLite view
//! store: a version bump while writes continue, topics created while a runner is busy, and one
//! runner's `run` and `rebuild` sharing a lease. (A commit into a dropped generation is a case
//! of the view-store suite, `keel_tests::views`, run on every store.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bank::AccountEvent;
use common::{HANG, account_stream, account_topic, guard};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Topic};
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};
use keel_projections::{BoxError, Envelope, Error, Projection, Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

async fn deposit(log: &dyn EventStore, account: &str, amount: u64) -> anyhow::Result<()> {
    let event = NewEvent::from_event(&AccountEvent::Deposited { amount })?;
    log.append(AppendRequest::new(
        account_stream(account),
        ExpectedVersion::Any,
        vec![event],
    ))
    .await?;
    Ok(())
}

/// Version 1 of a deposit counter: table `counts (n)`.
struct CountV1;

/// Version 2 reshapes the table: `counts (deposits, total)`. Its SQL does not fit version 1's
/// table.
struct CountV2;

fn count_topics() -> Vec<Topic> {
    vec![account_topic()]
}

impl Projection for CountV1 {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "deposit_count";
    const VERSION: u32 = 1;

    fn topics(&self) -> Vec<Topic> {
        count_topics()
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!("CREATE TABLE {} (n INTEGER NOT NULL)", view.table("counts"));
        sqlx::query(&sql).execute(view.conn()).await?;
        let sql = format!("INSERT INTO {} (n) VALUES (0)", view.table("counts"));
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let n = i64::try_from(events.len())?;
        let sql = format!("UPDATE {} SET n = n + ?", view.table("counts"));
        sqlx::query(&sql).bind(n).execute(view.conn()).await?;
        Ok(())
    }
}

impl Projection for CountV2 {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "deposit_count";
    const VERSION: u32 = 2;

    fn topics(&self) -> Vec<Topic> {
        count_topics()
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (deposits INTEGER NOT NULL, total INTEGER NOT NULL)",
            view.table("counts")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        let sql = format!(
            "INSERT INTO {} (deposits, total) VALUES (0, 0)",
            view.table("counts")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let mut total = 0i64;
        for e in events {
            if let AccountEvent::Deposited { amount } = e.event {
                total += i64::try_from(amount)?;
            }
        }
        let sql = format!(
            "UPDATE {} SET deposits = deposits + ?, total = total + ?",
            view.table("counts")
        );
        sqlx::query(&sql)
            .bind(i64::try_from(events.len())?)
            .bind(total)
            .execute(view.conn())
            .await?;
        Ok(())
    }
}

/// A version bump whose new SQL does not fit the old tables must still switch readers while
/// appends keep coming: the old generation is not fed with the new code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_switches_while_writes_continue() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    for i in 0..2000u64 {
        deposit(&*log, &format!("a{}", i % 50), 1).await?;
    }
    let dyn_log: Arc<dyn EventStore> = log.clone();
    Runner::new(CountV1, Arc::clone(&dyn_log), Arc::clone(&views))
        .catch_up()
        .await?;

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (log, writing) = (Arc::clone(&log), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut written = 0u64;
            while writing.load(Ordering::Relaxed) {
                deposit(&*log, &format!("b{}", written % 7), 2).await?;
                written += 1;
            }
            anyhow::Ok(written)
        })
    };
    let v2 = Runner::new(CountV2, Arc::clone(&dyn_log), Arc::clone(&views)).config(RunnerConfig {
        batch_size: 100,
        ..RunnerConfig::default()
    });
    let built = guard("the v2 build", v2.catch_up()).await;
    writing.store(false, Ordering::Relaxed);
    let written = writer.await??;
    built??;
    assert!(written > 0, "appends went on during the build");

    let status = v2.status().await?;
    let active = status.active.expect("an active generation");
    assert_eq!(active.version, 2, "readers were switched to version 2");
    v2.catch_up().await?;
    let table = views
        .table("deposit_count", "counts")
        .await?
        .expect("the v2 table");
    let (deposits, total): (i64, i64) =
        sqlx::query_as(&format!("SELECT deposits, total FROM {table}"))
            .fetch_one(views.pool())
            .await?;
    let written = i64::try_from(written)?;
    assert_eq!(deposits, 2000 + written, "every event counted once");
    assert_eq!(total, 2000 + 2 * written, "every amount summed once");
    Ok(())
}

/// Counts every event it sees.
struct Counter;

impl Projection for Counter {
    type Event = AccountEvent;
    type Store = MemoryViews<u64>;
    const NAME: &'static str = "counter";

    fn topics(&self) -> Vec<Topic> {
        vec![account_topic()]
    }

    async fn apply(
        &self,
        view: &mut MemoryBatch<u64>,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        **view += events.len() as u64;
        Ok(())
    }
}

/// A runner that starts before its topic exists finds it even when local commits keep waking
/// it more often than its poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_while_commits_keep_coming_is_found() -> anyhow::Result<()> {
    let log = Arc::new(MemoryStore::with_default_partitions(1));
    let views = Arc::new(MemoryViews::<u64>::default());
    let runner = Arc::new(
        Runner::new(Counter, log.clone(), Arc::clone(&views)).config(RunnerConfig {
            poll: Duration::from_millis(200),
            ..RunnerConfig::default()
        }),
    );
    let cancel = CancellationToken::new();
    let running = {
        let (runner, cancel) = (Arc::clone(&runner), cancel.clone());
        tokio::spawn(async move { runner.run(cancel).await })
    };
    // Let the runner start and look for its (not yet existing) topic.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let mut seen_while_writing = false;
    while started.elapsed() < HANG / 3 {
        deposit(&*log, "a", 1).await?;
        if views.read("counter", |n| *n).await.unwrap_or(0) > 0 {
            seen_while_writing = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    running.await??;
    assert!(
        seen_while_writing,
        "the runner found the new topic while commits kept coming every 5 ms"
    );
    Ok(())
}

/// Two operations of one runner are two claims: a `rebuild` cannot slip under the lease its
/// own runner's `run` holds (and so cannot drop the generation `run` feeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runners_run_and_rebuild_do_not_share_a_lease() -> anyhow::Result<()> {
    let log = Arc::new(MemoryStore::with_default_partitions(1));
    deposit(&*log, "a", 1).await?;
    let views = Arc::new(MemoryViews::<u64>::default());
    let runner = Arc::new(
        Runner::new(Counter, log.clone(), Arc::clone(&views)).config(RunnerConfig {
            claim_timeout: Duration::from_millis(300),
            ..RunnerConfig::default()
        }),
    );
    let cancel = CancellationToken::new();
    let running = {
        let (runner, cancel) = (Arc::clone(&runner), cancel.clone());
        tokio::spawn(async move { runner.run(cancel).await })
    };
    guard("the first catch-up", async {
        while views.read("counter", |n| *n).await != Some(1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    let rebuild = runner.rebuild(false, CancellationToken::new()).await;
    assert!(
        matches!(&rebuild, Err(Error::Held { .. })),
        "the rebuild waited for the lease and gave up: {rebuild:?}"
    );
    deposit(&*log, "a", 1).await?;
    guard("the running runner goes on", async {
        while views.read("counter", |n| *n).await != Some(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    cancel.cancel();
    running.await??;
    Ok(())
}
