//! Durability under SIGKILL (conformance case 20) on a real SQLite file: a child process
//! appends from several tasks and is killed at random moments; every append it acknowledged
//! must be there, where it was acknowledged, and no unacknowledged append is half there.

mod crash;

use keel::store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("crash.db");
    let acks = crash::kill_workers(6, 60, |round| {
        let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_append_worker"));
        worker.arg(&db).arg(round.to_string());
        worker
    })
    .await?;
    assert!(
        acks.len() >= 6,
        "every worker acknowledged appends ({})",
        acks.len()
    );
    let store = SqliteStore::open(&db).await?;
    crash::check_survivors(&store, &acks).await?;
    store.close().await;
    Ok(())
}
