//! The runner: feeds a projection from the log with exactly-once effects.
//!
//! For each partition of the projection's topics it reads from the checkpoint, decodes,
//! applies a batch in one view-store transaction and commits the view changes with the new
//! checkpoint (compare-and-set, under the projection's lease). After catching up it tails the
//! log live. Starting a projection whose code version is newer than its active view builds the
//! new version beside the old one and switches readers once it has caught up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::store::EventStore;
use keel::{Event, Offset, Partition, RecordedEvent, Topic};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, EventRef, Result};
use crate::projection::{Envelope, Projection};
use crate::store::{
    CheckpointMove, Commit, Generation, Lease, Parked, ViewId, ViewState, ViewStore,
};

/// What to do with an event that does not decode or that the handler fails on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnBadEvent {
    /// Stop the projection with an error naming the event (the default).
    #[default]
    Stop,
    /// Park the event in the view store's dead-letter list, skip it, and go on.
    Park,
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most records read from a partition and applied in one batch.
    pub batch_size: usize,
    /// How long a claim or a commit holds the lease.
    pub lease_ttl: Duration,
    /// How long to wait for a held lease before giving up.
    pub claim_timeout: Duration,
    /// How often an idle, tailing runner looks for new records (it also wakes on commits of
    /// its own process).
    pub poll: Duration,
    /// What to do with a bad event.
    pub on_bad_event: OnBadEvent,
    /// This runner's name in leases (a fresh UUID by default); each claim appends `#n`.
    pub owner: String,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            batch_size: 4096,
            lease_ttl: Duration::from_secs(30),
            claim_timeout: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            on_bad_event: OnBadEvent::Stop,
            owner: format!("runner-{}", uuid::Uuid::now_v7()),
        }
    }
}

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the projection will read.
    pub checkpoint: u64,
    /// The next offset the log will write.
    pub head: u64,
    /// Records still to read (`head - checkpoint` on dense logs).
    pub lag: u64,
}

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// The projection's name.
    pub name: String,
    /// The version of the code.
    pub code_version: u32,
    /// The active generation, if any.
    pub active: Option<Generation>,
    /// A generation being built beside it, if any.
    pub building: Option<Generation>,
    /// Lag per partition of the active generation (or the building one when none is active).
    pub partitions: Vec<PartitionLag>,
    /// Total lag.
    pub lag: u64,
    /// Parked events.
    pub parked: Vec<Parked>,
}

/// Live figures of a running runner.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Progress {
    /// Events applied since the runner started (skipped types included).
    pub applied: u64,
    /// Records still to read at the last look.
    pub lag: u64,
    /// Events per second over the last few seconds.
    pub rate: f64,
    /// Whether the runner has caught up with the log at least once.
    pub caught_up: bool,
    /// Records of the projection's topics whose type it does not read (not in its event
    /// enum), passed over since the runner started.
    pub skipped: u64,
}

/// How far a drive goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Stop when every partition is read to its head.
    Head,
    /// Tail the log until cancelled.
    Cancelled,
}

/// Feeds one projection.
pub struct Runner<P: Projection> {
    projection: Arc<P>,
    log: Arc<dyn EventStore>,
    views: Arc<P::Store>,
    config: RunnerConfig,
    progress: watch::Sender<Progress>,
    claims: std::sync::atomic::AtomicU64,
}

impl<P: Projection> std::fmt::Debug for Runner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("projection", &P::NAME)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Rate {
    window_start: Instant,
    window_events: u64,
}

impl<P: Projection> Runner<P> {
    /// A runner of `projection`, reading `log`, writing `views`.
    pub fn new(projection: P, log: Arc<dyn EventStore>, views: Arc<P::Store>) -> Self {
        Self {
            projection: Arc::new(projection),
            log,
            views,
            config: RunnerConfig::default(),
            progress: watch::Sender::new(Progress::default()),
            claims: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Sets the configuration.
    #[must_use]
    pub fn config(mut self, config: RunnerConfig) -> Self {
        self.config = config;
        self
    }

    /// The projection's name.
    pub fn name(&self) -> &'static str {
        P::NAME
    }

    /// The view store.
    pub fn views(&self) -> &Arc<P::Store> {
        &self.views
    }

    /// Live progress figures.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Runs the projection until `cancel` fires: prepares the view (building a new version
    /// beside the active one when the code version is newer), catches up, switches readers
    /// to a newly built version, then tails the log. Returns after the current batch commits
    /// when cancelled.
    ///
    /// # Errors
    ///
    /// A bad event (with [`OnBadEvent::Stop`]), a lost lease, a store failure.
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        let lease = self.claim(&cancel).await?;
        let result = self.run_claimed(&lease, Until::Cancelled, &cancel).await;
        let _ = self.views.release(&lease).await;
        result
    }

    /// Like [`Self::run`], but returns once the view has caught up with the log's head
    /// instead of tailing it: for command-line tools and tests.
    ///
    /// # Errors
    ///
    /// As [`Self::run`].
    pub async fn catch_up(&self) -> Result<()> {
        let cancel = CancellationToken::new();
        let lease = self.claim(&cancel).await?;
        let result = self.run_claimed(&lease, Until::Head, &cancel).await;
        let _ = self.views.release(&lease).await;
        result
    }

    async fn run_claimed(
        &self,
        lease: &Lease,
        until: Until,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let generations = self.views.generations(P::NAME).await?;
        let active = generations
            .iter()
            .find(|g| g.state == ViewState::Active)
            .cloned();
        if let Some(a) = &active
            && a.version > P::VERSION
        {
            return Err(Error::VersionBehind {
                projection: P::NAME.to_owned(),
                stored: a.version,
                code: P::VERSION,
            });
        }
        let needs_build = active.as_ref().is_none_or(|a| a.version < P::VERSION);
        let target = if needs_build {
            let building = self.building(&generations, lease).await?;
            tracing::info!(
                projection = P::NAME,
                generation = building.generation,
                "building beside the active view"
            );
            // The active generation was built by an older version: the new code may not fit
            // its tables, so it is not fed while the new one builds (readers see it as of
            // now until the switch).
            let live = active
                .as_ref()
                .filter(|a| a.version == P::VERSION)
                .map(Generation::id);
            if !self
                .build_beside(live.as_ref(), &building.id(), lease, cancel)
                .await?
            {
                return Ok(());
            }
            tracing::info!(
                projection = P::NAME,
                generation = building.generation,
                "switched readers to the new view"
            );
            building
        } else {
            active.ok_or_else(|| Error::store("run", "no active generation"))?
        };
        self.drive(&target.id(), lease, until, cancel).await?;
        Ok(())
    }

    /// Builds `building` up to the log's head while `live` (the active generation, if any)
    /// keeps being fed for its readers, then switches readers to `building`, dropping `live`.
    /// Returns `false` when cancelled before the switch.
    async fn build_beside(
        &self,
        live: Option<&ViewId>,
        building: &ViewId,
        lease: &Lease,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let keep_live = cancel.child_token();
        let feed_live = async {
            match live {
                Some(view) => self
                    .drive(view, lease, Until::Cancelled, &keep_live)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        let build = async {
            let built = self.drive(building, lease, Until::Head, cancel).await;
            keep_live.cancel();
            built
        };
        let (fed, built) = tokio::join!(feed_live, build);
        fed?;
        let built = built?;
        if built {
            self.views.activate(building).await?;
        }
        Ok(built)
    }

    /// Reuses a generation of this version being built, or creates and sets one up; drops
    /// building generations of other versions.
    async fn building(&self, generations: &[Generation], lease: &Lease) -> Result<Generation> {
        for g in generations
            .iter()
            .filter(|g| g.state == ViewState::Building)
        {
            // A generation whose setup committed has checkpoint rows (see `new_generation`);
            // one without was interrupted between creation and setup: start it over.
            if g.version == P::VERSION && !self.views.checkpoints(&g.id()).await?.is_empty() {
                return Ok(g.clone());
            }
            self.views.drop_generation(&g.id()).await?;
        }
        self.new_generation(lease).await
    }

    async fn new_generation(&self, lease: &Lease) -> Result<Generation> {
        let generation = self.views.create_generation(P::NAME, P::VERSION).await?;
        let mut batch = self.views.begin(&generation.id()).await?;
        if let Err(source) = self.projection.setup(&mut batch).await {
            let _ = self.views.rollback(batch).await;
            let _ = self.views.drop_generation(&generation.id()).await;
            return Err(Error::Setup {
                projection: P::NAME.to_owned(),
                generation: generation.generation,
                source,
            });
        }
        // The setup commits with a checkpoint at 0 for every partition: that marks the
        // generation as set up (a crash before this commit leaves none).
        let moves = self
            .partitions()
            .await?
            .into_iter()
            .map(|(topic, partition)| CheckpointMove {
                topic,
                partition,
                from: Offset(0),
                to: Offset(0),
            })
            .collect();
        let commit = Commit {
            moves,
            ..Commit::default()
        };
        self.views.commit(batch, lease, commit).await?;
        Ok(generation)
    }

    /// Rebuilds the view from offset 0. Side by side (the default): builds a new generation
    /// while the active one keeps serving, then switches readers and drops the old one. In
    /// place: drops the view and its checkpoints first, then replays.
    ///
    /// # Errors
    ///
    /// As [`Self::run`].
    pub async fn rebuild(&self, in_place: bool, cancel: CancellationToken) -> Result<()> {
        let lease = self.claim(&cancel).await?;
        let result = async {
            let generations = self.views.generations(P::NAME).await?;
            if in_place {
                for g in &generations {
                    self.views.drop_generation(&g.id()).await?;
                }
            } else {
                for g in generations
                    .iter()
                    .filter(|g| g.state == ViewState::Building)
                {
                    self.views.drop_generation(&g.id()).await?;
                }
            }
            let fresh = self.new_generation(&lease).await?;
            if in_place {
                self.views.activate(&fresh.id()).await?;
                self.drive(&fresh.id(), &lease, Until::Head, &cancel)
                    .await?;
            } else {
                let live = generations
                    .iter()
                    .find(|g| g.state == ViewState::Active)
                    .map(Generation::id);
                self.build_beside(live.as_ref(), &fresh.id(), &lease, &cancel)
                    .await?;
            }
            Ok(())
        }
        .await;
        let _ = self.views.release(&lease).await;
        result
    }

    /// Drops every generation of the view and starts an empty one at offset 0: the next run
    /// replays the whole log.
    ///
    /// # Errors
    ///
    /// [`Error::Held`] when a runner holds the projection, or a store failure.
    pub async fn reset(&self) -> Result<()> {
        let lease = self
            .views
            .claim(P::NAME, &self.claim_owner(), self.config.lease_ttl)
            .await?;
        let result = async {
            for g in self.views.generations(P::NAME).await? {
                self.views.drop_generation(&g.id()).await?;
            }
            let fresh = self.new_generation(&lease).await?;
            self.views.activate(&fresh.id()).await
        }
        .await;
        let _ = self.views.release(&lease).await;
        result
    }

    /// Applies the parked events of the active view again, in log order; those that now
    /// succeed leave the parked list. Returns how many did.
    ///
    /// # Errors
    ///
    /// [`Error::Held`], or a store failure.
    pub async fn retry_parked(&self) -> Result<usize> {
        let lease = self
            .views
            .claim(P::NAME, &self.claim_owner(), self.config.lease_ttl)
            .await?;
        let result = async {
            let Some(active) = self.active().await? else {
                return Ok(0);
            };
            let view = active.id();
            let mut fixed = 0;
            for parked in self.views.parked(&view).await? {
                let e = &parked.event;
                let records = self
                    .log
                    .read_partition(&e.topic, e.partition, e.offset, 1)
                    .await?;
                let Some(record) = records
                    .into_iter()
                    .next()
                    .filter(|r| r.offset() == e.offset)
                else {
                    continue;
                };
                let Ok(event) = record.decode::<P::Event>() else {
                    continue;
                };
                let envelopes = [Envelope { event, record }];
                let mut batch = self.views.begin(&view).await?;
                match self.projection.apply(&mut batch, &envelopes).await {
                    Ok(()) => {
                        let commit = Commit {
                            unpark: vec![(e.topic.clone(), e.partition, e.offset)],
                            ..Commit::default()
                        };
                        self.views.commit(batch, &lease, commit).await?;
                        fixed += 1;
                    }
                    Err(_) => self.views.rollback(batch).await?,
                }
            }
            Ok(fixed)
        }
        .await;
        let _ = self.views.release(&lease).await;
        result
    }

    async fn active(&self) -> Result<Option<Generation>> {
        Ok(self
            .views
            .generations(P::NAME)
            .await?
            .into_iter()
            .find(|g| g.state == ViewState::Active))
    }

    /// Where the projection stands: generations, lag per partition, parked events.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn status(&self) -> Result<Status> {
        let generations = self.views.generations(P::NAME).await?;
        let active = generations
            .iter()
            .find(|g| g.state == ViewState::Active)
            .cloned();
        let building = generations
            .iter()
            .find(|g| g.state == ViewState::Building)
            .cloned();
        let mut partitions = Vec::new();
        let mut parked = Vec::new();
        if let Some(g) = active.as_ref().or(building.as_ref()) {
            let checkpoints: HashMap<(Topic, Partition), Offset> = self
                .views
                .checkpoints(&g.id())
                .await?
                .into_iter()
                .map(|c| ((c.topic, c.partition), c.next))
                .collect();
            for (topic, partition) in self.partitions().await? {
                let head = self.log.head(&topic, partition).await?;
                let checkpoint = checkpoints
                    .get(&(topic.clone(), partition))
                    .copied()
                    .unwrap_or_default();
                partitions.push(PartitionLag {
                    topic: topic.to_string(),
                    partition: partition.0,
                    checkpoint: checkpoint.0,
                    head: head.0,
                    lag: head.0.saturating_sub(checkpoint.0),
                });
            }
            parked = self.views.parked(&g.id()).await?;
        }
        Ok(Status {
            name: P::NAME.to_owned(),
            code_version: P::VERSION,
            lag: partitions.iter().map(|p| p.lag).sum(),
            active,
            building,
            partitions,
            parked,
        })
    }

    /// A name for one claim: the runner's owner and a sequence number, so two operations of
    /// one runner (a `run` and a `rebuild`, say) never take each other's lease for their own.
    fn claim_owner(&self) -> String {
        let n = self
            .claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        format!("{}#{n}", self.config.owner)
    }

    async fn claim(&self, cancel: &CancellationToken) -> Result<Lease> {
        let deadline = Instant::now() + self.config.claim_timeout;
        let owner = self.claim_owner();
        loop {
            match self
                .views
                .claim(P::NAME, &owner, self.config.lease_ttl)
                .await
            {
                Err(Error::Held { remaining_ms, .. }) if Instant::now() < deadline => {
                    let wait = Duration::from_millis(remaining_ms.clamp(10, 500));
                    tokio::select! {
                        () = cancel.cancelled() => return Err(Error::LeaseLost { projection: P::NAME.to_owned() }),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                other => return other,
            }
        }
    }

    /// The partitions of the projection's topics that exist now.
    async fn partitions(&self) -> Result<Vec<(Topic, Partition)>> {
        let wanted: HashSet<Topic> = self.projection.topics().into_iter().collect();
        let mut out = Vec::new();
        for info in self.log.topics().await? {
            if wanted.contains(&info.topic) {
                for p in 0..info.partitions {
                    out.push((info.topic.clone(), Partition(p)));
                }
            }
        }
        Ok(out)
    }

    /// Applies the log to `view` from its checkpoints. Returns `false` when cancelled.
    async fn drive(
        &self,
        view: &ViewId,
        lease: &Lease,
        until: Until,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let mut commits = self.log.subscribe_commits();
        let mut partitions = self.partitions().await?;
        let mut refreshed = Instant::now();
        let mut checkpoints = self.load_checkpoints(view).await?;
        // Partitions where a batch failed: applied one event per batch up to this offset.
        let mut isolate: HashMap<(Topic, Partition), Offset> = HashMap::new();
        let mut rate = Rate {
            window_start: Instant::now(),
            window_events: 0,
        };
        let mut last_renew = Instant::now();
        loop {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            commits.borrow_and_update();
            if refreshed.elapsed() >= self.config.poll {
                // Topics created since the last look (busy or idle alike).
                partitions = self.partitions().await?;
                refreshed = Instant::now();
            }
            let mut progressed = false;
            for (topic, partition) in &partitions {
                let key = (topic.clone(), *partition);
                let from = checkpoints.get(&key).copied().unwrap_or_default();
                let single = isolate.get(&key).is_some_and(|&until| from <= until);
                let limit = if single { 1 } else { self.config.batch_size };
                let records = self
                    .log
                    .read_partition(topic, *partition, from, limit)
                    .await?;
                let Some(last) = records.last().map(RecordedEvent::offset) else {
                    continue;
                };
                progressed = true;
                let count = records.len() as u64;
                match self.apply(view, lease, from, records).await? {
                    Applied::Committed => {
                        checkpoints.insert(key, last.next());
                        last_renew = Instant::now();
                        self.count(&mut rate, count);
                    }
                    Applied::RolledBack => {
                        // The store may have reset the view on rollback: reread, then go
                        // one event at a time up to the failed batch's end.
                        isolate.insert(key, last);
                        checkpoints = self.load_checkpoints(view).await?;
                    }
                }
                if cancel.is_cancelled() {
                    return Ok(false);
                }
            }
            if progressed {
                continue;
            }
            self.progress.send_modify(|p| {
                p.caught_up = true;
                p.lag = 0;
            });
            if until == Until::Head {
                return Ok(true);
            }
            if last_renew.elapsed() > self.config.lease_ttl / 3 {
                self.views
                    .claim(P::NAME, &lease.owner, lease.ttl)
                    .await
                    .map_err(|_| Error::LeaseLost {
                        projection: P::NAME.to_owned(),
                    })?;
                last_renew = Instant::now();
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                _ = commits.changed() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    fn count(&self, rate: &mut Rate, events: u64) {
        rate.window_events += events;
        let elapsed = rate.window_start.elapsed();
        self.progress.send_modify(|p| {
            p.applied += events;
            if elapsed >= Duration::from_millis(500) {
                p.rate = rate.window_events as f64 / elapsed.as_secs_f64();
            }
        });
        if elapsed >= Duration::from_secs(3) {
            rate.window_start = Instant::now();
            rate.window_events = 0;
        }
    }

    async fn load_checkpoints(&self, view: &ViewId) -> Result<HashMap<(Topic, Partition), Offset>> {
        Ok(self
            .views
            .checkpoints(view)
            .await?
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.next))
            .collect())
    }

    /// Decodes and applies records read from one partition at `from`, committing the view
    /// changes with the checkpoint moved past the last record.
    async fn apply(
        &self,
        view: &ViewId,
        lease: &Lease,
        from: Offset,
        records: Vec<RecordedEvent>,
    ) -> Result<Applied> {
        let Some(first) = records.first() else {
            return Ok(Applied::Committed);
        };
        let topic = first.position.topic.clone();
        let partition = first.position.partition;
        let to = records.last().map_or(from, |r| r.offset().next());
        let single = records.len() == 1;
        let mut envelopes = Vec::with_capacity(records.len());
        let mut park = Vec::new();
        let mut skipped = 0;
        for record in records {
            if !P::Event::EVENT_TYPES.contains(&record.event_type.as_str()) {
                // Not one of the events this projection declares it reads.
                skipped += 1;
                continue;
            }
            match record.decode::<P::Event>() {
                Ok(event) => envelopes.push(Envelope { event, record }),
                Err(source) => {
                    let event = EventRef::from(&record);
                    if self.config.on_bad_event == OnBadEvent::Stop {
                        // Commit what came before it, then stop on it.
                        let before: Vec<_> = envelopes;
                        let stop_at = record.offset();
                        if (!before.is_empty() || stop_at > from)
                            && self
                                .try_commit(
                                    view,
                                    lease,
                                    &topic,
                                    partition,
                                    from,
                                    stop_at,
                                    &before,
                                    Vec::new(),
                                )
                                .await?
                                .is_err()
                        {
                            // The handler failed before the bad record: find that event
                            // first, one at a time.
                            return Ok(Applied::RolledBack);
                        }
                        // The event names the record: said once, not again by the source.
                        let mut source = source;
                        source.position = None;
                        source.stream = None;
                        return Err(Error::Decode {
                            projection: P::NAME.to_owned(),
                            event,
                            source,
                        });
                    }
                    tracing::warn!(projection = P::NAME, %event, error = %source, "parking an event that does not decode");
                    park.push(Parked {
                        event,
                        error: error_chain(&source),
                    });
                }
            }
        }
        if skipped > 0 {
            tracing::trace!(
                projection = P::NAME,
                skipped,
                "passed over records of other types"
            );
            self.progress.send_modify(|p| p.skipped += skipped);
        }
        let error = match self
            .try_commit(
                view,
                lease,
                &topic,
                partition,
                from,
                to,
                &envelopes,
                park.clone(),
            )
            .await?
        {
            Ok(()) => return Ok(Applied::Committed),
            Err(_) if !single => return Ok(Applied::RolledBack),
            Err(error) => error,
        };
        // One event, and the handler failed on it (its batch was rolled back).
        let Some(env) = envelopes.first() else {
            return Ok(Applied::RolledBack);
        };
        let event = EventRef::from(&env.record);
        if self.config.on_bad_event == OnBadEvent::Stop {
            return Err(Error::Handler {
                projection: P::NAME.to_owned(),
                event,
                source: error,
            });
        }
        tracing::warn!(projection = P::NAME, %event, %error, "parking an event the handler fails on");
        park.push(Parked {
            error: error_chain(error.as_ref()),
            event,
        });
        let batch = self.views.begin(view).await?;
        self.finish(batch, lease, &topic, partition, from, to, park)
            .await?;
        Ok(Applied::Committed)
    }

    /// Applies and commits; the inner error is the handler's, after rolling the batch back.
    #[expect(clippy::too_many_arguments, reason = "one batch's full description")]
    async fn try_commit(
        &self,
        view: &ViewId,
        lease: &Lease,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        to: Offset,
        envelopes: &[Envelope<P::Event>],
        park: Vec<Parked>,
    ) -> Result<std::result::Result<(), crate::BoxError>> {
        let mut batch = self.views.begin(view).await?;
        if !envelopes.is_empty()
            && let Err(error) = self.projection.apply(&mut batch, envelopes).await
        {
            tracing::debug!(projection = P::NAME, %error, "batch failed; isolating the failing event");
            self.views.rollback(batch).await?;
            return Ok(Err(error));
        }
        self.finish(batch, lease, topic, partition, from, to, park)
            .await?;
        Ok(Ok(()))
    }

    #[expect(clippy::too_many_arguments, reason = "one batch's full description")]
    async fn finish(
        &self,
        batch: <P::Store as ViewStore>::Batch,
        lease: &Lease,
        topic: &Topic,
        partition: Partition,
        from: Offset,
        to: Offset,
        park: Vec<Parked>,
    ) -> Result<()> {
        let commit = Commit {
            moves: vec![CheckpointMove {
                topic: topic.clone(),
                partition,
                from,
                to,
            }],
            park,
            unpark: Vec::new(),
        };
        self.views.commit(batch, lease, commit).await
    }
}

enum Applied {
    Committed,
    RolledBack,
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
