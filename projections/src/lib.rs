//! # keel-projections
//!
//! Query-side views fed from the log with exactly-once effects, and rebuilt at any time by
//! replaying it.
//!
//! - A [`Projection`] is a name, a version, the events it reads and how they change its view.
//! - A [`ViewStore`](store::ViewStore) keeps views with their checkpoints, in memory
//!   ([`store::memory`]) or in SQLite (`store::sqlite`, feature `sqlite`).
//! - A [`Runner`] feeds a projection: batches committed together with their checkpoint,
//!   under a lease, then live tailing; side-by-side rebuilds when the version changes.
//!   Several instances of one projection can split its partitions
//!   ([`Runner::run_shared`], a lease per partition; on Kafka through a consumer group with
//!   the `kafka` feature).
//! - [`Projections`] runs several side by side, and (feature `cli`) `cli` is the command
//!   line an app embeds: `projections list | status | rebuild | reset | retry | drop`.
//!
//! What the API takes or hands out comes re-exported, so an app needs no dependency of its
//! own for it: [`CancellationToken`] (tokio-util) to stop runners, `sqlx` (feature `sqlite`:
//! the version `store::sqlite::SqliteViews` hands out connections of) to query views, and
//! [`async_trait`](macro@async_trait) to implement [`ViewStore`](store::ViewStore).
//!
//! (Items behind a feature are named without links here, so that these docs build with any
//! set of features.)

mod error;
mod holder;
mod projection;
mod registry;
mod runner;
pub mod store;

#[cfg(feature = "cli")]
pub mod cli;

pub use error::{BoxError, Error, EventRef, Result};
pub use projection::{Envelope, Projection};
pub use registry::{AnyProjection, Projections};
pub use runner::{
    AssignmentChange, Assignments, LeaseStatus, OnBadEvent, PartitionLag, Progress, Revoked,
    Runner, RunnerConfig, Status,
};

/// The `#[async_trait]` attribute [`ViewStore`](store::ViewStore) is written with.
pub use async_trait::async_trait;
/// The sqlx [`SqliteViews`](store::sqlite::SqliteViews) is built on: query views with it
/// (`keel_projections::sqlx::query(...)`). Its macros (`query!`, `FromRow`) name `::sqlx` and
/// need a direct dependency on this same version (0.8).
#[cfg(feature = "sqlite")]
pub use sqlx;
/// Stops a runner after its current batch ([`Runner::run`], [`Projections::run`]).
pub use tokio_util::sync::CancellationToken;
