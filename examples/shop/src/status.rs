//! The orders service's read models, kept from the log in its own view store: each order's
//! status ([`OrderStatus`]) and each product's stock ([`StockLevels`]), both tables from
//! streams. The HTTP API reads them, waiting for a command's positions first when asked
//! (read-your-writes).

use keel_projections::{Envelope, Inputs, Table};
use serde::{Deserialize, Serialize};

use crate::inventory::{Product, ProductEvent};
use crate::orders::{Order, OrderEvent, Reason, Status};

/// An order as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Who.
    pub customer: String,
    /// What.
    pub product: String,
    /// How many.
    pub quantity: u32,
    /// The total, in cents of EUR.
    pub total: u64,
    /// Where it is.
    pub status: Status,
    /// Why it was rejected.
    pub reasons: Vec<Reason>,
}

/// Each order's status, by order id.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderStatus;

impl Table for OrderStatus {
    type Input = OrderEvent;
    type Row = OrderView;
    const NAME: &'static str = "order_status";

    fn inputs(&self) -> Inputs<OrderEvent> {
        Inputs::new().aggregate::<Order>(|e| e)
    }

    fn key(&self, input: &Envelope<OrderEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn update(&self, row: Option<OrderView>, input: &Envelope<OrderEvent>) -> Option<OrderView> {
        let mut row = row.unwrap_or_default();
        match &input.event {
            OrderEvent::Placed {
                customer,
                product,
                quantity,
                total,
                ..
            } => {
                row.customer.clone_from(customer);
                row.product.clone_from(product);
                row.quantity = *quantity;
                row.total = *total;
                row.status = Status::Placed;
            }
            OrderEvent::Confirmed { .. } => row.status = Status::Confirmed,
            OrderEvent::Rejected { reasons } => {
                row.status = Status::Rejected;
                row.reasons.clone_from(reasons);
            }
            OrderEvent::Cancelled => row.status = Status::Cancelled,
        }
        Some(row)
    }
}

/// A product's stock as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockView {
    /// The product's name.
    pub name: String,
    /// Its price, in cents of EUR.
    pub price: u64,
    /// Units available to order.
    pub available: u64,
    /// Units reserved by orders being validated.
    pub reserved: u64,
    /// Units shipped.
    pub shipped: u64,
}

/// Each product's stock, by product id.
#[derive(Debug, Clone, Copy, Default)]
pub struct StockLevels;

impl Table for StockLevels {
    type Input = ProductEvent;
    type Row = StockView;
    const NAME: &'static str = "stock_levels";

    fn inputs(&self) -> Inputs<ProductEvent> {
        Inputs::new().aggregate::<Product>(|e| e)
    }

    fn key(&self, input: &Envelope<ProductEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn update(&self, row: Option<StockView>, input: &Envelope<ProductEvent>) -> Option<StockView> {
        let mut row = row.unwrap_or_default();
        match &input.event {
            ProductEvent::Listed { name, price, .. } => {
                row.name.clone_from(name);
                row.price = *price;
            }
            ProductEvent::Restocked { quantity } => row.available += quantity,
            ProductEvent::Reserved { quantity, .. } => {
                let q = u64::from(*quantity);
                row.available = row.available.saturating_sub(q);
                row.reserved += q;
            }
            ProductEvent::ReservationRefused { .. } => {}
            ProductEvent::Released { quantity, .. } => {
                let q = u64::from(*quantity);
                row.reserved = row.reserved.saturating_sub(q);
                row.available += q;
            }
            ProductEvent::Shipped { quantity, .. } => {
                let q = u64::from(*quantity);
                row.reserved = row.reserved.saturating_sub(q);
                row.shipped += q;
            }
        }
        Some(row)
    }
}
