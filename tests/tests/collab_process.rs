//! Process managers: exactly-once effects through derived command ids, timeouts in recorded
//! time, and a replay from offset 0 — with other batch sizes, so other interleavings of the
//! partitions — deciding exactly as the live run did.

mod collab;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use collab::{Outbox, RequestEvent, outbox, plus, request_topic};
use keel::store::EventStore;
use keel::{CommandOptions, Repository, Timestamp};
use keel_projections::keyed::{Keyed, KeyedStore};
use keel_projections::store::memory::MemoryViews;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{
    BoxError, Effects, Envelope, Inputs, Process, ProcessManager, Runner, RunnerConfig, Ticker,
    Timer,
};
use serde::{Deserialize, Serialize};

/// Answers count until a request's deadline (its stamp plus `wait_ms`); the first answer
/// stamped before it decides "answered", recorded time reaching it first decides "timed out".
struct Deadline {
    outbox: Repository<Outbox, dyn EventStore>,
    /// Fail the n-th send (once), to break a batch midway.
    fail_at: AtomicU32,
    sends: AtomicU32,
}

impl Deadline {
    fn new(log: &Arc<dyn EventStore>) -> Self {
        Self {
            outbox: Repository::new(Arc::clone(log)),
            fail_at: AtomicU32::new(0),
            sends: AtomicU32::new(0),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Request {
    deadline: Option<Timestamp>,
    answers: u32,
}

impl ProcessManager for Deadline {
    type Input = RequestEvent;
    type State = Request;
    type Command = (String, String);
    const NAME: &'static str = "deadline";

    fn inputs(&self) -> Inputs<RequestEvent> {
        Inputs::new().topic(request_topic(), |e| e)
    }

    fn key(&self, input: &Envelope<RequestEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn react(
        &self,
        state: &mut Request,
        input: &Envelope<RequestEvent>,
        out: &mut Effects<Self::Command>,
    ) {
        let id = input.id().to_owned();
        match &input.event {
            RequestEvent::Opened { wait_ms, .. } => {
                let deadline = plus(input.record.timestamp, i64::try_from(*wait_ms).unwrap_or(0));
                state.deadline = Some(deadline);
                out.set_timer("answer", deadline);
            }
            RequestEvent::Answered { by } => {
                state.answers += 1;
                // Timestamps decide, never the order of arrival.
                if state.deadline.is_some_and(|d| input.record.timestamp < d) {
                    out.send_once("decision", id.clone(), (id, format!("answered by {by}")));
                    out.finish();
                }
            }
        }
    }

    fn timeout(&self, _: &mut Request, timer: &Timer, out: &mut Effects<Self::Command>) {
        out.send_once(
            "decision",
            timer.key.clone(),
            (timer.key.clone(), "timed out".into()),
        );
        out.finish();
    }

    async fn send(
        &self,
        (id, text): (String, String),
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at.load(Ordering::SeqCst) == n {
            self.fail_at.store(0, Ordering::SeqCst);
            return Err("the command bus is down".into());
        }
        collab::record(&self.outbox, &id, text, options).await
    }
}

fn config(batch_size: usize) -> RunnerConfig {
    RunnerConfig {
        batch_size,
        ..RunnerConfig::default()
    }
}

fn opened(wait_ms: u64) -> RequestEvent {
    RequestEvent::Opened {
        customer: "c".into(),
        amount: 1,
        at: 0,
        wait_ms,
    }
}

fn answered(by: &str) -> RequestEvent {
    RequestEvent::Answered { by: by.into() }
}

#[tokio::test]
async fn answers_before_the_deadline_win_and_silence_times_out() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    let r1 = collab::append(log.as_ref(), "request", "r1", &opened(60_000)).await?;
    let r2 = collab::append(log.as_ref(), "request", "r2", &opened(60_000)).await?;
    collab::append(log.as_ref(), "request", "r1", &answered("bob")).await?;
    collab::append(log.as_ref(), "request", "r1", &answered("bob again")).await?;
    let runner = Runner::new(
        Process::new(Deadline::new(&log)),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    assert_eq!(
        outbox(log.as_ref()).await?,
        vec![(
            "r1".into(),
            "deadline.r1.decision".into(),
            "answered by bob".into()
        )],
        "one decision for r1, none yet for r2: recorded time has not reached its deadline"
    );
    let state = Process::<Deadline, MemoryViews<Keyed>>::state(&views, "r2").await?;
    assert_eq!(
        state.map(|s| s.deadline),
        Some(Some(plus(r2.timestamp, 60_000)))
    );

    // Recorded time moves past r2's deadline (and r1's, which is decided already).
    let ticker = Ticker::new(Arc::clone(&log));
    ticker
        .tick_at(plus(r2.timestamp.max(r1.timestamp), 60_001))
        .await?;
    runner.catch_up().await?;
    assert_eq!(
        outbox(log.as_ref()).await?,
        vec![
            (
                "r1".into(),
                "deadline.r1.decision".into(),
                "answered by bob".into()
            ),
            (
                "r2".into(),
                "deadline.r2.decision".into(),
                "timed out".into()
            ),
        ]
    );
    assert_eq!(
        Process::<Deadline, MemoryViews<Keyed>>::state(&views, "r2").await?,
        None,
        "a finished instance keeps no state"
    );
    Ok(())
}

/// The tick that moves time past r1's deadline is read (batch size 1: one record of each
/// partition per round, the clock's first) before r1's answer, which was committed before
/// the tick and stamped before the deadline. The tick waits until the answer is read: r1 is
/// answered, not timed out.
#[tokio::test]
async fn a_tick_read_before_the_answers_it_covers_waits_for_them() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    let ticker = Ticker::new(Arc::clone(&log));
    let r1 = collab::append(log.as_ref(), "request", "r1", &opened(60_000)).await?;
    ticker.tick().await?;
    collab::append(log.as_ref(), "request", "r1", &answered("bob")).await?;
    ticker.tick_at(plus(r1.timestamp, 120_000)).await?;
    let runner = Runner::new(
        Process::new(Deadline::new(&log)),
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(1));
    runner.catch_up().await?;
    let decided = outbox(log.as_ref()).await?;
    assert_eq!(
        decided,
        vec![(
            "r1".into(),
            "deadline.r1.decision".into(),
            "answered by bob".into()
        )]
    );
    Ok(())
}

/// The third command of a batch fails once: the batch rolls back after two commands went
/// out. The runner then goes through the batch again (one event at a time), deciding the same
/// commands under the same ids: the two sent before the failure are answered from the log,
/// and every decision is in the outbox exactly once.
#[tokio::test]
async fn a_batch_that_fails_midway_sends_each_command_once_when_run_again() -> anyhow::Result<()> {
    let log = collab::memory_log();
    let views = Arc::new(MemoryViews::<Keyed>::new());
    for i in 0..5 {
        let id = format!("r{i}");
        collab::append(log.as_ref(), "request", &id, &opened(60_000)).await?;
        collab::append(log.as_ref(), "request", &id, &answered("ann")).await?;
    }
    let manager = Deadline::new(&log);
    manager.fail_at.store(3, Ordering::SeqCst);
    let process = Process::new(manager).concurrency(1);
    let runner = Runner::new(process, Arc::clone(&log), Arc::clone(&views));
    runner.catch_up().await?;
    let sends = runner.projection().manager().sends.load(Ordering::SeqCst);
    assert!(
        sends > 5,
        "the failed batch's commands were sent again ({sends} sends)"
    );
    let decided = outbox(log.as_ref()).await?;
    assert_eq!(decided.len(), 5, "{decided:?}");
    for (i, (id, command, text)) in decided.iter().enumerate() {
        assert_eq!(id, &format!("r{i}"));
        assert_eq!(command, &format!("deadline.r{i}.decision"));
        assert_eq!(text, "answered by ann");
    }
    Ok(())
}

/// The outbox and the states of every instance, to compare runs.
async fn snapshot<S: KeyedStore>(
    log: &dyn EventStore,
    views: &S,
    n: usize,
) -> anyhow::Result<(Vec<(String, String, String)>, Vec<Option<Request>>)> {
    let mut states = Vec::new();
    for i in 0..n {
        states.push(Process::<Deadline, S>::state(views, &format!("r{i}")).await?);
    }
    Ok((outbox(log).await?, states))
}

/// Forty requests on a SQLite log: answered in time, answered late (after a deadline of 0),
/// answered twice, never answered; ticks in between and one past every deadline. Rebuilt
/// from offset 0 in place with a batch size of 1, and side by side with a batch size of 7,
/// the process decides exactly the same: nothing new reaches the outbox, and every instance
/// ends in the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_offset_0_decides_the_same_and_sends_nothing_twice() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log: Arc<dyn EventStore> =
        Arc::new(keel::store::sqlite::SqliteStore::open(dir.path().join("log.db")).await?);
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);
    let ticker = Ticker::new(Arc::clone(&log));
    let mut latest = Timestamp(0);
    for i in 0..40 {
        let id = format!("r{i}");
        let wait = if i % 4 == 1 { 0 } else { 60_000 };
        let r = collab::append(log.as_ref(), "request", &id, &opened(wait)).await?;
        latest = latest.max(r.timestamp);
        match i % 4 {
            0 | 1 => {
                collab::append(log.as_ref(), "request", &id, &answered("ann")).await?;
            }
            2 => {
                collab::append(log.as_ref(), "request", &id, &answered("ann")).await?;
                collab::append(log.as_ref(), "request", &id, &answered("bo")).await?;
            }
            _ => {}
        }
        if i % 10 == 9 {
            ticker.tick().await?;
        }
    }
    ticker.tick_at(plus(latest, 60_001)).await?;

    let runner = Runner::new(
        Process::new(Deadline::new(&log)),
        Arc::clone(&log),
        Arc::clone(&views),
    );
    runner.catch_up().await?;
    let live = snapshot(log.as_ref(), views.as_ref(), 40).await?;
    assert_eq!(live.0.len(), 40, "one decision per request");
    for (id, _, text) in &live.0 {
        let i: usize = id.trim_start_matches('r').parse()?;
        let expected = match i % 4 {
            0 | 2 => "answered by ann",
            _ => "timed out", // 1: answered after a deadline of 0; 3: never answered
        };
        assert_eq!(text, expected, "{id}");
    }

    let in_place = Runner::new(
        Process::new(Deadline::new(&log)),
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(1));
    in_place
        .rebuild(true, keel_projections::CancellationToken::new())
        .await?;
    assert_eq!(snapshot(log.as_ref(), views.as_ref(), 40).await?, live);

    let beside = Runner::new(
        Process::new(Deadline::new(&log)),
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .config(config(7));
    beside
        .rebuild(false, keel_projections::CancellationToken::new())
        .await?;
    assert_eq!(snapshot(log.as_ref(), views.as_ref(), 40).await?, live);
    Ok(())
}
