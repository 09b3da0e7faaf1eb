//! The Kafka store on the real broker at `KEEL_TEST_KAFKA`, beside its ceiling: the raw
//! rdkafka transactional producer on the same broker with the same batch shape.
//!
//! - `kafka_appends/keel/64_writers`: 64 writers appending one event each, in a loop, to
//!   distinct streams of a one-partition topic; group commit puts about 64 appends in each
//!   transaction (the bench prints the mean).
//! - `kafka_appends/raw_producer/64_per_transaction`: begin, 64 records of the same size with
//!   the same headers, wait for their acknowledgements, commit — the most one transactional
//!   producer does with that batch.
//! - `kafka_commands/keel/64_tasks`: 64 tasks sending commands through the `Repository` in a
//!   loop (the bank's `Account`, each opening a fresh account: command id check, load,
//!   decide, append).
//!
//! ```text
//! scripts/kafka.sh run cargo bench -p keel-benches --features kafka --bench kafka
//! ```
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bank::{Account, AccountCommand};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keel::store::kafka::KafkaStore;
use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Repository, StreamId, Topic};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const BATCH: u64 = 64;

fn bootstrap() -> String {
    std::env::var("KEEL_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "KEEL_TEST_KAFKA is not set: run `scripts/kafka.sh run cargo bench -p keel-benches \
             --features kafka --bench kafka`, which starts a broker"
        )
    })
}

fn payload(n: u64) -> Vec<u8> {
    format!(r#"{{"Deposited":{{"amount":{n},"note":"a bench event of about a hundred bytes"}}}}"#)
        .into_bytes()
}

fn raw_headers(n: u64) -> OwnedHeaders {
    let value = n.to_string();
    let mut h = OwnedHeaders::new_with_capacity(7);
    for key in [
        "keel.type",
        "keel.schema",
        "keel.version",
        "keel.event-id",
        "keel.timestamp",
        "keel.command-id",
        "keel.fingerprint",
    ] {
        h = h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    h
}

fn kafka(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bootstrap = bootstrap();
    let run = std::process::id();
    let prefix = format!("bench-{run}.");
    let store = Arc::new(
        rt.block_on(
            KafkaStore::builder(&bootstrap)
                .topic_prefix(&prefix)
                .group(format!("bench-{run}"))
                .replication_factor(1)
                .default_partitions(1)
                .open(),
        )
        .expect("open the Kafka store"),
    );
    let topic = Topic::new("bench").expect("topic");
    rt.block_on(store.ensure_topic(&topic, 1)).expect("topic");
    rt.block_on(store.ensure_topic(&Topic::new("account").expect("topic"), 1))
        .expect("topic");

    let mut group = c.benchmark_group("kafka_appends");
    group
        .measurement_time(Duration::from_secs(10))
        .sample_size(20)
        .throughput(Throughput::Elements(BATCH));
    let counter = Arc::new(AtomicU64::new(0));
    // 64 writers appending in a loop, as a busy service would: each measured iteration is
    // one append by each of them; while a transaction commits the others queue up, so the
    // writer's batches hold about 64 appends, the raw producer's batch below.
    group.bench_function("keel/64_writers", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (store, counter) = (Arc::clone(&store), Arc::clone(&counter));
            async move {
                let start = std::time::Instant::now();
                let writers: Vec<_> = (0..BATCH)
                    .map(|_| {
                        let (store, counter) = (Arc::clone(&store), Arc::clone(&counter));
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                let n = counter.fetch_add(1, Ordering::Relaxed);
                                let stream =
                                    StreamId::new("bench", format!("s{n}")).expect("stream");
                                store
                                    .append(AppendRequest::new(
                                        stream,
                                        ExpectedVersion::NoStream,
                                        vec![NewEvent::raw("Deposited", 1, payload(n))],
                                    ))
                                    .await
                                    .expect("append");
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
    let stats = store.stats();
    eprintln!(
        "keel: {} appends in {} transactions ({:.1} a transaction)",
        stats.appends,
        stats.commits,
        stats.appends as f64 / stats.commits.max(1) as f64
    );

    // The ceiling: the raw transactional producer, same broker, same batch shape.
    let raw_topic = format!("{prefix}raw");
    rt.block_on(store.ensure_topic(&Topic::new("raw").expect("topic"), 1))
        .expect("topic");
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", format!("bench-{run}-raw"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("socket.nagle.disable", "true")
        .create()
        .expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    group.bench_function("raw_producer/64_per_transaction", |b| {
        b.to_async(&rt).iter(|| {
            let (producer, counter, raw_topic) =
                (producer.clone(), Arc::clone(&counter), raw_topic.clone());
            async move {
                producer.begin_transaction().expect("begin");
                let mut deliveries = Vec::with_capacity(BATCH as usize);
                for _ in 0..BATCH {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let key = format!("s{n}");
                    let value = payload(n);
                    let record = FutureRecord::to(&raw_topic)
                        .partition(0)
                        .key(&key)
                        .payload(&value)
                        .headers(raw_headers(n));
                    deliveries.push(
                        producer
                            .send_result(record)
                            .map_err(|(e, _)| e)
                            .expect("send"),
                    );
                }
                // Acknowledged first: rdkafka's commit_transaction flushes, and its flush
                // sleeps up to 100 ms while records are in flight.
                for d in deliveries {
                    d.await
                        .expect("delivery")
                        .map_err(|(e, _)| e)
                        .expect("delivered");
                }
                let committing = producer.clone();
                tokio::task::spawn_blocking(move || {
                    committing.commit_transaction(Duration::from_secs(30))
                })
                .await
                .expect("task")
                .expect("commit");
            }
        });
    });
    group.finish();

    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    let mut group = c.benchmark_group("kafka_commands");
    group
        .measurement_time(Duration::from_secs(10))
        .sample_size(20)
        .throughput(Throughput::Elements(BATCH));
    // 64 tasks sending commands in a loop, each opening a fresh account.
    group.bench_function("keel/64_tasks", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (repo, counter) = (repo.clone(), Arc::clone(&counter));
            async move {
                let start = std::time::Instant::now();
                let tasks: Vec<_> = (0..BATCH)
                    .map(|_| {
                        let (repo, counter) = (repo.clone(), Arc::clone(&counter));
                        tokio::spawn(async move {
                            for _ in 0..iters {
                                let n = counter.fetch_add(1, Ordering::Relaxed);
                                repo.execute(
                                    &format!("new-{n}"),
                                    AccountCommand::Open {
                                        owner: format!("owner {n}"),
                                        overdraft_limit: 0,
                                    },
                                )
                                .await
                                .expect("open");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
                start.elapsed()
            }
        });
    });
    group.finish();
    rt.block_on(store.close());
}

criterion_group!(benches, kafka);
criterion_main!(benches);
