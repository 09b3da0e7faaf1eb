//! Rebuilds and restarts of projections: a rebuild from scratch (side by side or in place)
//! equals the incrementally maintained view; during a side-by-side rebuild readers keep the
//! complete old view until one switch to the new one, and a read racing the switch still
//! answers; a version bump rebuilds beside the old version on start and an older version
//! refuses to run; a restart resumes exactly at the last commit.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bank::projections::{Balances, BalancesInMemory, StatementView, read_balances};
use bank::{AccountEvent, Bank};
use common::{
    account_topic, active, bank_wave, expected_balance_map, expected_balances, expected_movements,
    fill_log, guard, read_log, read_movements, tables_of,
};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Topic};
use keel_projections::store::memory::MemoryViews;
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};
use keel_projections::store::{ViewState, ViewStore as _};
use keel_projections::{
    AnyProjection, BoxError, Envelope, Error, Projection, Runner, RunnerConfig, Status,
};
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

/// Polls the projection's status until the code's version is active, nothing is being
/// built beside it, and it has no lag.
async fn caught_up<P: Projection>(runner: &Runner<P>) -> anyhow::Result<Status> {
    guard(&format!("{} catching up", P::NAME), async {
        loop {
            let status = runner.status().await?;
            if status
                .active
                .as_ref()
                .is_some_and(|g| g.version == P::VERSION)
                && status.building.is_none()
                && status.lag == 0
            {
                return anyhow::Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}

/// A runner configuration that tails closely with small batches.
fn tailing() -> RunnerConfig {
    RunnerConfig {
        batch_size: 64,
        poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    }
}

/// Starts `runner.run` in a task.
fn spawn_run<P: Projection>(
    runner: &Arc<Runner<P>>,
    cancel: &CancellationToken,
) -> tokio::task::JoinHandle<keel_projections::Result<()>> {
    let (runner, cancel) = (Arc::clone(runner), cancel.clone());
    tokio::spawn(async move { runner.run(cancel).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_side_by_side_or_in_place_equals_the_incremental_sqlite_views()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let balances =
        Arc::new(Runner::new(Balances, Arc::clone(&log), Arc::clone(&views)).config(tailing()));
    let statement = Arc::new(
        Runner::new(StatementView, Arc::clone(&log), Arc::clone(&views)).config(tailing()),
    );

    // Incrementally: both tail the log while commands arrive in waves.
    let cancel = CancellationToken::new();
    let tails = [
        spawn_run(&balances, &cancel),
        spawn_run(&statement, &cancel),
    ];
    let bank = Bank::<dyn EventStore>::new(Arc::clone(&log));
    let mut written = 0;
    for wave in 0..4 {
        written += bank_wave(&bank, 0..40 + 20 * wave, 5, wave as u64).await?;
    }
    caught_up(&balances).await?;
    caught_up(&statement).await?;
    cancel.cancel();
    for tail in tails {
        guard("a cancelled runner", tail).await???;
    }
    let records = read_log(log.as_ref()).await?;
    assert_eq!(records.len() as u64, written);
    let incremental = read_balances(&views).await?;
    let movements = read_movements(&views).await?;
    assert_eq!(incremental.len(), 100);
    assert_eq!(incremental, expected_balances(&records)?);
    assert_eq!(movements, expected_movements(&records)?);

    // From scratch, side by side then in place: the same views, in a new generation.
    for in_place in [false, true] {
        let runners: [(&str, &dyn AnyProjection); 2] = [
            ("accounts", balances.as_ref()),
            ("movements", statement.as_ref()),
        ];
        for (table, runner) in runners {
            let name = runner.name();
            let before = active(views.as_ref(), name).await?.map(|g| g.generation);
            guard(
                "a rebuild",
                runner.rebuild(in_place, CancellationToken::new()),
            )
            .await??;
            let after = active(views.as_ref(), name).await?.map(|g| g.generation);
            assert_eq!(after, before.map(|g| g + 1), "{name}, in place: {in_place}");
            let generation = after.unwrap_or_default();
            assert_eq!(
                tables_of(&views, name).await?,
                [format!("{name}__g{generation}__{table}")],
                "only the active generation's tables are left"
            );
        }
        assert_eq!(
            read_balances(&views).await?,
            incremental,
            "in place: {in_place}"
        );
        assert_eq!(
            read_movements(&views).await?,
            movements,
            "in place: {in_place}"
        );
    }

    // And the rebuilt views go on from where the rebuild stopped.
    bank_wave(&bank, 0..120, 3, 99).await?;
    guard("catch_up", balances.catch_up()).await??;
    guard("catch_up", statement.catch_up()).await??;
    let records = read_log(log.as_ref()).await?;
    assert_eq!(read_balances(&views).await?, expected_balances(&records)?);
    assert_eq!(read_movements(&views).await?, expected_movements(&records)?);
    views.close().await;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_side_by_side_or_in_place_equals_the_incremental_memory_view()
-> anyhow::Result<()> {
    let log: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let views = Arc::new(MemoryViews::<HashMap<String, i64>>::new());
    let runner = Arc::new(
        Runner::new(BalancesInMemory, Arc::clone(&log), Arc::clone(&views)).config(tailing()),
    );
    let read = || views.read(BalancesInMemory::NAME, HashMap::clone);

    let cancel = CancellationToken::new();
    let tail = spawn_run(&runner, &cancel);
    let bank = Bank::<dyn EventStore>::new(Arc::clone(&log));
    for wave in 0..4 {
        bank_wave(&bank, 0..40 + 20 * wave, 5, wave as u64).await?;
    }
    caught_up(&runner).await?;
    cancel.cancel();
    guard("a cancelled runner", tail).await???;
    let incremental = read()
        .await
        .ok_or_else(|| anyhow::anyhow!("no active view"))?;
    assert_eq!(incremental.len(), 100);
    assert_eq!(
        incremental,
        expected_balance_map(&read_log(log.as_ref()).await?)?
    );

    for in_place in [false, true] {
        let before = active(views.as_ref(), BalancesInMemory::NAME).await?;
        guard(
            "a rebuild",
            runner.rebuild(in_place, CancellationToken::new()),
        )
        .await??;
        let after = active(views.as_ref(), BalancesInMemory::NAME).await?;
        assert_eq!(
            after.map(|g| g.generation),
            before.map(|g| g.generation + 1),
            "in place: {in_place}"
        );
        assert_eq!(
            read().await,
            Some(incremental.clone()),
            "in place: {in_place}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_a_side_by_side_rebuild_see_the_whole_old_view_until_one_switch()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    let total = fill_log(&log, 0..250, 200, 11).await?;
    assert_eq!(total, 50_000);
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let config = RunnerConfig {
        batch_size: 500,
        ..RunnerConfig::default()
    };
    let runner =
        Arc::new(Runner::new(Balances, Arc::clone(&log), Arc::clone(&views)).config(config));
    guard("the first build", runner.catch_up()).await??;
    let full = read_balances(&views).await?;
    assert_eq!(full, expected_balances(&read_log(log.as_ref()).await?)?);
    let old = views
        .table("balances", "accounts")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no active balances"))?;

    let rebuild = tokio::spawn({
        let runner = Arc::clone(&runner);
        async move { runner.rebuild(false, CancellationToken::new()).await }
    });
    // No writes meanwhile: every answer must be the whole view, old or new.
    let mut tables = vec![old.clone()];
    let (mut reads, mut during) = (0u64, 0u64);
    guard("reading during the rebuild", async {
        loop {
            let finished = rebuild.is_finished();
            let building = views
                .generations("balances")
                .await?
                .iter()
                .any(|g| g.state == ViewState::Building);
            let table = views
                .table("balances", "accounts")
                .await?
                .ok_or_else(|| anyhow::anyhow!("no active balances during the rebuild"))?;
            let rows = read_balances(&views)
                .await
                .map_err(|e| anyhow::anyhow!("read {reads} failed during the rebuild: {e:#?}"))?;
            assert_eq!(rows, full, "read {reads} (table {table}) is the whole view");
            reads += 1;
            if building && table == old {
                during += 1;
            }
            if tables.last() != Some(&table) {
                tables.push(table);
            }
            if finished {
                return anyhow::Ok(());
            }
        }
    })
    .await??;
    guard("the rebuild", rebuild).await???;
    assert_eq!(tables.len(), 2, "one switch from old to new: {tables:?}");
    assert_ne!(tables[0], tables[1]);
    assert!(
        during > 0,
        "some reads ran while the new generation was being built ({reads} reads in all)"
    );
    assert_eq!(read_balances(&views).await?, full);
    println!("{during} of {reads} reads during the build");
    views.close().await;
    store.close().await;
    Ok(())
}

/// Readers racing the switch: each `read_balances` resolves the active table, then queries
/// it. A rebuild that switches and drops the old generation between the two must not make
/// the read fail. Several readers and many rebuilds make the race happen, not just
/// possible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_the_switch_of_side_by_side_rebuilds_always_answer() -> anyhow::Result<()> {
    const READERS: usize = 3;
    const REBUILDS: usize = 20;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    fill_log(&log, 0..50, 20, 13).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let runner = Runner::new(Balances, Arc::clone(&log), Arc::clone(&views));
    guard("the first build", runner.catch_up()).await??;
    let full = Arc::new(read_balances(&views).await?);
    assert_eq!(full.len(), 50);

    let stop = CancellationToken::new();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (views, full, stop) = (Arc::clone(&views), Arc::clone(&full), stop.clone());
            tokio::spawn(async move {
                let (mut reads, mut failures) = (0u64, Vec::new());
                while !stop.is_cancelled() {
                    match read_balances(&views).await {
                        Ok(rows) => {
                            assert_eq!(rows, *full, "read {reads} is the whole view");
                            reads += 1;
                        }
                        Err(e) => failures.push(format!("{e:#?}")),
                    }
                }
                (reads, failures)
            })
        })
        .collect();
    for _ in 0..REBUILDS {
        guard("a rebuild", runner.rebuild(false, CancellationToken::new())).await??;
    }
    stop.cancel();
    let (mut reads, mut failures) = (0, Vec::new());
    for reader in readers {
        let (r, f) = guard("a reader", reader).await??;
        reads += r;
        failures.extend(f);
    }
    assert!(reads > 0);
    assert!(
        failures.is_empty(),
        "{} of {} reads failed across {REBUILDS} switches; the first: {}",
        failures.len(),
        reads + failures.len() as u64,
        failures[0]
    );
    assert_eq!(
        active(views.as_ref(), "balances")
            .await?
            .map(|g| g.generation),
        Some(1 + REBUILDS as u64)
    );
    views.close().await;
    store.close().await;
    Ok(())
}

/// Sum and count of movements per account, in table `totals`; each row names the version
/// of the code that built it.
struct Tally<const V: u32>;

impl<const V: u32> Projection for Tally<V> {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "tally";
    const VERSION: u32 = V;

    fn topics(&self) -> Vec<Topic> {
        vec![account_topic()]
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (account TEXT PRIMARY KEY, total INTEGER NOT NULL, \
             events INTEGER NOT NULL, built_by INTEGER NOT NULL)",
            view.table("totals")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        let table = view.table("totals");
        for e in events {
            let delta = match e.event {
                AccountEvent::Deposited { amount } => i64::try_from(amount)?,
                AccountEvent::Withdrawn { amount } => -i64::try_from(amount)?,
                AccountEvent::Opened { .. } | AccountEvent::Closed => 0,
            };
            sqlx::query(&format!(
                "INSERT INTO {table} (account, total, events, built_by) VALUES (?, ?, 1, ?) \
                 ON CONFLICT (account) DO UPDATE SET total = total + excluded.total, \
                 events = events + 1"
            ))
            .bind(e.id())
            .bind(delta)
            .bind(i64::from(V))
            .execute(view.conn())
            .await?;
        }
        Ok(())
    }
}

/// The tally view: account → (total, events, built by).
async fn read_tally(views: &SqliteViews) -> anyhow::Result<HashMap<String, (i64, u64, u32)>> {
    let table = views
        .table("tally", "totals")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no active tally"))?;
    let rows = sqlx::query(&format!(
        "SELECT account, total, events, built_by FROM {table}"
    ))
    .fetch_all(views.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                (
                    r.try_get(1)?,
                    u64::try_from(r.try_get::<i64, _>(2)?)?,
                    u32::try_from(r.try_get::<i64, _>(3)?)?,
                ),
            ))
        })
        .collect()
}

/// What the tally built by version `v` must hold for the log.
async fn expected_tally(
    log: &dyn EventStore,
    v: u32,
) -> anyhow::Result<HashMap<String, (i64, u64, u32)>> {
    Ok(expected_balances(&read_log(log).await?)?
        .into_iter()
        .map(|r| (r.id, (r.balance, r.version, v)))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_rebuilds_beside_the_old_version_and_an_older_version_refuses_to_run()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    fill_log(&log, 0..50, 20, 5).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);

    guard(
        "v1",
        Runner::new(Tally::<1>, Arc::clone(&log), Arc::clone(&views)).catch_up(),
    )
    .await??;
    let generations = views.generations("tally").await?;
    assert_eq!(
        generations
            .iter()
            .map(|g| (g.generation, g.version, g.state))
            .collect::<Vec<_>>(),
        [(1, 1, ViewState::Active)]
    );
    assert_eq!(
        read_tally(&views).await?,
        expected_tally(log.as_ref(), 1).await?
    );

    // More events, then version 2 starts: a new generation, built from the start of the log.
    fill_log(&log, 50..60, 20, 6).await?;
    guard(
        "v2",
        Runner::new(Tally::<2>, Arc::clone(&log), Arc::clone(&views)).catch_up(),
    )
    .await??;
    let generations = views.generations("tally").await?;
    assert_eq!(
        generations
            .iter()
            .map(|g| (g.generation, g.version, g.state))
            .collect::<Vec<_>>(),
        [(2, 2, ViewState::Active)]
    );
    assert_eq!(tables_of(&views, "tally").await?, ["tally__g2__totals"]);
    let tally = read_tally(&views).await?;
    assert_eq!(tally.len(), 60);
    assert_eq!(tally, expected_tally(log.as_ref(), 2).await?);

    // The old code refuses to go back, and changes nothing.
    let refused = Runner::new(Tally::<1>, Arc::clone(&log), Arc::clone(&views))
        .catch_up()
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::VersionBehind { ref projection, stored: 2, code: 1 }) if projection == "tally"
        ),
        "{refused:?}"
    );
    assert_eq!(read_tally(&views).await?, tally);

    // `run` does the same on start: version 3 builds beside 2, switches, then tails.
    let v3 =
        Arc::new(Runner::new(Tally::<3>, Arc::clone(&log), Arc::clone(&views)).config(tailing()));
    let cancel = CancellationToken::new();
    let task = spawn_run(&v3, &cancel);
    caught_up(&v3).await?;
    fill_log(&log, 60..70, 20, 7).await?;
    let status = caught_up(&v3).await?;
    cancel.cancel();
    guard("run v3", task).await???;
    assert_eq!(
        status.active.map(|g| (g.generation, g.version)),
        Some((3, 3))
    );
    assert_eq!(tables_of(&views, "tally").await?, ["tally__g3__totals"]);
    assert_eq!(
        read_tally(&views).await?,
        expected_tally(log.as_ref(), 3).await?
    );
    views.close().await;
    store.close().await;
    Ok(())
}

/// Records every event it is fed (outside any transaction) and inserts one row per event
/// (a second insert of one event would fail on the primary key).
struct Recorder {
    fed: Arc<Mutex<Vec<(u32, u64)>>>,
}

impl Projection for Recorder {
    type Event = AccountEvent;
    type Store = SqliteViews;
    const NAME: &'static str = "recorder";

    fn topics(&self) -> Vec<Topic> {
        vec![account_topic()]
    }

    async fn setup(&self, view: &mut SqliteBatch) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (part INTEGER NOT NULL, off INTEGER NOT NULL, PRIMARY KEY (part, off))",
            view.table("seen")
        );
        sqlx::query(&sql).execute(view.conn()).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut SqliteBatch,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        self.fed
            .lock()
            .map_err(|_| "poisoned")?
            .extend(events.iter().map(|e| (e.partition().0, e.offset().0)));
        let table = view.table("seen");
        for e in events {
            sqlx::query(&format!("INSERT INTO {table} (part, off) VALUES (?, ?)"))
                .bind(i64::from(e.partition().0))
                .bind(i64::try_from(e.offset().0)?)
                .execute(view.conn())
                .await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_exactly_where_the_last_commit_left_off() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let config = RunnerConfig {
        batch_size: 100,
        ..RunnerConfig::default()
    };
    let positions = |records: &[keel::RecordedEvent]| -> Vec<(u32, u64)> {
        let mut p: Vec<_> = records
            .iter()
            .map(|r| (r.partition().0, r.offset().0))
            .collect();
        p.sort_unstable();
        p
    };

    let first = fill_log(&log, 0..40, 30, 1).await?;
    let fed = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder {
        fed: Arc::clone(&fed),
    };
    let runner = Runner::new(recorder, Arc::clone(&log), Arc::clone(&views)).config(config.clone());
    let balances =
        Runner::new(Balances, Arc::clone(&log), Arc::clone(&views)).config(config.clone());
    guard("first run", runner.catch_up()).await??;
    guard("first run", balances.catch_up()).await??;
    let before = read_log(log.as_ref()).await?;
    let mut fed_first = std::mem::take(&mut *fed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    fed_first.sort_unstable();
    assert_eq!(
        fed_first,
        positions(&before),
        "the first run is fed every event once"
    );
    assert_eq!(runner.progress().borrow().applied, first);
    drop((runner, balances));

    // More events: to new accounts and to the old ones.
    let bank = Bank::<dyn EventStore>::new(Arc::clone(&log));
    let more = fill_log(&log, 40..60, 30, 2).await? + bank_wave(&bank, 0..60, 2, 3).await?;
    let after = read_log(log.as_ref()).await?;
    let new: Vec<(u32, u64)> = {
        let old = positions(&before);
        positions(&after)
            .into_iter()
            .filter(|p| old.binary_search(p).is_err())
            .collect()
    };
    assert_eq!(new.len() as u64, more);

    // Fresh runners (new owners) apply only what the first run did not commit.
    let recorder = Recorder {
        fed: Arc::clone(&fed),
    };
    let runner = Runner::new(recorder, Arc::clone(&log), Arc::clone(&views)).config(config.clone());
    let balances = Runner::new(Balances, Arc::clone(&log), Arc::clone(&views)).config(config);
    guard("second run", runner.catch_up()).await??;
    guard("second run", balances.catch_up()).await??;
    let mut fed_second = std::mem::take(&mut *fed.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    fed_second.sort_unstable();
    assert_eq!(
        fed_second, new,
        "the second run is fed exactly the new events"
    );
    assert_eq!(runner.progress().borrow().applied, more);
    assert_eq!(balances.progress().borrow().applied, more);
    assert_eq!(read_balances(&views).await?, expected_balances(&after)?);
    let table = views
        .table("recorder", "seen")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no active recorder"))?;
    let seen: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(views.pool())
        .await?
        .try_get(0)?;
    assert_eq!(u64::try_from(seen)?, first + more);
    views.close().await;
    store.close().await;
    Ok(())
}
