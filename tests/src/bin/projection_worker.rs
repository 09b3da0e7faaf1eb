//! A child process for the view-store suite's crash case (`keel_tests::views`): builds the
//! suite's tally projection from a SQLite log into a view store until it has caught up,
//! printing its progress, and is killed at random moments by the test.
//!
//! Usage: `projection_worker STORE LOG_DB VIEWS`, STORE being `sqlite` (VIEWS a file) or
//! `postgres` (VIEWS a database URL). Lines printed: `STARTED`, `PROGRESS <events applied by
//! this process>` after its commits, and `FINISHED` at the end (exit 0).

use keel_projections::store::postgres::PostgresViews;
use keel_projections::store::sqlite::SqliteViews;
use keel_tests::views::{SuiteViews, work};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(log_db), Some(views)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: projection_worker sqlite|postgres LOG_DB VIEWS");
    };
    match store.as_str() {
        SqliteViews::KIND => work::<SqliteViews>(&log_db, &views).await,
        PostgresViews::KIND => work::<PostgresViews>(&log_db, &views).await,
        other => anyhow::bail!(
            "projection_worker: no durable view store {other:?} (sqlite or postgres); \
             views in memory do not outlive a process"
        ),
    }
}
