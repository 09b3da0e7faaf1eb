//! Appends per second through the `EventStore` trait, per backend, with one writer and with
//! 64 concurrent writers (group commit on SQLite).
//!
//! `cargo bench -p keel-benches --bench appends`
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamId};

fn request(n: u64) -> AppendRequest {
    let stream = StreamId::new("bench", format!("s{}", n % 10_000)).expect("stream id");
    let event = NewEvent::raw("Deposited", 1, format!(r#"{{"amount":{n}}}"#).into_bytes());
    AppendRequest::new(stream, ExpectedVersion::Any, vec![event])
}

fn bench_store<S: EventStore>(
    c: &mut Criterion,
    name: &str,
    rt: &tokio::runtime::Runtime,
    store: Arc<S>,
) {
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group(format!("append/{name}"));
    group
        .measurement_time(Duration::from_secs(8))
        .sample_size(20);
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_writer", |b| {
        b.to_async(rt).iter(|| {
            let (store, counter) = (Arc::clone(&store), Arc::clone(&counter));
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                store.append(request(n)).await.expect("append");
            }
        });
    });
    // 64 writers appending in a loop, as a busy service would: each measured iteration is
    // one append by each of them, and the writers never wait for each other.
    group.throughput(Throughput::Elements(64));
    group.bench_function("64_writers", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let (store, counter) = (Arc::clone(&store), Arc::clone(&counter));
            async move {
                let start = std::time::Instant::now();
                let writers: Vec<_> = (0..64)
                    .map(|_| {
                        let (store, counter) = (Arc::clone(&store), Arc::clone(&counter));
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                let n = counter.fetch_add(1, Ordering::Relaxed);
                                store.append(request(n)).await.expect("append");
                            }
                        })
                    })
                    .collect();
                for w in writers {
                    w.await.expect("writer");
                }
                start.elapsed()
            }
        });
    });
    group.finish();
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    bench_store(c, "memory", &rt, Arc::new(MemoryStore::new()));
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("bench.db")))
        .expect("open sqlite");
    bench_store(c, "sqlite", &rt, Arc::new(sqlite));
}

criterion_group!(benches, appends);
criterion_main!(benches);
