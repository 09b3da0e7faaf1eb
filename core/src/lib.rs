//! # Keel
//!
//! Event sourcing and CQRS for Rust services. The log is the source of truth; an
//! aggregate's state, a read model and another service's cache are views derived by
//! replaying it.
//!
//! - **Model**: [`Event`], [`Aggregate`], [`Apply`] and the `#[keel::commands]` attribute
//!   (see [`aggregate`]).
//! - **Log**: the [`EventStore`] trait and its backends in [`store`]: [`store::memory`] and,
//!   with the `sqlite` feature, `store::sqlite`; with the `postgres` feature,
//!   `store::postgres` (group commit, gap-free offsets, LISTEN/NOTIFY); with the `kafka`
//!   feature, `store::kafka` (Apache Kafka: fenced single writers per partition, topics any
//!   consumer can read). Appends are atomic, idempotent per
//!   `(stream, command id)` and return their [`Position`]s.
//! - **Command side**: the [`Repository`] loads an aggregate, decides, appends and retries on
//!   conflict. With the `kafka` feature, `kafka` runs a service as several instances sharing
//!   the log's partitions (a consumer group), routing each command to its stream's owner.
//! - **Schemas**: [`schemas`] exports the JSON Schema of every event type and command and
//!   checks a change against the committed ones (backward, forward, full); [`upcast`] reads
//!   records of older schema versions through the upcasters an event type declares.
//! - **Testing**: with the `testing` feature, `testing` holds the backend conformance suite
//!   and a given/when/then harness for aggregates.
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `derive` (default) | `#[derive(Event)]`, `#[derive(Aggregate)]`, `#[keel::commands]` |
//! | `sqlite` | the embedded SQLite event store |
//! | `postgres` | the PostgreSQL event store (group commit, LISTEN/NOTIFY) |
//! | `kafka` | the Kafka event store (rdkafka; builds librdkafka with cmake) |
//! | `testing` | the conformance suite and the aggregate test harness |
//! | `cli` | `schemas::cli`, the embeddable `schemas export \| check` command line (clap) |
//!
//! ## What a crate using keel depends on
//!
//! `keel` (with the features it uses), `serde` (with `derive`) and `tokio`: nothing else.
//! What keel's public API takes or hands out comes re-exported: [`schemars`] (whose
//! `JsonSchema` derive the [`prelude`] brings into scope, so `#[derive(JsonSchema)]` needs no
//! `schemars` dependency) and [`async_trait`](macro@async_trait) for implementing
//! [`EventStore`].

pub mod aggregate;
mod backend_error;
pub mod envelope;
pub mod event;
pub mod ids;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod limits;
pub mod partitioner;
pub mod repository;
pub mod schemas;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upcast;

#[doc(hidden)]
pub mod __private;

pub use aggregate::{Aggregate, Apply, Command, Handle, IntoEvents};
pub use backend_error::BackendError;
pub use envelope::{CommandMeta, Fingerprint, Metadata, NewEvent, RecordedEvent, Timestamp};
pub use event::{DecodeError, DecodeErrorKind, EncodeError, Event, EventTypeInfo};
pub use ids::{
    Checkpoint, CommandId, IdError, Offset, Partition, Position, StreamId, StreamVersion, Topic,
};
pub use repository::{
    CacheStats, CommandOptions, Committed, CommittedEvent, Loaded, Prepared, Repository,
    RetryPolicy,
};
pub use snapshot::{Snapshot, SnapshotConfig, SnapshotError};
pub use store::{AppendRequest, Appended, EventStore, ExpectedVersion};

#[cfg(feature = "derive")]
pub use keel_macros::{Aggregate, Event, commands};

/// The `#[async_trait]` attribute [`EventStore`] is written with: implement the trait with
/// `#[keel::async_trait]` and no `async-trait` dependency of your own.
pub use async_trait::async_trait;
/// The JSON Schema crate event and command types describe themselves with
/// ([`schemars::schema_for!`] exports a schema; [`schemas`] exports and checks an app's).
pub use schemars;

/// What domain code needs, in one import: `use keel::prelude::*;`.
///
/// Besides keel's traits and derives it brings `JsonSchema` (the trait and its derive) and the
/// `schemars` crate itself into scope: `#[derive(JsonSchema)]` expands to paths starting with
/// `schemars::`, which resolve to keel's re-export, so a crate needs no `schemars` dependency
/// of its own. (One that has one anyway, of the same major version, sees the same crate.)
pub mod prelude {
    pub use crate::schemars::{self, JsonSchema};
    pub use crate::{Aggregate, Apply, Command, Event, Handle};
}
