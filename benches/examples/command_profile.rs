//! A fixed command workload to profile the command path with (no timing, no criterion):
//! `accounts` accounts, each opened then given `deposits` deposits, through
//! `Repository::execute` on the in-memory store (default) or SQLite (`--sqlite`).
//!
//! With `--load`, it instead writes one account of `accounts` events and loads it
//! `deposits` times (SQLite with `--sqlite`).
//!
//! ```text
//! cargo build --release -p keel-benches --example command_profile
//! valgrind --tool=callgrind target/release/examples/command_profile 2000 4
//! perf record -e cpu-clock target/release/examples/command_profile 200000 4
//! valgrind --tool=callgrind target/release/examples/command_profile 10000 3 --load --sqlite
//! ```
//!
//! Instruction counts from callgrind do not depend on what else the machine is doing, so
//! they compare two versions of the path reliably.

use std::sync::Arc;

use bank::{Account, AccountCommand};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Repository};

async fn load<S: EventStore>(store: Arc<S>, events: u64, times: u64) {
    let repo = Repository::<Account, S>::new(store);
    let stream = keel::StreamId::new("account", "long").expect("stream id");
    let mut batch = vec![
        keel::NewEvent::from_event(&bank::AccountEvent::Opened {
            owner: "long".into(),
            overdraft_limit: 0,
        })
        .expect("encode"),
    ];
    for n in 1..events {
        batch.push(
            keel::NewEvent::from_event(&bank::AccountEvent::Deposited { amount: 1 })
                .expect("encode"),
        );
        if batch.len() == 1_000 || n + 1 == events {
            repo.store()
                .append(keel::AppendRequest::new(
                    stream.clone(),
                    keel::ExpectedVersion::Any,
                    std::mem::take(&mut batch),
                ))
                .await
                .expect("append");
        }
    }
    for _ in 0..times {
        let loaded = repo.load("long").await.expect("load");
        assert_eq!(loaded.version.0, events);
    }
}

async fn run<S: EventStore>(store: Arc<S>, accounts: u64, deposits: u64) {
    let repo = Repository::<Account, S>::new(store);
    let ids: Vec<String> = (0..accounts).map(|a| format!("acc-{a}")).collect();
    for (n, id) in ids.iter().enumerate() {
        repo.execute(
            id,
            AccountCommand::Open {
                owner: format!("owner {n}"),
                overdraft_limit: 0,
            },
        )
        .await
        .expect("open");
    }
    for _ in 0..deposits {
        for id in &ids {
            repo.execute(id, AccountCommand::Deposit { amount: 1 })
                .await
                .expect("deposit");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| {
        args.iter()
            .filter(|a| !a.starts_with("--"))
            .nth(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (accounts, deposits) = (number(0, 10_000), number(1, 4));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let loads = args.iter().any(|a| a == "--load");
    if args.iter().any(|a| a == "--sqlite") {
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(async {
            let store = Arc::new(
                SqliteStore::open(dir.path().join("profile.db"))
                    .await
                    .expect("open"),
            );
            if loads {
                load(store, accounts, deposits).await;
            } else {
                run(store, accounts, deposits).await;
            }
        });
    } else if loads {
        rt.block_on(load(Arc::new(MemoryStore::new()), accounts, deposits));
    } else {
        rt.block_on(run(Arc::new(MemoryStore::new()), accounts, deposits));
    }
}
