//! Shared projections without a broker: runners fed by a scripted membership, their batches
//! held open from the test, so that each interleaving happens for sure.
//!
//! - A partition revoked while its batch is in progress is let go only after that batch
//!   commits, whole; nothing of it is half applied, and no batch of it starts after.
//! - A runner that is still running when its partition is given to another (thrown out of
//!   its group) loses it: a batch it begins after the other took the partition's lease is
//!   rolled back, so nothing is applied twice.
//! - Either way the view ends equal to a fold of the whole log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bank::AccountEvent;
use keel::store::memory::MemoryStore;
use keel::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Offset, Partition, StreamId, Topic,
};
use keel_projections::store::ViewStore;
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::{
    AssignmentChange, Assignments, BoxError, CancellationToken, Envelope, Projection, Revoked,
    Runner, RunnerConfig,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

type Balances = BTreeMap<String, (i64, u64)>;

/// Balance and event count per account; each batch waits for a permit of its runner's gate.
struct Held {
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<(Partition, Offset, u64)>,
}

impl Projection for Held {
    type Event = AccountEvent;
    type Store = MemoryViews<Balances>;
    const NAME: &'static str = "held";

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::new("account").unwrap_or_else(|_| unreachable!())]
    }

    async fn apply(
        &self,
        view: &mut MemoryBatch<Balances>,
        events: &[Envelope<AccountEvent>],
    ) -> Result<(), BoxError> {
        if let Some(first) = events.first() {
            let _ = self
                .started
                .send((first.partition(), first.offset(), events.len() as u64));
        }
        self.gate.acquire().await?.forget();
        for e in events {
            let row = view.entry(e.id().to_owned()).or_default();
            row.1 += 1;
            match &e.event {
                AccountEvent::Deposited { amount } => row.0 += i64::try_from(*amount)?,
                AccountEvent::Withdrawn { amount } => row.0 -= i64::try_from(*amount)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A membership the test scripts; it says when the runner has taken each change (the runner
/// acts on a change in the same poll that takes it).
struct Script {
    changes: mpsc::UnboundedReceiver<AssignmentChange>,
    taken: mpsc::UnboundedSender<()>,
}

#[keel_projections::async_trait]
impl Assignments for Script {
    async fn next(&mut self) -> Option<AssignmentChange> {
        let change = self.changes.recv().await;
        let _ = self.taken.send(());
        change
    }
}

struct Instance {
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedReceiver<(Partition, Offset, u64)>,
    script: mpsc::UnboundedSender<AssignmentChange>,
    taken: mpsc::UnboundedReceiver<()>,
    run: tokio::task::JoinHandle<keel_projections::Result<()>>,
}

fn instance(
    log: &Arc<dyn EventStore>,
    views: &Arc<MemoryViews<Balances>>,
    name: &str,
    permits: usize,
) -> Instance {
    let gate = Arc::new(Semaphore::new(permits));
    let (started_tx, started) = mpsc::unbounded_channel();
    let runner = Runner::new(
        Held {
            gate: Arc::clone(&gate),
            started: started_tx,
        },
        Arc::clone(log),
        Arc::clone(views),
    )
    .config(RunnerConfig {
        batch_size: 5,
        owner: name.to_owned(),
        poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    });
    let (script, changes) = mpsc::unbounded_channel();
    let (taken_tx, taken) = mpsc::unbounded_channel();
    let run = tokio::spawn(async move {
        runner
            .run_shared(
                Script {
                    changes,
                    taken: taken_tx,
                },
                CancellationToken::new(),
            )
            .await
    });
    Instance {
        gate,
        started,
        script,
        taken,
        run,
    }
}

fn p(n: u32) -> (Topic, Partition) {
    (
        Topic::new("account").unwrap_or_else(|_| unreachable!()),
        Partition(n),
    )
}

/// A log of 2 partitions: 16 accounts with 12 events each.
async fn log() -> anyhow::Result<(Arc<dyn EventStore>, Balances)> {
    let store = Arc::new(MemoryStore::new());
    store.ensure_topic(&Topic::new("account")?, 2).await?;
    let mut expected = Balances::new();
    for i in 0..16 {
        let id = format!("acc-{i}");
        let stream = StreamId::new("account", &id)?;
        let mut events = vec![AccountEvent::Opened {
            owner: id.clone(),
            overdraft_limit: 0,
        }];
        for k in 0..11u64 {
            events.push(AccountEvent::Deposited { amount: k + i });
        }
        let row = expected.entry(id).or_default();
        for e in &events {
            row.1 += 1;
            if let AccountEvent::Deposited { amount } = e {
                row.0 += i64::try_from(*amount)?;
            }
        }
        for chunk in events.chunks(3) {
            let new = chunk
                .iter()
                .map(NewEvent::from_event)
                .collect::<Result<Vec<_>, _>>()?;
            store
                .append(AppendRequest::new(
                    stream.clone(),
                    ExpectedVersion::Any,
                    new,
                ))
                .await?;
        }
    }
    Ok((store, expected))
}

async fn checkpoint(views: &MemoryViews<Balances>, partition: u32) -> anyhow::Result<Offset> {
    let g = views
        .generations("held")
        .await?
        .into_iter()
        .last()
        .ok_or_else(|| anyhow::anyhow!("no generation"))?;
    Ok(views
        .checkpoints(&g.id())
        .await?
        .into_iter()
        .find(|c| c.partition == Partition(partition))
        .map_or(Offset(0), |c| c.next))
}

/// Waits until both partitions' checkpoints reach the log's heads.
async fn caught_up(log: &Arc<dyn EventStore>, views: &MemoryViews<Balances>) -> anyhow::Result<()> {
    let topic = Topic::new("account")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for n in 0..2 {
            done &= checkpoint(views, n).await? >= log.head(&topic, Partition(n)).await?;
        }
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the view did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_revoked_mid_batch_is_let_go_only_after_its_batch_commits_whole()
-> anyhow::Result<()> {
    let (log, expected) = log().await?;
    let views = Arc::new(MemoryViews::<Balances>::new());
    let mut a = instance(&log, &views, "a", 1);
    a.script.send(AssignmentChange::Assigned(vec![p(0)]))?;
    // The first batch commits; the second is held open, and the partition is revoked under
    // it (the runner has taken the revocation before the batch may go on).
    assert_eq!(a.started.recv().await, Some((Partition(0), Offset(0), 5)));
    assert_eq!(a.started.recv().await, Some((Partition(0), Offset(5), 5)));
    a.taken.recv().await;
    let (done_tx, mut done) = oneshot::channel();
    a.script.send(AssignmentChange::Revoked(Revoked::new(
        vec![p(0)],
        move || {
            let _ = done_tx.send(());
        },
    )))?;
    a.taken.recv().await;
    assert!(done.try_recv().is_err(), "let go while its batch is open");

    // The open batch finishes: it commits whole, the partition is let go, nothing more
    // starts.
    a.gate.add_permits(1);
    tokio::time::timeout(Duration::from_secs(10), &mut done).await??;
    assert_eq!(
        checkpoint(&views, 0).await?,
        Offset(10),
        "the batch open at the revocation committed whole"
    );
    let applied = views
        .read("held", |v| v.values().map(|r| r.1).sum::<u64>())
        .await
        .unwrap_or(0);
    assert_eq!(applied, 10, "exactly the two batches' events");
    assert!(
        a.started.try_recv().is_err(),
        "no batch started after the revocation"
    );

    // Another runner gets both partitions and resumes from the checkpoints.
    let mut b = instance(&log, &views, "b", usize::MAX >> 4);
    b.script
        .send(AssignmentChange::Assigned(vec![p(0), p(1)]))?;
    let resumed = loop {
        let (at, from, _) = b
            .started
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("b stopped"))?;
        if at == Partition(0) {
            break from;
        }
    };
    assert_eq!(resumed, Offset(10), "b resumes p0 from its checkpoint");
    caught_up(&log, &views).await?;
    assert_eq!(views.read("held", Clone::clone).await, Some(expected));
    drop(a.script);
    drop(b.script);
    a.run.await??;
    b.run.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_partition_was_given_to_another_writes_nothing_more() -> anyhow::Result<()> {
    let (log, expected) = log().await?;
    let views = Arc::new(MemoryViews::<Balances>::new());
    // a holds p0's first batch open.
    let mut a = instance(&log, &views, "a", 0);
    a.script.send(AssignmentChange::Assigned(vec![p(0)]))?;
    assert_eq!(a.started.recv().await, Some((Partition(0), Offset(0), 5)));
    // b is given p0 without a being told (a was thrown out of its group): it takes the
    // partition's lease over (after a's open batch, which the store serialises with it).
    let b = instance(&log, &views, "b", usize::MAX >> 4);
    b.script
        .send(AssignmentChange::Assigned(vec![p(0), p(1)]))?;
    // a goes on as fast as it can: every batch it begins after b took the lease is rolled
    // back, and it lets the partition go.
    a.gate.add_permits(usize::MAX >> 4);
    caught_up(&log, &views).await?;
    assert_eq!(
        views.read("held", Clone::clone).await,
        Some(expected),
        "nothing applied twice"
    );
    let holder = views.lease("held/account/0").await?.map(|h| h.owner);
    assert!(
        holder.as_deref().is_some_and(|h| h.starts_with('b')),
        "b holds p0 now: {holder:?}"
    );
    drop(a.script);
    drop(b.script);
    a.run.await??;
    b.run.await??;
    Ok(())
}
