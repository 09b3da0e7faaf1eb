//! The shop example: services that share a log, not a database.
//!
//! It shows what keel is for beyond one aggregate: independent services that collaborate by
//! broadcasting business facts into one log, each keeping the views it needs, with
//! request/response only where a person asks a question. Every service is a module with its
//! own aggregates and readers; they share nothing but the event store:
//!
//! - [`orders`]: an order is placed, then confirmed or rejected once three independent checks
//!   have answered, or cancelled before; the orders service also serves the [`http`] API and
//!   keeps its own views of order status and stock ([`status`]);
//! - [`inventory`]: products and their stock; a process manager reserves stock per order,
//!   releases it when the order fails or is cancelled, ships it when it is confirmed;
//! - [`fraud`]: a windowed check — the customer's orders in the sliding hour up to each order,
//!   above a limit, fail it;
//! - [`details`]: quantity, price and product rules, a join of each order with the catalog;
//! - [`validation`]: a process manager gathering the three checks, confirming or rejecting
//!   each order, with a timeout in recorded time;
//! - [`payments`]: each confirmed order charged in the customer's currency, converted with an
//!   exchange-rates table joined on currency;
//! - [`notifications`]: one email per confirmed order, a join of payments with the orders'
//!   lines and the customers — exactly one each;
//! - [`customers`]: who the customers are (a table the joins read).
//!
//! Run it:
//!
//! ```text
//! cargo run -p shop                      # every service in one process, a scripted day, a summary
//! cargo run -p shop -- serve             # every service, and the HTTP API on 127.0.0.1:8080
//! cargo run -p shop -- serve orders      # one service per process: start each with the same
//! cargo run -p shop -- serve fraud       #   --state directory (the log is <state>/events.db)
//! ```
//!
//! [`services`] says how the services are started (alone or together), [`day`] what the
//! scripted day does, [`census`] how the final state is read back from the log, [`schemas`]
//! the events and commands the services agree on (committed in `examples/shop/schemas`).

#![expect(
    clippy::inconsistent_digit_grouping,
    reason = "amounts in cents are written as euros_cents: 499_00 is 499.00"
)]

pub mod api;
pub mod census;
pub mod customers;
pub mod day;
pub mod details;
pub mod fraud;
pub mod http;
pub mod inventory;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod schemas;
pub mod services;
pub mod status;
pub mod validation;

pub use api::{After, Api, ApiError, PlaceOrder, Placed};
pub use census::Census;
pub use services::{Config, Running, Service};
