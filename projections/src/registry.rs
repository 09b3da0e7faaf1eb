//! Several projections in one process, behind one object-safe face.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::projection::Projection;
use crate::runner::{Progress, Runner, Status};

/// A runner of any projection: what the registry and the command line use.
#[async_trait]
pub trait AnyProjection: Send + Sync + 'static {
    /// The projection's name.
    fn name(&self) -> &'static str;
    /// The projection's code version.
    fn version(&self) -> u32;
    /// Live progress figures.
    fn progress(&self) -> watch::Receiver<Progress>;
    /// See [`Runner::run`].
    async fn run(&self, cancel: CancellationToken) -> Result<()>;
    /// See [`Runner::catch_up`].
    async fn catch_up(&self) -> Result<()>;
    /// See [`Runner::rebuild`].
    async fn rebuild(&self, in_place: bool, cancel: CancellationToken) -> Result<()>;
    /// See [`Runner::reset`].
    async fn reset(&self) -> Result<()>;
    /// See [`Runner::status`].
    async fn status(&self) -> Result<Status>;
    /// See [`Runner::retry_parked`].
    async fn retry_parked(&self) -> Result<usize>;
    /// See [`Runner::drop_building`].
    async fn drop_building(&self) -> Result<usize>;
}

#[async_trait]
impl<P: Projection> AnyProjection for Runner<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn version(&self) -> u32 {
        P::VERSION
    }
    fn progress(&self) -> watch::Receiver<Progress> {
        Runner::progress(self)
    }
    async fn run(&self, cancel: CancellationToken) -> Result<()> {
        Runner::run(self, cancel).await
    }
    async fn catch_up(&self) -> Result<()> {
        Runner::catch_up(self).await
    }
    async fn rebuild(&self, in_place: bool, cancel: CancellationToken) -> Result<()> {
        Runner::rebuild(self, in_place, cancel).await
    }
    async fn reset(&self) -> Result<()> {
        Runner::reset(self).await
    }
    async fn status(&self) -> Result<Status> {
        Runner::status(self).await
    }
    async fn retry_parked(&self) -> Result<usize> {
        Runner::retry_parked(self).await
    }
    async fn drop_building(&self) -> Result<usize> {
        Runner::drop_building(self).await
    }
}

/// The projections of an app, run side by side.
#[derive(Clone, Default)]
pub struct Projections {
    runners: Vec<Arc<dyn AnyProjection>>,
}

impl std::fmt::Debug for Projections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.runners.iter().map(|r| r.name()))
            .finish()
    }
}

impl Projections {
    /// No projections yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a runner.
    #[must_use]
    pub fn with(mut self, runner: impl AnyProjection) -> Self {
        self.runners.push(Arc::new(runner));
        self
    }

    /// Every runner, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn AnyProjection>> {
        self.runners.iter()
    }

    /// The runner of projection `name`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownProjection`] listing the known names.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn AnyProjection>> {
        self.runners
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| Error::UnknownProjection {
                name: crate::error::quoted_cut(name),
                known: self
                    .runners
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Runs every projection side by side until `cancel` fires. A projection that stops on
    /// an error does not stop the others; every error is returned, by projection name.
    pub async fn run(&self, cancel: CancellationToken) -> Vec<(&'static str, Error)> {
        let tasks: Vec<_> = self
            .runners
            .iter()
            .map(|r| {
                let (r, cancel) = (Arc::clone(r), cancel.clone());
                tokio::spawn(async move { (r.name(), r.run(cancel).await) })
            })
            .collect();
        let mut errors = Vec::new();
        for task in tasks {
            match task.await {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::error!(projection = name, error = %e, "projection stopped");
                    errors.push((name, e));
                }
                Err(join) => errors.push(("?", Error::store("run a projection", join))),
            }
        }
        errors
    }
}
