//! Snapshots: an aggregate's state saved at a stream version, so a load folds only the events
//! after it.
//!
//! A command must not cost more as its aggregate's history grows. The [`Repository`] loads an
//! aggregate from its latest snapshot plus the later events, and saves a new snapshot every
//! [`SnapshotConfig::every`] events. Every backend stores snapshots through the
//! [`EventStore`](crate::EventStore) trait ([`save_snapshot`](crate::EventStore::save_snapshot),
//! [`load_snapshot`](crate::EventStore::load_snapshot)).
//!
//! What every backend guarantees:
//!
//! - A snapshot never claims a version its stream does not have: saving one above the stream's
//!   version is refused with [`Error::SnapshotAhead`](crate::store::Error::SnapshotAhead).
//! - A stream keeps one snapshot, its latest: a save replaces an older one (a lower version) or
//!   one of another [shape](Snapshot::shape); a save older than the stored one of the same
//!   shape is ignored.
//! - Snapshots are derived data: losing one costs a longer load, never a wrong state. Durable
//!   backends keep them across restarts.
//!
//! An aggregate opts in with `snapshot(...)` in its `#[aggregate]` attribute, naming the
//! **shape version** of its state. Bump it whenever the struct's fields or their meaning
//! change: a snapshot of another shape is ignored (the load folds the whole stream and saves a
//! snapshot of the new shape), never decoded as the current one.
//!
//! ```
//! # use keel::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! # pub enum CounterEvent { Incremented { by: u32 } }
//! # #[derive(Debug, thiserror::Error)]
//! # pub enum CounterError { #[error("zero")] Zero }
//! #[derive(Aggregate, Default, Debug, Serialize, Deserialize)]
//! #[aggregate(kind = "counter", event = CounterEvent, error = CounterError, snapshot(version = 1, every = 50))]
//! pub struct Counter { total: u64 }
//! # impl Apply<CounterEvent> for Counter {
//! #     fn apply(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.total += u64::from(*by); }
//! # }
//! # #[keel::commands]
//! # impl Counter {
//! #     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
//! #         if by == 0 { Err(CounterError::Zero) } else { Ok(CounterEvent::Incremented { by }) }
//! #     }
//! # }
//!
//! assert_eq!(Counter::SNAPSHOT.map(|s| s.every), Some(50));
//! ```
//!
//! [`Repository`]: crate::Repository

use crate::envelope::Timestamp;
use crate::ids::{StreamId, StreamVersion};

/// How an aggregate is snapshotted: the shape version of its state and how often.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotConfig {
    /// The shape version of the encoded state. Bump it when the state's fields change.
    pub version: u32,
    /// Save a snapshot every this many events (0: never save, still use stored ones).
    pub every: u64,
}

impl SnapshotConfig {
    /// The default frequency: a snapshot every 100 events.
    pub const DEFAULT_EVERY: u64 = 100;
}

/// An aggregate's encoded state at a version of its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream.
    pub stream: StreamId,
    /// The version of the last event folded into the state.
    pub version: StreamVersion,
    /// The shape version of the encoded state ([`SnapshotConfig::version`]).
    pub shape: u32,
    /// The encoded state.
    pub payload: Vec<u8>,
    /// When it was taken.
    pub timestamp: Timestamp,
}

impl Snapshot {
    /// A snapshot taken now.
    pub fn new(stream: StreamId, version: StreamVersion, shape: u32, payload: Vec<u8>) -> Self {
        Self {
            stream,
            version,
            shape,
            payload,
            timestamp: Timestamp::now(),
        }
    }

    /// Whether this snapshot should replace `stored` (see the [module docs](self)).
    pub fn supersedes(&self, stored: &Snapshot) -> bool {
        self.shape != stored.shape || self.version >= stored.version
    }
}

/// An aggregate's state could not be encoded into, or decoded from, a snapshot.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} a snapshot of aggregate kind {kind}")]
#[non_exhaustive]
pub struct SnapshotError {
    /// The aggregate kind.
    pub kind: &'static str,
    /// `encode` or `decode`.
    pub action: &'static str,
    /// What went wrong.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SnapshotError {
    /// A failure to `action` (`encode` or `decode`) a snapshot of `kind`.
    pub fn new(
        kind: &'static str,
        action: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            action,
            source: source.into(),
        }
    }
}
