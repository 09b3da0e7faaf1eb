//! SQLite-specific faults: damaged envelopes (case 21's "damaged record") and a file of another
//! schema version. A write transaction held open by another connection (case 15) is a
//! conformance case (`held_open_append_never_lets_a_tail_skip`).

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
