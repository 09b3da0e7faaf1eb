//! The inventory service: products with their stock, and reservations made per order by a
//! process manager ([`Reservations`]).
//!
//! Each product is one stream, so its stock is decided in one place: a reservation is granted
//! only from what is available, so stock never goes below zero. A reservation refused is
//! recorded as an event too (the check's answer the validation waits for), not returned as an
//! error: replayed, the process manager's command is answered from the log instead of being
//! decided again against a newer stock.
//!
//! The process manager reacts to the orders' events: it reserves when an order is placed,
//! releases when it is rejected or cancelled, and ships when it is confirmed — each command
//! under an id derived from the order event's position, so each happens once.

use std::collections::BTreeMap;
use std::sync::Arc;

use keel::prelude::*;
use keel::store::EventStore;
use keel::{CommandOptions, Repository};
use keel_projections::{BoxError, Effects, Envelope, Inputs, ProcessManager, Table};
use serde::{Deserialize, Serialize};

use crate::orders::{Order, OrderEvent};

/// What a product's stream records.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum ProductEvent {
    /// The product entered the catalog.
    Listed {
        /// Its name.
        name: String,
        /// Its price, in cents of EUR.
        price: u64,
        /// The most one order may take.
        max_per_order: u32,
    },
    /// Stock arrived.
    Restocked {
        /// How much.
        quantity: u64,
    },
    /// Stock was set aside for an order.
    Reserved {
        /// The order.
        order: String,
        /// How much.
        quantity: u32,
    },
    /// An order asked for more than was available: nothing was set aside.
    ReservationRefused {
        /// The order.
        order: String,
        /// What it asked for.
        requested: u32,
        /// What was available.
        available: u64,
    },
    /// An order's reservation went back to stock (the order failed or was cancelled).
    Released {
        /// The order.
        order: String,
        /// How much.
        quantity: u32,
    },
    /// An order's reservation left the warehouse (the order was confirmed).
    Shipped {
        /// The order.
        order: String,
        /// How much.
        quantity: u32,
    },
}

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    /// The product is in the catalog already.
    #[error("the product is listed already")]
    AlreadyListed,
    /// The product is not in the catalog.
    #[error("the product is not listed")]
    NotListed,
    /// A name must not be empty.
    #[error("the name is empty")]
    EmptyName,
    /// Restocking must add something.
    #[error("restock at least 1")]
    NothingToRestock,
}

/// A product and its stock: the fold of its events.
#[derive(Aggregate, Default, Debug, Clone, Serialize, Deserialize)]
#[aggregate(kind = "product", event = ProductEvent, error = ProductError, snapshot(version = 1, every = 200))]
pub struct Product {
    listed: bool,
    available: u64,
    /// Reservations held, by order.
    held: BTreeMap<String, u32>,
}

impl Product {
    /// Units available to reserve.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// Units reserved and not shipped or released yet.
    pub fn reserved(&self) -> u64 {
        self.held.values().map(|&q| u64::from(q)).sum()
    }
}

impl Apply<ProductEvent> for Product {
    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::Listed { .. } => self.listed = true,
            ProductEvent::Restocked { quantity } => {
                self.available = self.available.saturating_add(*quantity);
            }
            ProductEvent::Reserved { order, quantity } => {
                self.available = self.available.saturating_sub(u64::from(*quantity));
                self.held.insert(order.clone(), *quantity);
            }
            ProductEvent::ReservationRefused { .. } => {}
            ProductEvent::Released { order, quantity } => {
                self.held.remove(order);
                self.available = self.available.saturating_add(u64::from(*quantity));
            }
            ProductEvent::Shipped { order, .. } => {
                self.held.remove(order);
            }
        }
    }
}

#[keel::commands]
impl Product {
    /// Lists the product.
    pub fn list(
        &self,
        name: String,
        price: u64,
        max_per_order: u32,
    ) -> Result<ProductEvent, ProductError> {
        if self.listed {
            return Err(ProductError::AlreadyListed);
        }
        if name.trim().is_empty() {
            return Err(ProductError::EmptyName);
        }
        Ok(ProductEvent::Listed {
            name,
            price,
            max_per_order,
        })
    }

    /// Adds stock to a listed product.
    pub fn restock(&self, quantity: u64) -> Result<ProductEvent, ProductError> {
        if !self.listed {
            return Err(ProductError::NotListed);
        }
        if quantity == 0 {
            return Err(ProductError::NothingToRestock);
        }
        Ok(ProductEvent::Restocked { quantity })
    }

    /// Reserves `quantity` for `order` if that much is available, else records the refusal.
    /// An order that holds a reservation already gets nothing more.
    pub fn reserve(&self, order: String, quantity: u32) -> Vec<ProductEvent> {
        if self.held.contains_key(&order) {
            return Vec::new();
        }
        if u64::from(quantity) <= self.available {
            vec![ProductEvent::Reserved { order, quantity }]
        } else {
            vec![ProductEvent::ReservationRefused {
                order,
                requested: quantity,
                available: self.available,
            }]
        }
    }

    /// Puts `order`'s reservation back into stock, if it holds one.
    pub fn release(&self, order: String) -> Vec<ProductEvent> {
        match self.held.get(&order) {
            Some(&quantity) => vec![ProductEvent::Released { order, quantity }],
            None => Vec::new(),
        }
    }

    /// Ships `order`'s reservation, if it holds one.
    pub fn ship(&self, order: String) -> Vec<ProductEvent> {
        match self.held.get(&order) {
            Some(&quantity) => vec![ProductEvent::Shipped { order, quantity }],
            None => Vec::new(),
        }
    }
}

/// A product as the catalog table keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRow {
    /// Its name.
    pub name: String,
    /// Its price, in cents of EUR.
    pub price: u64,
    /// The most one order may take.
    pub max_per_order: u32,
}

/// The catalog: listed products by id, the table order details join on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Catalog;

impl Table for Catalog {
    type Input = ProductEvent;
    type Row = CatalogRow;
    const NAME: &'static str = "catalog";

    fn inputs(&self) -> Inputs<ProductEvent> {
        Inputs::new().aggregate::<Product>(|e| e)
    }

    fn key(&self, input: &Envelope<ProductEvent>) -> Option<String> {
        matches!(input.event, ProductEvent::Listed { .. }).then(|| input.id().to_owned())
    }

    fn update(&self, _: Option<CatalogRow>, input: &Envelope<ProductEvent>) -> Option<CatalogRow> {
        match &input.event {
            ProductEvent::Listed {
                name,
                price,
                max_per_order,
            } => Some(CatalogRow {
                name: name.clone(),
                price: *price,
                max_per_order: *max_per_order,
            }),
            _ => None,
        }
    }
}

/// What the reservations process remembers of an order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The product reserved.
    pub product: String,
}

/// Reserves stock when an order is placed, releases it when the order is rejected or
/// cancelled, ships it when the order is confirmed.
pub struct Reservations {
    products: Repository<Product, dyn EventStore>,
}

impl Reservations {
    /// Sends its commands to the products of `log`.
    pub fn new(log: Arc<dyn EventStore>) -> Self {
        Self {
            products: Repository::new(log),
        }
    }
}

impl ProcessManager for Reservations {
    type Input = OrderEvent;
    type State = Reservation;
    type Command = (String, ProductCommand);
    const NAME: &'static str = "reservations";

    fn inputs(&self) -> Inputs<OrderEvent> {
        Inputs::new().aggregate::<Order>(|e| e)
    }

    fn key(&self, input: &Envelope<OrderEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn react(
        &self,
        state: &mut Reservation,
        input: &Envelope<OrderEvent>,
        out: &mut Effects<Self::Command>,
    ) {
        let order = input.id().to_owned();
        let product = state.product.clone();
        match &input.event {
            OrderEvent::Placed {
                product, quantity, ..
            } => {
                state.product.clone_from(product);
                let command = ProductCommand::Reserve {
                    order,
                    quantity: *quantity,
                };
                out.send(product.clone(), (product.clone(), command));
            }
            OrderEvent::Rejected { .. } | OrderEvent::Cancelled => {
                out.send(
                    product.clone(),
                    (product, ProductCommand::Release { order }),
                );
                out.finish();
            }
            OrderEvent::Confirmed { .. } => {
                out.send(product.clone(), (product, ProductCommand::Ship { order }));
                out.finish();
            }
        }
    }

    async fn send(
        &self,
        (product, command): (String, ProductCommand),
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        self.products
            .execute_with(&product, command, options)
            .await?;
        Ok(())
    }
}
