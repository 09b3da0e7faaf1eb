//! Read-your-writes: wait until a view has applied the positions a command returned.
//!
//! A command returns where its events landed ([`Committed::positions`](keel::Committed::positions)).
//! A query that must see that command's effect waits — with a timeout — until the view's
//! active generation has checkpoints past every one of those positions, then reads: the
//! long-polling `GET` of the classic Kafka Streams orders service. The wait reads the view
//! store's checkpoints, so it works across processes; in the runner's own process,
//! [`Runner::wait_for`] also wakes on each of its commits instead of polling alone.

use std::time::{Duration, Instant};

use keel::Position;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::projection::Projection;
use crate::runner::{Progress, Runner};
use crate::store::{ViewState, ViewStore};

/// The first of `positions` the active generation of projection `name` has not applied, if
/// any (all of them before its first build).
async fn behind<S: ViewStore + ?Sized>(
    views: &S,
    name: &str,
    positions: &[Position],
) -> Result<Option<Position>> {
    let Some(active) = views
        .generations(name)
        .await?
        .into_iter()
        .find(|g| g.state == ViewState::Active)
    else {
        return Ok(positions.first().cloned());
    };
    let checkpoints = views.checkpoints(&active.id()).await?;
    Ok(positions
        .iter()
        .find(|p| {
            !checkpoints
                .iter()
                .any(|c| c.topic == p.topic && c.partition == p.partition && c.next > p.offset)
        })
        .cloned())
}

/// Waits until the active view of projection `name` in `views` has applied every one of
/// `positions` (an empty list is applied at once), or `timeout` passes. Polls the view
/// store's checkpoints, from every millisecond up to every 50 ms.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
/// use std::time::Duration;
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
/// # pub enum CounterEvent { Incremented { by: u32 } }
/// # #[derive(Debug, thiserror::Error)]
/// # pub enum CounterError { #[error("never")] Never }
/// # #[derive(Aggregate, Default, Debug)]
/// # #[aggregate(kind = "counter", event = CounterEvent, error = CounterError)]
/// # pub struct Counter;
/// # impl Apply<CounterEvent> for Counter { fn apply(&mut self, _: &CounterEvent) {} }
/// # #[keel::commands]
/// # impl Counter { pub fn increment(&self, by: u32) -> CounterEvent { CounterEvent::Incremented { by } } }
/// # struct Totals;
/// # impl keel_projections::Projection for Totals {
/// #     type Event = CounterEvent;
/// #     type Store = keel_projections::store::memory::MemoryViews<HashMap<String, u64>>;
/// #     const NAME: &'static str = "totals";
/// #     fn topics(&self) -> Vec<keel::Topic> { vec![keel::Topic::new("counter").expect("topic")] }
/// #     async fn apply(&self, view: &mut keel_projections::store::memory::MemoryBatch<HashMap<String, u64>>, events: &[keel_projections::Envelope<CounterEvent>]) -> Result<(), keel_projections::BoxError> {
/// #         for e in events { let CounterEvent::Incremented { by } = e.event; *view.entry(e.id().to_owned()).or_default() += u64::from(by); }
/// #         Ok(())
/// #     }
/// # }
/// use keel::{Repository, store::memory::MemoryStore};
/// use keel_projections::store::memory::MemoryViews;
/// use keel_projections::{CancellationToken, Runner};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = Arc::new(MemoryStore::new());
/// let views = Arc::new(MemoryViews::default());
/// let runner = Arc::new(Runner::new(Totals, log.clone(), Arc::clone(&views)));
/// let stop = CancellationToken::new();
/// let running = tokio::spawn({
///     let (runner, stop) = (Arc::clone(&runner), stop.clone());
///     async move { runner.run(stop).await }
/// });
///
/// let counters = Repository::<Counter, _>::new(log);
/// let done = counters.execute("c1", CounterCommand::Increment { by: 5 }).await?;
/// let positions: Vec<_> = done.positions().cloned().collect();
/// keel_projections::wait_for(views.as_ref(), "totals", &positions, Duration::from_secs(5)).await?;
/// assert_eq!(views.read("totals", |v| v.get("c1").copied()).await.flatten(), Some(5));
/// stop.cancel();
/// running.await??;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::NotYet`] naming the first position not applied when the time is up, or a view
/// store failure.
pub async fn wait_for<S: ViewStore + ?Sized>(
    views: &S,
    name: &str,
    positions: &[Position],
    timeout: Duration,
) -> Result<()> {
    wait(views, name, positions, timeout, None).await
}

async fn wait<S: ViewStore + ?Sized>(
    views: &S,
    name: &str,
    positions: &[Position],
    timeout: Duration,
    mut wake: Option<watch::Receiver<Progress>>,
) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(wake) = wake.as_mut() {
            wake.borrow_and_update();
        }
        let Some(position) = behind(views, name, positions).await? else {
            return Ok(());
        };
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(Error::NotYet {
                projection: name.to_owned(),
                position,
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let nap = pause.min(timeout - waited);
        match wake.as_mut() {
            Some(wake) => {
                tokio::select! {
                    _ = wake.changed() => {}
                    () = tokio::time::sleep(nap) => {}
                }
            }
            None => tokio::time::sleep(nap).await,
        }
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl<P: Projection> Runner<P> {
    /// Waits until this runner's view has applied every one of `positions`, or `timeout`
    /// passes: [`wait_for`] on its view store, woken by each of its commits.
    ///
    /// # Errors
    ///
    /// As [`wait_for`].
    pub async fn wait_for(&self, positions: &[Position], timeout: Duration) -> Result<()> {
        wait(
            self.views().as_ref(),
            P::NAME,
            positions,
            timeout,
            Some(self.progress()),
        )
        .await
    }
}
