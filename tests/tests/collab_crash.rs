//! A process manager killed with SIGKILL between sending a batch's commands and committing the
//! batch, again and again: when it runs again it decides the same commands under the same
//! derived ids, the event store answers those already sent from the log, and every effect
//! happens exactly once.

mod collab;

use std::process::Stdio;
use std::time::Duration;

use collab::{RequestEvent, outbox};
use keel::store::sqlite::SqliteStore;
use tokio::io::{AsyncBufReadExt, BufReader};

const REQUESTS: usize = 120;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_manager_killed_mid_batch_sends_each_command_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log_db, views_db) = (dir.path().join("log.db"), dir.path().join("views.db"));
    let log = SqliteStore::open(&log_db).await?;
    for i in 0..REQUESTS {
        let opened = RequestEvent::Opened {
            customer: format!("c{}", i % 7),
            amount: 1,
            at: 0,
            wait_ms: 0,
        };
        collab::append(&log, "request", &format!("r{i:03}"), &opened).await?;
    }
    let mut sent = 0;
    for (round, kill_after) in [7, 31, 55].into_iter().enumerate() {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_process_worker"))
            .arg(&log_db)
            .arg(&views_db)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await?? {
                Some(line) if line.starts_with("SENT ") => seen += 1,
                Some(_) => {}
                None => anyhow::bail!("round {round}: the worker exited"),
            }
        }
        child.start_kill()?; // SIGKILL: in the middle of dispatching its one batch
        assert!(!child.wait().await?.success());
        sent += seen;
    }
    // A last run to the end.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_process_worker"))
        .arg(&log_db)
        .arg(&views_db)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    while sent < 10 * REQUESTS {
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await?? {
            Some(line) if line.starts_with("SENT ") => sent += 1,
            Some(_) => {}
            None => anyhow::bail!("the last worker exited"),
        }
        if sent >= REQUESTS && outbox(&log).await?.len() >= REQUESTS {
            break;
        }
    }
    child.start_kill()?;
    let _ = child.wait().await?;
    let effects = outbox(&log).await?;
    assert!(
        sent > REQUESTS,
        "commands of killed batches were sent again ({sent} sends for {REQUESTS} requests)"
    );
    assert_eq!(
        effects.len(),
        REQUESTS,
        "one effect per request, none twice"
    );
    for (i, (stream, command, text)) in effects.iter().enumerate() {
        assert_eq!(stream, &format!("r{i:03}"));
        assert!(command.starts_with("echo.request."), "{command}");
        assert!(text.starts_with(&format!("echo r{i:03} for c")), "{text}");
    }
    log.close().await;
    Ok(())
}
