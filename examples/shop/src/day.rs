//! A scripted day at the shop, played through the orders service's API against every
//! service running in this process: customers register, rates and the catalog are set, three
//! waves of orders come in (some too many for the stock, some breaking the catalog's rules,
//! one customer spending far too much in an hour, a few cancelled), the espresso machines are
//! restocked at noon. Then it waits until the shop is at rest and prints a summary read from
//! the log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::store::EventStore;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{JoinView, WindowView};

use crate::api::{Api, ApiError, PlaceOrder};
use crate::census::Census;
use crate::details::Details;
use crate::fraud::Spend;
use crate::orders::cents;
use crate::services::{self, Service};

/// A product of the catalog: id, name, price in cents, most per order, opening stock.
pub const CATALOG: [(&str, &str, u64, u32, u64); 6] = [
    ("kettle", "Kettle", 29_90, 5, 200),
    ("teapot", "Teapot", 45_00, 3, 100),
    ("mug", "Mug", 8_50, 10, 500),
    ("grinder", "Grinder", 89_00, 2, 60),
    ("espresso", "Espresso machine", 499_00, 1, 4),
    ("filter", "Filters", 4_20, 20, 1000),
];

/// Rates: millionths of the currency per EUR.
pub const RATES: [(&str, u64); 3] = [("USD", 1_080_000), ("GBP", 850_000), ("JPY", 162_000_000)];

const CURRENCIES: [&str; 4] = ["EUR", "USD", "GBP", "JPY"];

/// A small deterministic generator, so the day is the same every time.
#[derive(Debug, Clone)]
pub struct Dice(u64);

impl Dice {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1))
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Registers `customers` customers (`c01`…) and Mallory, sets the rates and lists the
/// catalog with its opening stock. Idempotent.
///
/// # Errors
///
/// An API error.
pub async fn open_shop(api: &Api, customers: usize) -> Result<(), ApiError> {
    for (currency, per_eur) in RATES {
        api.set_rate(currency, per_eur).await?;
    }
    for (id, name, price, max, stock) in CATALOG {
        match api.list_product(id, name, price, max).await {
            Ok(()) | Err(ApiError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
        api.restock(id, stock, Some("opening")).await?;
    }
    for i in 1..=customers {
        let id = format!("c{i:02}");
        let currency = CURRENCIES[i % CURRENCIES.len()];
        api.register_customer(
            &id,
            &format!("Customer {i}"),
            &format!("{id}@example.com"),
            currency,
        )
        .await?;
    }
    api.register_customer("mallory", "Mallory", "mallory@example.com", "EUR")
        .await?;
    Ok(())
}

/// Plays the day; returns the census once the shop is at rest.
///
/// # Errors
///
/// An API error, or the shop not coming to rest within two minutes.
pub async fn play(
    log: Arc<dyn EventStore>,
    api: &Api,
    state: &std::path::Path,
) -> anyhow::Result<Census> {
    let started = Instant::now();
    open_shop(api, 24).await?;
    let mut dice = Dice::new(2025);
    let mut placed = 0;
    for (wave, orders) in [("morning", 70), ("afternoon", 70), ("evening", 70)] {
        if wave == "afternoon" {
            api.restock("espresso", 3, Some("noon")).await?;
        }
        let mut tasks = Vec::new();
        for n in 0..orders {
            let id = format!("{wave}-{n:03}");
            let order = scripted_order(&mut dice, id);
            let api = api.clone();
            tasks.push(tokio::spawn(async move { api.place(order).await }));
        }
        // Mallory, one order after another: each pushes her hour's total up.
        for n in 0..5 {
            let order = PlaceOrder {
                id: Some(format!("{wave}-mallory-{n}")),
                customer: "mallory".into(),
                product: "grinder".into(),
                quantity: 2,
                unit_price: 89_00,
            };
            api.place(order).await?;
        }
        for task in tasks {
            let placed_order = task.await??;
            placed += 1;
            // Every tenth customer changes their mind at once.
            if placed % 10 == 3 {
                match api.cancel(&placed_order.id).await {
                    Ok(_) | Err(ApiError::Refused(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        println!("{wave}: {orders} orders and Mallory's 5 placed");
    }
    let census = settle(log.as_ref(), Duration::from_secs(120)).await?;
    summary(&census, state, started.elapsed()).await?;
    Ok(census)
}

/// An order of the day: mostly valid, some breaking a rule.
fn scripted_order(dice: &mut Dice, id: String) -> PlaceOrder {
    let customer = format!("c{:02}", 1 + dice.below(24));
    let (product, _, price, max, _) = CATALOG[dice.below(CATALOG.len() as u64) as usize];
    let mut order = PlaceOrder {
        id: Some(id),
        customer,
        product: product.to_owned(),
        quantity: 1 + u32::try_from(dice.below(u64::from(max))).unwrap_or(0),
        unit_price: price,
    };
    match dice.below(14) {
        0 => order.unit_price = price - 1,        // an old price
        1 => order.quantity = max + 1,            // too many
        2 => order.product = "teleporter".into(), // not in the catalog
        _ => {}
    }
    order
}

/// Waits until the log says the shop is at rest.
///
/// # Errors
///
/// A log failure, or `within` passing first.
pub async fn settle(log: &dyn EventStore, within: Duration) -> anyhow::Result<Census> {
    let deadline = Instant::now() + within;
    loop {
        let census = Census::take(log).await?;
        if census.settled() {
            return Ok(census);
        }
        if Instant::now() > deadline {
            let open: Vec<&String> = census
                .orders
                .iter()
                .filter(|(_, o)| !o.status.is_final())
                .map(|(id, _)| id)
                .take(10)
                .collect();
            anyhow::bail!("the shop did not come to rest in {within:?}; still open: {open:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn summary(census: &Census, state: &std::path::Path, took: Duration) -> anyhow::Result<()> {
    println!();
    println!(
        "The day, as the log tells it ({} orders, {:.1} s):",
        census.orders.len(),
        took.as_secs_f64()
    );
    for (status, n) in census.by_status() {
        println!("  {status:>10}: {n}");
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for o in census.orders.values() {
        for r in &o.reasons {
            let kind = serde_json::to_value(r)
                .ok()
                .and_then(|v| v.get("reason").and_then(|k| k.as_str()).map(str::to_owned))
                .unwrap_or_default();
            *reasons.entry(kind).or_default() += 1;
        }
    }
    println!("Reasons for rejections:");
    for (reason, n) in &reasons {
        println!("  {reason:>12}: {n}");
    }
    println!("Stock (available / reserved / shipped; lowest ever):");
    for (id, p) in &census.products {
        println!(
            "  {id:>10}: {:>5} / {:>3} / {:>4}; {}",
            p.available, p.reserved, p.shipped, p.lowest
        );
    }
    let mut paid: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    let mut emails = 0;
    for o in census.orders.values() {
        for (currency, amount) in &o.payments {
            let e = paid.entry(currency).or_default();
            e.0 += 1;
            e.1 += amount;
        }
        emails += o.emails;
    }
    println!("Payments:");
    for (currency, (n, amount)) in paid {
        println!("  {n:>4} in {currency}: {}", cents(amount));
    }
    println!("Emails written: {emails}");
    let fraud = services::views(state, Service::Fraud).await?;
    let windows = WindowView::<Spend, SqliteViews>::stats(&fraud).await?;
    println!(
        "Fraud windows closed: {}, late orders: {}",
        windows.closed, windows.late
    );
    let details = services::views(state, Service::Details).await?;
    let join = JoinView::<Details, SqliteViews>::stats(&details).await?;
    println!(
        "Details join: {} joined, {} gave up waiting for an unknown product",
        join.joined, join.expired
    );
    Ok(())
}
