//! Commands per second through the `Repository` (check the command id → load → decide →
//! append) with the bank's `Account`, and aggregate load time by stream length.
//!
//! Each measured command opens a fresh account, so every iteration does the same work (a
//! deposit bench on a fixed set of accounts would measure ever longer streams to load: there
//! are no snapshots yet). Load time by stream length is measured separately.
//!
//! `cargo bench -p keel-benches --bench repository`
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bank::{Account, AccountCommand};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Repository};

fn open(n: u64) -> AccountCommand {
    AccountCommand::Open {
        owner: format!("owner {n}"),
        overdraft_limit: 0,
    }
}

fn bench_repo<S: EventStore>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: Arc<S>,
) {
    let repo = Repository::<Account, S>::new(store);
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group(format!("command/{name}"));
    group
        .measurement_time(Duration::from_secs(8))
        .sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_task", |b| {
        b.to_async(rt).iter(|| {
            let (repo, counter) = (repo.clone(), Arc::clone(&counter));
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                repo.execute(&format!("new-{n}"), open(n))
                    .await
                    .expect("open");
            }
        });
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_tasks", |b| {
        b.to_async(rt).iter(|| {
            let (repo, counter) = (repo.clone(), Arc::clone(&counter));
            async move {
                let commands = (0..64).map(|_| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let repo = repo.clone();
                    async move { repo.execute(&format!("new-{n}"), open(n)).await }
                });
                for r in futures::future::join_all(commands).await {
                    r.expect("open");
                }
            }
        });
    });
    group.finish();

    let mut group = c.benchmark_group(format!("load/{name}"));
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    for events in [10u64, 100, 1_000] {
        let id = format!("long-{events}");
        rt.block_on(async {
            repo.execute(
                &id,
                AccountCommand::Open {
                    owner: "long".into(),
                    overdraft_limit: 0,
                },
            )
            .await
            .expect("open");
            for _ in 1..events {
                repo.execute(&id, AccountCommand::Deposit { amount: 1 })
                    .await
                    .expect("deposit");
            }
        });
        group.throughput(Throughput::Elements(events));
        group.bench_with_input(BenchmarkId::new("events", events), &id, |b, id| {
            b.to_async(rt)
                .iter(|| async { repo.load(id).await.expect("load") });
        });
    }
    group.finish();
}

fn repository(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    bench_repo(c, "memory", &rt, Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("bench.db")))
        .expect("open sqlite");
    bench_repo(c, "sqlite", &rt, Arc::new(sqlite));
}

criterion_group!(benches, repository);
criterion_main!(benches);
