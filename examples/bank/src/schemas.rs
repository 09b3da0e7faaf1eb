//! The bank's API as JSON Schemas: the registry behind `bank schemas export | check`, and
//! the folder the schemas are committed in.
//!
//! ```text
//! cargo run -p bank -- schemas export examples/bank/schemas   # after changing an event
//! cargo run -p bank -- schemas check examples/bank/schemas    # what the tests run
//! ```
//!
//! The tests fail when a change would break reading the events already stored, or when a
//! compatible change is not exported and committed yet.

use keel::schemas::Registry;

use crate::account::Account;

/// The folder the bank's schemas are committed in (`examples/bank/schemas`).
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

/// Every aggregate of the bank, listed once: its event types and commands are the bank's
/// schemas.
///
/// ```
/// let files = bank::schemas::registry().files()?;
/// assert!(files.iter().any(|f| f.path.ends_with("account/events/Deposited.v1.json")));
/// # Ok::<_, keel::schemas::SchemaError>(())
/// ```
pub fn registry() -> Registry {
    Registry::new().aggregate::<Account>()
}
