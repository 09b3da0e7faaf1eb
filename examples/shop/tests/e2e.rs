//! End to end, through the HTTP API with a real HTTP client: 1,000 orders (some over the
//! fraud limit, some out of stock, some invalid), and the final state read from the log:
//! every order confirmed or rejected with the right reason, stock never negative, every
//! reservation of a rejected order released, exactly one payment and one email per confirmed
//! order — with every service in one process, and with one process per service, each killed
//! with SIGKILL mid-run and started again.

#![expect(
    clippy::inconsistent_digit_grouping,
    reason = "amounts in cents are written as euros_cents: 499_00 is 499.00"
)]

mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plan::{Client, ShopProcess};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_orders_through_the_api_end_as_planned() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path();
    let port = plan::free_port()?;
    let shop = ShopProcess::start(state, &[], port).await?;
    let client = Client::new(port)?;
    let planned = plan::plan();
    assert_eq!(planned.len(), 1000);
    for (customer, spent) in plan::honest_spend(&planned) {
        assert!(
            spent <= plan::LIMIT,
            "honest {customer} stays under the limit"
        );
    }
    let started = Instant::now();
    let result = async {
        plan::open_shop(&client).await?;
        plan::place_all(&client, &planned, 16, |_| async { Ok(()) }).await?;
        plan::wait_decided(&client, &planned).await?;
        let log = plan::log(state).await?;
        let census = plan::at_rest(log.as_ref()).await?;
        plan::check(&census, &planned)?;
        // The orders service's own stock view, through the API, comes to the same.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, stock) = client
                .send(reqwest::Method::GET, "/stock/rare", None)
                .await?;
            if status == 200 && stock["shipped"] == plan::RARE_STOCK && stock["available"] == 0 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the stock view of rare: {stock}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &result {
        eprintln!("{e:?}\n{}", plan::logs(state));
    }
    result?;
    eprintln!(
        "1,000 orders, one process: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    shop.kill().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_each_service_mid_run_ends_in_the_same_final_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().to_path_buf();
    let port = plan::free_port()?;
    let names = [
        "orders",
        "inventory",
        "fraud",
        "details",
        "validation",
        "payments",
        "notifications",
    ];
    let mut running = HashMap::new();
    for name in names {
        running.insert(name, ShopProcess::start(&state, &[name], port).await?);
    }
    let running = Arc::new(Mutex::new(running));
    let client = Client::new(port)?;
    let planned = plan::plan();
    let started = Instant::now();
    let result = async {
        plan::open_shop(&client).await?;
        // After each eighth of the orders, one service is killed and started again while the
        // next orders go in (the API's own death included: the client retries).
        let mut kills = Vec::new();
        plan::place_all(&client, &planned, 16, |k| {
            if let Some(&name) = names.get(k) {
                let (running, state) = (Arc::clone(&running), state.clone());
                kills.push(tokio::spawn(async move {
                    let process = running.lock().await.remove(name);
                    if let Some(process) = process {
                        process.kill().await?;
                    }
                    let restarted = ShopProcess::start(&state, &[name], port).await?;
                    running.lock().await.insert(name, restarted);
                    anyhow::Ok(())
                }));
            }
            async { Ok(()) }
        })
        .await?;
        for kill in kills {
            kill.await??;
        }
        plan::wait_decided(&client, &planned).await?;
        let log = plan::log(&state).await?;
        let census = plan::at_rest(log.as_ref()).await?;
        plan::check(&census, &planned)
    }
    .await;
    if let Err(e) = &result {
        eprintln!("{e:?}\n{}", plan::logs(&state));
    }
    result?;
    eprintln!(
        "1,000 orders, a process per service, each killed once: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let processes: Vec<ShopProcess> = running.lock().await.drain().map(|(_, p)| p).collect();
    for process in processes {
        process.kill().await?;
    }
    Ok(())
}

/// `cargo run -p shop`: every service in one process, the scripted day, a summary — and the
/// day comes to rest with every confirmed order paid and emailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripted_day_comes_to_rest_and_prints_its_summary() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .arg("--state")
        .arg(dir.path())
        .args(["--tick-ms", "100", "--details-wait-ms", "2000"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("The day, as the log tells it (225 orders"),
        "{stdout}"
    );
    let log = plan::log(dir.path()).await?;
    let census = shop::Census::take(log.as_ref()).await?;
    assert!(census.settled(), "{stdout}");
    let confirmed = census.by_status().get("confirmed").copied().unwrap_or(0);
    assert!(
        stdout.contains(&format!("Emails written: {confirmed}")),
        "one email per confirmed order: {stdout}"
    );
    Ok(())
}

/// The API's edges: an unknown customer, an order id reused for another order, an unknown
/// order, a malformed token, a retried placement; and a cancellation: the order is cancelled
/// before its checks are all in (the fraud window waits out its grace), its reservation is
/// released, it is never decided, charged or emailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_must_and_a_cancelled_order_releases_its_stock()
-> anyhow::Result<()> {
    use reqwest::Method;
    use serde_json::json;

    let dir = tempfile::tempdir()?;
    let port = plan::free_port()?;
    let shop = ShopProcess::start(dir.path(), &[], port).await?;
    let client = Client::new(port)?;
    plan::open_shop(&client).await?;
    let order = |id: &str, customer: &str, quantity: u32| json!({ "id": id, "customer": customer, "product": "pen", "quantity": quantity, "unit_price": 1_50 });

    let (status, body) = client
        .send(Method::POST, "/orders", Some(order("x1", "nobody", 1)))
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not registered"),
        "{body}"
    );

    let (status, first) = client
        .send(Method::POST, "/orders", Some(order("x2", "h01", 1)))
        .await?;
    assert_eq!(status, 201, "{first}");
    let (status, again) = client
        .send(Method::POST, "/orders", Some(order("x2", "h01", 1)))
        .await?;
    assert_eq!(
        (status, &again["replayed"]),
        (201, &json!(true)),
        "a retry is answered: {again}"
    );
    assert_eq!(again["after"], first["after"]);
    let (status, body) = client
        .send(Method::POST, "/orders", Some(order("x2", "h01", 2)))
        .await?;
    assert_eq!(status, 409, "the id is another order's: {body}");

    let (status, _) = client.send(Method::GET, "/orders/nope", None).await?;
    assert_eq!(status, 404);
    let (status, _) = client
        .send(Method::GET, "/orders/x2?after=not-a-token", None)
        .await?;
    assert_eq!(status, 400);
    let (status, _) = client
        .send(Method::PUT, "/rates/usd", Some(json!({ "per_eur": 1 })))
        .await?;
    assert_eq!(status, 400);

    // Cancelled while its fraud window waits out the grace period.
    let (status, _) = client
        .send(Method::POST, "/orders", Some(order("x3", "h02", 4)))
        .await?;
    assert_eq!(status, 201);
    let (status, body) = client.send(Method::POST, "/orders/x3/cancel", None).await?;
    assert_eq!(status, 200, "{body}");
    let (status, body) = client.send(Method::POST, "/orders/x3/cancel", None).await?;
    assert_eq!(status, 200, "a retried cancellation is answered: {body}");
    let (_, decided) = client
        .send(
            Method::GET,
            "/orders/x2?wait=decided&timeout_ms=30000",
            None,
        )
        .await?;
    assert_eq!(decided["status"], "confirmed", "{decided}");
    let (status, body) = client.send(Method::POST, "/orders/x2/cancel", None).await?;
    assert_eq!(status, 422, "a decided order cannot be cancelled: {body}");

    let log = plan::log(dir.path()).await?;
    let census = plan::at_rest(log.as_ref()).await?;
    let x3 = census
        .orders
        .get("x3")
        .ok_or_else(|| anyhow::anyhow!("x3 is in the log"))?;
    assert_eq!(x3.status, shop::orders::Status::Cancelled);
    assert_eq!((x3.reserved, x3.released, x3.shipped), (1, 1, 0), "{x3:?}");
    assert_eq!((x3.decisions, x3.payments.len(), x3.emails), (0, 0, 0));
    // The orders service's stock view comes to the same, once it has read that far.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, stock) = client.send(Method::GET, "/stock/pen", None).await?;
        if stock["reserved"] == 0 && stock["shipped"] == 1 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the stock view of pen: {stock}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shop.kill().await?;
    Ok(())
}
