//! Given past events, when a command arrives, then these events or that rejection.

use std::fmt::Debug;

use crate::aggregate::Handle;

/// A test of one aggregate's decisions, without a store.
///
/// ```
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
/// # pub enum CounterEvent { Incremented { by: u32 } }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # pub enum CounterError { #[error("zero")] Zero, #[error("too big")] TooBig }
/// # #[derive(Aggregate, Default, Debug)]
/// # #[aggregate(kind = "counter", event = CounterEvent, error = CounterError)]
/// # pub struct Counter { total: u64 }
/// # impl Apply<CounterEvent> for Counter {
/// #     fn apply(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.total += u64::from(*by); }
/// # }
/// # #[keel::commands]
/// # impl Counter {
/// #     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
/// #         if by == 0 { return Err(CounterError::Zero) }
/// #         if self.total + u64::from(by) > 10 { return Err(CounterError::TooBig) }
/// #         Ok(CounterEvent::Incremented { by })
/// #     }
/// # }
/// use keel::testing::AggregateTest;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// AggregateTest::<Counter>::given([CounterEvent::Incremented { by: 9 }])
///     .when(CounterCommand::Increment { by: 1 })
///     .await
///     .then([CounterEvent::Incremented { by: 1 }]);
///
/// AggregateTest::<Counter>::given([CounterEvent::Incremented { by: 9 }])
///     .when(CounterCommand::Increment { by: 2 })
///     .await
///     .then_rejected(CounterError::TooBig);
/// # }
/// ```
#[derive(Debug)]
pub struct AggregateTest<A: Handle> {
    state: A,
    context: A::Context,
}

impl<A: Handle<Context = ()>> AggregateTest<A> {
    /// The aggregate after `events`.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        Self::given_with((), events)
    }
}

impl<A: Handle> AggregateTest<A> {
    /// The aggregate after `events`, with handlers given `context`.
    pub fn given_with(context: A::Context, events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply_event(&event);
        }
        Self { state, context }
    }

    /// Runs `command` against the state.
    pub async fn when(self, command: A::Command) -> When<A> {
        let result = self.state.handle(command, &self.context).await;
        When {
            result,
            state: self.state,
        }
    }
}

/// The outcome of [`AggregateTest::when`], to check.
#[derive(Debug)]
pub struct When<A: Handle> {
    result: Result<Vec<A::Event>, A::Error>,
    state: A,
}

impl<A: Handle> When<A> {
    /// Asserts the command decided exactly `expected`, and returns the state after applying
    /// them.
    ///
    /// # Panics
    ///
    /// When the command was rejected or decided other events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A
    where
        A::Event: PartialEq + Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command decided other events");
                let mut state = self.state;
                state.apply_all(&events);
                state
            }
            Err(e) => panic!("expected events {expected:?}, the command was rejected: {e}"),
        }
    }

    /// Asserts the command was rejected with `expected`.
    ///
    /// # Panics
    ///
    /// When the command was accepted or rejected with another error.
    #[track_caller]
    pub fn then_rejected(self, expected: A::Error)
    where
        A::Event: Debug,
        A::Error: PartialEq + Debug,
    {
        match self.result {
            Ok(events) => panic!("expected rejection {expected:?}, the command decided {events:?}"),
            Err(e) => assert_eq!(e, expected, "the command was rejected for another reason"),
        }
    }

    /// The raw outcome.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}
