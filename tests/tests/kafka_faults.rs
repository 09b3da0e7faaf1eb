//! Broker faults injected with librdkafka's mock cluster (`rdkafka::mocking::MockCluster`):
//! request errors and timeouts on produce, on adding partitions to a transaction and on
//! committing it, while tasks append with command ids and retry what fails. Afterwards every
//! acknowledged event is present exactly once, where it was acknowledged. Also: the start-up
//! error when the cluster refuses transactions, and the idempotent (non-transactional) mode.

mod kafka;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel::store::kafka::{KafkaStore, KafkaStoreBuilder};
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    StreamId, Topic,
};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use kafka::{Ack, check_exactly_once, read_all};

const PARTITIONS: i32 = 2;

fn mock_with_topics(
    prefix: &str,
    topic: &str,
) -> anyhow::Result<MockCluster<'static, rdkafka::producer::DefaultProducerContext>> {
    let mock = MockCluster::new(3)?;
    // The mock broker has no CreateTopics: make Keel's three topics up front.
    for suffix in ["", ".keel-writer-state", ".keel-snapshots"] {
        mock.create_topic(&format!("{prefix}{topic}{suffix}"), PARTITIONS, 3)?;
    }
    Ok(mock)
}

fn store_on(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    prefix: &str,
) -> KafkaStoreBuilder {
    KafkaStore::builder(mock.bootstrap_servers())
        .topic_prefix(prefix)
        .group("mock")
        .replication_factor(3)
        .check_topic_configs(false)
        .writer_snapshot_every(5)
        .timeout(Duration::from_secs(5))
}

fn request(stream: &StreamId, id: &str) -> anyhow::Result<AppendRequest> {
    Ok(AppendRequest::new(
        stream.clone(),
        ExpectedVersion::Any,
        vec![
            NewEvent::raw(
                "Tested",
                1,
                format!(r#"{{"id":"{id}","k":0}}"#).into_bytes(),
            ),
            NewEvent::raw(
                "Tested",
                1,
                format!(r#"{{"id":"{id}","k":1}}"#).into_bytes(),
            ),
        ],
    )
    .with_command(CommandMeta::new(
        CommandId::new(id)?,
        Fingerprint::of_bytes(id.as_bytes()),
    )))
}

/// Appends `each` commands from `tasks` tasks, retrying a failed append with the same
/// command id until it is acknowledged; counts the failures callers saw.
fn spawn_appenders(
    store: &Arc<KafkaStore>,
    tasks: usize,
    each: usize,
    acked: &Arc<AtomicUsize>,
    failures: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Ack>>>> {
    (0..tasks)
        .map(|t| {
            let (store, acked, failures) =
                (Arc::clone(store), Arc::clone(acked), Arc::clone(failures));
            tokio::spawn(async move {
                let mut acks = Vec::new();
                for i in 0..each {
                    let stream = StreamId::new("faulty", format!("s{}", (t + i) % 6))?;
                    let id = format!("t{t}-{i}");
                    let mut attempts = 0;
                    let a = loop {
                        attempts += 1;
                        match store.append(request(&stream, &id)?).await {
                            Ok(a) => break a,
                            Err(e) => {
                                anyhow::ensure!(attempts < 100, "append {id} never succeeded: {e}");
                                failures.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    };
                    acks.push(Ack::from_appended(&a, &id));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                Ok(acks)
            })
        })
        .collect()
}

async fn wait_until(counter: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {} acknowledgements",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn injected_errors_and_timeouts_leave_every_acknowledged_event_exactly_once()
-> anyhow::Result<()> {
    use RDKafkaRespErr::*;
    let prefix = "faults.";
    let mock = mock_with_topics(prefix, "faulty")?;
    let store = Arc::new(store_on(&mock, prefix).open().await?);
    let (acked, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = spawn_appenders(&store, 6, 40, &acked, &failures);

    // Faults, each injected once the appends reach a point (never after a fixed sleep).
    wait_until(&acked, 10).await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    wait_until(&acked, 40).await;
    mock.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[
            RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ],
    );
    wait_until(&acked, 70).await;
    // A commit whose connection drops: the outcome is unknown to the writer.
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    wait_until(&acked, 100).await;
    // Slow brokers: requests outlast the store's 5 s timeout.
    for broker in 1..=3 {
        mock.broker_round_trip_time(broker, Duration::from_secs(6))?;
    }
    let slow_from = failures.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while failures.load(Ordering::SeqCst) == slow_from {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no append timed out against slow brokers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for broker in 1..=3 {
        mock.broker_round_trip_time(broker, Duration::ZERO)?;
    }
    wait_until(&acked, 150).await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );

    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await??);
    }
    assert_eq!(acks.len(), 240, "every command was acknowledged in the end");
    assert!(
        failures.load(Ordering::SeqCst) > 0,
        "the injected faults reached the callers"
    );

    // Read back through a new writer (a takeover on the same mock cluster).
    store.close().await;
    let reader = store_on(&mock, prefix).open().await?;
    let all = read_all(&reader, &Topic::new("faulty")?, 2).await?;
    let records = check_exactly_once(&all, &acks, 2);
    assert_eq!(
        records, 480,
        "every acknowledged event once, and nothing else"
    );
    reader.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refusing_transactions_is_a_clear_start_up_error() -> anyhow::Result<()> {
    use RDKafkaRespErr::*;
    let prefix = "refused.";
    let mock = mock_with_topics(prefix, "faulty")?;
    mock.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 8],
    );
    let err = store_on(&mock, prefix)
        .open()
        .await
        .expect_err("opening a transactional store on a cluster refusing transactions fails");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    assert!(text.contains("refused transactions"), "{text}");
    assert!(
        text.contains("transactional(false)"),
        "names the way out: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_idempotent_mode_appends_exactly_once_through_retriable_errors() -> anyhow::Result<()> {
    use RDKafkaRespErr::*;
    let prefix = "idempotent.";
    let mock = mock_with_topics(prefix, "faulty")?;
    // No transactions at all: a cluster refusing them does not matter.
    mock.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED; 1],
    );
    let store = Arc::new(store_on(&mock, prefix).transactional(false).open().await?);
    let (acked, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = spawn_appenders(&store, 4, 25, &acked, &failures);
    wait_until(&acked, 20).await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        ],
    );
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await??);
    }
    store.close().await;
    let reader = store_on(&mock, prefix).transactional(false).open().await?;
    let all = read_all(&reader, &Topic::new("faulty")?, 2).await?;
    assert_eq!(check_exactly_once(&all, &acks, 2), 200);
    reader.close().await;
    Ok(())
}
