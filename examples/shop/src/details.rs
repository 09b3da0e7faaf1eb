//! The order details service: quantity, price and product rules, checked by joining each
//! placed order with the catalog ([`Catalog`], a table of the inventory's products).
//!
//! An order for a product the service has not seen listed yet waits for its row; if none
//! arrives before its deadline in recorded time, the product is unknown and the check fails
//! — the order is never dropped.

use std::sync::Arc;

use keel::prelude::*;
use keel::store::EventStore;
use keel::{CommandOptions, Repository};
use keel_projections::{BoxError, Envelope, Inputs, Join, Missing, Rows, Tables};
use serde::{Deserialize, Serialize};

use crate::inventory::Catalog;
use crate::orders::{Order, OrderEvent};

/// What an order details check records, on a stream per order.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum DetailsEvent {
    /// The order follows the rules.
    Accepted,
    /// The order breaks them.
    Refused {
        /// What is wrong, in words.
        problems: Vec<String>,
    },
}

/// A details check never refuses: it records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("never")]
pub struct DetailsError;

/// An order's details check: recorded once.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "details", event = DetailsEvent, error = DetailsError)]
pub struct DetailsCheck {
    recorded: bool,
}

impl Apply<DetailsEvent> for DetailsCheck {
    fn apply(&mut self, _: &DetailsEvent) {
        self.recorded = true;
    }
}

#[keel::commands]
impl DetailsCheck {
    /// Records the check's result: accepted without problems, refused with them.
    pub fn record(&self, problems: Vec<String>) -> Vec<DetailsEvent> {
        if self.recorded {
            return Vec::new();
        }
        vec![if problems.is_empty() {
            DetailsEvent::Accepted
        } else {
            DetailsEvent::Refused { problems }
        }]
    }
}

/// The problems of an order of `quantity` at `unit_price` against the catalog's `row`.
pub fn problems(quantity: u32, unit_price: u64, price: u64, max_per_order: u32) -> Vec<String> {
    let mut problems = Vec::new();
    if quantity == 0 {
        problems.push("the quantity must be at least 1".to_owned());
    }
    if quantity > max_per_order {
        problems.push(format!("at most {max_per_order} per order, not {quantity}"));
    }
    if unit_price != price {
        problems.push(format!(
            "the unit price {} is not the catalog's {}",
            crate::orders::cents(unit_price),
            crate::orders::cents(price)
        ));
    }
    problems
}

/// The problem of an order for a product the catalog does not have.
pub fn unknown_product(product: &str) -> String {
    format!("unknown product {product}")
}

/// Checks each placed order against the catalog (see the [module docs](self)).
pub struct Details {
    checks: Repository<DetailsCheck, dyn EventStore>,
}

impl Details {
    /// Records its checks into `log`.
    pub fn new(log: Arc<dyn EventStore>) -> Self {
        Self {
            checks: Repository::new(log),
        }
    }
}

impl Join for Details {
    type Input = OrderEvent;
    type Output = (String, Vec<String>);
    const NAME: &'static str = "details";

    fn inputs(&self) -> Inputs<OrderEvent> {
        Inputs::new().aggregate::<Order>(|e| e)
    }

    fn tables(&self) -> Tables {
        Tables::new().with(Catalog)
    }

    fn join(
        &self,
        input: &Envelope<OrderEvent>,
        rows: &Rows<'_>,
    ) -> Result<Option<(String, Vec<String>)>, Missing> {
        let OrderEvent::Placed {
            product,
            quantity,
            unit_price,
            ..
        } = &input.event
        else {
            return Ok(None);
        };
        let row = rows.get::<Catalog>(product)?;
        Ok(Some((
            input.id().to_owned(),
            problems(*quantity, *unit_price, row.price, row.max_per_order),
        )))
    }

    fn missing(
        &self,
        input: &Envelope<OrderEvent>,
        missing: &Missing,
    ) -> Result<Option<(String, Vec<String>)>, BoxError> {
        Ok(Some((
            input.id().to_owned(),
            vec![unknown_product(&missing.key)],
        )))
    }

    async fn emit(
        &self,
        (order, problems): (String, Vec<String>),
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        self.checks
            .execute_with(&order, DetailsCheckCommand::Record { problems }, options)
            .await?;
        Ok(())
    }
}
