//! The PostgreSQL store beyond the conformance suite: several stores (processes) on one
//! database, tails woken across processes by LISTEN/NOTIFY, and schemas it must refuse.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use keel::store::Error;
use keel::store::postgres::PostgresStore;
use keel::testing::postgres;
use keel::{
    AppendRequest, CommandId, CommandMeta, EventStore, ExpectedVersion, Fingerprint, NewEvent,
    Offset, Partition, StreamId, StreamVersion, Topic,
};
use sqlx::{Connection, Executor};

fn event(n: u64) -> NewEvent {
    NewEvent::raw("Tested", 1, format!(r#"{{"n":{n}}}"#).into_bytes())
}

fn request(id: &str, expected: ExpectedVersion, n: u64) -> AppendRequest {
    AppendRequest::new(
        StreamId::new("shared", id).expect("stream id"),
        expected,
        vec![event(n)],
    )
}

/// The error's message and its sources', for assertions on what a user reads.
fn text(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn open(schema: &str, poll: Duration) -> PostgresStore {
    PostgresStore::builder(postgres::url())
        .schema(schema)
        .default_partitions(2)
        .poll_interval(poll)
        .open()
        .await
        .expect("open the store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_keep_offsets_dense_and_commands_once() -> anyhow::Result<()> {
    const TASKS: u64 = 8;
    const EACH: u64 = 20;
    let schema = postgres::unique_name("two");
    let stores = [
        Arc::new(open(&schema, Duration::from_secs(1)).await),
        Arc::new(open(&schema, Duration::from_secs(1)).await),
    ];
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..TASKS {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let mut wrote = 0u64;
                for i in 0..EACH {
                    // Both stores race on the same streams with exact expectations: a loser
                    // reloads and tries again.
                    let id = format!("s{}", (t + i) % 5);
                    loop {
                        let stream = StreamId::new("shared", &id).expect("stream id");
                        let version = store.stream_version(&stream).await.expect("version");
                        match store
                            .append(request(&id, ExpectedVersion::Exact(version), i))
                            .await
                        {
                            Ok(_) => break,
                            Err(Error::Conflict { .. }) => continue,
                            Err(e) => panic!("store {s} task {t}: {e}"),
                        }
                    }
                    wrote += 1;
                    // And they send the same command ids: each is written once.
                    let command = format!("same-{t}-{i}");
                    let answer = store
                        .append(request("commands", ExpectedVersion::Any, i).with_command(
                            CommandMeta::new(
                                CommandId::new(&command).expect("command id"),
                                Fingerprint::of_bytes(command.as_bytes()),
                            ),
                        ))
                        .await
                        .expect("append a command");
                    if !answer.replayed {
                        wrote += 1;
                    }
                }
                wrote
            }));
        }
    }
    let mut wrote = 0;
    for task in tasks {
        wrote += task.await?;
    }
    let topic = Topic::new("shared")?;
    let mut total = 0;
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..2 {
        let records = stores[0]
            .read_partition(&topic, Partition(p), Offset(0), 100_000)
            .await?;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset().0).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "partition {p} is dense"
        );
        total += records.len() as u64;
        for r in records {
            versions
                .entry(r.stream.id().to_owned())
                .or_default()
                .push(r.version.0);
        }
    }
    assert_eq!(total, wrote, "every acknowledged write, once");
    for (stream, v) in &versions {
        assert_eq!(
            v,
            &(1..=v.len() as u64).collect::<Vec<_>>(),
            "stream {stream}: versions dense"
        );
    }
    assert_eq!(
        versions.get("commands").map(Vec::len),
        Some((TASKS * EACH) as usize),
        "each command id written once by the two stores"
    );
    for store in stores {
        store.close().await;
    }
    Ok(())
}

/// A store decides a batch from what its own commits taught it (no read) when that covers the
/// batch. Every way that knowledge goes stale must be caught: another store's append to the
/// stream (an exact expectation it would wrongly refuse, an `Any` append it would place at a
/// taken version) and command ids committed where it did not see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_store_learnt_from_its_own_commits_never_outlives_another_stores_append()
-> anyhow::Result<()> {
    let schema = postgres::unique_name("known");
    let (a, b) = (
        open(&schema, Duration::from_secs(1)).await,
        open(&schema, Duration::from_secs(1)).await,
    );
    let stream = StreamId::new("shared", "s")?;
    let command = |id: &str, body: &str| {
        CommandMeta::new(
            CommandId::new(id).expect("command id"),
            Fingerprint::of_bytes(body.as_bytes()),
        )
    };
    // A learns s at version 2 from its own commits.
    a.append(request("s", ExpectedVersion::Exact(StreamVersion(0)), 1))
        .await?;
    a.append(request("s", ExpectedVersion::Exact(StreamVersion(1)), 2))
        .await?;
    // B appends version 3 behind A's back.
    b.append(request("s", ExpectedVersion::Exact(StreamVersion(2)), 3))
        .await?;
    // A, asked for what is true (3), must not refuse from what it knew (2).
    let fourth = a
        .append(request("s", ExpectedVersion::Exact(StreamVersion(3)), 4))
        .await?;
    assert_eq!(
        fourth.first_version,
        StreamVersion(4),
        "decided from the database, not from A's stale knowledge"
    );
    // B again; then A appends with `Any`: it must land at 6, not at a version B took.
    b.append(request("s", ExpectedVersion::Any, 5)).await?;
    let sixth = a.append(request("s", ExpectedVersion::Any, 6)).await?;
    assert_eq!(sixth.first_version, StreamVersion(6));
    // And a stale refusal: A knows 6; B writes 7; A expecting 6 must be refused with actual 7.
    b.append(request("s", ExpectedVersion::Any, 7)).await?;
    match a
        .append(request("s", ExpectedVersion::Exact(StreamVersion(6)), 8))
        .await
    {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, StreamVersion(7)),
        other => panic!("expected a conflict at version 7, got {other:?}"),
    }
    // A command id B committed, sent to A (which knows the stream): replayed, not written.
    let by_b = b
        .append(request("s", ExpectedVersion::Any, 9).with_command(command("c-b", "one")))
        .await?;
    let again = a
        .append(request("s", ExpectedVersion::Any, 9).with_command(command("c-b", "one")))
        .await?;
    assert!(again.replayed, "B's command id is replayed by A");
    assert_eq!(again.offsets, by_b.offsets);
    // A command id A itself committed several batches ago: replayed, or refused when reused.
    let own = a
        .append(request("s", ExpectedVersion::Any, 10).with_command(command("c-a", "two")))
        .await?;
    a.append(request("s", ExpectedVersion::Any, 11)).await?;
    let replay = a
        .append(request("s", ExpectedVersion::Any, 10).with_command(command("c-a", "two")))
        .await?;
    assert!(replay.replayed);
    assert_eq!(replay.offsets, own.offsets);
    match a
        .append(request("s", ExpectedVersion::Any, 12).with_command(command("c-a", "other")))
        .await
    {
        Err(Error::CommandIdReused { .. }) => {}
        other => panic!("a reused command id must be refused, got {other:?}"),
    }
    // Versions 1..=10 (A wrote 1, 2, 4, 6, 9, 10; B 3, 5, 7, 8), each once.
    let records = a.read_stream(&stream, StreamVersion(0)).await?;
    let versions: Vec<u64> = records.iter().map(|r| r.version.0).collect();
    assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    a.close().await;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_is_woken_by_another_stores_commits() -> anyhow::Result<()> {
    let schema = postgres::unique_name("notify");
    let writer = open(&schema, Duration::from_secs(1)).await;
    // An hour between polls: only a notification can wake this store's tails in time.
    let reader = Arc::new(open(&schema, Duration::from_secs(3600)).await);
    let topic = Topic::new("shared")?;
    writer.ensure_topic(&topic, 2).await?;
    let mut tails = Vec::new();
    for p in 0..2 {
        tails.push(Arc::clone(&reader).tail(topic.clone(), Partition(p), Offset(0)));
    }
    let mut tails = futures::stream::select_all(tails);
    for n in 0..10 {
        let appended = writer
            .append(request(&format!("s{n}"), ExpectedVersion::NoStream, n))
            .await?;
        let record = tokio::time::timeout(Duration::from_secs(30), tails.next())
            .await
            .map_err(|_| anyhow::anyhow!("append {n} did not wake the other store's tail"))?
            .ok_or_else(|| anyhow::anyhow!("the tail ended"))??;
        assert_eq!(record.position, appended.positions().next().expect("one"));
    }
    writer.close().await;
    reader.close().await;
    Ok(())
}

#[tokio::test]
async fn a_schema_written_by_a_newer_keel_is_refused() -> anyhow::Result<()> {
    let schema = postgres::unique_name("newer");
    open(&schema, Duration::from_secs(1)).await.close().await;
    let newer = PostgresStore::schema_version() + 1;
    let mut conn = sqlx::PgConnection::connect(&postgres::url()).await?;
    conn.execute(
        format!(
            "INSERT INTO \"{schema}\"._sqlx_migrations \
             (version, description, success, checksum, execution_time) \
             VALUES ({newer}, 'from the future', TRUE, '\\x00', 0)"
        )
        .as_str(),
    )
    .await?;
    let err = PostgresStore::builder(postgres::url())
        .schema(&schema)
        .open()
        .await
        .expect_err("a newer schema is refused");
    let text = text(&err);
    assert!(
        text.contains(&format!("version {newer}")) && text.contains("newer than this Keel"),
        "{text}"
    );
    assert!(
        text.contains(&schema),
        "the message names the schema: {text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_schema_holding_another_applications_tables_is_refused() -> anyhow::Result<()> {
    let schema = postgres::unique_name("foreign");
    let mut conn = sqlx::PgConnection::connect(&postgres::url()).await?;
    conn.execute(format!("CREATE SCHEMA \"{schema}\"").as_str())
        .await?;
    conn.execute(format!("CREATE TABLE \"{schema}\".orders (id INT)").as_str())
        .await?;
    let err = PostgresStore::builder(postgres::url())
        .schema(&schema)
        .open()
        .await
        .expect_err("another application's schema is refused");
    let text = text(&err);
    assert!(
        text.contains("no Keel schema version") && text.contains("schema of its own"),
        "{text}"
    );
    let untouched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&schema)
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(untouched, 1, "nothing was created in it");
    Ok(())
}

#[tokio::test]
async fn schema_names_that_are_not_plain_identifiers_are_refused() {
    for bad in [
        "",
        "Keel",
        "1keel",
        "pg_keel",
        "ke-el",
        "keel\"; DROP",
        &"k".repeat(49),
    ] {
        let err = PostgresStore::builder(postgres::url())
            .schema(bad)
            .open()
            .await
            .expect_err(bad);
        assert!(
            text(&err).contains("cannot name the store's schema"),
            "{bad:?}: {err}"
        );
    }
}

#[tokio::test]
async fn a_damaged_envelope_is_a_typed_error_naming_where() -> anyhow::Result<()> {
    let schema = postgres::unique_name("damaged");
    let store = open(&schema, Duration::from_secs(1)).await;
    let topic = Topic::new("shared")?;
    store.ensure_topic(&topic, 1).await?;
    for n in 0..3 {
        store
            .append(request("s", ExpectedVersion::Exact(StreamVersion(n)), n))
            .await?;
    }
    let mut conn = sqlx::PgConnection::connect(&postgres::url()).await?;
    conn.execute(
        format!("UPDATE \"{schema}\".events SET metadata = 'not json' WHERE log_offset = 1")
            .as_str(),
    )
    .await?;
    let err = store
        .read_partition(&topic, Partition(0), Offset(0), 10)
        .await
        .expect_err("the damaged record is reported");
    match &err {
        Error::Corrupt {
            topic: t,
            partition,
            offset,
            detail,
        } => {
            assert_eq!(t, &topic);
            assert_eq!(*partition, Partition(0));
            assert_eq!(*offset, Offset(1));
            assert!(detail.contains("metadata"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let after = store
        .read_partition(&topic, Partition(0), Offset(2), 10)
        .await?;
    assert_eq!(after.len(), 1, "the record after still reads");
    store.close().await;
    Ok(())
}
