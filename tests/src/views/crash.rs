//! The crash case: a runner killed at random commits, again and again, until a run finishes,
//! leaves a view equal to the one computed straight from the log — no event applied twice,
//! none lost, checkpoints at the heads.
//!
//! On a durable store ([`SuiteViews::DURABLE`]) the runner is a child process,
//! `projection_worker` ([`work`] is its body), killed with SIGKILL. A store that is not
//! durable loses everything with its process by nature, so there the runner is a task of this
//! process, aborted right after a random commit, with the store kept: the weaker promise that a
//! batch cut off halfway leaves nothing behind.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use keel::EventStore;
use keel::store::sqlite::SqliteStore;
use keel_projections::{Runner, RunnerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{
    SuiteViews, Tally, active_checkpoints, expected, fill, fresh, guard, heads, random_below,
    read_log, rows,
};

/// 300 accounts of 100 events to start with: 30,000 events over the log's 4 partitions. When
/// the runner finishes before it was killed [`MIN_KILLS`] times, 100 more accounts are
/// appended and the runs go on: the case waits for the kills it needs, not for a fixed amount
/// of work.
const ACCOUNTS: usize = 300;
const MORE_ACCOUNTS: usize = 100;
const EVENTS_EACH: usize = 100;
const MIN_KILLS: usize = 5;
/// A run is killed right after the runner reports its n-th commit, n drawn from 1 to this.
const MAX_COMMITS_PER_RUN: u64 = 24;

/// How the crashing runners are configured: batches of 200, a short lease, so that the next
/// run waits little for the lease of the killed one to run out.
pub fn crash_config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 200,
        lease_ttl: Duration::from_millis(300),
        claim_timeout: Duration::from_secs(30),
        ..RunnerConfig::default()
    }
}

/// The body of the `projection_worker` child process: builds the tally from the SQLite log
/// at `log_db` into the store at `at` until it has caught up, printing `STARTED`, then
/// `PROGRESS <events applied>` after each of its commits and `FINISHED` at the end.
///
/// # Errors
///
/// When the log or the store cannot be opened, or the runner fails.
pub async fn work<S: SuiteViews>(log_db: &str, at: &str) -> anyhow::Result<()> {
    let log: Arc<dyn EventStore> = Arc::new(SqliteStore::open(log_db).await?);
    let views = Arc::new(S::open(at).await?);
    let runner = Runner::new(Tally::<S>::default(), log, Arc::clone(&views)).config(crash_config());
    println!("STARTED");
    let mut progress = runner.progress();
    let printer = tokio::spawn(async move {
        while progress.changed().await.is_ok() {
            // Only commits of this process: not the "caught up" flag of an idle start.
            let applied = progress.borrow_and_update().applied;
            if applied > 0 {
                println!("PROGRESS {applied}");
            }
        }
    });
    let result = runner.catch_up().await;
    printer.abort();
    result?;
    views.close().await;
    println!("FINISHED");
    Ok(())
}

/// How one run ended.
#[derive(Debug)]
enum Ending {
    Killed,
    Finished,
}

/// Starts the worker and kills it (SIGKILL) right after it reports its `kill_after`-th commit,
/// so the kill lands while it works on the next batch, unless it finishes first.
async fn one_process<S: SuiteViews>(
    worker: &str,
    log_db: &std::path::Path,
    at: &str,
    kill_after: u64,
) -> anyhow::Result<Ending> {
    let mut child = tokio::process::Command::new(worker)
        .arg(S::KIND)
        .arg(log_db)
        .arg(at)
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

/// Runs the tally in a task of this process and aborts the task right after its
/// `kill_after`-th commit, unless it finishes first.
async fn one_task<S: SuiteViews>(
    log: &Arc<dyn EventStore>,
    views: &Arc<S>,
    kill_after: u64,
) -> anyhow::Result<Ending> {
    let runner = Arc::new(
        Runner::new(Tally::<S>::default(), Arc::clone(log), Arc::clone(views))
            .config(crash_config()),
    );
    let mut progress = runner.progress();
    let mut task = tokio::spawn({
        let runner = Arc::clone(&runner);
        async move { runner.catch_up().await }
    });
    let mut commits = 0;
    loop {
        tokio::select! {
            done = &mut task => {
                done??;
                return Ok(Ending::Finished);
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    continue;
                }
                if progress.borrow_and_update().applied > 0 {
                    commits += 1;
                }
                if commits == kill_after {
                    task.abort();
                    return match task.await {
                        Ok(done) => done.map(|()| Ending::Finished).map_err(Into::into),
                        Err(e) if e.is_cancelled() => Ok(Ending::Killed),
                        Err(e) => Err(e.into()),
                    };
                }
            }
        }
    }
}

/// A runner killed at random commits, again and again, until a run finishes, leaves a view
/// equal to the one computed from the log, its checkpoints at the heads. On a durable store the
/// runner is the child process `worker` (the `projection_worker` binary), killed with SIGKILL;
/// on a store that is not durable ([`SuiteViews::DURABLE`]), a task of this process, aborted.
pub async fn a_view_built_under_repeated_kills_equals_the_log<S: SuiteViews>(
    worker: &str,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log_db = dir.path().join("log.db");
    let store = Arc::new(
        SqliteStore::builder(&log_db)
            .default_partitions(4)
            .open()
            .await?,
    );
    let log: Arc<dyn EventStore> = store.clone();
    let mut accounts = ACCOUNTS;
    let mut total = fill(&log, 0..accounts, EVENTS_EACH, 7).await?;
    assert_eq!(total, (ACCOUNTS * EVENTS_EACH) as u64);

    let (place, views) = fresh::<S>().await?;
    let mut kills = 0;
    let mut runs = 0;
    loop {
        runs += 1;
        anyhow::ensure!(runs <= 2_000, "the runner never finished ({kills} kills)");
        let kill_after = 1 + random_below(MAX_COMMITS_PER_RUN);
        let ending = if S::DURABLE {
            one_process::<S>(worker, &log_db, &place.at, kill_after).await?
        } else {
            one_task(&log, &views, kill_after).await?
        };
        match ending {
            Ending::Killed => kills += 1,
            Ending::Finished if kills >= MIN_KILLS => break,
            Ending::Finished => {
                // Too fast to be killed often enough: give it more to do.
                total += fill(&log, accounts..accounts + MORE_ACCOUNTS, EVENTS_EACH, 7).await?;
                accounts += MORE_ACCOUNTS;
            }
        }
    }

    let records = read_log(log.as_ref()).await?;
    assert_eq!(records.len() as u64, total);
    // A durable store is read as a new process would: opened again.
    let views = if S::DURABLE {
        views.close().await;
        Arc::new(S::open(&place.at).await?)
    } else {
        views
    };
    let built = rows(views.as_ref()).await?;
    assert_eq!(built.len(), accounts);
    assert_eq!(
        built,
        expected(&records, 1)?,
        "the view equals the log: every event applied once"
    );
    let heads = heads(log.as_ref()).await?;
    assert_eq!(heads.values().sum::<u64>(), total);
    assert_eq!(
        active_checkpoints(views.as_ref(), log.as_ref()).await?,
        heads,
        "the checkpoints are at the heads"
    );
    println!(
        "{kills} kills ({}) in {runs} runs over {total} events",
        if S::DURABLE {
            "SIGKILL of a child process"
        } else {
            "aborted tasks: the store is not durable"
        }
    );
    views.close().await;
    store.close().await;
    Ok(())
}
