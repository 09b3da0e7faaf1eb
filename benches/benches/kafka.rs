//! The Kafka store on the real broker at `KEEL_TEST_KAFKA`, beside its ceiling: the raw
//! rdkafka transactional producer on the same broker with the same batch shape.
//!
//! - `kafka_appends/keel/64_writers`: 64 concurrent appends of one event each to distinct
//!   streams of a one-partition topic; group commit puts them in shared transactions.
//! - `kafka_appends/raw_producer/64_per_transaction`: begin, 64 records of the same size with
//!   the same headers, commit — the most one transactional producer does with that batch.
//! - `kafka_commands/keel/64_tasks`: 64 concurrent commands through the `Repository` (the
//!   bank's `Account`, each opening a fresh account: command id check, load, decide, append).
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
    group.bench_function("keel/64_writers", |b| {
        b.to_async(&rt).iter(|| {
            let (store, counter) = (Arc::clone(&store), Arc::clone(&counter));
            async move {
                let appends = (0..BATCH).map(|_| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let store = Arc::clone(&store);
                    tokio::spawn(async move {
                        let stream = StreamId::new("bench", format!("s{n}")).expect("stream");
                        store
                            .append(AppendRequest::new(
                                stream,
                                ExpectedVersion::NoStream,
                                vec![NewEvent::raw("Deposited", 1, payload(n))],
                            ))
                            .await
                    })
                });
                for r in futures::future::join_all(appends).await {
                    r.expect("task").expect("append");
                }
            }
        });
    });

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
                let committing = producer.clone();
                tokio::task::spawn_blocking(move || {
                    committing.commit_transaction(Duration::from_secs(30))
                })
                .await
                .expect("task")
                .expect("commit");
                for d in deliveries {
                    d.await
                        .expect("delivery")
                        .map_err(|(e, _)| e)
                        .expect("delivered");
                }
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
    group.bench_function("keel/64_tasks", |b| {
        b.to_async(&rt).iter(|| {
            let (repo, counter) = (repo.clone(), Arc::clone(&counter));
            async move {
                let commands = (0..BATCH).map(|_| {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let repo = repo.clone();
                    async move {
                        repo.execute(
                            &format!("new-{n}"),
                            AccountCommand::Open {
                                owner: format!("owner {n}"),
                                overdraft_limit: 0,
                            },
                        )
                        .await
                    }
                });
                for r in futures::future::join_all(commands).await {
                    r.expect("open");
                }
            }
        });
    });
    group.finish();
    rt.block_on(store.close());
}

criterion_group!(benches, kafka);
criterion_main!(benches);
