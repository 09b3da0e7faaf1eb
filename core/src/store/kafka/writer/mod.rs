//! The single writer of one partition: a task that owns the partition's transactional
//! producer and local state store, and commits appends in shared transactions.
//!
//! **Taking a partition** (`takeover::take`): create the producer with
//! `transactional.id = <group>-<events topic>-<partition>`, call `init_transactions` — which
//! fences every earlier producer with that id and aborts its open transaction — and only then
//! read (`read_committed`): the latest writer-state snapshot, the events partition from the
//! snapshot's offset (or the local store's checkpoint, when newer) to its end, and the
//! aggregate-snapshots partition. Reading before fencing could miss a zombie's last commit;
//! fencing first means the end read is final: nobody else can commit to the partition.
//!
//! **A batch**: the task drains its queue, loads the versions and command ids the batch
//! touches from the local store into a [`Ledger`], decides each request in order (a replayed
//! command, a conflict and a bad request answer only their caller), and writes the accepted
//! events — plus accepted aggregate snapshots and, when due, a writer-state snapshot — in one
//! Kafka transaction. Once the broker has acknowledged the records (their offsets known) it
//! writes the same changes to the local store in a local transaction *while* Kafka commits,
//! commits that local transaction only after Kafka's commit succeeded (a failed commit rolls
//! it back), then answers each caller with the offsets the broker gave. (While a takeover's
//! gap filler also writes the local store, the local write waits for the commit instead, so
//! it never holds the store's lock through a commit.)
//!
//! **Routed commands** (see the `commands` module): a batch may carry commands consumed from
//! the commands topic. The answer of each routed append is written to the replies topic in
//! the same transaction as its events, answers of routed commands that wrote nothing join
//! the transaction as well, and the commands partition's consumer offset (its low
//! watermark) is sent to the transaction before the commit: consume-transform-produce.
//!
//! **Failures**: a fenced producer stops the writer for good ([`Error::Fenced`]), and the
//! store lets the partition go; an abortable error aborts the transaction and fails the batch
//! (nothing was written) — a batch with routed commands is tried again, since a rebalance of
//! the consumer group aborts a transaction that commits consumer offsets; an unknown outcome
//! (a commit that timed out) fails the batch and re-takes the partition (a new producer,
//! `init_transactions`, read to the end), so the index reflects whatever committed — but only
//! while the partition is still assigned to this store: re-taking a partition that was
//! revoked would fence its new owner. A retry with the same command id then answers
//! correctly either way.

mod plan;
mod transact;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::{RecordedEvent, Timestamp};
use crate::ids::{Offset, Partition, Position, Topic};
use crate::snapshot::Snapshot;
use crate::store::ledger::Decision;
use crate::store::{AppendRequest, Appended, Error, Result};

use super::commands::{Answer, CommandOffsets, Consumed};
use super::reader::Reader;
use super::snapshot::WriterSnapshot;
use super::state::{Commit, CommittedCommand, LocalState, Staged};
use super::takeover::{catch_up, init_error, init_transactions};
use super::topics::Names;

use self::plan::Plan;

/// Settings and counters every partition writer of a store shares.
pub(crate) struct Ctx {
    pub(crate) names: Names,
    /// Settings every client of the store starts from (bootstrap servers, the user's).
    pub(crate) base: ClientConfig,
    /// Producer settings without `transactional.id`.
    pub(crate) producer: ClientConfig,
    pub(crate) group: String,
    pub(crate) transactional: bool,
    pub(crate) window: Duration,
    pub(crate) snapshot_every: u64,
    pub(crate) max_batch: usize,
    pub(crate) linger: Duration,
    pub(crate) timeout: Duration,
    pub(crate) state_dir: PathBuf,
    pub(crate) reader: Reader,
    pub(crate) bootstrap: String,
    pub(crate) commits: watch::Sender<u64>,
    pub(crate) transactions: AtomicU64,
    pub(crate) appends: AtomicU64,
}

impl Ctx {
    /// The oldest commit time a remembered command id may have now.
    pub(crate) fn window_start(&self) -> Timestamp {
        let window = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        Timestamp(Timestamp::now().0.saturating_sub(window))
    }

    pub(crate) fn transactional_id(&self, events: &str, partition: Partition) -> String {
        format!("{}-{events}-{partition}", self.group)
    }

    pub(crate) fn create_producer(&self, transactional_id: &str) -> Result<FutureProducer> {
        let mut config = self.producer.clone();
        config.set("client.id", transactional_id);
        if self.transactional {
            config.set("transactional.id", transactional_id);
        }
        config
            .create()
            .map_err(|e| Error::backend("create a Kafka producer", e))
    }
}

/// Work for a partition's writer.
pub(crate) enum Job {
    Append {
        request: AppendRequest,
        /// Set when the append is a routed command's: its answer and consumer offset go
        /// into the same transaction.
        routed: Option<Consumed>,
        reply: oneshot::Sender<Result<Appended>>,
    },
    /// The answer to a routed command that wrote no events, with its consumer offset.
    Answer {
        answer: Answer,
        reply: oneshot::Sender<Result<()>>,
    },
    Snapshot {
        snapshot: Snapshot,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Finish what was queued, write a writer-state snapshot, stop.
    Release { reply: oneshot::Sender<()> },
}

/// What the store and the writer task share about a partition.
pub(crate) struct Shared {
    /// The offset after the last record this writer knows committed: reads of the
    /// partition wait until they have passed it (read-your-writes).
    pub(crate) committed_end: AtomicU64,
    /// `true` once the local store holds every record of the partition (no gap).
    pub(crate) complete: watch::Sender<bool>,
    /// Set when another writer fenced this one.
    pub(crate) fenced: AtomicBool,
    /// Cleared when the partition is revoked or released: an unknown outcome is then not
    /// recovered by fencing again, which would steal the partition from its new owner.
    pub(crate) assigned: AtomicBool,
    /// The commands partition this writer answers for (a store in a service).
    pub(crate) commands: std::sync::Mutex<Option<Arc<CommandOffsets>>>,
}

impl Shared {
    pub(crate) fn new(committed_end: Offset, complete: bool) -> Self {
        Self {
            committed_end: AtomicU64::new(committed_end.0),
            complete: watch::Sender::new(complete),
            fenced: AtomicBool::new(false),
            assigned: AtomicBool::new(true),
            commands: std::sync::Mutex::new(None),
        }
    }

    /// The commands partition this writer answers for, if any.
    pub(crate) fn commands(&self) -> Option<Arc<CommandOffsets>> {
        self.commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// An owned partition, as the store holds it.
pub(crate) struct Owned {
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) state: LocalState,
    pub(crate) shared: Arc<Shared>,
    pub(crate) task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// An append waiting for its batch.
pub(crate) struct PendingAppend {
    pub(crate) request: AppendRequest,
    pub(crate) routed: Option<Consumed>,
    pub(crate) reply: oneshot::Sender<Result<Appended>>,
}

/// A batch's write to the local store, and its written appends' answers by index.
struct Local {
    commit: Commit,
    results: HashMap<usize, Appended>,
    end: Offset,
}

type PendingSnapshot = (Snapshot, oneshot::Sender<Result<()>>);
type PendingAnswer = (Answer, oneshot::Sender<Result<()>>);

/// The jobs one transaction handles.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) appends: Vec<PendingAppend>,
    pub(crate) snapshots: Vec<PendingSnapshot>,
    pub(crate) answers: Vec<PendingAnswer>,
}

impl Batch {
    fn len(&self) -> usize {
        self.appends.len() + self.snapshots.len() + self.answers.len()
    }

    /// Adds a job; returns the release request, if it was one.
    fn push(&mut self, job: Job) -> Option<oneshot::Sender<()>> {
        match job {
            Job::Append {
                request,
                routed,
                reply,
            } => self.appends.push(PendingAppend {
                request,
                routed,
                reply,
            }),
            Job::Snapshot { snapshot, reply } => self.snapshots.push((snapshot, reply)),
            Job::Answer { answer, reply } => self.answers.push((answer, reply)),
            Job::Release { reply } => return Some(reply),
        }
        None
    }

    /// Whether the batch answers routed commands (and so commits consumer offsets).
    fn routes(&self) -> bool {
        !self.answers.is_empty() || self.appends.iter().any(|a| a.routed.is_some())
    }

    /// Answers every caller with the same error.
    fn fail(self, error: impl Fn(&'static str) -> Error) {
        for a in self.appends {
            let _ = a.reply.send(Err(error("append")));
        }
        for (_, reply) in self.snapshots {
            let _ = reply.send(Err(error("save a snapshot")));
        }
        for (_, reply) in self.answers {
            let _ = reply.send(Err(error("answer a routed command")));
        }
    }
}

pub(crate) struct Writer {
    ctx: Arc<Ctx>,
    topic: Topic,
    partitions: u32,
    partition: Partition,
    events: String,
    transactional_id: String,
    producer: FutureProducer,
    state: LocalState,
    shared: Arc<Shared>,
    jobs: mpsc::Receiver<Job>,
    /// Appends committed since the last writer-state snapshot.
    since_snapshot: u64,
    /// Appends after which the next snapshot is due.
    snapshot_after: u64,
    /// A transaction's outcome is unknown: re-take the partition before the next batch.
    needs_recovery: bool,
    /// How many jobs the next batch can expect soon: those answered by the last commit (each
    /// caller may send its next one at once) plus those queued while it ran. The linger ends
    /// when the batch holds that many, rather than always waiting it out.
    expected: Option<usize>,
}

impl Writer {
    /// Starts the writer task of a partition just taken.
    #[expect(clippy::too_many_arguments, reason = "the parts of a taken partition")]
    pub(crate) fn start(
        ctx: Arc<Ctx>,
        topic: Topic,
        partitions: u32,
        partition: Partition,
        events: String,
        transactional_id: String,
        producer: FutureProducer,
        state: LocalState,
        shared: Arc<Shared>,
    ) -> (mpsc::Sender<Job>, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(4 * ctx.max_batch);
        let snapshot_after = ctx.snapshot_every;
        let writer = Self {
            ctx,
            topic,
            partitions,
            partition,
            events,
            transactional_id,
            producer,
            state,
            shared,
            jobs: rx,
            since_snapshot: 0,
            snapshot_after,
            needs_recovery: false,
            expected: None,
        };
        (jobs, tokio::spawn(writer.run()))
    }

    async fn run(mut self) {
        let mut release: Option<oneshot::Sender<()>> = None;
        while let Some(job) = self.jobs.recv().await {
            let mut batch = Batch::default();
            let mut next = Some(job);
            while let Some(job) = next.take() {
                release = release.or(batch.push(job));
                if batch.len() < self.ctx.max_batch && release.is_none() {
                    next = self.jobs.try_recv().ok();
                }
            }
            // A transaction costs a round trip to the coordinator and its markers whatever
            // its size: wait a moment for callers answered by the last commit to send their
            // next append, so they share this one — but only until they are all in (those
            // answered, plus those queued while it ran): waiting longer only delays it.
            let expected = self
                .expected
                .take()
                .map_or(self.ctx.max_batch, |n| n.clamp(1, self.ctx.max_batch));
            if release.is_none() && !self.ctx.linger.is_zero() {
                let deadline = tokio::time::Instant::now() + self.ctx.linger;
                while batch.len() < expected {
                    match tokio::time::timeout_at(deadline, self.jobs.recv()).await {
                        Ok(Some(job)) => {
                            release = batch.push(job);
                            if release.is_some() {
                                break;
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            self.batch(batch).await;
            if release.is_some() {
                break;
            }
        }
        if !self.shared.fenced.load(Ordering::Acquire)
            && self.since_snapshot > 0
            && !self.needs_recovery
            && let Err(e) = self.write_snapshot_alone().await
        {
            tracing::warn!(topic = %self.events, partition = %self.partition, error = %e,
                    "writing the writer-state snapshot on release failed; the next owner reads a longer tail");
        }
        self.state.close().await;
        tracing::debug!(topic = %self.events, partition = %self.partition, "partition released");
        if let Some(reply) = release {
            let _ = reply.send(());
        }
    }

    fn fenced_error(&self, detail: &str) -> Error {
        Error::Fenced {
            topic: self.topic.clone(),
            partition: self.partition,
            detail: format!("transactional.id {}: {detail}", self.transactional_id),
        }
    }

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %self.events, partition = %self.partition, appends = batch.appends.len()))]
    async fn batch(&mut self, batch: Batch) {
        self.ctx
            .appends
            .fetch_add(batch.appends.len() as u64, Ordering::Relaxed);
        if self.shared.fenced.load(Ordering::Acquire) {
            batch.fail(|_| self.fenced_error("this writer was fenced earlier"));
            return;
        }
        if self.needs_recovery {
            if !self.shared.assigned.load(Ordering::Acquire) {
                // Revoked while the outcome was unknown: fencing again would steal the
                // partition from its new owner, who reads what committed.
                let (topic, partition) = (self.topic.clone(), self.partition);
                batch.fail(|_| Error::NotOwner {
                    topic: topic.clone(),
                    partition,
                });
                return;
            }
            if let Err(e) = self.recover().await {
                let text = e.to_string();
                batch.fail(|what| {
                    Error::backend(what, format!("re-taking the partition failed: {text}"))
                });
                return;
            }
        }
        let plan = match self.plan(&batch).await {
            Ok(plan) => plan,
            Err(e) => {
                let text = e.to_string();
                batch.fail(|what| Error::backend(what, text.clone()));
                return;
            }
        };
        let writes = plan.writes();
        if writes.is_empty() && plan.snapshots.is_empty() && batch.answers.is_empty() {
            Self::answer_without_writes(batch, plan);
            return;
        }
        let writer_snapshot = if self.since_snapshot >= self.snapshot_after {
            match self.writer_snapshot().await {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the writer state for a snapshot failed; skipping it");
                    None
                }
            }
        } else {
            None
        };
        // A transaction that commits consumer offsets is aborted when the consumer group
        // rebalances under it (its generation changes): nothing was written, so try again.
        let attempts = if batch.routes() { 3 } else { 1 };
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = self
                .transact_staged(&batch, &plan, &writes, writer_snapshot.as_ref())
                .await;
            match result {
                Err(transact::Failure::Aborted(d)) if attempt < attempts => {
                    tracing::debug!(topic = %self.events, partition = %self.partition, attempt, reason = %d,
                        "transaction with routed commands aborted; trying again");
                    tokio::time::sleep(transact::RETRY_BACKOFF).await;
                }
                other => break other,
            }
        };
        match result {
            Ok((written, local, staged)) => {
                self.ctx.transactions.fetch_add(1, Ordering::Relaxed);
                if writer_snapshot.is_some() {
                    self.since_snapshot = 0;
                }
                self.since_snapshot += writes.len() as u64;
                if let Some(commands) = self.shared.commands() {
                    commands.committed(&written.answered, written.watermark);
                }
                self.committed(batch, plan, local, staged).await;
            }
            Err(failure) => self.failed(batch, plan, failure),
        }
    }

    async fn writer_snapshot(&mut self) -> Result<WriterSnapshot> {
        let since = self.ctx.window_start();
        self.state.forget_commands(since).await?;
        let snapshot = self.state.export(since).await?;
        let rows = (snapshot.streams.len() + snapshot.commands.len()) as u64;
        // A snapshot reads the whole index: take the next one after at least as many appends
        // as it has rows, so the cost per append stays constant.
        self.snapshot_after = self.ctx.snapshot_every.max(rows / 4);
        Ok(snapshot)
    }

    /// One transaction of the batch, its local write staged while it commits: once the
    /// records are acknowledged (their offsets known), the local store writes the batch in a
    /// local transaction at the same time as Kafka commits; the caller finishes it after
    /// the commit, and a failed commit rolls it back.
    async fn transact_staged(
        &mut self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<(transact::Written, Local, Option<Result<Staged>>), transact::Failure> {
        let written = self.send(batch, plan, writes, writer_snapshot).await?;
        let local = self.local(batch, plan, writes, &written.offsets);
        // Staged only while nothing else writes the local store (a takeover's gap filler
        // does, until the gap is full): the staged write holds its lock during the commit.
        let staging = self.ctx.transactional && *self.shared.complete.borrow();
        let staged = if staging {
            let state = self.state.clone();
            let (committed, staged) = tokio::join!(self.commit(), state.stage(&local.commit));
            committed?;
            Some(staged)
        } else {
            if self.ctx.transactional {
                self.commit().await?;
            }
            None
        };
        Ok((written, local, staged))
    }

    /// What a batch whose records were acknowledged writes to the local store, and each
    /// written append's answer.
    fn local(
        &self,
        batch: &Batch,
        plan: &Plan,
        writes: &[usize],
        offsets: &[Vec<Offset>],
    ) -> Local {
        let mut results: HashMap<usize, Appended> = HashMap::new();
        let mut commit = Commit::default();
        let committed_at = Timestamp::now();
        let mut end = Offset(self.shared.committed_end.load(Ordering::Acquire));
        for (&i, offsets) in writes.iter().zip(offsets) {
            let (Some(append), Some(Ok(Decision::Write { appended, .. }))) =
                (batch.appends.get(i), plan.decisions.get(i))
            else {
                continue;
            };
            let request = &append.request;
            let appended = Appended {
                offsets: offsets.clone(),
                ..appended.clone()
            };
            if let Some(last) = appended.offsets.last() {
                end = end.max(last.next());
            }
            let command = request.command.as_ref();
            for ((event, &offset), version) in request
                .events
                .iter()
                .zip(&appended.offsets)
                .zip(appended.versions())
            {
                commit.events.push(RecordedEvent {
                    position: Position {
                        topic: self.topic.clone(),
                        partition: self.partition,
                        offset,
                    },
                    stream: request.stream.clone(),
                    version,
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    payload: event.payload.clone(),
                    event_id: event.event_id,
                    command_id: command.map(|c| c.id.clone()),
                    correlation_id: command.and_then(|c| c.correlation_id),
                    causation_id: command.and_then(|c| c.causation_id),
                    timestamp: event.timestamp,
                    metadata: event.metadata.clone(),
                });
            }
            if let Some(c) = command {
                commit.commands.push(CommittedCommand {
                    stream: request.stream.clone(),
                    id: c.id.clone(),
                    fingerprint: c.fingerprint,
                    first_version: appended.first_version,
                    offsets: appended.offsets.clone(),
                    committed_at,
                });
            }
            if let Some(v) = plan.versions.get(&request.stream) {
                commit.streams.insert(request.stream.clone(), *v);
            }
            results.insert(i, appended);
        }
        for &(i, _) in &plan.snapshots {
            if let Some((snapshot, _)) = batch.snapshots.get(i) {
                commit.snapshots.push(snapshot.clone());
            }
        }
        commit.next_offset = Some(end);
        Local {
            commit,
            results,
            end,
        }
    }

    /// After a commit: the local store, the counters, then each caller's answer.
    async fn committed(
        &mut self,
        batch: Batch,
        plan: Plan,
        local: Local,
        staged: Option<Result<Staged>>,
    ) {
        let Local {
            commit,
            results,
            end,
        } = local;
        let r = match staged {
            Some(staged) => match staged {
                Ok(staged) => staged.finish().await,
                Err(e) => Err(e),
            },
            None => self.state.commit(&commit).await,
        };
        if let Err(e) = r {
            // The batch is committed on Kafka; the local store is behind: rebuild it from
            // the partition before the next batch.
            tracing::error!(topic = %self.events, partition = %self.partition, error = %e,
                "writing the local state after a commit failed; re-reading the partition");
            self.needs_recovery = true;
        }
        self.shared.committed_end.store(end.0, Ordering::Release);
        self.ctx.commits.send_modify(|n| *n += 1);
        // Every caller answered here may send its next append at once; so may those queued.
        self.expected = Some(batch.len() + self.jobs.len());
        let answers = plan.decisions.into_iter().zip(plan.replay_of);
        for (i, (append, (decision, replay_of))) in
            batch.appends.into_iter().zip(answers).enumerate()
        {
            if let (Some(routed), Some(_)) = (&append.routed, results.get(&i)) {
                routed.answered.store(true, Ordering::Release);
            }
            let answer = match (replay_of, decision) {
                (Some(j), _) => results
                    .get(&j)
                    .cloned()
                    .map(Appended::into_replayed)
                    .ok_or(Error::Closed),
                (None, Ok(Decision::Write { .. })) => results.get(&i).cloned().ok_or(Error::Closed),
                (None, Ok(Decision::Replay(a))) => Ok(a),
                (None, Err(e)) => Err(e),
            };
            let _ = append.reply.send(answer);
        }
        for ((_, reply), answer) in batch.snapshots.into_iter().zip(plan.snapshot_answers) {
            let _ = reply.send(answer);
        }
        for (_, reply) in batch.answers {
            let _ = reply.send(Ok(()));
        }
    }

    fn answer_without_writes(batch: Batch, plan: Plan) {
        for (append, decision) in batch.appends.into_iter().zip(plan.decisions) {
            let _ = append.reply.send(decision.map(|d| match d {
                Decision::Replay(a) | Decision::Write { appended: a, .. } => a,
            }));
        }
        for ((_, reply), answer) in batch.snapshots.into_iter().zip(plan.snapshot_answers) {
            let _ = reply.send(answer);
        }
    }

    fn failed(&mut self, batch: Batch, plan: Plan, failure: transact::Failure) {
        use transact::Failure;
        tracing::warn!(topic = %self.events, partition = %self.partition, ?failure, "append batch failed");
        match &failure {
            Failure::Fenced(_) => self.shared.fenced.store(true, Ordering::Release),
            Failure::Unknown(_) => self.needs_recovery = true,
            Failure::Aborted(_) => {}
        }
        let error = |what: &'static str| match &failure {
            Failure::Fenced(d) => self.fenced_error(d),
            Failure::Aborted(d) => Error::backend(
                what,
                format!(
                    "topic {} partition {}: the transaction was aborted, nothing was written: {d}",
                    self.events, self.partition
                ),
            ),
            Failure::Unknown(d) => Error::backend(
                what,
                format!(
                    "topic {} partition {}: the outcome is unknown ({d}); retry with the same command id",
                    self.events, self.partition
                ),
            ),
        };
        let decisions = plan.decisions.into_iter().zip(plan.replay_of);
        for (append, (decision, replay_of)) in batch.appends.into_iter().zip(decisions) {
            let answer = match decision {
                _ if matches!(failure, Failure::Fenced(_)) => Err(error("append")),
                Ok(Decision::Write { .. }) => Err(error("append")),
                Ok(Decision::Replay(_)) if replay_of.is_some() => Err(error("append")),
                Ok(Decision::Replay(a)) => Ok(a),
                Err(e) => Err(e),
            };
            let _ = append.reply.send(answer);
        }
        for ((_, reply), answer) in batch.snapshots.into_iter().zip(plan.snapshot_answers) {
            let _ = reply.send(answer.and_then(|()| Err(error("save a snapshot"))));
        }
        for (_, reply) in batch.answers {
            let _ = reply.send(Err(error("answer a routed command")));
        }
    }

    /// Re-takes the partition after an unknown outcome: a new producer (whose
    /// `init_transactions` ends the old one's transaction), then the partition read to its end.
    async fn recover(&mut self) -> Result<()> {
        tracing::info!(topic = %self.events, partition = %self.partition, "re-taking the partition after an unknown outcome");
        let producer = self.ctx.create_producer(&self.transactional_id)?;
        if self.ctx.transactional {
            init_transactions(&producer, self.ctx.timeout)
                .await
                .map_err(|e| init_error(&self.ctx, &self.transactional_id, &e))?;
        }
        self.producer = producer;
        let end = catch_up(&self.ctx, &self.state, &self.topic, self.partition).await?;
        self.shared.committed_end.store(end.0, Ordering::Release);
        self.needs_recovery = false;
        Ok(())
    }

    /// A writer-state snapshot in a transaction of its own (on release).
    async fn write_snapshot_alone(&mut self) -> Result<()> {
        let snapshot = self.writer_snapshot().await?;
        let batch = Batch::default();
        match self
            .transact(&batch, &Plan::empty(), &[], Some(&snapshot))
            .await
        {
            Ok(_) => Ok(()),
            Err(f) => Err(Error::backend(
                "write a writer-state snapshot",
                format!("{f:?}"),
            )),
        }
    }
}
