//! The orders service's domain: an order is placed, validated by three independent checks
//! (inventory, fraud, order details), then confirmed or rejected — or cancelled before that.
//!
//! The order only records decisions: [`crate::validation`] gathers the checks and sends
//! `confirm` or `reject`. A decision on an order that is already decided (or cancelled)
//! decides nothing, so the first decision stands whatever comes after it. The confirmed event
//! carries what payments need (customer and total), so that they need not look the order up.
//!
//! The service's own read model is [`crate::status::OrderStatus`]; [`OrderLines`] is the
//! table notifications join on.

use std::fmt;

use keel::prelude::*;
use keel_projections::{Envelope, Inputs, Table};
use serde::{Deserialize, Serialize};

/// The longest customer or product id an order takes, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// One of the three checks an order passes before it is confirmed.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Stock was reserved.
    Inventory,
    /// The customer's spending in the last hour is under the limit.
    Fraud,
    /// Quantity, price and product follow the catalog's rules.
    Details,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Inventory => "inventory",
            Self::Fraud => "fraud",
            Self::Details => "details",
        })
    }
}

/// Why an order was rejected.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The inventory could not reserve the quantity.
    OutOfStock {
        /// What the order asked for.
        requested: u32,
        /// What was available then.
        available: u64,
    },
    /// The customer's orders in the hour up to this one add up to more than the limit.
    Fraud {
        /// Their total, in cents.
        total_in_hour: u64,
        /// The limit, in cents.
        limit: u64,
    },
    /// The order breaks the catalog's rules.
    Details {
        /// What is wrong, in words.
        problems: Vec<String>,
    },
    /// Some checks did not answer before the deadline.
    Timeout {
        /// The checks that did not.
        missing: Vec<Check>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfStock {
                requested,
                available,
            } => write!(f, "out of stock ({requested} asked, {available} left)"),
            Self::Fraud {
                total_in_hour,
                limit,
            } => write!(
                f,
                "fraud check: {} in the last hour, over the limit of {}",
                cents(*total_in_hour),
                cents(*limit)
            ),
            Self::Details { problems } => write!(f, "details: {}", problems.join("; ")),
            Self::Timeout { missing } => {
                let missing: Vec<String> = missing.iter().map(ToString::to_string).collect();
                write!(f, "no answer in time from {}", missing.join(", "))
            }
        }
    }
}

/// An amount of cents as `12.34`.
pub fn cents(amount: u64) -> String {
    format!("{}.{:02}", amount / 100, amount % 100)
}

/// What an order's stream records.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// The customer placed the order. Prices are in cents of the shop's currency (EUR).
    Placed {
        /// Who.
        customer: String,
        /// What.
        product: String,
        /// How many.
        quantity: u32,
        /// The price of one, as the customer saw it.
        unit_price: u64,
        /// `quantity × unit_price`.
        total: u64,
    },
    /// Every check passed.
    Confirmed {
        /// Who pays.
        customer: String,
        /// How much, in cents of EUR.
        total: u64,
    },
    /// A check failed, or did not answer in time.
    Rejected {
        /// Why, in check order.
        reasons: Vec<Reason>,
    },
    /// The customer cancelled the order before it was decided.
    Cancelled,
}

/// Where an order is in its life.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not placed.
    #[default]
    New,
    /// Placed, being validated.
    Placed,
    /// Confirmed.
    Confirmed,
    /// Rejected.
    Rejected,
    /// Cancelled.
    Cancelled,
}

impl Status {
    /// The name the API and the views use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing more happens to the order.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Confirmed | Self::Rejected | Self::Cancelled)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The order id is placed already.
    #[error("the order is placed already")]
    AlreadyPlaced,
    /// The order was never placed.
    #[error("the order was never placed")]
    NotPlaced,
    /// Only an order being validated can be cancelled.
    #[error("the order is {status}: only an order being validated can be cancelled")]
    NotCancellable {
        /// Where the order is.
        status: Status,
    },
    /// A customer or product id is empty, too long, or holds other characters than ASCII
    /// letters, digits and `- _ . : @ + ~ =`.
    #[error("{what} must be 1 to {MAX_ID_BYTES} ASCII letters, digits or - _ . : @ + ~ =")]
    BadId {
        /// Which id.
        what: &'static str,
    },
    /// `quantity × unit_price` does not fit.
    #[error("the total of {quantity} × {unit_price} is too large")]
    TotalTooLarge {
        /// The quantity.
        quantity: u32,
        /// The unit price.
        unit_price: u64,
    },
}

/// An order: the fold of its events.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "order", event = OrderEvent, error = OrderError)]
pub struct Order {
    status: Status,
    customer: String,
    total: u64,
}

impl Order {
    /// Where the order is.
    pub fn status(&self) -> Status {
        self.status
    }
}

impl Apply<OrderEvent> for Order {
    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed {
                customer, total, ..
            } => {
                self.status = Status::Placed;
                self.customer.clone_from(customer);
                self.total = *total;
            }
            OrderEvent::Confirmed { .. } => self.status = Status::Confirmed,
            OrderEvent::Rejected { .. } => self.status = Status::Rejected,
            OrderEvent::Cancelled => self.status = Status::Cancelled,
        }
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), OrderError> {
    // Ids name streams of other services: they follow the stream id rules.
    if id.len() > MAX_ID_BYTES || keel::StreamId::new("order", id).is_err() {
        return Err(OrderError::BadId { what });
    }
    Ok(())
}

#[keel::commands]
impl Order {
    /// Places the order. Quantity, price and product are not judged here: the checks do.
    pub fn place(
        &self,
        customer: String,
        product: String,
        quantity: u32,
        unit_price: u64,
    ) -> Result<OrderEvent, OrderError> {
        if self.status != Status::New {
            return Err(OrderError::AlreadyPlaced);
        }
        check_id("the customer id", &customer)?;
        check_id("the product id", &product)?;
        let total = unit_price
            .checked_mul(u64::from(quantity))
            .filter(|t| *t <= i64::MAX as u64)
            .ok_or(OrderError::TotalTooLarge {
                quantity,
                unit_price,
            })?;
        Ok(OrderEvent::Placed {
            customer,
            product,
            quantity,
            unit_price,
            total,
        })
    }

    /// Confirms an order being validated; decides nothing for one decided or cancelled.
    pub fn confirm(&self) -> Vec<OrderEvent> {
        match self.status {
            Status::Placed => vec![OrderEvent::Confirmed {
                customer: self.customer.clone(),
                total: self.total,
            }],
            _ => Vec::new(),
        }
    }

    /// Rejects an order being validated; decides nothing for one decided or cancelled.
    pub fn reject(&self, reasons: Vec<Reason>) -> Vec<OrderEvent> {
        match self.status {
            Status::Placed => vec![OrderEvent::Rejected { reasons }],
            _ => Vec::new(),
        }
    }

    /// Cancels an order being validated.
    pub fn cancel(&self) -> Result<OrderEvent, OrderError> {
        match self.status {
            Status::Placed => Ok(OrderEvent::Cancelled),
            Status::New => Err(OrderError::NotPlaced),
            status => Err(OrderError::NotCancellable { status }),
        }
    }
}

/// What notifications need of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The product.
    pub product: String,
    /// How many.
    pub quantity: u32,
    /// The total, in cents of EUR.
    pub total: u64,
}

/// Orders' lines by order id: the table notifications join on.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderLines;

impl Table for OrderLines {
    type Input = OrderEvent;
    type Row = OrderLine;
    const NAME: &'static str = "order_lines";

    fn inputs(&self) -> Inputs<OrderEvent> {
        Inputs::new().aggregate::<Order>(|e| e)
    }

    fn key(&self, input: &Envelope<OrderEvent>) -> Option<String> {
        matches!(input.event, OrderEvent::Placed { .. }).then(|| input.id().to_owned())
    }

    fn update(&self, _: Option<OrderLine>, input: &Envelope<OrderEvent>) -> Option<OrderLine> {
        match &input.event {
            OrderEvent::Placed {
                product,
                quantity,
                total,
                ..
            } => Some(OrderLine {
                product: product.clone(),
                quantity: *quantity,
                total: *total,
            }),
            _ => None,
        }
    }
}
