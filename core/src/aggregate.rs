//! Aggregates: state folded from events, and commands decided against that state.
//!
//! Domain code writes three things, all plain Rust:
//!
//! - the state, deriving [`Aggregate`] with `#[aggregate(kind = "...", event = ..., error = ...)]`;
//! - how each event changes the state, an impl of [`Apply`];
//! - the command handlers, `pub` methods of an `impl` block marked `#[keel::commands]`. Each
//!   becomes a variant of the generated `<Aggregate>Command` enum, and the block implements
//!   [`Handle`].
//!
//! ```
//! use keel::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! pub enum CounterEvent { Incremented { by: u32 } }
//!
//! #[derive(Debug, thiserror::Error)]
//! pub enum CounterError { #[error("by must be positive")] Zero }
//!
//! #[derive(Aggregate, Default, Debug)]
//! #[aggregate(kind = "counter", event = CounterEvent, error = CounterError)]
//! pub struct Counter { total: u64 }
//!
//! impl Apply<CounterEvent> for Counter {
//!     fn apply(&mut self, event: &CounterEvent) {
//!         match event { CounterEvent::Incremented { by } => self.total += u64::from(*by) }
//!     }
//! }
//!
//! #[keel::commands]
//! impl Counter {
//!     /// Adds `by` to the counter.
//!     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
//!         if by == 0 { return Err(CounterError::Zero); }
//!         Ok(CounterEvent::Incremented { by })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let events = Counter::default()
//!     .handle(CounterCommand::Increment { by: 2 }, &())
//!     .await
//!     .expect("accepted");
//! assert_eq!(events, vec![CounterEvent::Incremented { by: 2 }]);
//! # }
//! ```

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::event::Event;
use crate::snapshot::{SnapshotConfig, SnapshotError};

/// How an event changes an aggregate's state. Must not fail: the event already happened.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot apply `{E}`",
    label = "missing `impl Apply<{E}> for {Self}`",
    note = "an aggregate folds its events: implement `keel::Apply<{E}>` for `{Self}`"
)]
pub trait Apply<E> {
    /// Folds one event into the state.
    fn apply(&mut self, event: &E);
}

/// An aggregate: a consistency boundary whose state is the fold of its stream's events.
///
/// Implemented by `#[derive(Aggregate)]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel aggregate",
    note = "add `#[derive(keel::Aggregate)]` with `#[aggregate(kind = \"...\", event = ..., error = ...)]`"
)]
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate kind; it names the stream kind and the topic.
    const KIND: &'static str;
    /// The events this aggregate records.
    type Event: Event;
    /// Why a command is rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// How the state is snapshotted: its shape version and how often. `None` (the default):
    /// never; set it with `snapshot(version = N, every = M)` in `#[aggregate(...)]`, which
    /// also implements [`encode_snapshot`](Self::encode_snapshot) and
    /// [`decode_snapshot`](Self::decode_snapshot) with serde (the struct must derive
    /// `Serialize` and `Deserialize`).
    const SNAPSHOT: Option<SnapshotConfig> = None;

    /// Folds one event into the state (forwards to [`Apply`]).
    fn apply_event(&mut self, event: &Self::Event);

    /// Encodes the state for a snapshot. Only called when [`Self::SNAPSHOT`] is set.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] when the state does not encode (the default: snapshots are off).
    fn encode_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        Err(SnapshotError::new(
            Self::KIND,
            "encode",
            "the aggregate does not take snapshots",
        ))
    }

    /// Rebuilds the state from a snapshot of the current shape version.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] when the bytes do not decode (the load then folds the whole stream).
    fn decode_snapshot(payload: &[u8]) -> Result<Self, SnapshotError> {
        let _ = payload;
        Err(SnapshotError::new(
            Self::KIND,
            "decode",
            "the aggregate does not take snapshots",
        ))
    }

    /// Folds events into the state, in order.
    fn apply_all<'a>(&mut self, events: impl IntoIterator<Item = &'a Self::Event>) {
        for event in events {
            self.apply_event(event);
        }
    }
}

/// A command: a serialisable request to an aggregate. Implemented by `#[keel::commands]`.
pub trait Command: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The command's name (the variant, in snake case: `deposit`).
    fn name(&self) -> &'static str;
}

/// An aggregate that decides events from commands. Implemented by `#[keel::commands]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no command handlers",
    note = "mark an `impl {Self}` block with `#[keel::commands]`"
)]
pub trait Handle: Aggregate {
    /// The generated command enum.
    type Command: Command;
    /// The shared services async handlers take (`()` when none do).
    type Context: Send + Sync + 'static;

    /// Decides the events a command produces against the current state, or rejects it.
    fn handle<'a>(
        &'a self,
        command: Self::Command,
        context: &'a Self::Context,
    ) -> impl Future<Output = Result<Vec<Self::Event>, Self::Error>> + Send + 'a;
}

/// What a command handler may return: one event, a `Vec` of events, or a `Result` of either
/// whose error converts into the aggregate's error.
#[diagnostic::on_unimplemented(
    message = "a command handler cannot return `{Self}`",
    label = "expected the aggregate's event, a `Vec` of events, or a `Result` of either",
    note = "handlers return `E`, `Vec<E>`, `Result<E, Err>` or `Result<Vec<E>, Err>` where `E` is the aggregate's event type"
)]
pub trait IntoEvents<E, Err> {
    /// Normalises the handler's answer.
    ///
    /// # Errors
    ///
    /// The handler's rejection, converted.
    fn into_events(self) -> Result<Vec<E>, Err>;
}

impl<E: Event, Err> IntoEvents<E, Err> for E {
    fn into_events(self) -> Result<Vec<E>, Err> {
        Ok(vec![self])
    }
}

impl<E: Event, Err> IntoEvents<E, Err> for Vec<E> {
    fn into_events(self) -> Result<Vec<E>, Err> {
        Ok(self)
    }
}

impl<E: Event, Err, T, F> IntoEvents<E, Err> for Result<T, F>
where
    T: IntoEvents<E, Err>,
    F: Into<Err>,
{
    fn into_events(self) -> Result<Vec<E>, Err> {
        self.map_err(Into::into)?.into_events()
    }
}
