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
//! Kafka transaction. After the commit it writes the same changes to the local store, then
//! answers each caller with the offsets the broker gave.
//!
//! **Failures**: a fenced producer stops the writer for good ([`Error::Fenced`]); an abortable
//! error aborts the transaction and fails the batch (nothing was written); an unknown outcome
//! (a commit that timed out) fails the batch and re-takes the partition (a new producer,
//! `init_transactions`, read to the end), so the index reflects whatever committed. A retry
//! with the same command id then answers correctly either way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot, watch};

use crate::envelope::{RecordedEvent, Timestamp};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::ledger::{Decision, Ledger};
use crate::store::{AppendRequest, Appended, Error, Result};

use super::reader::Reader;
use super::record;
use super::snapshot::WriterSnapshot;
use super::state::{Commit, CommittedCommand, LocalState};
use super::takeover::{catch_up, init_error, init_transactions};
use super::topics::Names;

/// Settings and counters every partition writer of a store shares.
pub(crate) struct Ctx {
    pub(crate) names: Names,
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
        reply: oneshot::Sender<Result<Appended>>,
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
}

/// An owned partition, as the store holds it.
pub(crate) struct Owned {
    pub(crate) jobs: mpsc::Sender<Job>,
    pub(crate) state: LocalState,
    pub(crate) shared: Arc<Shared>,
    pub(crate) task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How a transaction failed.
#[derive(Debug)]
enum Failure {
    /// Another writer took the partition.
    Fenced(String),
    /// Nothing was written.
    Aborted(String),
    /// The outcome is unknown: the partition must be re-taken before the next batch.
    Unknown(String),
}

fn classify(e: &KafkaError) -> Failure {
    let code = e.rdkafka_error_code();
    if matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    ) {
        return Failure::Fenced(e.to_string());
    }
    if let KafkaError::Transaction(rde) = e {
        if rde.is_fatal() {
            return Failure::Unknown(e.to_string());
        }
        if rde.txn_requires_abort() {
            return Failure::Aborted(e.to_string());
        }
    }
    Failure::Unknown(e.to_string())
}

fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(rde) if rde.is_retriable() && !rde.is_fatal() && !rde.txn_requires_abort())
}

type PendingAppend = (AppendRequest, oneshot::Sender<Result<Appended>>);
type PendingSnapshot = (Snapshot, oneshot::Sender<Result<()>>);

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
}

/// One batch's plan: what each request gets and what to write.
struct Plan {
    decisions: Vec<Result<Decision>>,
    /// For a replay of a command written earlier in the same batch: the writer's index.
    replay_of: Vec<Option<usize>>,
    versions: HashMap<StreamId, StreamVersion>,
    snapshot_answers: Vec<Result<()>>,
    snapshots: Vec<usize>,
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
        };
        (jobs, tokio::spawn(writer.run()))
    }

    async fn run(mut self) {
        let mut release: Option<oneshot::Sender<()>> = None;
        while let Some(job) = self.jobs.recv().await {
            let mut appends: Vec<PendingAppend> = Vec::new();
            let mut snapshots: Vec<PendingSnapshot> = Vec::new();
            let mut next = Some(job);
            while let Some(job) = next.take() {
                match job {
                    Job::Append { request, reply } => appends.push((request, reply)),
                    Job::Snapshot { snapshot, reply } => snapshots.push((snapshot, reply)),
                    Job::Release { reply } => release = Some(reply),
                }
                if appends.len() + snapshots.len() < self.ctx.max_batch && release.is_none() {
                    next = self.jobs.try_recv().ok();
                }
            }
            // A transaction costs a round trip to the coordinator and its markers whatever
            // its size: wait a moment for callers answered by the last commit to send their
            // next append, so they share this one.
            if release.is_none() && !self.ctx.linger.is_zero() {
                let deadline = tokio::time::Instant::now() + self.ctx.linger;
                while appends.len() + snapshots.len() < self.ctx.max_batch {
                    match tokio::time::timeout_at(deadline, self.jobs.recv()).await {
                        Ok(Some(Job::Append { request, reply })) => appends.push((request, reply)),
                        Ok(Some(Job::Snapshot { snapshot, reply })) => {
                            snapshots.push((snapshot, reply));
                        }
                        Ok(Some(Job::Release { reply })) => {
                            release = Some(reply);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            self.batch(appends, snapshots).await;
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

    #[tracing::instrument(level = "debug", skip_all, fields(topic = %self.events, partition = %self.partition, appends = appends.len()))]
    async fn batch(&mut self, appends: Vec<PendingAppend>, snapshots: Vec<PendingSnapshot>) {
        self.ctx
            .appends
            .fetch_add(appends.len() as u64, Ordering::Relaxed);
        if self.shared.fenced.load(Ordering::Acquire) {
            for (_, reply) in appends {
                let _ = reply.send(Err(self.fenced_error("this writer was fenced earlier")));
            }
            for (_, reply) in snapshots {
                let _ = reply.send(Err(self.fenced_error("this writer was fenced earlier")));
            }
            return;
        }
        if self.needs_recovery
            && let Err(e) = self.recover().await
        {
            let text = e.to_string();
            for (_, reply) in appends {
                let _ = reply.send(Err(Error::backend(
                    "append",
                    format!("re-taking the partition failed: {text}"),
                )));
            }
            for (_, reply) in snapshots {
                let _ = reply.send(Err(Error::backend(
                    "save a snapshot",
                    format!("re-taking the partition failed: {text}"),
                )));
            }
            return;
        }
        let plan = match self.plan(&appends, &snapshots).await {
            Ok(plan) => plan,
            Err(e) => {
                let text = e.to_string();
                for (_, reply) in appends {
                    let _ = reply.send(Err(Error::backend("append", text.clone())));
                }
                for (_, reply) in snapshots {
                    let _ = reply.send(Err(Error::backend("save a snapshot", text.clone())));
                }
                return;
            }
        };
        let writes: Vec<usize> = plan
            .decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| matches!(d, Ok(Decision::Write { .. })).then_some(i))
            .collect();
        if writes.is_empty() && plan.snapshots.is_empty() {
            self.answer_without_writes(appends, snapshots, plan);
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
        let result = self
            .transact(
                &appends,
                &snapshots,
                &plan,
                &writes,
                writer_snapshot.as_ref(),
            )
            .await;
        match result {
            Ok(offsets) => {
                self.ctx.transactions.fetch_add(1, Ordering::Relaxed);
                if writer_snapshot.is_some() {
                    self.since_snapshot = 0;
                }
                self.since_snapshot += writes.len() as u64;
                self.committed(appends, snapshots, plan, &writes, offsets)
                    .await;
            }
            Err(failure) => self.failed(appends, snapshots, plan, failure),
        }
    }

    /// Decides every request against the local store's index.
    async fn plan(&self, appends: &[PendingAppend], snapshots: &[PendingSnapshot]) -> Result<Plan> {
        let mut seen = std::collections::HashSet::new();
        let streams: Vec<&StreamId> = appends
            .iter()
            .map(|(r, _)| &r.stream)
            .chain(snapshots.iter().map(|(s, _)| &s.stream))
            .filter(|s| seen.insert(*s))
            .collect();
        let commands: Vec<(&StreamId, &CommandId)> = appends
            .iter()
            .filter_map(|(r, _)| r.command.as_ref().map(|c| (&r.stream, &c.id)))
            .collect();
        let (versions, commands) = self
            .state
            .ledger(&streams, &commands, self.ctx.window_start())
            .await?;
        let mut ledger = Ledger::new(self.partitions);
        ledger.topics.insert(self.topic.clone(), self.partitions);
        ledger.streams = versions.into_iter().collect();
        ledger.commands = commands.into_iter().collect();
        let mut written: HashMap<(StreamId, CommandId), usize> = HashMap::new();
        let mut decisions = Vec::with_capacity(appends.len());
        let mut replay_of = Vec::with_capacity(appends.len());
        for (i, (request, _)) in appends.iter().enumerate() {
            let decision = ledger.decide(request);
            let key = request
                .command
                .as_ref()
                .map(|c| (request.stream.clone(), c.id.clone()));
            match (&decision, key) {
                (Ok(Decision::Write { .. }), Some(key)) => {
                    written.insert(key, i);
                    replay_of.push(None);
                }
                (Ok(Decision::Replay(_)), Some(key)) => replay_of.push(written.get(&key).copied()),
                _ => replay_of.push(None),
            }
            decisions.push(decision);
        }
        let mut latest: HashMap<&StreamId, usize> = HashMap::new();
        let snapshot_answers = snapshots
            .iter()
            .enumerate()
            .map(|(i, (snapshot, _))| {
                let actual = ledger
                    .streams
                    .get(&snapshot.stream)
                    .copied()
                    .unwrap_or_default();
                if snapshot.version > actual {
                    return Err(Error::SnapshotAhead {
                        stream: snapshot.stream.clone(),
                        version: snapshot.version,
                        actual,
                    });
                }
                match latest.get(&snapshot.stream) {
                    Some(&j)
                        if snapshots
                            .get(j)
                            .is_some_and(|(earlier, _)| !snapshot.supersedes(earlier)) => {}
                    _ => {
                        latest.insert(&snapshot.stream, i);
                    }
                }
                Ok(())
            })
            .collect();
        let mut accepted: Vec<usize> = latest.into_values().collect();
        accepted.sort_unstable();
        Ok(Plan {
            decisions,
            replay_of,
            versions: ledger.streams.into_iter().collect(),
            snapshot_answers,
            snapshots: accepted,
        })
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

    /// Writes a batch in one transaction; returns the offsets of each written request's events.
    async fn transact(
        &mut self,
        appends: &[PendingAppend],
        snapshots: &[PendingSnapshot],
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<Vec<Vec<Offset>>, Failure> {
        let transactional = self.ctx.transactional;
        if transactional {
            self.producer
                .begin_transaction()
                .map_err(|e| classify(&e))?;
        }
        let sent = self.send_all(appends, snapshots, plan, writes, writer_snapshot);
        let (deliveries, others) = match sent {
            Ok(d) => d,
            Err(e) => {
                let failure = classify(&e);
                if transactional && matches!(failure, Failure::Aborted(_) | Failure::Unknown(_)) {
                    return Err(self.abort(e.to_string()).await);
                }
                return Err(failure);
            }
        };
        // Every record is acknowledged before the commit: rdkafka's `commit_transaction`
        // flushes first, and its flush sleeps up to 100 ms in a poll when records are still
        // in flight (the delivery reports go to the producer's own polling thread), which
        // made every transaction last 100 ms. Waiting here costs nothing: the commit waits
        // for the same acknowledgements.
        let offsets = match Self::delivered(deliveries, others).await {
            Ok(offsets) => offsets,
            Err(failure) => {
                return Err(match failure {
                    Failure::Fenced(d) => Failure::Fenced(d),
                    Failure::Aborted(d) | Failure::Unknown(d) if transactional => {
                        self.abort(d).await
                    }
                    other => other,
                });
            }
        };
        if transactional {
            self.commit().await?;
        }
        Ok(offsets)
    }

    /// Waits for the acknowledgement of every record; the offsets of each write's events.
    async fn delivered(
        deliveries: Vec<Vec<DeliveryFuture>>,
        others: Vec<DeliveryFuture>,
    ) -> Result<Vec<Vec<Offset>>, Failure> {
        let offset = |f: DeliveryFuture| async move {
            match f.await {
                Ok(Ok(delivery)) => Ok(Offset(u64::try_from(delivery.offset).unwrap_or(0))),
                Ok(Err((e, _))) => Err(match classify(&e) {
                    Failure::Fenced(d) => Failure::Fenced(d),
                    _ => Failure::Unknown(format!("a record was not delivered: {e}")),
                }),
                Err(_) => Err(Failure::Unknown(
                    "the producer dropped a delivery report".into(),
                )),
            }
        };
        for f in others {
            offset(f).await?;
        }
        let mut offsets = Vec::with_capacity(deliveries.len());
        for futures in deliveries {
            let mut these = Vec::with_capacity(futures.len());
            for f in futures {
                these.push(offset(f).await?);
            }
            offsets.push(these);
        }
        Ok(offsets)
    }

    /// Enqueues every record of the batch; returns the delivery futures of each write's
    /// events, and of the other records (snapshots).
    fn send_all(
        &self,
        appends: &[PendingAppend],
        snapshots: &[PendingSnapshot],
        plan: &Plan,
        writes: &[usize],
        writer_snapshot: Option<&WriterSnapshot>,
    ) -> Result<(Vec<Vec<DeliveryFuture>>, Vec<DeliveryFuture>), KafkaError> {
        let p = i32::try_from(self.partition.0).unwrap_or(i32::MAX);
        let mut others = Vec::new();
        if let Some(snapshot) = writer_snapshot {
            let topic = self.ctx.names.writer_state(&self.topic);
            for (key, value) in snapshot.encode() {
                let record = FutureRecord::to(&topic)
                    .partition(p)
                    .key(&key)
                    .payload(&value);
                others.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            }
        }
        let mut deliveries = Vec::with_capacity(writes.len());
        for &i in writes {
            let (Some((request, _)), Some(Ok(Decision::Write { appended, .. }))) =
                (appends.get(i), plan.decisions.get(i))
            else {
                continue;
            };
            let mut futures = Vec::with_capacity(request.events.len());
            for (event, version) in request.events.iter().zip(appended.versions()) {
                let headers = record::headers(event, version, request.command.as_ref());
                let record = FutureRecord::to(&self.events)
                    .partition(p)
                    .key(request.stream.id())
                    .payload(&event.payload)
                    .headers(headers);
                futures.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            }
            deliveries.push(futures);
        }
        let topic = self.ctx.names.snapshots(&self.topic);
        for &i in &plan.snapshots {
            let Some((snapshot, _)) = snapshots.get(i) else {
                continue;
            };
            let record = FutureRecord::to(&topic)
                .partition(p)
                .key(snapshot.stream.id())
                .payload(&snapshot.payload)
                .headers(record::snapshot_headers(snapshot));
            others.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
        }
        Ok((deliveries, others))
    }

    async fn commit(&mut self) -> Result<(), Failure> {
        let deadline = tokio::time::Instant::now() + self.ctx.timeout;
        loop {
            let producer = self.producer.clone();
            let timeout = self.ctx.timeout;
            let result = tokio::task::spawn_blocking(move || producer.commit_transaction(timeout))
                .await
                .unwrap_or(Err(KafkaError::Canceled));
            match result {
                Ok(()) => return Ok(()),
                Err(e) if is_retriable(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "committing the transaction again");
                }
                Err(e) => {
                    return Err(match classify(&e) {
                        Failure::Aborted(d) => self.abort(d).await,
                        other => other,
                    });
                }
            }
        }
    }

    /// Aborts the open transaction; the failure to report.
    async fn abort(&mut self, reason: String) -> Failure {
        let producer = self.producer.clone();
        let timeout = self.ctx.timeout;
        match tokio::task::spawn_blocking(move || producer.abort_transaction(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
        {
            Ok(()) => Failure::Aborted(reason),
            Err(e) => match classify(&e) {
                Failure::Fenced(d) => Failure::Fenced(d),
                _ => Failure::Unknown(format!("{reason}; aborting failed too: {e}")),
            },
        }
    }

    /// After a commit: the local store, the counters, then each caller's answer.
    async fn committed(
        &mut self,
        appends: Vec<PendingAppend>,
        snapshots: Vec<PendingSnapshot>,
        plan: Plan,
        writes: &[usize],
        offsets: Vec<Vec<Offset>>,
    ) {
        let mut results: HashMap<usize, Appended> = HashMap::new();
        let mut commit = Commit::default();
        let committed_at = Timestamp::now();
        let mut end = Offset(self.shared.committed_end.load(Ordering::Acquire));
        for (&i, offsets) in writes.iter().zip(offsets) {
            let (Some((request, _)), Some(Ok(Decision::Write { appended, .. }))) =
                (appends.get(i), plan.decisions.get(i))
            else {
                continue;
            };
            let appended = Appended {
                offsets,
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
        for &i in &plan.snapshots {
            if let Some((snapshot, _)) = snapshots.get(i) {
                commit.snapshots.push(snapshot.clone());
            }
        }
        commit.next_offset = Some(end);
        if let Err(e) = self.state.commit(&commit).await {
            // The batch is committed on Kafka; the local store is behind: rebuild it from
            // the partition before the next batch.
            tracing::error!(topic = %self.events, partition = %self.partition, error = %e,
                "writing the local state after a commit failed; re-reading the partition");
            self.needs_recovery = true;
        }
        self.shared.committed_end.store(end.0, Ordering::Release);
        self.ctx.commits.send_modify(|n| *n += 1);
        let answers = plan.decisions.into_iter().zip(plan.replay_of);
        for (i, ((_, reply), (decision, replay_of))) in appends.into_iter().zip(answers).enumerate()
        {
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
            let _ = reply.send(answer);
        }
        for ((_, reply), answer) in snapshots.into_iter().zip(plan.snapshot_answers) {
            let _ = reply.send(answer);
        }
    }

    fn answer_without_writes(
        &self,
        appends: Vec<PendingAppend>,
        snapshots: Vec<PendingSnapshot>,
        plan: Plan,
    ) {
        for ((_, reply), decision) in appends.into_iter().zip(plan.decisions) {
            let _ = reply.send(decision.map(|d| match d {
                Decision::Replay(a) | Decision::Write { appended: a, .. } => a,
            }));
        }
        for ((_, reply), answer) in snapshots.into_iter().zip(plan.snapshot_answers) {
            let _ = reply.send(answer);
        }
    }

    fn failed(
        &mut self,
        appends: Vec<PendingAppend>,
        snapshots: Vec<PendingSnapshot>,
        plan: Plan,
        failure: Failure,
    ) {
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
        for ((_, reply), (decision, replay_of)) in appends.into_iter().zip(decisions) {
            let answer = match decision {
                _ if matches!(failure, Failure::Fenced(_)) => Err(error("append")),
                Ok(Decision::Write { .. }) => Err(error("append")),
                Ok(Decision::Replay(_)) if replay_of.is_some() => Err(error("append")),
                Ok(Decision::Replay(a)) => Ok(a),
                Err(e) => Err(e),
            };
            let _ = reply.send(answer);
        }
        for ((_, reply), answer) in snapshots.into_iter().zip(plan.snapshot_answers) {
            let _ = reply.send(answer.and_then(|()| Err(error("save a snapshot"))));
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
        let plan = Plan {
            decisions: Vec::new(),
            replay_of: Vec::new(),
            versions: HashMap::new(),
            snapshot_answers: Vec::new(),
            snapshots: Vec::new(),
        };
        match self.transact(&[], &[], &plan, &[], Some(&snapshot)).await {
            Ok(_) => Ok(()),
            Err(f) => Err(Error::backend(
                "write a writer-state snapshot",
                format!("{f:?}"),
            )),
        }
    }
}
