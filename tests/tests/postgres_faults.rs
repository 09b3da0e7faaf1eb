//! PostgreSQL under faults: a writer process killed with SIGKILL (conformance case 20), and the
//! server itself crashing (`pg_ctl stop -m immediate`) in the middle of a stream of appends and
//! starting again.

mod crash;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keel::store::Error;
use keel::store::postgres::PostgresStore;
use keel::testing::postgres::{self, Cluster};
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Offset, Partition, StreamId, Topic,
};
use sqlx::Connection;

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/postgres.sh")
}

/// Waits until `done()` holds, checking every few milliseconds, failing with `what` after 60 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 60 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() -> anyhow::Result<()> {
    let url = postgres::url();
    let schema = postgres::unique_name("crash");
    let acks = crash::kill_workers(6, 60, |round| {
        let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_append_worker"));
        worker.arg(&url).arg(round.to_string()).arg(&schema);
        worker
    })
    .await?;
    assert!(
        acks.len() >= 6,
        "every worker acknowledged appends ({})",
        acks.len()
    );
    let store = PostgresStore::builder(&url).schema(&schema).open().await?;
    crash::check_survivors(&store, &acks).await?;
    store.close().await;
    Ok(())
}

/// What the writers of the restart test saw.
#[derive(Default)]
struct Seen {
    acks: Vec<crash::Ack>,
    errors: Vec<Error>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_reconnects_by_itself_after_the_server_crashes() -> anyhow::Result<()> {
    const WRITERS: u64 = 16;
    let cluster = Cluster::start(script()).await;
    let open = || {
        PostgresStore::builder(cluster.url())
            .default_partitions(2)
            .connect_timeout(Duration::from_secs(2))
            // Only notifications wake this store's tails.
            .poll_interval(Duration::from_secs(3600))
            .open()
    };
    let store = Arc::new(open().await?);
    // Another process's store on the same database: it must hear the first one's commits
    // after the restart.
    let other = Arc::new(open().await?);
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, seen, stop) = (Arc::clone(&store), Arc::clone(&seen), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let command = format!("w{w}-{i}");
                    i += 1;
                    let events = (0..3)
                        .map(|k| NewEvent::raw("Tested", 1, format!(r#"{{"n":{k}}}"#).into_bytes()))
                        .collect();
                    let request = AppendRequest::new(
                        StreamId::new("crash", format!("s{}", (w + i) % 7)).expect("stream id"),
                        ExpectedVersion::Any,
                        events,
                    )
                    .with_command(CommandMeta::new(
                        CommandId::new(&command).expect("command id"),
                        Fingerprint::of_bytes(command.as_bytes()),
                    ));
                    match store.append(request).await {
                        Ok(appended) => seen
                            .lock()
                            .expect("seen")
                            .acks
                            .push(crash::Ack::of(&command, &appended)),
                        Err(e) => {
                            seen.lock().expect("seen").errors.push(e);
                            // The server is away: do not spin.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    let acked = || seen.lock().expect("seen").acks.len();
    let failed = || seen.lock().expect("seen").errors.len();

    wait_until("100 acknowledged appends", || acked() >= 100).await;
    cluster.stop("immediate").await;
    wait_until("an append to fail while the server is down", || {
        failed() >= 1
    })
    .await;
    {
        let seen = seen.lock().expect("seen");
        for e in &seen.errors {
            let text = format!(
                "{e}: {}",
                std::error::Error::source(e)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            );
            assert!(
                matches!(
                    e,
                    Error::Backend {
                        operation: "append",
                        ..
                    }
                ),
                "a caller in flight gets a backend error naming the append: {text}"
            );
        }
    }
    let before = acked();
    cluster.restart().await;
    wait_until("100 more acknowledged appends after the restart", || {
        acked() >= before + 100
    })
    .await;

    // The other store's listener is back: a tail it starts now is woken by the first store's
    // commits (its poll interval is an hour).
    let mut observer = sqlx::PgConnection::connect(cluster.url()).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sessions: Vec<(String, String)> = sqlx::query_as(
            "SELECT state, query FROM pg_stat_activity WHERE application_name = 'keel'",
        )
        .fetch_all(&mut observer)
        .await?;
        let listeners = sessions
            .iter()
            .filter(|(_, query)| query.starts_with("LISTEN") && query.contains("keel_commits"))
            .count();
        if listeners >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stores did not LISTEN again within 60 s: {sessions:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let topic = Topic::new("crash")?;
    let head = other.head(&topic, Partition(0)).await?;
    let mut tail = Arc::clone(&other).tail(topic.clone(), Partition(0), head);
    let next = tokio::time::timeout(Duration::from_secs(30), tail.next())
        .await
        .map_err(|_| anyhow::anyhow!("a tail of the other store was not woken within 30 s"))?
        .ok_or_else(|| anyhow::anyhow!("the tail ended"))??;
    assert!(
        next.offset() >= head,
        "the tail reads on from where it began"
    );

    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await?;
    }
    let acks = std::mem::take(&mut seen.lock().expect("seen").acks);
    crash::check_survivors(&*store, &acks).await?;
    let records = store
        .read_partition(&topic, Partition(0), Offset(0), usize::MAX >> 1)
        .await?;
    assert!(!records.is_empty(), "reads work after the restart");
    store.close().await;
    other.close().await;
    Ok(())
}
