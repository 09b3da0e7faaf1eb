//! The fraud service: a windowed check. For each order, the customer's orders in the hour up
//! to and including it (a sliding window over event time, keyed by customer) are added up;
//! above the limit, the order fails the check.
//!
//! [`Spend`] is a [`Windowed`] aggregation over the orders' `Placed` events. Each order's
//! window closes when recorded time passes its time plus a grace period; its result is then
//! recorded on the order's fraud-check stream ([`FraudCheck`]), under a command id derived
//! from the order event's position — once, live or replayed. Recorded time (the ticks in the
//! log) makes sure every earlier order of the customer has been read by then, from whichever
//! partition: the total does not depend on the order the service reads them in.

use std::sync::Arc;
use std::time::Duration;

use keel::prelude::*;
use keel::store::EventStore;
use keel::{CommandOptions, Repository};
use keel_projections::{BoxError, Envelope, Inputs, Window, Windowed, Windows};
use serde::{Deserialize, Serialize};

use crate::orders::{Order, OrderEvent};

/// What a fraud check records, on a stream per order.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum FraudEvent {
    /// The customer's spending in the hour is within the limit.
    Cleared {
        /// The customer.
        customer: String,
        /// Their orders' total in the hour up to this order, in cents.
        total_in_hour: u64,
        /// The limit, in cents.
        limit: u64,
    },
    /// The customer's spending in the hour is over the limit.
    Flagged {
        /// The customer.
        customer: String,
        /// Their orders' total in the hour up to this order, in cents.
        total_in_hour: u64,
        /// The limit, in cents.
        limit: u64,
    },
}

/// A fraud check never refuses: it records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("never")]
pub struct FraudError;

/// An order's fraud check: recorded once.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "fraud", event = FraudEvent, error = FraudError)]
pub struct FraudCheck {
    recorded: bool,
}

impl Apply<FraudEvent> for FraudCheck {
    fn apply(&mut self, _: &FraudEvent) {
        self.recorded = true;
    }
}

#[keel::commands]
impl FraudCheck {
    /// Records the check's result: cleared within the limit, flagged above it.
    pub fn record(&self, customer: String, total_in_hour: u64, limit: u64) -> Vec<FraudEvent> {
        if self.recorded {
            return Vec::new();
        }
        vec![if total_in_hour <= limit {
            FraudEvent::Cleared {
                customer,
                total_in_hour,
                limit,
            }
        } else {
            FraudEvent::Flagged {
                customer,
                total_in_hour,
                limit,
            }
        }]
    }
}

/// One order in a customer's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spent {
    /// The order.
    pub order: String,
    /// Its total, in cents.
    pub total: u64,
}

/// A result to record: the order, its customer, their total in the hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FraudResult {
    order: String,
    customer: String,
    total_in_hour: u64,
}

/// The customers' spending per sliding hour (see the [module docs](self)).
pub struct Spend {
    checks: Repository<FraudCheck, dyn EventStore>,
    limit: u64,
    window: Duration,
    grace: Duration,
}

impl Spend {
    /// Checks against `limit` cents over `window`, recording into `log`; each window closes
    /// `grace` after its end in recorded time.
    pub fn new(log: Arc<dyn EventStore>, limit: u64, window: Duration, grace: Duration) -> Self {
        Self {
            checks: Repository::new(log),
            limit,
            window,
            grace,
        }
    }
}

impl Windowed for Spend {
    type Input = OrderEvent;
    type Value = Spent;
    type Aggregate = u64;
    type Output = FraudResult;
    const NAME: &'static str = "spend";

    fn inputs(&self) -> Inputs<OrderEvent> {
        Inputs::new().aggregate::<Order>(|e| e)
    }

    fn windows(&self) -> Windows {
        Windows::sliding(self.window).grace(self.grace)
    }

    fn select(&self, input: &Envelope<OrderEvent>) -> Option<(String, Spent)> {
        match &input.event {
            OrderEvent::Placed {
                customer, total, ..
            } => Some((
                customer.clone(),
                Spent {
                    order: input.id().to_owned(),
                    total: *total,
                },
            )),
            _ => None,
        }
    }

    fn add(&self, total: &mut u64, spent: &Spent) {
        *total = total.saturating_add(spent.total);
    }

    fn close(&self, window: &Window<Spent, u64>) -> Option<FraudResult> {
        let order = window.event.as_ref()?;
        Some(FraudResult {
            order: order.order.clone(),
            customer: window.key.clone(),
            total_in_hour: window.aggregate,
        })
    }

    async fn emit(&self, result: FraudResult, options: CommandOptions) -> Result<(), BoxError> {
        let command = FraudCheckCommand::Record {
            customer: result.customer,
            total_in_hour: result.total_in_hour,
            limit: self.limit,
        };
        self.checks
            .execute_with(&result.order, command, options)
            .await?;
        Ok(())
    }
}
