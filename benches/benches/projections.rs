//! Projection rebuild throughput (events/s) per view store, on a log of 1 million bank events
//! held in the in-memory event store (so the figure is the projection side's), and on a
//! SQLite event store for the end-to-end figure.
//!
//! `cargo bench -p keel-benches --bench projections`
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::Arc;
use std::time::Duration;

use bank::AccountEvent;
use bank::projections::{Balances, BalancesInMemory, StatementView};
use criterion::{Criterion, criterion_group, criterion_main};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::{SqliteStore, Synchronous};
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamId};
use keel_projections::store::memory::MemoryViews;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{Projection, Runner};

const EVENTS: u64 = 1_000_000;
const ACCOUNTS: u64 = 1_000;
/// Events per append while filling the log.
const PER_APPEND: u64 = 500;

async fn fill<S: EventStore>(store: &S) {
    let per_account = EVENTS / ACCOUNTS;
    for a in 0..ACCOUNTS {
        let stream = StreamId::new("account", format!("acc-{a}")).expect("stream id");
        let mut written = 0;
        while written < per_account {
            let events = (written..(written + PER_APPEND).min(per_account))
                .map(|i| {
                    let event = if i == 0 {
                        AccountEvent::Opened {
                            owner: format!("owner {a}"),
                            overdraft_limit: 0,
                        }
                    } else if i % 5 == 0 {
                        AccountEvent::Withdrawn { amount: 3 }
                    } else {
                        AccountEvent::Deposited { amount: 7 }
                    };
                    NewEvent::from_event(&event).expect("encode")
                })
                .collect::<Vec<_>>();
            written += events.len() as u64;
            store
                .append(AppendRequest::new(
                    stream.clone(),
                    ExpectedVersion::Any,
                    events,
                ))
                .await
                .expect("append");
        }
    }
}

/// Times `runner`'s rebuild of the log as `rebuild_1m/<name>`.
fn bench_rebuild<P: Projection>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    runner: Runner<P>,
) {
    keel_benches::bench_rebuild(c, rt, name, &runner, EVENTS, Duration::from_secs(20));
}

fn projections(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let log = Arc::new(MemoryStore::new());
    rt.block_on(fill(&*log));
    let dyn_log: Arc<dyn EventStore> = log;

    let memory = Arc::new(MemoryViews::default());
    bench_rebuild(
        c,
        "memory_log/memory_views/balances",
        &rt,
        Runner::new(BalancesInMemory, Arc::clone(&dyn_log), memory),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let views = Arc::new(
        rt.block_on(SqliteViews::open(dir.path().join("views.db")))
            .expect("views"),
    );
    bench_rebuild(
        c,
        "memory_log/sqlite_views/balances",
        &rt,
        Runner::new(Balances, Arc::clone(&dyn_log), Arc::clone(&views)),
    );
    bench_rebuild(
        c,
        "memory_log/sqlite_views/statement",
        &rt,
        Runner::new(StatementView, Arc::clone(&dyn_log), views),
    );

    // End to end: the log itself in SQLite.
    let sqlite_log = rt
        .block_on(
            SqliteStore::builder(dir.path().join("log.db"))
                .synchronous(Synchronous::Normal)
                .open(),
        )
        .expect("sqlite log");
    rt.block_on(fill(&sqlite_log));
    let sqlite_log: Arc<dyn EventStore> = Arc::new(sqlite_log);
    let memory = Arc::new(MemoryViews::default());
    bench_rebuild(
        c,
        "sqlite_log/memory_views/balances",
        &rt,
        Runner::new(BalancesInMemory, Arc::clone(&sqlite_log), memory),
    );
    let views = Arc::new(
        rt.block_on(SqliteViews::open(dir.path().join("views2.db")))
            .expect("views"),
    );
    bench_rebuild(
        c,
        "sqlite_log/sqlite_views/balances",
        &rt,
        Runner::new(Balances, sqlite_log, views),
    );
}

criterion_group!(benches, projections);
criterion_main!(benches);
