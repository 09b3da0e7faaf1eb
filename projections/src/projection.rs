//! The [`Projection`] trait: a read model fed from the log.

use std::future::Future;

use keel::{Event, Offset, Partition, RecordedEvent, StreamId, StreamVersion, Topic};

use crate::error::BoxError;
use crate::store::ViewStore;

/// A decoded event with the record it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<E> {
    /// The decoded event.
    pub event: E,
    /// The record: position, stream, version, ids, timestamp, metadata.
    pub record: RecordedEvent,
}

impl<E> Envelope<E> {
    /// The stream the event belongs to.
    pub fn stream(&self) -> &StreamId {
        &self.record.stream
    }

    /// The aggregate id (the stream id without its kind).
    pub fn id(&self) -> &str {
        self.record.stream.id()
    }

    /// The event's version in its stream.
    pub fn version(&self) -> StreamVersion {
        self.record.version
    }

    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.record.position.topic
    }

    /// The partition.
    pub fn partition(&self) -> Partition {
        self.record.position.partition
    }

    /// The offset.
    pub fn offset(&self) -> Offset {
        self.record.position.offset
    }
}

/// A read model: a name, a version, the events it reads, and how they change its view.
///
/// The runner feeds [`apply`](Self::apply) batches of events in log order (per partition)
/// inside a view-store transaction, and commits the view changes with the new checkpoint, so
/// each event takes effect exactly once. Records of the projection's topics whose type is not
/// one [`Self::Event`] reads ([`Event::reads`]: a current type name or an alias) are
/// skipped, those of types it declares ignored among them. Records of an older schema
/// version arrive upcast to the current one (see [`keel::upcast`]).
///
/// ```
/// use std::collections::HashMap;
/// use keel::{Topic, prelude::*};
/// use keel_projections::{BoxError, Envelope, Projection, store::memory::{MemoryBatch, MemoryViews}};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum AccountEvent { Deposited { amount: u64 }, Withdrawn { amount: u64 } }
///
/// /// Balance per account.
/// struct Balances;
///
/// impl Projection for Balances {
///     type Event = AccountEvent;
///     type Store = MemoryViews<HashMap<String, i64>>;
///     const NAME: &'static str = "balances";
///
///     fn topics(&self) -> Vec<Topic> {
///         vec![Topic::new("account").expect("a valid topic")]
///     }
///
///     async fn apply(
///         &self,
///         view: &mut MemoryBatch<HashMap<String, i64>>,
///         events: &[Envelope<AccountEvent>],
///     ) -> Result<(), BoxError> {
///         for e in events {
///             let balance = view.entry(e.id().to_owned()).or_default();
///             match e.event {
///                 AccountEvent::Deposited { amount } => *balance += amount as i64,
///                 AccountEvent::Withdrawn { amount } => *balance -= amount as i64,
///             }
///         }
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel projection",
    note = "implement `keel_projections::Projection` for `{Self}`: its events, store, name and `apply`"
)]
pub trait Projection: Send + Sync + 'static {
    /// The events it reads.
    type Event: Event;
    /// Where its view lives.
    type Store: ViewStore;
    /// The stable name: it keys the view's checkpoints and generations.
    const NAME: &'static str;
    /// The view's version. Bump it when the view's shape or logic changes: on start, the
    /// runner builds the new version beside the old one and switches readers when it has
    /// caught up.
    const VERSION: u32 = 1;

    /// The topics it reads (one per aggregate kind).
    fn topics(&self) -> Vec<Topic>;

    /// Whether the runner hands `record` (of one of [`topics`](Self::topics)) to
    /// [`apply`](Self::apply). By default, the records whose type is one of
    /// [`Self::Event`]'s (a current type name or an alias); the others are passed over (counted in
    /// [`Progress::skipped`](crate::Progress::skipped)). Readers that keep their own
    /// progress through every record — process managers, joins and windows, which wait for
    /// recorded ticks to cover their partitions — read them all.
    fn reads(&self, record: &RecordedEvent) -> bool {
        Self::Event::reads(&record.event_type)
    }

    /// Prepares an empty view in a new generation (creates its tables). Runs once per
    /// generation, in its own batch.
    fn setup<'a>(
        &'a self,
        view: &'a mut <Self::Store as ViewStore>::Batch,
    ) -> impl Future<Output = Result<(), BoxError>> + Send + 'a {
        let _ = view;
        async { Ok(()) }
    }

    /// Applies a batch of events to the view, in log order per partition. An error rolls
    /// the batch back; the runner then finds the failing event and stops on it, or parks it
    /// when configured to.
    fn apply<'a>(
        &'a self,
        view: &'a mut <Self::Store as ViewStore>::Batch,
        events: &'a [Envelope<Self::Event>],
    ) -> impl Future<Output = Result<(), BoxError>> + Send + 'a;
}
