//! Driving a view: reading each partition from its checkpoint, applying batches and
//! committing them with the checkpoint moved, finding a failing event one at a time, and
//! parking or stopping on it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keel::{Offset, Partition, RecordedEvent, Topic};
use tokio_util::sync::CancellationToken;

use super::{OnBadEvent, Runner};
use crate::error::{Error, EventRef, Result};
use crate::projection::{Envelope, Projection};
use crate::store::{CheckpointMove, Commit, Lease, Parked, Stopped, ViewId, ViewStore};

/// How far a drive goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    /// Stop when every partition is read to its head.
    Head,
    /// Tail the log until cancelled.
    Cancelled,
}

struct Rate {
    window_start: Instant,
    window_events: u64,
}

impl<P: Projection> Runner<P> {
    /// [`Self::drive`], keeping in the view store why it stopped: an earlier record is cleared
    /// when it starts, and an error (but a lost lease: the view is another runner's now) is
    /// recorded on `view`, for `projections status` to show.
    pub(super) async fn drive_recorded(
        &self,
        view: &ViewId,
        lease: &Lease,
        until: Until,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        self.record_stop(view, None).await;
        let result = self.drive(view, lease, until, cancel).await;
        if let Err(error) = &result
            && !matches!(error, Error::LeaseLost { .. })
        {
            self.record_stop(view, Some(&Stopped::now(error))).await;
        }
        result
    }

    /// Records (or clears) why the runner stopped on `view`; a failure to is only logged:
    /// the error the runner returns says it all the same.
    pub(super) async fn record_stop(&self, view: &ViewId, stopped: Option<&Stopped>) {
        if let Err(error) = self.views.set_stopped(view, stopped).await {
            tracing::warn!(projection = P::NAME, %view, %error, "cannot record why the runner stopped");
        }
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
    pub(super) async fn apply(
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
            if !self.projection.reads(&record) {
                // Not one of the events this projection declares it reads (a current type
                // name or an alias), or one its event enum declares ignored.
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

pub(super) enum Applied {
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
