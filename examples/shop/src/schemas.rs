//! The shop's API as JSON Schemas: the events its services broadcast and the commands they
//! take. The services share nothing but the log, so these files are the contract between
//! them: a service reading another's events relies on exactly what is committed here.
//!
//! ```text
//! cargo run -p shop -- schemas export examples/shop/schemas   # after changing an event
//! cargo run -p shop -- schemas check examples/shop/schemas    # what the tests run
//! ```
//!
//! The tests fail when a change would break reading the events already stored, or when a
//! compatible change is not exported and committed yet.

use keel::schemas::Registry;

use crate::customers::Customer;
use crate::details::DetailsCheck;
use crate::fraud::FraudCheck;
use crate::inventory::Product;
use crate::notifications::Email;
use crate::orders::Order;
use crate::payments::{Payment, Rate};

/// The folder the shop's schemas are committed in (`examples/shop/schemas`).
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

/// Every aggregate of every service, listed once: their event types and commands are the
/// shop's schemas.
///
/// ```
/// let registry = shop::schemas::registry();
/// assert!(registry.kinds().any(|kind| kind == "order"));
/// let files = registry.files()?;
/// assert!(files.iter().any(|f| f.path.ends_with("order/events/Placed.v1.json")));
/// # Ok::<_, keel::schemas::SchemaError>(())
/// ```
pub fn registry() -> Registry {
    Registry::new()
        .aggregate::<Customer>()
        .aggregate::<Product>()
        .aggregate::<Order>()
        .aggregate::<FraudCheck>()
        .aggregate::<DetailsCheck>()
        .aggregate::<Rate>()
        .aggregate::<Payment>()
        .aggregate::<Email>()
}
