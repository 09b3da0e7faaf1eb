//! Broker failure on a real 3-node cluster (`KEEL_TEST_KAFKA_CLUSTER`, started by
//! `scripts/kafka.sh`): replication 3, `min.insync.replicas=2`. The leader of a partition is
//! killed with SIGKILL in the middle of a stream of appends; afterwards every acknowledged
//! append is present exactly once, where it was acknowledged, and stream versions are dense.

mod kafka;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use keel::testing::conformance::kafka_env;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    StreamId, Topic,
};
use rdkafka::consumer::{BaseConsumer, Consumer};

use kafka::{Ack, builder, check_exactly_once, read_all, unique_prefix};

fn request(stream: &StreamId, id: &str) -> anyhow::Result<AppendRequest> {
    Ok(AppendRequest::new(
        stream.clone(),
        ExpectedVersion::Any,
        (0..3)
            .map(|k| {
                NewEvent::raw(
                    "Tested",
                    1,
                    format!(r#"{{"id":"{id}","k":{k}}}"#).into_bytes(),
                )
            })
            .collect(),
    )
    .with_command(CommandMeta::new(
        CommandId::new(id)?,
        Fingerprint::of_bytes(id.as_bytes()),
    )))
}

/// The broker id leading `partition` of `topic`.
fn leader(bootstrap: &str, topic: &str, partition: i32) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
        .map(|p| p.leader())
        .ok_or_else(|| anyhow::anyhow!("no leader for {topic}[{partition}]"))
}

async fn wait_until(counter: &AtomicUsize, n: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: stuck at {} acknowledgements",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_partition_leader_mid_stream_loses_no_acknowledged_append() -> anyhow::Result<()>
{
    let bootstrap = kafka_env("KEEL_TEST_KAFKA_CLUSTER", "a 3-node Kafka cluster");
    let pids: HashMap<i32, u32> = kafka_env(
        "KEEL_TEST_KAFKA_CLUSTER_PIDS",
        "the process ids of the 3-node cluster",
    )
    .split(',')
    .filter_map(|pair| {
        let (node, pid) = pair.split_once('=')?;
        Some((node.parse().ok()?, pid.parse().ok()?))
    })
    .collect();
    for (node, pid) in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "cluster node {node} (pid {pid}) is not running: this test kills one node per run; \
             restart the cluster (scripts/kafka.sh run ...)"
        );
    }
    let prefix = unique_prefix("failover");
    let store = Arc::new(
        builder(&bootstrap, &prefix)
            .replication_factor(3)
            .min_insync_replicas(2)
            .default_partitions(2)
            .timeout(Duration::from_secs(30))
            .open()
            .await?,
    );
    let topic = Topic::new("crash")?;
    store.ensure_topic(&topic, 2).await?;

    let (acked, failures, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (store, acked, failures, stop) = (
            Arc::clone(&store),
            Arc::clone(&acked),
            Arc::clone(&failures),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let stream = StreamId::new("crash", format!("s{}", (t * 3 + i) % 10))?;
                let id = format!("t{t}-{i}");
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                let a = loop {
                    match store.append(request(&stream, &id)?).await {
                        Ok(a) => break a,
                        Err(e) => {
                            anyhow::ensure!(
                                tokio::time::Instant::now() < deadline,
                                "append {id} never succeeded: {e}"
                            );
                            failures.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                };
                acks.push(Ack::from_appended(&a, &id));
                acked.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            anyhow::Ok(acks)
        }));
    }

    wait_until(&acked, 100, "before the kill").await;
    let kafka_topic = store.kafka_topic(&topic);
    let victim = leader(&bootstrap, &kafka_topic, 0)?;
    let pid = pids
        .get(&victim)
        .ok_or_else(|| anyhow::anyhow!("no pid for broker {victim}"))?;
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -9 {pid} failed");
    let at_kill = acked.load(Ordering::SeqCst);
    // Appends go on through the failover: wait for plenty more.
    wait_until(&acked, at_kill + 200, "after the kill").await;
    let new_leader = leader(&bootstrap, &kafka_topic, 0)?;
    assert_ne!(new_leader, victim, "another broker leads the partition");
    stop.store(true, Ordering::SeqCst);
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await??);
    }

    let all = read_all(&store, &topic, 2).await?;
    let records = check_exactly_once(&all, &acks, 3);
    assert!(records >= acks.len() * 3);
    // Committed command ids are remembered through the failover.
    for ack in acks.iter().step_by(7) {
        let retry = store
            .append(request(
                &StreamId::new("crash", &ack.stream)?,
                &ack.command,
            )?)
            .await?;
        assert!(retry.replayed, "{} is remembered", ack.command);
        assert_eq!(
            retry.offsets.iter().map(|o| o.0).collect::<Vec<_>>(),
            ack.offsets
        );
    }
    eprintln!(
        "broker {victim} killed after {at_kill} acknowledged appends; {} acknowledged in all, {} failed attempts retried",
        acks.len(),
        failures.load(Ordering::SeqCst)
    );
    store.close().await;
    Ok(())
}
