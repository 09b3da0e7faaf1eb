//! Exactly-once projection under SIGKILL: a child process builds the bank's views (balances
//! and statement) from a SQLite log and is killed at random moments, again and again, until
//! a run finishes. The views it leaves must equal a clean single-pass build and the views
//! computed straight from the log: no event applied twice, none lost, checkpoints at the
//! heads. And a crash at the one point between creating a generation and setting it up must
//! not wedge the projection.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

use bank::projections::{Balances, StatementView, read_balances, read_statement};
use common::{
    active_checkpoints, expected_balances, expected_movements, fill_log, guard, heads,
    random_below, read_log, read_movements,
};
use keel::EventStore;
use keel::store::sqlite::SqliteStore;
use keel_projections::store::ViewStore;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{Projection, Runner, RunnerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// 300 accounts of 100 events to start with: 30,000 events over the store's 4 partitions.
/// When the worker finishes before it was killed [`MIN_KILLS`] times, 100 more accounts are
/// appended and the runs go on: the test waits for the kills it needs, not for a fixed amount
/// of work.
const ACCOUNTS: usize = 300;
const MORE_ACCOUNTS: usize = 100;
const EVENTS_EACH: usize = 100;
const MIN_KILLS: usize = 5;
/// A run is killed right after the worker reports its n-th commit, n drawn from 1 to this.
const MAX_COMMITS_PER_RUN: u64 = 24;

/// How one run of the worker ended.
#[derive(Debug)]
enum Ending {
    Killed,
    Finished,
}

/// Starts the worker and kills it (SIGKILL) right after it reports its `kill_after`-th commit,
/// so the kill lands while it works on the next batch, unless it finishes first.
async fn one_run(
    log_db: &std::path::Path,
    views_db: &std::path::Path,
    kill_after: u64,
) -> anyhow::Result<Ending> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_projection_worker"))
        .arg(log_db)
        .arg(views_db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut commits = 0;
    let mut killed = false;
    while let Some(line) = guard("the worker's next line", lines.next_line()).await?? {
        commits += u64::from(line.starts_with("PROGRESS"));
        seen.push(line);
        if commits == kill_after {
            child.start_kill()?; // SIGKILL on Unix
            killed = true;
            break;
        }
    }
    let status = guard("the worker's exit", child.wait()).await??;
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    let errors = guard("the worker's errors", errors).await??;
    if status.success() {
        // The kill may come too late for a worker that was just finishing.
        anyhow::ensure!(
            seen.last().map(String::as_str) == Some("FINISHED"),
            "the worker exited 0 without finishing: {seen:?}\n{errors}"
        );
        return Ok(Ending::Finished);
    }
    // Killed by us (no exit code), never failed on its own.
    anyhow::ensure!(
        killed && status.code().is_none(),
        "the worker failed on its own ({status}):\n{errors}\nafter {seen:?}"
    );
    Ok(Ending::Killed)
}

/// Builds the bank's views from `log` into `views_db` in one clean pass, in this process.
async fn clean_build(
    log: Arc<dyn EventStore>,
    views_db: std::path::PathBuf,
) -> anyhow::Result<SqliteViews> {
    let (projections, views) =
        bank::projections::bank_projections(log, views_db, RunnerConfig::default()).await?;
    for p in projections.iter() {
        guard("a clean build", p.catch_up()).await??;
    }
    Ok(views)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_built_under_repeated_sigkill_equal_a_clean_build() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log_db, views_db, clean_db) = (
        dir.path().join("log.db"),
        dir.path().join("views.db"),
        dir.path().join("clean.db"),
    );
    let store = Arc::new(SqliteStore::open(&log_db).await?);
    let log: Arc<dyn EventStore> = store.clone();
    let mut accounts = ACCOUNTS;
    let mut total = fill_log(&log, 0..accounts, EVENTS_EACH, 7).await?;
    assert_eq!(total, (ACCOUNTS * EVENTS_EACH) as u64);

    let mut kills = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        anyhow::ensure!(runs <= 2_000, "the worker never finished ({kills} kills)");
        match one_run(&log_db, &views_db, 1 + random_below(MAX_COMMITS_PER_RUN)).await? {
            Ending::Killed => kills += 1,
            Ending::Finished if kills >= MIN_KILLS => break,
            Ending::Finished => {
                // Too fast to be killed often enough: give it more to do.
                total += fill_log(&log, accounts..accounts + MORE_ACCOUNTS, EVENTS_EACH, 7).await?;
                accounts += MORE_ACCOUNTS;
            }
        }
    }
    assert!(kills >= MIN_KILLS);

    // The clean single-pass build of the same log, in this process.
    let clean = clean_build(Arc::clone(&log), clean_db);
    let records = read_log(log.as_ref()).await?;
    assert_eq!(records.len() as u64, total);
    let killed = SqliteViews::open(&views_db).await?;
    let clean = guard("the clean build", clean).await??;

    // Balances: the killed build, the clean build and the log agree row for row.
    let balances = read_balances(&killed).await?;
    assert_eq!(balances.len(), accounts);
    assert_eq!(balances, read_balances(&clean).await?);
    assert_eq!(balances, expected_balances(&records)?);

    // Statements: every movement once, identical to the clean build and the log.
    let movements = read_movements(&killed).await?;
    assert_eq!(movements.len() as u64, total, "one movement per event");
    assert_eq!(movements, read_movements(&clean).await?);
    assert_eq!(movements, expected_movements(&records)?);
    // Through the app's own reader too, for a sample of accounts.
    for row in balances.iter().step_by(10) {
        let statement = read_statement(&killed, &row.id).await?;
        assert_eq!(
            statement,
            read_statement(&clean, &row.id).await?,
            "{}",
            row.id
        );
        assert_eq!(statement.len() as u64, row.version, "{}", row.id);
        let sum: i64 = statement.iter().map(|m| m.amount).sum();
        assert_eq!(
            sum, row.balance,
            "{}: balance = sum of its movements",
            row.id
        );
    }
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for m in &movements {
        *sums.entry(m.0.as_str()).or_default() += m.3;
    }
    let balance_of: BTreeMap<&str, i64> = balances
        .iter()
        .map(|r| (r.id.as_str(), r.balance))
        .collect();
    assert_eq!(sums, balance_of);

    // Checkpoints at the heads.
    let heads = heads(log.as_ref()).await?;
    assert_eq!(heads.values().sum::<u64>(), total);
    for name in [Balances::NAME, StatementView::NAME] {
        assert_eq!(
            active_checkpoints(&killed, log.as_ref(), name).await?,
            heads,
            "{name}"
        );
    }
    println!("{kills} kills in {runs} runs over {total} events");
    killed.close().await;
    clean.close().await;
    store.close().await;
    Ok(())
}

/// A crash right after a generation was registered and before its setup committed leaves a
/// building generation without tables. The next start must build the view anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_creating_a_generation_and_its_setup_does_not_wedge_the_projection()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    fill_log(&log, 0..20, 10, 3).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    // What `Runner::new_generation` has done when the process dies before `setup` commits.
    let orphan = views
        .create_generation(Balances::NAME, Balances::VERSION)
        .await?;
    assert_eq!(orphan.generation, 1);

    let runner = Runner::new(Balances, Arc::clone(&log), Arc::clone(&views));
    guard("catch_up", runner.catch_up())
        .await?
        .map_err(|e| anyhow::anyhow!("the restarted projection must recover: {e:#?}"))?;
    let records = read_log(log.as_ref()).await?;
    assert_eq!(read_balances(&views).await?, expected_balances(&records)?);
    views.close().await;
    store.close().await;
    Ok(())
}
