//! What the log says happened: every order's fate, every product's stock over time, every
//! payment and email — read straight from the log, the source of truth, independently of any
//! service's views. The scripted day prints it; the tests check it.

use std::collections::BTreeMap;

use keel::store::EventStore;
use keel::{Event, Offset, Partition, RecordedEvent, Topic};

use crate::inventory::ProductEvent;
use crate::notifications::EmailEvent;
use crate::orders::{OrderEvent, Reason, Status};
use crate::payments::PaymentEvent;

/// One order's story.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFacts {
    /// Who.
    pub customer: String,
    /// What.
    pub product: String,
    /// How many.
    pub quantity: u32,
    /// The total, in cents of EUR.
    pub total: u64,
    /// Where it ended.
    pub status: Status,
    /// Why it was rejected.
    pub reasons: Vec<Reason>,
    /// Its decisions (confirmed or rejected events): one at most.
    pub decisions: usize,
    /// Reservations made for it.
    pub reserved: usize,
    /// Reservations refused.
    pub refused: usize,
    /// Reservations released.
    pub released: usize,
    /// Reservations shipped.
    pub shipped: usize,
    /// Payments captured: `(currency, amount)`.
    pub payments: Vec<(String, u64)>,
    /// Emails written.
    pub emails: usize,
}

/// One product's stock, event by event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFacts {
    /// Units restocked in all.
    pub restocked: u64,
    /// Units available now.
    pub available: i64,
    /// The lowest availability it ever had (below 0 would be a bug).
    pub lowest: i64,
    /// Units reserved now.
    pub reserved: i64,
    /// Units shipped.
    pub shipped: u64,
}

/// The log's account of the shop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Every order, by id.
    pub orders: BTreeMap<String, OrderFacts>,
    /// Every product, by id.
    pub products: BTreeMap<String, ProductFacts>,
}

async fn records(log: &dyn EventStore, topic: &str) -> anyhow::Result<Vec<RecordedEvent>> {
    let topic = Topic::new(topic)?;
    let Some(info) = log.topics().await?.into_iter().find(|t| t.topic == topic) else {
        return Ok(Vec::new());
    };
    let mut all = Vec::new();
    for p in 0..info.partitions {
        let mut from = Offset(0);
        loop {
            let page = log.read_partition(&topic, Partition(p), from, 4096).await?;
            let Some(last) = page.last() else { break };
            from = last.offset().next();
            all.extend(page);
        }
    }
    Ok(all)
}

async fn each<E: Event>(
    log: &dyn EventStore,
    topic: &str,
    mut f: impl FnMut(&RecordedEvent, E),
) -> anyhow::Result<()> {
    let mut by_stream: BTreeMap<String, Vec<RecordedEvent>> = BTreeMap::new();
    for r in records(log, topic).await? {
        by_stream
            .entry(r.stream.id().to_owned())
            .or_default()
            .push(r);
    }
    for stream in by_stream.values_mut() {
        stream.sort_by_key(|r| r.version);
        for r in stream.iter() {
            f(r, r.decode::<E>()?);
        }
    }
    Ok(())
}

impl Census {
    /// Reads the whole log.
    ///
    /// # Errors
    ///
    /// A log failure or a record that does not decode.
    pub async fn take(log: &dyn EventStore) -> anyhow::Result<Self> {
        let mut census = Self::default();
        each::<OrderEvent>(log, "order", |r, e| {
            let o = census.orders.entry(r.stream.id().to_owned()).or_default();
            match e {
                OrderEvent::Placed {
                    customer,
                    product,
                    quantity,
                    total,
                    ..
                } => {
                    o.customer = customer;
                    o.product = product;
                    o.quantity = quantity;
                    o.total = total;
                    o.status = Status::Placed;
                }
                OrderEvent::Confirmed { .. } => {
                    o.status = Status::Confirmed;
                    o.decisions += 1;
                }
                OrderEvent::Rejected { reasons } => {
                    o.status = Status::Rejected;
                    o.reasons = reasons;
                    o.decisions += 1;
                }
                OrderEvent::Cancelled => o.status = Status::Cancelled,
            }
        })
        .await?;
        let mut product_orders: Vec<(String, &'static str)> = Vec::new();
        each::<ProductEvent>(log, "product", |r, e| {
            let p = census.products.entry(r.stream.id().to_owned()).or_default();
            match e {
                ProductEvent::Listed { .. } => {}
                ProductEvent::Restocked { quantity } => {
                    p.restocked += quantity;
                    p.available += i64::try_from(quantity).unwrap_or(i64::MAX);
                }
                ProductEvent::Reserved { order, quantity } => {
                    p.available -= i64::from(quantity);
                    p.reserved += i64::from(quantity);
                    product_orders.push((order, "reserved"));
                }
                ProductEvent::ReservationRefused { order, .. } => {
                    product_orders.push((order, "refused"));
                }
                ProductEvent::Released { order, quantity } => {
                    p.available += i64::from(quantity);
                    p.reserved -= i64::from(quantity);
                    product_orders.push((order, "released"));
                }
                ProductEvent::Shipped { order, quantity } => {
                    p.reserved -= i64::from(quantity);
                    p.shipped += u64::from(quantity);
                    product_orders.push((order, "shipped"));
                }
            }
            p.lowest = p.lowest.min(p.available);
        })
        .await?;
        for (order, what) in product_orders {
            let o = census.orders.entry(order).or_default();
            match what {
                "reserved" => o.reserved += 1,
                "refused" => o.refused += 1,
                "released" => o.released += 1,
                _ => o.shipped += 1,
            }
        }
        each::<PaymentEvent>(log, "payment", |r, e| {
            let PaymentEvent::Captured {
                currency, amount, ..
            } = e;
            let o = census.orders.entry(r.stream.id().to_owned()).or_default();
            o.payments.push((currency, amount));
        })
        .await?;
        each::<EmailEvent>(log, "email", |r, _| {
            census
                .orders
                .entry(r.stream.id().to_owned())
                .or_default()
                .emails += 1;
        })
        .await?;
        Ok(census)
    }

    /// Whether the shop is at rest: every order decided or cancelled, every confirmed order
    /// shipped, paid and emailed, every other order's reservation released.
    pub fn settled(&self) -> bool {
        self.orders.values().all(|o| match o.status {
            Status::Confirmed => o.shipped >= 1 && !o.payments.is_empty() && o.emails >= 1,
            Status::Rejected | Status::Cancelled => o.released >= o.reserved,
            Status::New | Status::Placed => false,
        })
    }

    /// How many orders ended in each status.
    pub fn by_status(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for o in self.orders.values() {
            *counts.entry(o.status.as_str()).or_default() += 1;
        }
        counts
    }
}
