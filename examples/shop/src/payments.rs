//! The payments service: each confirmed order is charged in the customer's currency,
//! converted from the shop's (EUR) with the exchange-rates table joined on that currency.
//!
//! [`Charges`] joins each `Confirmed` order with two tables it keeps from the log:
//! [`Customers`] (for the customer's currency) and [`Rates`] (for that currency's rate). A
//! confirmed order whose customer or rate has not arrived yet waits for it. The payment
//! records the rate it was converted at, so the log says what was used.

use std::sync::Arc;

use keel::prelude::*;
use keel::store::EventStore;
use keel::{CommandOptions, Repository};
use keel_projections::{BoxError, Envelope, Inputs, Join, Missing, Rows, Table, Tables};
use serde::{Deserialize, Serialize};

use crate::customers::{Customers, is_currency};
use crate::orders::{Order, OrderEvent};

/// The shop's own currency: prices and totals are in its cents.
pub const BASE_CURRENCY: &str = "EUR";

/// One unit of a rate: rates are in millionths.
pub const RATE_UNIT: u64 = 1_000_000;

/// What a currency's rate stream records.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum RateEvent {
    /// The rate was set: one EUR buys `per_eur` millionths of the currency.
    Set {
        /// Millionths of the currency per EUR.
        per_eur: u64,
    },
}

/// Why a rate command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// A rate must be positive.
    #[error("a rate must be positive")]
    Zero,
}

/// A currency's exchange rate: its stream id is the currency code.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "rate", event = RateEvent, error = RateError)]
pub struct Rate;

impl Apply<RateEvent> for Rate {
    fn apply(&mut self, _: &RateEvent) {}
}

#[keel::commands]
impl Rate {
    /// Sets the rate: `per_eur` millionths of the currency per EUR.
    pub fn set(&self, per_eur: u64) -> Result<RateEvent, RateError> {
        if per_eur == 0 {
            return Err(RateError::Zero);
        }
        Ok(RateEvent::Set { per_eur })
    }
}

/// The latest rate per currency.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates;

impl Table for Rates {
    type Input = RateEvent;
    type Row = u64;
    const NAME: &'static str = "rates";

    fn inputs(&self) -> Inputs<RateEvent> {
        Inputs::new().aggregate::<Rate>(|e| e)
    }

    fn key(&self, input: &Envelope<RateEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn update(&self, _: Option<u64>, input: &Envelope<RateEvent>) -> Option<u64> {
        let RateEvent::Set { per_eur } = input.event;
        Some(per_eur)
    }
}

/// What a payment's stream records (one stream per order).
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum PaymentEvent {
    /// The customer was charged.
    Captured {
        /// Who.
        customer: String,
        /// The order's total, in cents of EUR.
        base_amount: u64,
        /// The currency charged.
        currency: String,
        /// The amount charged, in cents of `currency`.
        amount: u64,
        /// The rate used: millionths of `currency` per EUR.
        per_eur: u64,
    },
}

/// A payment never refuses: capturing twice decides nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("never")]
pub struct PaymentError;

/// An order's payment.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "payment", event = PaymentEvent, error = PaymentError)]
pub struct Payment {
    captured: bool,
}

impl Apply<PaymentEvent> for Payment {
    fn apply(&mut self, _: &PaymentEvent) {
        self.captured = true;
    }
}

/// A charge to make: the order and what to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The order.
    pub order: String,
    /// Who.
    pub customer: String,
    /// The total in cents of EUR.
    pub base_amount: u64,
    /// The currency.
    pub currency: String,
    /// The converted amount.
    pub amount: u64,
    /// The rate used.
    pub per_eur: u64,
}

#[keel::commands]
impl Payment {
    /// Captures the payment, once.
    pub fn capture(
        &self,
        customer: String,
        base_amount: u64,
        currency: String,
        amount: u64,
        per_eur: u64,
    ) -> Vec<PaymentEvent> {
        if self.captured {
            return Vec::new();
        }
        vec![PaymentEvent::Captured {
            customer,
            base_amount,
            currency,
            amount,
            per_eur,
        }]
    }
}

/// `base` cents of EUR in cents of a currency at `per_eur` millionths per EUR, rounded to
/// the nearest cent.
pub fn convert(base: u64, per_eur: u64) -> u64 {
    let cents = (u128::from(base) * u128::from(per_eur) + u128::from(RATE_UNIT / 2))
        / u128::from(RATE_UNIT);
    u64::try_from(cents).unwrap_or(u64::MAX)
}

/// Charges each confirmed order (see the [module docs](self)).
pub struct Charges {
    payments: Repository<Payment, dyn EventStore>,
}

impl Charges {
    /// Records payments into `log`.
    pub fn new(log: Arc<dyn EventStore>) -> Self {
        Self {
            payments: Repository::new(log),
        }
    }
}

impl Join for Charges {
    type Input = OrderEvent;
    type Output = Charge;
    const NAME: &'static str = "charges";

    fn inputs(&self) -> Inputs<OrderEvent> {
        Inputs::new().aggregate::<Order>(|e| e)
    }

    fn tables(&self) -> Tables {
        Tables::new().with(Customers).with(Rates)
    }

    fn join(
        &self,
        input: &Envelope<OrderEvent>,
        rows: &Rows<'_>,
    ) -> Result<Option<Charge>, Missing> {
        let OrderEvent::Confirmed { customer, total } = &input.event else {
            return Ok(None);
        };
        let currency = rows.get::<Customers>(customer)?.currency;
        let per_eur = if currency == BASE_CURRENCY || !is_currency(&currency) {
            RATE_UNIT
        } else {
            rows.get::<Rates>(&currency)?
        };
        Ok(Some(Charge {
            order: input.id().to_owned(),
            customer: customer.clone(),
            base_amount: *total,
            amount: convert(*total, per_eur),
            currency,
            per_eur,
        }))
    }

    async fn emit(&self, charge: Charge, options: CommandOptions) -> Result<(), BoxError> {
        let command = PaymentCommand::Capture {
            customer: charge.customer,
            base_amount: charge.base_amount,
            currency: charge.currency,
            amount: charge.amount,
            per_eur: charge.per_eur,
        };
        self.payments
            .execute_with(&charge.order, command, options)
            .await?;
        Ok(())
    }
}
