//! SQLite-specific faults: writers in two processes' worth of stores racing on one file
//! (conformance case 15), a write lock held open by someone else, and damaged envelopes
//! (case 21's "damaged record").

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use keel::store::Error;
use keel::store::sqlite::SqliteStore;
use keel::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Offset, Partition, StreamId, Topic,
};
use sqlx::{Connection, Executor};

fn event(n: u64) -> NewEvent {
    NewEvent::raw("Tested", 1, format!(r#"{{"n":{n}}}"#).into_bytes())
}

async fn append(store: &SqliteStore, id: &str, n: u64) -> keel::Appended {
    let stream = StreamId::new("race", id).expect("stream id");
    store
        .append(AppendRequest::new(
            stream,
            ExpectedVersion::Any,
            vec![event(n)],
        ))
        .await
        .expect("append")
}

/// Case 15 (SQL): while one writer holds a write transaction open, later appends (from
/// another store on the same file, as another process would) wait; a tailing reader never
/// skips a record, whichever commits first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_open_transaction_never_lets_a_tail_skip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("race.db");
    let a = Arc::new(
        SqliteStore::builder(&path)
            .default_partitions(1)
            .open()
            .await?,
    );
    let b = Arc::new(
        SqliteStore::builder(&path)
            .default_partitions(1)
            .open()
            .await?,
    );
    let topic = Topic::new("race")?;
    a.ensure_topic(&topic, 1).await?;
    append(&a, "warm", 0).await;

    const EACH: u64 = 40;
    let tail = Arc::clone(&a).tail(topic.clone(), Partition(0), Offset(0));
    let reader = tokio::spawn(async move {
        tail.take((1 + 2 * EACH + 1) as usize)
            .map(|r| r.expect("tail"))
            .collect::<Vec<_>>()
            .await
    });

    // Someone else holds the write lock for a while, mid-run.
    let mut blocker =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    blocker.execute("BEGIN IMMEDIATE").await?;
    let writers: Vec<_> = [(Arc::clone(&a), "a"), (Arc::clone(&b), "b")]
        .into_iter()
        .map(|(store, name)| {
            tokio::spawn(async move {
                for i in 0..EACH {
                    append(&store, name, i).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The held transaction writes a record through the same head protocol, then commits late.
    blocker
        .execute(
            "INSERT INTO keel_events (topic, part, log_offset, stream_id, version, event_type, \
             schema_version, payload, event_id, timestamp) \
             SELECT 'race', 0, next_offset, 'held', 1, 'Tested', 1, X'7B226E223A307D', \
             randomblob(16), 0 FROM keel_partitions WHERE topic = 'race' AND part = 0",
        )
        .await?;
    blocker
        .execute(
            "INSERT INTO keel_streams (topic, stream_id, version, part) VALUES ('race', 'held', 1, 0)",
        )
        .await?;
    blocker
        .execute("UPDATE keel_partitions SET next_offset = next_offset + 1 WHERE topic = 'race' AND part = 0")
        .await?;
    blocker.execute("COMMIT").await?;
    for w in writers {
        w.await?;
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader).await??;
    let offsets: Vec<u64> = seen.iter().map(|r| r.offset().0).collect();
    assert_eq!(
        offsets,
        (0..offsets.len() as u64).collect::<Vec<_>>(),
        "every record once, dense, in order"
    );
    assert!(
        seen.iter().any(|r| r.stream.id() == "held"),
        "the late-committing record was seen"
    );
    for name in ["a", "b"] {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|r| r.stream.id() == name)
            .map(|r| r.version.0)
            .collect();
        assert_eq!(
            versions,
            (1..=EACH).collect::<Vec<_>>(),
            "stream {name} has every version once"
        );
    }
    Ok(())
}

/// A damaged envelope (an event id that is not a UUID, a negative version) is a typed error
/// naming topic, partition and offset; records around it still read.
#[tokio::test]
async fn damaged_envelope_is_a_typed_error_naming_where() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("damaged.db");
    let store = SqliteStore::builder(&path)
        .default_partitions(1)
        .open()
        .await?;
    for n in 0..3 {
        append(&store, "s", n).await;
    }
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    conn.execute("UPDATE keel_events SET event_id = X'00' WHERE log_offset = 1")
        .await?;
    let topic = Topic::new("race")?;
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
            assert_eq!(t.as_str(), "race");
            assert_eq!(*partition, Partition(0));
            assert_eq!(*offset, Offset(1));
            assert!(detail.contains("event_id"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(err.to_string().contains("offset 1"), "{err}");
    let before = store
        .read_partition(&topic, Partition(0), Offset(0), 1)
        .await?;
    assert_eq!(before.len(), 1, "the record before still reads");
    let after = store
        .read_partition(&topic, Partition(0), Offset(2), 10)
        .await?;
    assert_eq!(after.len(), 1, "the record after still reads");
    store.close().await;
    Ok(())
}

/// A file written by another schema version is refused with a clear error, not misread.
#[tokio::test]
async fn a_file_of_another_schema_version_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("future.db");
    SqliteStore::open(&path).await?.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    conn.execute("UPDATE keel_meta SET value = '99' WHERE key = 'schema_version'")
        .await?;
    conn.close().await?;
    let err = SqliteStore::open(&path).await.expect_err("refused");
    let text = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(text.contains("99"), "{text}");
    Ok(())
}
