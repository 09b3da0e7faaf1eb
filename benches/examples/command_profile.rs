//! A fixed command workload to profile the command path with (no timing, no criterion):
//! `accounts` accounts, each opened then given `deposits` deposits, through
//! `Repository::execute` on the in-memory store (default) or SQLite (`--sqlite`).
//!
//! ```text
//! cargo build --release -p keel-benches --example command_profile
//! valgrind --tool=callgrind target/release/examples/command_profile 2000 4
//! perf record -e cpu-clock target/release/examples/command_profile 200000 4
//! ```
//!
//! Instruction counts from callgrind do not depend on what else the machine is doing, so
//! they compare two versions of the path reliably.

use std::sync::Arc;

use bank::{Account, AccountCommand};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Repository};

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
    if args.iter().any(|a| a == "--sqlite") {
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(async {
            let store = Arc::new(
                SqliteStore::open(dir.path().join("profile.db"))
                    .await
                    .expect("open"),
            );
            run(store, accounts, deposits).await;
        });
    } else {
        rt.block_on(run(Arc::new(MemoryStore::new()), accounts, deposits));
    }
}
