//! Test support: the backend conformance suite and a given/when/then harness for aggregates.
//!
//! Enabled by the `testing` feature.
//!
//! - [`conformance`]: the event store contract, case by case. A backend implements
//!   [`conformance::Backend`] and instantiates every case with
//!   [`conformance_suite!`](crate::conformance_suite).
//! - `postgres` (with the `postgres` feature): the test server's URL, unique names, and the
//!   PostgreSQL conformance backend.
//! - [`AggregateTest`]: given past events, when a command arrives, then these events (or
//!   this rejection).

pub mod conformance;
mod harness;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use harness::{AggregateTest, When};
