//! SQLite-specific faults: damaged envelopes (case 21's "damaged record"), files of other
//! schema versions. A write transaction held open by another connection while appends go on
//! (case 15) is a conformance case (`held_open_append_never_lets_a_tail_skip`).

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

/// A damaged envelope (cut short, a negative version) is a typed error
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
    conn.execute("UPDATE keel_events SET envelope = X'0100' WHERE log_offset = 1")
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
            assert!(detail.contains("envelope"), "{detail}");
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

/// A file written by schema version 1 (events keyed by partition, one column per envelope
/// field) is upgraded when opened: every record, command id and partition head is kept, and
/// appends go on where they were.
#[tokio::test]
async fn a_version_1_file_is_upgraded_keeping_everything() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("v1.db");
    {
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await?;
        sqlx::raw_sql(include_str!("fixtures/sqlite_schema_v1.sql"))
            .execute(&mut conn)
            .await?;
        sqlx::raw_sql(
            "INSERT INTO keel_topics VALUES ('account', 2);
             INSERT INTO keel_partitions VALUES ('account', 1, 2);
             INSERT INTO keel_streams VALUES ('account', 'alice', 2, 1);
             INSERT INTO keel_commands VALUES ('account', 'alice', 'open-alice', zeroblob(32), 1, 1, 0, 1);
             INSERT INTO keel_events VALUES
               ('account', 1, 0, 'alice', 1, 'Opened', 1, '{\"owner\":\"Alice\"}',
                X'0192f0c47a1e7c3b9d2e5f6a7b8c9d0e', 'open-alice',
                X'0192f0c47a1e7c3b9d2e5f6a7b8c9d0f', NULL, 1700000000000000, '{\"who\":\"ops\"}'),
               ('account', 1, 1, 'alice', 2, 'Deposited', 1, '{\"amount\":5}',
                X'0192f0c47a1e7c3b9d2e5f6a7b8c9d10', NULL, NULL, NULL, 1700000000000001, NULL);",
        )
        .execute(&mut conn)
        .await?;
    }

    let store = SqliteStore::open(&path).await?;
    let alice = StreamId::new("account", "alice")?;
    let records = store.read_stream(&alice, keel::StreamVersion(1)).await?;
    assert_eq!(records.len(), 2);
    let opened = &records[0];
    assert_eq!(
        (opened.event_type.as_str(), opened.payload.as_slice()),
        ("Opened", &br#"{"owner":"Alice"}"#[..])
    );
    assert_eq!(opened.position.offset, Offset(0));
    assert_eq!(opened.position.partition, Partition(1));
    assert_eq!(
        opened.event_id.to_string(),
        "0192f0c4-7a1e-7c3b-9d2e-5f6a7b8c9d0e"
    );
    assert_eq!(
        opened.command_id.as_ref().map(keel::CommandId::as_str),
        Some("open-alice")
    );
    assert_eq!(
        opened.correlation_id.map(|u| u.to_string()).as_deref(),
        Some("0192f0c4-7a1e-7c3b-9d2e-5f6a7b8c9d0f")
    );
    assert_eq!(opened.causation_id, None);
    assert_eq!(opened.timestamp.as_micros(), 1_700_000_000_000_000);
    assert_eq!(opened.metadata.get("who").map(String::as_str), Some("ops"));
    assert_eq!(records[1].command_id, None);
    assert!(records[1].metadata.is_empty());
    assert!(
        store
            .command(&alice, &keel::CommandId::new("open-alice")?)
            .await?
            .is_some(),
        "command ids are kept"
    );
    // Appends continue at the stored heads and versions.
    let appended = store
        .append(AppendRequest::new(
            alice.clone(),
            ExpectedVersion::Exact(keel::StreamVersion(2)),
            vec![event(9)],
        ))
        .await?;
    assert_eq!(appended.first_version, keel::StreamVersion(3));
    assert_eq!(appended.offsets, [Offset(2)]);
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let version: String =
        sqlx::query_scalar("SELECT value FROM keel_meta WHERE key = 'schema_version'")
            .fetch_one(&mut conn)
            .await?;
    assert_eq!(version, "2");
    Ok(())
}
