//! Conformance case 25 on the real broker: Kafka's own console consumer, which knows nothing
//! of Keel, reads a Keel topic and prints each record's key (the stream id), headers (the
//! envelope) and JSON value. And the other way round: a record a plain producer wrote without
//! Keel's envelope is a typed error naming where it is, never a silent skip.

mod kafka;

use std::collections::HashMap;
use std::time::Duration;

use keel::store::Error;
use keel::testing::conformance::{kafka_bootstrap, kafka_env};
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Offset, Partition, StreamId, Topic,
};
use rdkafka::producer::{FutureProducer, FutureRecord};

use kafka::{builder, unique_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkas_console_consumer_reads_key_headers_and_json_value() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let jars = kafka_env(
        "KEEL_TEST_KAFKA_JARS",
        "Kafka's jars (for its console consumer)",
    );
    let prefix = unique_prefix("interop");
    let store = builder(&bootstrap, &prefix)
        .default_partitions(1)
        .open()
        .await?;
    let stream = StreamId::new("account", "alice")?;
    let correlation = uuid::Uuid::now_v7();
    let mut command = CommandMeta::new(
        CommandId::new("open-alice")?,
        Fingerprint::of_bytes(b"open"),
    );
    command.correlation_id = Some(correlation);
    let events = vec![
        NewEvent::raw("Opened", 1, br#"{"Opened":{"owner":"Alice"}}"#.to_vec())
            .with_metadata("who", "interop test"),
        NewEvent::raw("Deposited", 2, br#"{"Deposited":{"amount":25}}"#.to_vec()),
    ];
    let appended = store
        .append(
            AppendRequest::new(stream.clone(), ExpectedVersion::NoStream, events.clone())
                .with_command(command),
        )
        .await?;

    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("java")
            .arg("-cp")
            .arg(format!("{jars}/*"))
            .arg("org.apache.kafka.tools.consumer.ConsoleConsumer")
            .args(["--bootstrap-server", &bootstrap])
            .args(["--topic", &store.kafka_topic(stream.topic())])
            .args(["--from-beginning", "--isolation-level", "read_committed"])
            .args(["--max-messages", "2", "--timeout-ms", "60000"])
            .args([
                "--property",
                "print.key=true",
                "--property",
                "print.headers=true",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        output.status.success(),
        "the console consumer failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.matches('\t').count() >= 2)
        .collect();
    assert_eq!(lines.len(), 2, "two records printed:\n{stdout}");
    for (i, (line, sent)) in lines.iter().zip(&events).enumerate() {
        // headers \t key \t value
        let mut parts = line.splitn(3, '\t');
        let headers = parts.next().unwrap_or_default();
        let key = parts.next().unwrap_or_default();
        let value = parts.next().unwrap_or_default();
        assert_eq!(key, "alice", "the key is the stream id");
        let json: serde_json::Value = serde_json::from_str(value)?;
        assert_eq!(
            json,
            serde_json::from_slice::<serde_json::Value>(&sent.payload)?,
            "the value is the JSON payload"
        );
        let headers: HashMap<&str, &str> = headers
            .split(",keel.")
            .map(|h| h.trim_start_matches("keel."))
            .filter_map(|h| h.split_once(':'))
            .collect();
        assert_eq!(
            headers.get("type"),
            Some(&sent.event_type.as_str()),
            "{line}"
        );
        assert_eq!(
            headers.get("schema"),
            Some(&sent.schema_version.to_string().as_str())
        );
        assert_eq!(headers.get("version"), Some(&(i + 1).to_string().as_str()));
        assert_eq!(
            headers.get("event-id"),
            Some(&sent.event_id.to_string().as_str())
        );
        assert_eq!(
            headers.get("timestamp"),
            Some(&sent.timestamp.0.to_string().as_str())
        );
        assert_eq!(headers.get("command-id"), Some(&"open-alice"));
        assert_eq!(
            headers.get("correlation-id"),
            Some(&correlation.to_string().as_str())
        );
        assert_eq!(headers.get("fingerprint").map(|f| f.len()), Some(64));
    }
    assert!(
        lines[0].contains(r#"keel.metadata:{"who":"interop test"}"#),
        "{}",
        lines[0]
    );
    assert_eq!(appended.offsets.len(), 2);
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_keels_envelope_is_a_typed_error_naming_where() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = unique_prefix("foreign");
    let store = builder(&bootstrap, &prefix)
        .default_partitions(1)
        .open()
        .await?;
    let topic = Topic::new("account")?;
    let stream = StreamId::new("account", "bob")?;
    store
        .append(AppendRequest::new(
            stream.clone(),
            ExpectedVersion::NoStream,
            vec![NewEvent::raw("Opened", 1, b"{}".to_vec())],
        ))
        .await?;
    // A plain producer that knows nothing of Keel writes to the same topic.
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let delivery = producer
        .send(
            FutureRecord::to(&store.kafka_topic(&topic))
                .partition(0)
                .key("bob")
                .payload("not keel"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let offset = Offset(u64::try_from(delivery.offset)?);
    let err = store
        .read_partition(&topic, Partition(0), Offset(0), 10)
        .await
        .expect_err("a record without the envelope does not read");
    match &err {
        Error::Corrupt {
            topic: t,
            partition,
            offset: o,
            detail,
        } => {
            assert_eq!(t, &topic);
            assert_eq!(*partition, Partition(0));
            assert_eq!(*o, offset);
            assert!(
                detail.contains("keel.type"),
                "names what is missing: {detail}"
            );
        }
        other => panic!("expected a corrupt-record error, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("account") && text.contains(&format!("offset {offset}")),
        "{text}"
    );
    // A new writer refuses to take the partition over rather than guess.
    store.close().await;
    let taker = builder(&bootstrap, &prefix)
        .default_partitions(1)
        .open()
        .await?;
    let err = taker
        .take_partition(&topic, Partition(0))
        .await
        .expect_err("the takeover reports the damaged record");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    Ok(())
}
