//! The runner: feeds a projection from the log with exactly-once effects.
//!
//! For each partition of the projection's topics it reads from the checkpoint, decodes,
//! applies a batch in one view-store transaction and commits the view changes with the new
//! checkpoint (compare-and-set, under the projection's lease). After catching up it tails the
//! log live. Starting a projection whose code version is newer than its active view builds the
//! new version beside the old one and switches readers once it has caught up.

mod claim;
mod drive;
mod shared;
mod status;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use keel::store::EventStore;
use keel::{Offset, Partition, Topic};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::projection::{Envelope, Projection};
use crate::store::{
    CheckpointMove, Commit, Generation, Lease, LeaseHolder, ViewId, ViewState, ViewStore,
};

use drive::Until;
pub use shared::{AssignmentChange, Assignments, Revoked};
pub use status::{LeaseStatus, PartitionLag, Status};

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
    /// This runner's name in leases (a fresh UUID by default). Each claim appends `#n` and,
    /// where the host is known, `@<host>:<pid>`: a runner finding the lease held by a process
    /// of its own host that is gone takes it over instead of waiting for it to expire.
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
    /// Set while the runner waits for another runner's lease: who holds it, until when.
    pub waiting_for: Option<LeaseHolder>,
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

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
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
        let Some(target) = self.prepare(lease, cancel).await? else {
            return Ok(());
        };
        self.drive_recorded(&target.id(), lease, until, cancel)
            .await?;
        Ok(())
    }

    /// The generation to feed: the active one when its version is the code's, else a new
    /// one built beside it up to the log's head and switched in. `None` when cancelled
    /// before the switch.
    async fn prepare(
        &self,
        lease: &Lease,
        cancel: &CancellationToken,
    ) -> Result<Option<Generation>> {
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
        if !needs_build {
            return active
                .ok_or_else(|| Error::store("run", "no active generation"))
                .map(Some);
        }
        let building = self.building(&generations, lease).await?;
        tracing::info!(
            projection = P::NAME,
            generation = building.generation,
            "building beside the active view"
        );
        // The active generation was built by an older version: the new code may not fit
        // its tables, so it is not fed while the new one builds (readers see it as of now
        // until the switch).
        let live = active
            .as_ref()
            .filter(|a| a.version == P::VERSION)
            .map(Generation::id);
        if !self
            .build_beside(live.as_ref(), &building.id(), lease, cancel)
            .await?
        {
            return Ok(None);
        }
        tracing::info!(
            projection = P::NAME,
            generation = building.generation,
            "switched readers to the new view"
        );
        Ok(Some(building))
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
                    .drive_recorded(view, lease, Until::Cancelled, &keep_live)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            }
        };
        let build = async {
            let built = self
                .drive_recorded(building, lease, Until::Head, cancel)
                .await;
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
                self.drive_recorded(&fresh.id(), &lease, Until::Head, &cancel)
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
        let lease = self.claim_now(&self.claim_owner()).await?;
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

    /// Drops the generations being built beside the active one (a rebuild or a version
    /// bump that stopped on a bad event, say): readers keep the active view, and the next
    /// rebuild starts over. Returns how many were dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Held`] when a runner holds the projection, or a store failure.
    pub async fn drop_building(&self) -> Result<usize> {
        let lease = self.claim_now(&self.claim_owner()).await?;
        let result = async {
            let mut dropped = 0;
            for g in self.views.generations(P::NAME).await? {
                if g.state == ViewState::Building {
                    self.views.drop_generation(&g.id()).await?;
                    dropped += 1;
                }
            }
            Ok(dropped)
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
        let lease = self.claim_now(&self.claim_owner()).await?;
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
}
