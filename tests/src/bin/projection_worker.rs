//! A child process for the projection crash test: runs the bank's projections (balances and
//! statement) over a SQLite log into a SQLite views file until they have caught up, printing
//! its progress, and is killed at random moments by the test.
//!
//! Usage: `projection_worker LOG_DB VIEWS_DB`. Lines printed:
//! `PROGRESS <projection> <events applied by this process>` after its commits,
//! `DONE <projection>` when a projection has caught up, and `FINISHED` at the end (exit 0).

use std::sync::Arc;
use std::time::Duration;

use keel::EventStore;
use keel::store::sqlite::SqliteStore;
use keel_projections::RunnerConfig;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(log_db), Some(views_db)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: projection_worker LOG_DB VIEWS_DB");
    };
    let log: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&log_db).await?);
    let config = RunnerConfig {
        batch_size: 200,
        lease_ttl: Duration::from_millis(300),
        claim_timeout: Duration::from_secs(30),
        ..RunnerConfig::default()
    };
    let (projections, views) = bank::projections::bank_projections(log, &views_db, config).await?;
    println!("STARTED");
    for p in projections.iter() {
        let name = p.name();
        let mut progress = p.progress();
        let printer = tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                // Only commits of this process: not the "caught up" flag of an idle start.
                let applied = progress.borrow_and_update().applied;
                if applied > 0 {
                    println!("PROGRESS {name} {applied}");
                }
            }
        });
        let result = p.catch_up().await;
        printer.abort();
        result?;
        println!("DONE {name}");
    }
    views.close().await;
    println!("FINISHED");
    Ok(())
}
