//! `bank serve`: the bank as one instance of several sharing the log on Kafka.
//!
//! Instances started with the same `--kafka` (and group) share the `account` topic's
//! partitions through a consumer group; each account command runs on the instance that owns
//! the account's partition — here when that is this instance, else routed to its owner — so
//! a command can be sent to any instance. When an instance dies its partitions move to the
//! others; when one joins it takes some over.
//!
//! Commands come as JSON lines on standard input, answers go out as JSON lines on standard
//! output, in the order they complete (commands run concurrently):
//!
//! ```text
//! {"id":"open-1","account":"alice","command":"open","owner":"Alice","overdraft_limit":0}
//! {"id":"pay-1","account":"alice","command":"deposit","amount":20}
//! {"id":"pay-1","ok":{"version":2,"replayed":false,"events":[{"version":2,"partition":2,"offset":17,"event":{"Deposited":{"amount":20}}}]}}
//! {"id":"pay-2","account":"alice","command":"withdraw","amount":900,"timeout_ms":2000}
//! {"id":"pay-2","rejected":{"InsufficientFunds":{"balance":20,"amount":900,"overdraft_limit":0}},"message":"insufficient funds: …"}
//! ```
//!
//! `id` is the command id (a retry with the same id is answered with the first outcome, never
//! applied twice). Other answers: `{"id":…,"timeout":true,"error":…}` when no answer came
//! within the command's timeout (send it again with the same id), `{"id":…,"error":…}`.
//! The instance also prints `{"ready":true,"instance":…}` once it has joined and
//! `{"owned":[…],"instance":…}` whenever the partitions it serves change. End of input closes
//! the instance: it finishes its commands and hands its partitions over.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bank::{Account, AccountCommand, AccountError, AccountEvent};
use keel::kafka::Service;
use keel::store::kafka::KafkaStore;
use keel::{CommandId, CommandOptions, Committed, Repository};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How `bank serve` runs.
pub(crate) struct ServeOptions<'a> {
    pub(crate) bootstrap: &'a str,
    pub(crate) group: &'a str,
    pub(crate) prefix: &'a str,
    pub(crate) replication: u16,
    pub(crate) db: &'a Path,
    pub(crate) partitions: u32,
    pub(crate) instance: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) session_timeout: Duration,
}

#[derive(Deserialize)]
struct Request {
    id: String,
    account: String,
    timeout_ms: Option<u64>,
    /// `"command": "deposit", "amount": 20`: the command's name and fields, beside the rest.
    #[serde(flatten)]
    command: AccountCommand,
}

#[derive(Serialize)]
struct Done {
    version: u64,
    replayed: bool,
    events: Vec<DoneEvent>,
}

#[derive(Serialize)]
struct DoneEvent {
    version: u64,
    partition: u32,
    offset: u64,
    event: AccountEvent,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Answer {
    Ok {
        id: String,
        ok: Done,
    },
    Rejected {
        id: String,
        rejected: AccountError,
        message: String,
    },
    Timeout {
        id: String,
        timeout: bool,
        error: String,
    },
    Error {
        id: String,
        error: String,
    },
}

fn answer(id: String, result: Result<Committed<AccountEvent>, bank::Error>) -> Answer {
    match result {
        Ok(c) => Answer::Ok {
            id,
            ok: Done {
                version: c.version.0,
                replayed: c.replayed,
                events: c
                    .events
                    .into_iter()
                    .map(|e| DoneEvent {
                        version: e.version.0,
                        partition: e.position.partition.0,
                        offset: e.position.offset.0,
                        event: e.event,
                    })
                    .collect(),
            },
        },
        Err(keel::repository::Error::Rejected(reason)) => Answer::Rejected {
            id,
            message: reason.to_string(),
            rejected: reason,
        },
        Err(keel::repository::Error::Store(e @ keel::store::Error::Timeout { .. })) => {
            Answer::Timeout {
                id,
                timeout: true,
                error: e.to_string(),
            }
        }
        Err(e) => Answer::Error {
            id,
            error: format!("{:#}", anyhow::Error::from(e)),
        },
    }
}

/// `bank health`: each partition of the account topic, its owner, its writer's end and the
/// commands waiting for it, as the instances of the group see them (without joining).
pub(crate) async fn health(options: ServeOptions<'_>) -> anyhow::Result<()> {
    let store = KafkaStore::builder(options.bootstrap)
        .group(options.group)
        .topic_prefix(options.prefix)
        .replication_factor(options.replication)
        .own_partitions([])
        .open()
        .await
        .with_context(|| format!("cannot reach Kafka at {}", options.bootstrap))?;
    let topic = keel::Topic::new(<Account as keel::Aggregate>::KIND)?;
    let partitions = keel::kafka::health(&store, &[topic])
        .await
        .context("cannot read the bank's health")?;
    println!(
        "{:<10} {:>9} {:<32} {:>10} {:>9}",
        "TOPIC", "PARTITION", "OWNER", "END", "PENDING"
    );
    for p in partitions {
        println!(
            "{:<10} {:>9} {:<32} {:>10} {:>9}",
            p.topic.to_string(),
            p.partition.to_string(),
            p.owner.as_deref().unwrap_or("-"),
            p.end.to_string(),
            p.pending_commands
        );
    }
    store.close().await;
    Ok(())
}

/// Runs `bank serve` until standard input ends.
pub(crate) async fn serve(options: ServeOptions<'_>) -> anyhow::Result<()> {
    let mut state = options.db.as_os_str().to_owned();
    state.push(".kafka-state");
    let store = KafkaStore::builder(options.bootstrap)
        .group(options.group)
        .topic_prefix(options.prefix)
        .replication_factor(options.replication)
        .state_dir(state);
    let mut builder = Service::builder(store)
        .session_timeout(options.session_timeout)
        .command_timeout(options.timeout);
    if let Some(instance) = options.instance {
        builder = builder.instance(instance);
    }
    let service = builder
        .open()
        .await
        .with_context(|| format!("cannot join the bank on Kafka at {}", options.bootstrap))?;
    let log: Arc<dyn keel::EventStore> = service.store().clone();
    let routed = service
        .serve(Repository::<Account, _>::new(log), options.partitions)
        .await
        .context("cannot serve the account topic")?;
    let instance = service.instance().to_owned();

    let (out, mut lines) = mpsc::unbounded_channel::<String>();
    let printer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let print = |value: &serde_json::Value| {
        let _ = out.send(value.to_string());
    };
    print(&serde_json::json!({ "ready": true, "instance": instance }));
    let mut ownership = service.ownership();
    let watcher = {
        let (out, instance) = (out.clone(), instance.clone());
        tokio::spawn(async move {
            loop {
                let owned: Vec<u32> = ownership
                    .borrow_and_update()
                    .iter()
                    .map(|(_, p)| p.0)
                    .collect();
                let line = serde_json::json!({ "owned": owned, "instance": instance });
                let _ = out.send(line.to_string());
                if ownership.changed().await.is_err() {
                    return;
                }
            }
        })
    };

    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let mut running = tokio::task::JoinSet::new();
    while let Some(line) = input
        .next_line()
        .await
        .context("cannot read standard input")?
    {
        if line.trim().is_empty() {
            continue;
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                print(&serde_json::json!({ "error": format!("not a command: {e}") }));
                continue;
            }
        };
        let (mut routed, out) = (routed.clone(), out.clone());
        if let Some(ms) = request.timeout_ms {
            routed = routed.timeout(Duration::from_millis(ms));
        }
        running.spawn(async move {
            let result = match CommandId::new(&request.id) {
                Ok(id) => {
                    routed
                        .execute_with(&request.account, request.command, CommandOptions::from(id))
                        .await
                }
                Err(e) => Err(e.into()),
            };
            let line = serde_json::to_string(&answer(request.id, result)).unwrap_or_default();
            let _ = out.send(line);
        });
    }
    while running.join_next().await.is_some() {}
    service.close().await;
    watcher.abort();
    drop(out);
    let _ = printer.await;
    Ok(())
}
