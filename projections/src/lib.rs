//! # keel-projections
//!
//! Query-side views fed from the log with exactly-once effects, and rebuilt at any time by
//! replaying it.
//!
//! - A [`Projection`] is a name, a version, the events it reads and how they change its view.
//! - A [`ViewStore`](store::ViewStore) keeps views with their checkpoints, in memory
//!   ([`store::memory`]), in SQLite (`store::sqlite`, feature `sqlite`) or in PostgreSQL
//!   (`store::postgres`, feature `postgres`).
//! - A [`Runner`] feeds a projection: batches committed together with their checkpoint,
//!   under a lease, then live tailing; side-by-side rebuilds when the version changes.
//!   Several instances of one projection can split its partitions
//!   ([`Runner::run_shared`], a lease per partition; on Kafka through a consumer group with
//!   the `kafka` feature).
//! - [`Projections`] runs several side by side, and (feature `cli`) `cli` is the command
//!   line an app embeds: `projections list | status | rebuild | reset | retry | drop`.
//!
//! Collaboration across aggregates and services, built on the same runner, leases and
//! checkpoints (each is a projection whose state lives in a [`keyed::KeyedStore`]):
//!
//! - [`Table`] / [`TableView`]: the latest value per key of a stream, queryable.
//! - [`ProcessManager`] / [`Process`]: react to events by sending commands, with state per
//!   instance, timers and exactly-once effects ([`effects`](mod@crate::effects)).
//! - [`Join`] / [`JoinView`]: enrich each event of a stream with the rows of tables; an event
//!   whose row has not arrived waits, bounded, never dropped silently.
//! - [`Windowed`] / [`WindowView`]: tumbling, hopping and sliding windows over event time,
//!   with grace, results as windows close, late events counted.
//! - [`clock`](mod@crate::clock): the recorded ticks ([`Ticker`]) these readers keep time by, so that a replay
//!   decides exactly as the live run did.
//! - [`wait_for`] (and [`Runner::wait_for`]): read-your-writes, a query waiting until a view
//!   has applied the positions a command returned.
//!
//! What the API takes or hands out comes re-exported, so an app needs no dependency of its
//! own for it: [`CancellationToken`] (tokio-util) to stop runners, `sqlx` (feature `sqlite`:
//! the version `store::sqlite::SqliteViews` hands out connections of) to query views, and
//! [`async_trait`](macro@async_trait) to implement [`ViewStore`](store::ViewStore).
//!
//! (Items behind a feature are named without links here, so that these docs build with any
//! set of features.)

pub mod clock;
pub mod effects;
mod error;
mod fresh;
mod holder;
mod input;
pub mod join;
pub mod keyed;
pub mod process;
mod projection;
mod registry;
mod runner;
pub mod store;
pub mod table;
pub mod window;

#[cfg(feature = "cli")]
pub mod cli;

pub use clock::{Tick, Ticker};
pub use effects::{Effect, Effects};
pub use error::{BoxError, Error, EventRef, Result};
pub use fresh::wait_for;
pub use input::{AnyRecord, Inputs};
pub use join::{Join, JoinError, JoinStats, JoinView, Missing, Rows, Tables};
pub use process::{Process, ProcessManager, Timer};
pub use projection::{Envelope, Projection};
pub use registry::{AnyProjection, Projections};
pub use runner::{
    AssignmentChange, Assignments, LeaseStatus, OnBadEvent, PartitionLag, Progress, Revoked,
    Runner, RunnerConfig, Status,
};
pub use table::{Table, TableView};
pub use window::{LateEvent, Window, WindowStats, WindowView, Windowed, Windows};

/// The `#[async_trait]` attribute [`ViewStore`](store::ViewStore) is written with.
pub use async_trait::async_trait;
/// The sqlx `SqliteViews` and `PostgresViews` (features `sqlite`, `postgres`) are built on:
/// query views with it (`keel_projections::sqlx::query(...)`). Its macros (`query!`, `FromRow`)
/// name `::sqlx` and need a direct dependency on this same version (0.8).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sqlx;
/// Stops a runner after its current batch ([`Runner::run`], [`Projections::run`]).
pub use tokio_util::sync::CancellationToken;
