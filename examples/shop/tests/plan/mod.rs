//! The end-to-end tests' plan: a shop opened and 1,000 orders placed through the HTTP API
//! with a real HTTP client, each order's expected fate computed beforehand, and the final
//! state read back from the log and checked against it.
//!
//! The shop processes are `shop serve …` children (all services in one, or one per service),
//! on one state directory. Tests wait for the state they need (a process's `READY` line, an
//! order decided, the log at rest), never for a fixed time.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keel::store::EventStore;
use keel::store::sqlite::SqliteStore;
use serde_json::{Value, json};
use shop::census::Census;
use shop::orders::{Reason, Status};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The fraud limit the tests run with: 200.00.
pub const LIMIT: u64 = 200_00;
/// The limited product's stock.
pub const RARE_STOCK: u64 = 25;
/// Orders of the limited product.
pub const RARE_ORDERS: usize = 40;
/// Fraudsters, and how many orders each places, one after another.
pub const FRAUDSTERS: usize = 5;
/// Orders per fraudster.
pub const FRAUD_ORDERS: usize = 8;
/// A fraudster's order: two lamps.
pub const LAMP: u64 = 35_00;

/// The flags every shop process of the tests gets.
pub fn flags() -> Vec<String> {
    [
        "--fraud-limit",
        &LIMIT.to_string(),
        "--fraud-grace-ms",
        "3000",
        "--details-wait-ms",
        "2000",
        "--validation-timeout-ms",
        "300000",
        "--tick-ms",
        "100",
        "--poll-ms",
        "50",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// A `shop serve` child process.
pub struct ShopProcess {
    child: Child,
    /// The services it runs.
    pub services: Vec<String>,
}

impl ShopProcess {
    /// Starts `shop serve SERVICES` on `state`, the API (if `orders` is among them) on
    /// `port`, and waits for its `READY` line.
    pub async fn start(state: &Path, services: &[&str], port: u16) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.join(format!("{}.log", services.join("+"))))?;
        let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .arg("--state")
            .arg(state)
            .args(flags())
            .arg("serve")
            .args(services)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn,shop=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("start shop")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("READY") {
                    return anyhow::Ok(());
                }
            }
            bail!("shop {services:?} exited before it was ready")
        })
        .await;
        match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("shop {services:?} was not ready within two minutes"),
        }
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            services: services.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Kills the process with SIGKILL and waits for it to be gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        let status = self.child.wait().await?;
        assert!(!status.success(), "the process was killed, not stopped");
        Ok(())
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A client of the API at `port` that retries a request the server did not answer (a
/// process being restarted): every request of the tests is idempotent.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// The API at `port`.
    pub fn new(port: u16) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()?,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Sends a request until the server answers it (at most two minutes), returning the
    /// status and the body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut pause = Duration::from_millis(20);
        loop {
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.json::<Value>().await.unwrap_or(Value::Null);
                    if status >= 500 && status != 504 && Instant::now() < deadline {
                        // The server is shutting down or the log is busy: try again.
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Ok((status, body));
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e).context(format!("{method} {path}")),
            }
        }
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let (status, answer) = self.send(method.clone(), path, Some(body)).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(answer)
    }
}

/// One order of the plan and what must become of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Its id.
    pub id: String,
    /// The request body.
    pub body: Value,
    /// What must become of it; `None` for an order of the limited product (confirmed or out
    /// of stock, counted instead).
    pub expected: Option<(Status, Vec<Reason>)>,
    /// The fraudster placing it (their orders go one after another).
    pub fraudster: Option<usize>,
}

fn order(id: String, customer: &str, product: &str, quantity: u32, unit_price: u64) -> Value {
    json!({
        "id": id,
        "customer": customer,
        "product": product,
        "quantity": quantity,
        "unit_price": unit_price,
    })
}

/// The products: id, price, most per order, stock.
pub const PRODUCTS: [(&str, u64, u32, u64); 4] = [
    ("pen", 1_50, 10, 1_000_000),
    ("book", 12_00, 3, 1_000_000),
    ("lamp", LAMP, 2, 1_000_000),
    ("rare", 20_00, 1, RARE_STOCK),
];

/// Honest customers.
pub const HONEST: usize = 60;

/// 1,000 orders: honest customers' orders (valid, or breaking one rule), orders of the limited
/// product, and the fraudsters' orders. Honest customers stay under the limit whatever they
/// order (invalid orders count towards it too).
pub fn plan() -> Vec<Planned> {
    let mut planned = Vec::new();
    let confirmed = || Some((Status::Confirmed, Vec::new()));
    let details = |problem: &str| {
        Some((
            Status::Rejected,
            vec![Reason::Details {
                problems: vec![problem.to_owned()],
            }],
        ))
    };
    for f in 0..FRAUDSTERS {
        for k in 1..=FRAUD_ORDERS {
            let total = LAMP * 2 * k as u64;
            let expected = if total <= LIMIT {
                confirmed()
            } else {
                Some((
                    Status::Rejected,
                    vec![Reason::Fraud {
                        total_in_hour: total,
                        limit: LIMIT,
                    }],
                ))
            };
            planned.push(Planned {
                id: format!("f{f}-{k}"),
                body: order(format!("f{f}-{k}"), &format!("f{f}"), "lamp", 2, LAMP),
                expected,
                fraudster: Some(f),
            });
        }
    }
    for r in 0..RARE_ORDERS {
        let customer = format!("h{:02}", r % HONEST);
        planned.push(Planned {
            id: format!("r{r:03}"),
            body: order(format!("r{r:03}"), &customer, "rare", 1, 20_00),
            expected: None,
            fraudster: None,
        });
    }
    let mut n = 0;
    while planned.len() < 1000 {
        let customer = format!("h{:02}", n % HONEST);
        let id = format!("o{n:04}");
        let (body, expected) = match n % 13 {
            0 => (
                order(id.clone(), &customer, "book", 1, 11_99),
                details("the unit price 11.99 is not the catalog's 12.00"),
            ),
            1 => (
                order(id.clone(), &customer, "pen", 11, 1_50),
                details("at most 10 per order, not 11"),
            ),
            2 => (
                order(id.clone(), &customer, "pen", 0, 1_50),
                details("the quantity must be at least 1"),
            ),
            3 => (
                order(id.clone(), &customer, "ghost", 1, 1_00),
                Some((
                    Status::Rejected,
                    vec![
                        Reason::OutOfStock {
                            requested: 1,
                            available: 0,
                        },
                        Reason::Details {
                            problems: vec!["unknown product ghost".to_owned()],
                        },
                    ],
                )),
            ),
            4..=6 => (order(id.clone(), &customer, "book", 1, 12_00), confirmed()),
            _ => (
                order(id.clone(), &customer, "pen", 1 + (n % 5) as u32, 1_50),
                confirmed(),
            ),
        };
        planned.push(Planned {
            id,
            body,
            expected,
            fraudster: None,
        });
        n += 1;
    }
    planned
}

/// The most an honest customer can spend in the plan: under the limit.
pub fn honest_spend(planned: &[Planned]) -> BTreeMap<String, u64> {
    let mut spend = BTreeMap::new();
    for p in planned.iter().filter(|p| p.fraudster.is_none()) {
        let q = p.body["quantity"].as_u64().unwrap_or(0);
        let price = p.body["unit_price"].as_u64().unwrap_or(0);
        *spend
            .entry(p.body["customer"].as_str().unwrap_or("").to_owned())
            .or_default() += q * price;
    }
    spend
}

/// Registers the customers, sets the rates, lists and stocks the products.
pub async fn open_shop(client: &Client) -> anyhow::Result<()> {
    for (currency, per_eur) in [("USD", 1_080_000), ("GBP", 850_000), ("JPY", 162_000_000)] {
        client
            .ok(
                reqwest::Method::PUT,
                &format!("/rates/{currency}"),
                json!({ "per_eur": per_eur }),
            )
            .await?;
    }
    for (id, price, max, stock) in PRODUCTS {
        let (status, body) = client
            .send(
                reqwest::Method::POST,
                "/products",
                Some(json!({ "id": id, "name": id, "price": price, "max_per_order": max })),
            )
            .await?;
        if status != 201 && status != 422 {
            bail!("list {id}: {status} {body}");
        }
        client
            .ok(
                reqwest::Method::POST,
                &format!("/products/{id}/restock"),
                json!({ "quantity": stock, "request": "opening" }),
            )
            .await?;
    }
    let currencies = ["EUR", "USD", "GBP", "JPY"];
    let customers = (0..HONEST)
        .map(|i| format!("h{i:02}"))
        .chain((0..FRAUDSTERS).map(|f| format!("f{f}")));
    for (i, id) in customers.enumerate() {
        client
            .ok(
                reqwest::Method::POST,
                "/customers",
                json!({
                    "id": id,
                    "name": format!("Customer {id}"),
                    "email": format!("{id}@example.com"),
                    "currency": currencies[i % currencies.len()],
                }),
            )
            .await?;
    }
    Ok(())
}

/// Places one order; checks that the token it returns lets a read see the order at once.
pub async fn place(client: &Client, planned: &Planned) -> anyhow::Result<()> {
    let (status, body) = client
        .send(reqwest::Method::POST, "/orders", Some(planned.body.clone()))
        .await?;
    if status != 201 {
        bail!("place {}: {status} {body}", planned.id);
    }
    let after = body["after"].as_str().unwrap_or_default().to_owned();
    let (status, read) = client
        .send(
            reqwest::Method::GET,
            &format!("/orders/{}?after={after}&timeout_ms=30000", planned.id),
            None,
        )
        .await?;
    // A restarted API may have been given the token of the process before it: the wait is
    // then on the same positions, in the same views.
    if status != 200 || read["id"] != planned.id.as_str() {
        bail!("read-your-writes for {}: {status} {read}", planned.id);
    }
    Ok(())
}

/// Places the plan's orders, `concurrency` at a time; each fraudster's orders one after
/// another. `between(k)` runs after every eighth of the orders is placed.
pub async fn place_all<F, Fut>(
    client: &Client,
    planned: &[Planned],
    concurrency: usize,
    mut between: F,
) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    // The fraudsters run beside the others, each in order.
    let mut fraud_tasks = Vec::new();
    for f in 0..FRAUDSTERS {
        let mine: Vec<Planned> = planned
            .iter()
            .filter(|p| p.fraudster == Some(f))
            .cloned()
            .collect();
        let client = client.clone();
        fraud_tasks.push(tokio::spawn(async move {
            for p in &mine {
                place(&client, p).await?;
            }
            anyhow::Ok(())
        }));
    }
    let others: Vec<Planned> = planned
        .iter()
        .filter(|p| p.fraudster.is_none())
        .cloned()
        .collect();
    let eighth = others.len().div_ceil(8);
    for (k, chunk) in others.chunks(eighth).enumerate() {
        let mut tasks = tokio::task::JoinSet::new();
        for p in chunk {
            if tasks.len() >= concurrency
                && let Some(done) = tasks.join_next().await
            {
                done??;
            }
            let (client, p) = (client.clone(), p.clone());
            tasks.spawn(async move { place(&client, &p).await });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        between(k).await?;
    }
    for task in fraud_tasks {
        task.await??;
    }
    Ok(())
}

/// Waits (long polling the API) until every order is decided.
pub async fn wait_decided(client: &Client, planned: &[Planned]) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for p in planned {
        let (client, id) = (client.clone(), p.id.clone());
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                let (status, body) = client
                    .send(
                        reqwest::Method::GET,
                        &format!("/orders/{id}?wait=decided&timeout_ms=20000"),
                        None,
                    )
                    .await?;
                let state = body["status"].as_str().unwrap_or_default();
                if status == 200 && (state == "confirmed" || state == "rejected") {
                    return anyhow::Ok(());
                }
                if Instant::now() > deadline {
                    bail!("order {id} was not decided: {status} {body}");
                }
            }
        });
        if tasks.len() >= 32
            && let Some(done) = tasks.join_next().await
        {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Opens the log of `state` in this process (SQLite lets several processes share it).
pub async fn log(state: &Path) -> anyhow::Result<Arc<dyn EventStore>> {
    Ok(Arc::new(SqliteStore::open(state.join("events.db")).await?))
}

/// Waits until the log says the shop is at rest (every payment, email and release done).
pub async fn at_rest(log: &dyn EventStore) -> anyhow::Result<Census> {
    shop::day::settle(log, Duration::from_secs(240)).await
}

/// Checks the final state against the plan.
pub fn check(census: &Census, planned: &[Planned]) -> anyhow::Result<()> {
    assert_eq!(
        census.orders.len(),
        planned.len(),
        "every order placed, once"
    );
    let mut rare_confirmed = 0;
    for p in planned {
        let o = census
            .orders
            .get(&p.id)
            .with_context(|| format!("order {} is in the log", p.id))?;
        assert_eq!(o.decisions, 1, "order {} was decided exactly once", p.id);
        match &p.expected {
            Some((status, reasons)) => {
                assert_eq!((&o.status, &o.reasons), (status, reasons), "order {}", p.id);
            }
            None => match o.status {
                Status::Confirmed => rare_confirmed += 1,
                Status::Rejected => assert_eq!(
                    o.reasons,
                    vec![Reason::OutOfStock {
                        requested: 1,
                        available: 0
                    }],
                    "order {} of the limited product",
                    p.id
                ),
                other => panic!("order {} ended {other}", p.id),
            },
        }
        match o.status {
            Status::Confirmed => {
                assert_eq!(
                    (o.reserved, o.shipped, o.released),
                    (1, 1, 0),
                    "order {}",
                    p.id
                );
                assert_eq!(o.payments.len(), 1, "order {} paid exactly once", p.id);
                assert_eq!(o.emails, 1, "order {} got exactly one email", p.id);
            }
            _ => {
                assert_eq!(
                    o.released, o.reserved,
                    "order {}: its reservation released",
                    p.id
                );
                assert_eq!(o.shipped, 0, "order {} shipped nothing", p.id);
                assert!(o.payments.is_empty(), "order {} was not charged", p.id);
                assert_eq!(o.emails, 0, "order {} got no email", p.id);
            }
        }
    }
    assert_eq!(
        rare_confirmed, RARE_STOCK as usize,
        "the limited product sold exactly its stock"
    );
    for (id, p) in &census.products {
        assert!(
            p.lowest >= 0,
            "the stock of {id} never went below zero ({})",
            p.lowest
        );
        assert_eq!(p.reserved, 0, "nothing of {id} stays reserved");
    }
    assert_eq!(census.products.get("rare").map(|p| p.available), Some(0));
    Ok(())
}

/// The state directory's logs, to show when a test fails.
pub fn logs(state: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(state) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            out.push_str(&format!("--- {}\n", path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}
