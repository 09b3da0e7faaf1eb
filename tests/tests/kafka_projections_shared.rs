//! Projections on Kafka. Two instances of the bank's balances projection split the 6
//! partitions of the account topic through a consumer group, each partition under its own
//! lease, with the view in one SQLite file. The second joining moves partitions away from the
//! first while it works (a revocation lands between batches, never inside one); then the
//! first is killed with SIGKILL in the middle of a batch. The survivor takes its partitions
//! over, resumes from the view store's checkpoints and tails what is appended afterwards. The
//! view ends equal to a clean single-pass build, row for row, and the status shows every
//! partition's owner and a lag of 0 records.

mod kafka;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bank::AccountEvent;
use bank::projections::{Balances, read_balances};
use keel::store::kafka::KafkaStore;
use keel::testing::conformance::kafka_bootstrap;
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Offset, StreamId, Topic};
use keel_projections::store::ViewStore;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{Projection, Runner};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

const PARTITIONS: u32 = 6;
const ACCOUNTS: usize = 60;

/// Appends `rounds` appends of 5 events to each account (opening it first when `open`).
async fn fill(store: &KafkaStore, open: bool, rounds: usize) -> anyhow::Result<()> {
    let mut appends = Vec::new();
    for i in 0..ACCOUNTS {
        let stream = StreamId::new("account", format!("acc-{i}"))?;
        let mut events = Vec::new();
        if open {
            events.push(AccountEvent::Opened {
                owner: format!("Owner {i}"),
                overdraft_limit: 1_000,
            });
        }
        for round in 0..rounds {
            for k in 0..5u64 {
                let n = (i * 31 + round * 7) as u64 + k;
                events.push(if n.is_multiple_of(3) {
                    AccountEvent::Withdrawn { amount: n % 11 + 1 }
                } else {
                    AccountEvent::Deposited { amount: n % 17 + 1 }
                });
            }
        }
        for chunk in events.chunks(5) {
            let new = chunk
                .iter()
                .map(NewEvent::from_event)
                .collect::<Result<Vec<_>, _>>()?;
            appends.push(AppendRequest::new(
                stream.clone(),
                ExpectedVersion::Any,
                new,
            ));
        }
    }
    // One stream's appends in order; streams side by side.
    let mut by_stream: BTreeMap<String, Vec<AppendRequest>> = BTreeMap::new();
    for a in appends {
        by_stream
            .entry(a.stream.id().to_owned())
            .or_default()
            .push(a);
    }
    let tasks = by_stream.into_values().map(|list| async move {
        for a in list {
            store.append(a).await?;
        }
        anyhow::Ok(())
    });
    for result in futures::future::join_all(tasks).await {
        result?;
    }
    Ok(())
}

/// One worker process and its output lines.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Worker {
    fn start(
        bootstrap: &str,
        prefix: &str,
        views: &std::path::Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kafka_projection_worker"))
            .arg(bootstrap)
            .arg(prefix)
            .arg(views)
            .arg("40")
            .arg(name)
            .env("RUST_LOG", "keel_projections=info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut out = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    /// Reads lines until one satisfies `ok`; returns it.
    async fn wait_for(&mut self, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .map_err(|_| anyhow::anyhow!("no {what} within 90 s"))?
                .ok_or_else(|| anyhow::anyhow!("the worker ended before {what}"))?;
            if ok(&line) {
                return Ok(line);
            }
        }
    }
}

/// The offset after each partition's last record.
async fn ends(store: &KafkaStore, topic: &Topic) -> anyhow::Result<BTreeMap<u32, Offset>> {
    let all = kafka::read_all(store, topic, PARTITIONS).await?;
    Ok(all
        .into_iter()
        .map(|(p, records)| (p, records.last().map_or(Offset(0), |r| r.offset().next())))
        .collect())
}

/// Waits until the active view's checkpoints reach `ends`.
async fn caught_up(
    views: &SqliteViews,
    topic: &Topic,
    ends: &BTreeMap<u32, Offset>,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let active = views
            .generations(Balances::NAME)
            .await?
            .into_iter()
            .find(|g| g.state == keel_projections::store::ViewState::Active);
        if let Some(g) = active {
            let at: BTreeMap<u32, Offset> = views
                .checkpoints(&g.id())
                .await?
                .into_iter()
                .filter(|c| c.topic == *topic)
                .map(|c| (c.partition.0, c.next))
                .collect();
            if ends
                .iter()
                .all(|(p, end)| at.get(p).is_some_and(|c| c >= end))
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the view did not catch up within 120 s: at {at:?}, ends {ends:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions_and_a_kill_mid_batch_leaves_the_view_exact()
-> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = kafka::unique_prefix("shared-projection");
    let store = Arc::new(kafka::builder(&bootstrap, &prefix).open().await?);
    let topic = Topic::new("account")?;
    store.ensure_topic(&topic, PARTITIONS).await?;
    fill(&store, true, 4).await?;

    let dir = tempfile::tempdir()?;
    let shared = dir.path().join("shared.db");
    // Events keep coming until the kill, so the first worker always has a batch to be
    // killed in, however fast it goes: the test waits for states, not for an amount of work.
    let feeding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let feeder = {
        let (store, feeding) = (Arc::clone(&store), Arc::clone(&feeding));
        tokio::spawn(async move {
            let mut rounds = 0;
            while feeding.load(std::sync::atomic::Ordering::Acquire) && rounds < 6 {
                fill(&store, false, 1).await?;
                rounds += 1;
            }
            anyhow::Ok(rounds)
        })
    };
    let mut w1 = Worker::start(&bootstrap, &prefix, &shared, "w1")?;
    w1.wait_for("w1's assignment", |l| {
        l.starts_with("ASSIGNED ") && l.len() > 9
    })
    .await?;
    w1.wait_for("w1's first batch", |l| l.starts_with("APPLYING"))
        .await?;
    // The second joins while the first works: partitions move between batches.
    let mut w2 = Worker::start(&bootstrap, &prefix, &shared, "w2")?;
    w1.wait_for("w1 giving partitions up", |l| {
        l.starts_with("REVOKED ") && l.len() > 8
    })
    .await?;
    w2.wait_for("w2's assignment", |l| {
        l.starts_with("ASSIGNED ") && l.len() > 9
    })
    .await?;
    // Kill the first in the middle of a batch: right after it opened one.
    w1.wait_for("a batch of w1 after the move", |l| {
        l.starts_with("APPLYING")
    })
    .await?;
    w1.child.start_kill()?;
    let status = w1.child.wait().await?;
    assert!(!status.success(), "w1 was killed");
    feeding.store(false, std::sync::atomic::Ordering::Release);
    feeder.await??;

    // More events while the survivor takes over: it tails them too.
    fill(&store, false, 2).await?;
    let ends = ends(&store, &topic).await?;
    let views = SqliteViews::open(&shared).await?;
    caught_up(&views, &topic, &ends).await?;

    // Row for row what a clean single-pass build makes.
    let reference = SqliteViews::open(dir.path().join("reference.db")).await?;
    let log: Arc<dyn EventStore> = store.clone();
    Runner::new(Balances, Arc::clone(&log), Arc::new(reference.clone()))
        .catch_up()
        .await?;
    let (built, expected) = (
        read_balances(&views).await?,
        read_balances(&reference).await?,
    );
    assert_eq!(built.len(), ACCOUNTS);
    assert_eq!(built, expected, "the shared view equals a clean build");

    // The status: every partition fed by the survivor, 0 records behind.
    let status = Runner::new(Balances, log, Arc::new(views.clone()))
        .status()
        .await?;
    assert_eq!(status.partitions.len(), PARTITIONS as usize);
    for p in &status.partitions {
        assert_eq!(p.lag, 0, "partition {}: {p:?}", p.partition);
        assert!(
            p.owner.as_deref().is_some_and(|o| o.starts_with("w2")),
            "partition {} is fed by w2: {p:?}",
            p.partition
        );
        assert!(
            p.head > p.checkpoint,
            "Kafka's head counts the last marker: {p:?}"
        );
    }
    assert_eq!(status.lag, 0);

    drop(w2.stdin.take());
    w2.wait_for("w2 stopping", |l| l == "STOPPED").await?;
    let status = w2.child.wait().await?;
    assert!(status.success(), "w2 stopped cleanly: {status}");
    views.close().await;
    reference.close().await;
    store.close().await;
    Ok(())
}
