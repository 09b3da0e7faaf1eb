//! Claiming a projection's lease: at once (taking it over from a holder whose process is gone),
//! or waiting — visibly — for a live holder's lease to run out.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Runner;
use crate::error::{Error, Result};
use crate::holder;
use crate::projection::Projection;
use crate::store::{Lease, LeaseHolder, ViewStore, now_ms};

impl<P: Projection> Runner<P> {
    /// A name for one claim: the runner's owner, a sequence number (so two operations of one
    /// runner, a `run` and a `rebuild` say, never take each other's lease for their own) and
    /// this process's host and id.
    pub(super) fn claim_owner(&self) -> String {
        let n = self
            .claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        holder::owner(&self.config.owner, n)
    }

    /// Claims the lease for `owner` now: a free or expired lease, or one whose holder's
    /// process is provably gone (see [`crate::holder`]).
    ///
    /// # Errors
    ///
    /// [`Error::Held`] while a live runner holds it; a store failure.
    pub(super) async fn claim_now(&self, owner: &str) -> Result<Lease> {
        let ttl = self.config.lease_ttl;
        match self.views.claim(P::NAME, owner, ttl).await {
            Err(Error::Held { owner: holder, .. }) if holder::is_gone(&holder) => {
                tracing::warn!(
                    projection = P::NAME,
                    %holder,
                    "taking the lease over from a runner whose process is gone"
                );
                self.views.take_over(P::NAME, &holder, owner, ttl).await
            }
            other => other,
        }
    }

    /// Claims the lease, waiting up to `RunnerConfig::claim_timeout` for a live holder's to
    /// run out; while it waits, `Progress::waiting_for` says for whom, and a log line says so
    /// once per holder.
    pub(super) async fn claim(&self, cancel: &CancellationToken) -> Result<Lease> {
        let deadline = Instant::now() + self.config.claim_timeout;
        let owner = self.claim_owner();
        let mut announced: Option<String> = None;
        let result = loop {
            match self.claim_now(&owner).await {
                Err(Error::Held {
                    remaining_ms,
                    owner: holder,
                    ..
                }) if Instant::now() < deadline => {
                    let until = now_ms().saturating_add(i64::try_from(remaining_ms).unwrap_or(0));
                    if announced.as_deref() != Some(holder.as_str()) {
                        tracing::info!(
                            projection = P::NAME,
                            %holder,
                            remaining_ms,
                            "waiting for another runner's lease"
                        );
                        announced = Some(holder.clone());
                    }
                    self.progress.send_modify(|p| {
                        p.waiting_for = Some(LeaseHolder {
                            owner: holder,
                            expires_at_ms: until,
                        });
                    });
                    let wait = Duration::from_millis(remaining_ms.clamp(10, 500));
                    tokio::select! {
                        () = cancel.cancelled() => break Err(Error::LeaseLost { projection: P::NAME.to_owned() }),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                other => break other,
            }
        };
        self.progress
            .send_if_modified(|p| p.waiting_for.take().is_some());
        result
    }
}
