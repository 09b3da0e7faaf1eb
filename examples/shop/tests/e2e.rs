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
