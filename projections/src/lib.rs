//! # keel-projections
//!
//! Query-side views fed from the log with exactly-once effects, and rebuilt at any time by
//! replaying it.
//!
//! - A [`Projection`] is a name, a version, the events it reads and how they change its view.
//! - A [`ViewStore`](store::ViewStore) keeps views with their checkpoints, in memory
//!   ([`store::memory`]) or in SQLite ([`store::sqlite`], feature `sqlite`).
//! - A [`Runner`] feeds a projection: batches committed together with their checkpoint,
//!   under a lease, then live tailing; side-by-side rebuilds when the version changes.
//! - [`Projections`] runs several side by side, and (feature `cli`) [`cli`] is the command
//!   line an app embeds: `projections list | status | rebuild | reset | parked | retry`.

mod error;
mod projection;
mod registry;
mod runner;
pub mod store;

#[cfg(feature = "cli")]
pub mod cli;

pub use error::{BoxError, Error, EventRef, Result};
pub use projection::{Envelope, Projection};
pub use registry::{AnyProjection, Projections};
pub use runner::{OnBadEvent, PartitionLag, Progress, Runner, RunnerConfig, Status};
