//! Several instances of one projection splitting its partitions: [`Runner::run_shared`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use keel::{Offset, Partition, RecordedEvent, Topic};
use tokio_util::sync::CancellationToken;

use super::Runner;
use super::drive::Applied;
use crate::error::{Error, Result};
use crate::projection::Projection;
use crate::store::{Generation, Lease, Stopped, ViewId, ViewState, ViewStore};

/// A change to the partitions a shared runner holds.
#[derive(Debug)]
#[non_exhaustive]
pub enum AssignmentChange {
    /// These partitions are this runner's now.
    Assigned(Vec<(Topic, Partition)>),
    /// These partitions are taken away: the runner stops them and then says so.
    Revoked(Revoked),
}

/// Partitions taken away from a shared runner; dropping it (or [`done`](Self::done)) says
/// they are let go.
pub struct Revoked {
    /// The partitions.
    pub partitions: Vec<(Topic, Partition)>,
    done: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revoked")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Revoked {
    /// A revocation of `partitions`; `done` runs once they are let go.
    pub fn new(partitions: Vec<(Topic, Partition)>, done: impl FnOnce() + Send + 'static) -> Self {
        Self {
            partitions,
            done: std::sync::Mutex::new(Some(Box::new(done))),
        }
    }

    /// Says the partitions are let go.
    pub fn done(self) {
        drop(self);
    }
}

impl Drop for Revoked {
    fn drop(&mut self) {
        let done = self
            .done
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            done();
        }
    }
}

/// The partitions handed to a shared runner and taken back, by a group membership.
#[async_trait]
pub trait Assignments: Send {
    /// The next change; `None` once the membership ended.
    async fn next(&mut self) -> Option<AssignmentChange>;
}

#[cfg(feature = "kafka")]
#[async_trait]
impl Assignments for keel::kafka::PartitionGroup {
    async fn next(&mut self) -> Option<AssignmentChange> {
        loop {
            match keel::kafka::PartitionGroup::next(self).await? {
                keel::kafka::GroupChange::Assigned(partitions) => {
                    return Some(AssignmentChange::Assigned(partitions));
                }
                keel::kafka::GroupChange::Revoked(revocation) => {
                    let partitions = revocation.partitions.clone();
                    return Some(AssignmentChange::Revoked(Revoked::new(
                        partitions,
                        move || {
                            revocation.done();
                        },
                    )));
                }
                _ => {}
            }
        }
    }
}

/// The lease of one partition of a shared projection.
pub(crate) fn partition_lease(projection: &str, topic: &Topic, partition: Partition) -> String {
    format!("{projection}/{topic}/{partition}")
}

/// How often a partition logs its lag while it works.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Records counted at most when a partition logs its lag (beyond, the lag is logged as at
/// least this many).
const LAG_COUNT_CAP: u64 = 10_000;

type Key = (Topic, Partition);

impl<P: Projection> Runner<P> {
    /// Runs the projection as one instance of several: it feeds the partitions
    /// `assignments` hands it, each under its own lease, until `cancel` fires or the
    /// membership ends.
    ///
    /// A group membership ([`Assignments`]; on Kafka, `keel::kafka::PartitionGroup` with the
    /// `kafka` feature) decides which instance reads which partition. The exactly-once rules stay
    /// those of a single runner — each batch's view changes commit with its checkpoint moved,
    /// compare-and-set, under a lease — with **a lease per partition** instead of one per
    /// projection: lease `<projection>/<topic>/<partition>`.
    ///
    /// - **Before joining**, an instance claims the projection's own lease for a moment and
    ///   makes sure the active generation is at the code's version, then releases it. Instances
    ///   feed the active generation only. The first build of a view is made in place by the
    ///   instances together: the view is activated empty and fills as they go (its lag says how
    ///   far it is). A newer version is built beside the active view by the instance that holds
    ///   the projection's lease, as [`Runner::run`] builds it (the others wait for the lease, up
    ///   to [`RunnerConfig::claim_timeout`](super::RunnerConfig)), then shared.
    /// - **Assigned** a partition, the instance takes its lease over from whoever held it: the
    ///   group says the partition is this instance's now, and the previous holder either let it
    ///   go or is gone (dead, or thrown out of the group). A holder that is in fact still
    ///   running cannot commit any more: every commit checks the lease and moves the checkpoint
    ///   only from where it was read. The instance reads from the checkpoint in the view store.
    /// - **Revoked**, it stops the partition between two batches: the batch in progress
    ///   commits whole or rolls back whole, never half, and the group moves the partition only
    ///   after that. It then releases the partition's lease.
    /// - A batch whose commit finds the lease or the checkpoint moved (a runner of the whole
    ///   projection, such as a command-line catch-up, wrote it meanwhile) is rolled back; the
    ///   instance re-reads the checkpoint and goes on while the lease is still its own, and lets
    ///   the partition go otherwise.
    /// - Every few seconds, and when it catches up, each partition logs its lag (counted in
    ///   records) on the `tracing` target `keel::projections::lag`, fields `projection`,
    ///   `topic`, `partition`, `checkpoint`, `lag` and `owner`.
    ///
    /// `projections status` shows each partition's lease holder.
    ///
    /// ```no_run
    /// # #[cfg(feature = "kafka")]
    /// # async fn run<P: keel_projections::Projection>(
    /// #     runner: keel_projections::Runner<P>,
    /// #     store: &keel::store::kafka::KafkaStore,
    /// # ) -> Result<(), Box<dyn std::error::Error>> {
    /// use keel_projections::CancellationToken;
    ///
    /// let group = keel::kafka::PartitionGroup::builder(store, P::NAME, vec![keel::Topic::new("account")?])
    ///     .join()
    ///     .await?;
    /// runner.run_shared(group, CancellationToken::new()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A bad event (with [`OnBadEvent::Stop`](super::OnBadEvent)), a store failure, or the
    /// view's generation dropped underneath (a rebuild): the runner stops every partition
    /// first (each batch in progress commits or rolls back whole).
    pub async fn run_shared(
        &self,
        mut assignments: impl Assignments,
        cancel: CancellationToken,
    ) -> Result<()> {
        let view = {
            let lease = self.claim(&cancel).await?;
            let prepared = self.prepare_shared(&lease, &cancel).await;
            let _ = self.views.release(&lease).await;
            match prepared? {
                Some(generation) => generation.id(),
                None => return Ok(()),
            }
        };
        // Why a runner last stopped on this view is history once one runs again.
        self.record_stop(&view, None).await;
        let owner = self.claim_owner();
        // One batch at a time, taking turns between this instance's partitions (a fair
        // lock): a view store with one writer (SQLite) would otherwise let some partitions
        // starve while others hold its lock batch after batch.
        let turns = tokio::sync::Mutex::new(());
        let mut workers = FuturesUnordered::new();
        let mut running: HashMap<Key, CancellationToken> = HashMap::new();
        let mut revocations: Vec<(HashSet<Key>, Revoked)> = Vec::new();
        let mut outcome = Ok(());
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                change = assignments.next() => match change {
                    Some(AssignmentChange::Assigned(partitions)) => {
                        for key in partitions {
                            if running.contains_key(&key) {
                                continue;
                            }
                            let stop = cancel.child_token();
                            running.insert(key.clone(), stop.clone());
                            workers.push(self.drive_partition(view.clone(), key, owner.clone(), stop, &turns));
                        }
                    }
                    Some(AssignmentChange::Revoked(revoked)) => {
                        let waiting: HashSet<Key> = revoked
                            .partitions
                            .iter()
                            .filter(|key| running.get(*key).inspect(|stop| stop.cancel()).is_some())
                            .cloned()
                            .collect();
                        if waiting.is_empty() {
                            revoked.done();
                        } else {
                            revocations.push((waiting, revoked));
                        }
                    }
                    // The membership ended: no partition is this runner's any more.
                    None => break,
                },
                Some((key, result)) = workers.next(), if !workers.is_empty() => {
                    running.remove(&key);
                    settle(&mut revocations, &key);
                    if let Err(e) = result {
                        outcome = Err(e);
                        break;
                    }
                }
                else => break,
            }
        }
        for stop in running.values() {
            stop.cancel();
        }
        while let Some((key, result)) = workers.next().await {
            settle(&mut revocations, &key);
            if let (Err(e), Ok(())) = (result, &outcome) {
                outcome = Err(e);
            }
        }
        for (_, revoked) in revocations {
            revoked.done();
        }
        outcome
    }

    /// The generation the instances feed. The first build of a view is made in place by
    /// the instances together (activated empty, it fills as they go); a newer version is
    /// built beside the active view by the instance holding the projection's lease, as
    /// [`Runner::run`] builds it.
    async fn prepare_shared(
        &self,
        lease: &Lease,
        cancel: &CancellationToken,
    ) -> Result<Option<Generation>> {
        let generations = self.views.generations(P::NAME).await?;
        if generations.iter().any(|g| g.state == ViewState::Active) {
            return self.prepare(lease, cancel).await;
        }
        let first = self.building(&generations, lease).await?;
        self.views.activate(&first.id()).await?;
        tracing::info!(
            projection = P::NAME,
            generation = first.generation,
            "first build: the instances fill the view together"
        );
        Ok(Some(first))
    }

    /// Feeds one partition until `stop`: takes its lease over, reads from its checkpoint,
    /// commits batch after batch, tails. Returns the partition with the outcome.
    async fn drive_partition(
        &self,
        view: ViewId,
        key: Key,
        owner: String,
        stop: CancellationToken,
        turns: &tokio::sync::Mutex<()>,
    ) -> (Key, Result<()>) {
        let result = self
            .drive_partition_inner(&view, &key.0, key.1, &owner, &stop, turns)
            .await;
        if let Err(error) = &result {
            tracing::warn!(projection = P::NAME, topic = %key.0, partition = %key.1, %error, "the partition's runner stopped");
            // Kept with the view, for `projections status` (a lost lease is no failure).
            if !matches!(error, Error::LeaseLost { .. }) {
                self.record_stop(&view, Some(&Stopped::now(error))).await;
            }
        }
        (key, result)
    }

    async fn drive_partition_inner(
        &self,
        view: &ViewId,
        topic: &Topic,
        partition: Partition,
        owner: &str,
        stop: &CancellationToken,
        turns: &tokio::sync::Mutex<()>,
    ) -> Result<()> {
        let name = partition_lease(P::NAME, topic, partition);
        let lease = self.take_partition_lease(&name, owner).await?;
        tracing::info!(projection = P::NAME, %topic, %partition, %owner, "feeding the partition");
        let result = self
            .feed_partition(view, topic, partition, &lease, stop, turns)
            .await;
        let _ = self.views.release(&lease).await;
        match result {
            // Another runner holds the partition now (a lease taken over, or moved by a
            // runner of the whole projection): it is theirs.
            Err(Error::LeaseLost { .. }) if self.generation_exists(view).await? => {
                tracing::info!(projection = P::NAME, %topic, %partition, "another runner holds the partition now");
                Ok(())
            }
            other => other,
        }
    }

    /// Takes a partition's lease: the group assigned the partition here.
    async fn take_partition_lease(&self, name: &str, owner: &str) -> Result<Lease> {
        let ttl = self.config.lease_ttl;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match self.views.lease(name).await? {
                Some(holder) if holder.owner != owner => {
                    tracing::debug!(projection = P::NAME, lease = name, holder = %holder.owner, "taking the partition's lease over");
                    self.views.take_over(name, &holder.owner, owner, ttl).await
                }
                _ => self.views.claim(name, owner, ttl).await,
            };
            match result {
                // Changed hands between the look and the take: look again.
                Err(Error::Held { .. }) if attempts < 5 => {}
                other => return other,
            }
        }
    }

    async fn generation_exists(&self, view: &ViewId) -> Result<bool> {
        Ok(self
            .views
            .generations(P::NAME)
            .await?
            .iter()
            .any(|g| g.generation == view.generation))
    }

    async fn checkpoint(
        &self,
        view: &ViewId,
        topic: &Topic,
        partition: Partition,
    ) -> Result<Offset> {
        Ok(self
            .views
            .checkpoints(view)
            .await?
            .into_iter()
            .find(|c| c.topic == *topic && c.partition == partition)
            .map_or(Offset(0), |c| c.next))
    }

    /// The loop of one partition: batches from the checkpoint, then tailing.
    async fn feed_partition(
        &self,
        view: &ViewId,
        topic: &Topic,
        partition: Partition,
        lease: &Lease,
        stop: &CancellationToken,
        turns: &tokio::sync::Mutex<()>,
    ) -> Result<()> {
        let mut from = self.checkpoint(view, topic, partition).await?;
        let mut commits = self.log.subscribe_commits();
        // After a failed batch: one event per batch up to this offset.
        let mut isolate: Option<Offset> = None;
        let mut last_renew = Instant::now();
        let mut last_lag: Option<Instant> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            commits.borrow_and_update();
            let single = isolate.is_some_and(|until| from <= until);
            let limit = if single { 1 } else { self.config.batch_size };
            let records = self
                .log
                .read_partition(topic, partition, from, limit)
                .await?;
            let Some(last) = records.last().map(RecordedEvent::offset) else {
                if last_lag.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
                    self.log_lag(topic, partition, from, &lease.owner, 0, false);
                    last_lag = Some(Instant::now());
                }
                if last_renew.elapsed() > self.config.lease_ttl / 3 {
                    self.views
                        .claim(&lease.name, &lease.owner, lease.ttl)
                        .await
                        .map_err(|_| Error::LeaseLost {
                            projection: lease.name.clone(),
                        })?;
                    last_renew = Instant::now();
                }
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    _ = commits.changed() => {}
                    () = tokio::time::sleep(self.config.poll) => {}
                }
                continue;
            };
            let count = records.len() as u64;
            let turn = turns.lock().await;
            if stop.is_cancelled() {
                // Revoked while waiting for its turn: nothing of this batch was begun.
                return Ok(());
            }
            let applied = self.apply(view, lease, from, records).await;
            drop(turn);
            match applied {
                Ok(Applied::Committed) => {
                    from = last.next();
                    last_renew = Instant::now();
                    self.progress.send_modify(|p| p.applied += count);
                }
                Ok(Applied::RolledBack) => {
                    isolate = Some(last);
                    from = self.checkpoint(view, topic, partition).await?;
                }
                Err(Error::LeaseLost { .. }) => {
                    // The checkpoint moved under this batch (nothing of it was kept): go on
                    // from where it is now while the lease is still this runner's.
                    let holder = self.views.lease(&lease.name).await?;
                    if holder.is_none_or(|h| h.owner != lease.owner)
                        || !self.generation_exists(view).await?
                    {
                        return Err(Error::LeaseLost {
                            projection: lease.name.clone(),
                        });
                    }
                    from = self.checkpoint(view, topic, partition).await?;
                }
                Err(e) => return Err(e),
            }
            if last_lag.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
                let head = self.log.head(topic, partition).await?;
                let (lag, at_least) = super::status::records_between(
                    self.log.as_ref(),
                    topic,
                    partition,
                    from,
                    head,
                    LAG_COUNT_CAP,
                )
                .await?;
                self.log_lag(topic, partition, from, &lease.owner, lag, at_least);
                last_lag = Some(Instant::now());
            }
        }
    }

    fn log_lag(
        &self,
        topic: &Topic,
        partition: Partition,
        checkpoint: Offset,
        owner: &str,
        lag: u64,
        at_least: bool,
    ) {
        tracing::info!(
            target: "keel::projections::lag",
            projection = P::NAME,
            %topic,
            %partition,
            checkpoint = checkpoint.0,
            lag,
            at_least,
            owner,
            "projection lag"
        );
    }
}

/// A partition stopped: the revocations waiting only for it are done.
fn settle(revocations: &mut Vec<(HashSet<Key>, Revoked)>, key: &Key) {
    for (waiting, _) in revocations.iter_mut() {
        waiting.remove(key);
    }
    let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(revocations)
        .into_iter()
        .partition(|(waiting, _)| waiting.is_empty());
    *revocations = waiting;
    for (_, revoked) in done {
        revoked.done();
    }
}
