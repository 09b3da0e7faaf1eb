//! Turning PostgreSQL rows back into records, with damage reported as [`Error::Corrupt`].

use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::envelope::{Fingerprint, Metadata, RecordedEvent, Timestamp};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::store::{Appended, CommandRecord, Error, Result};

/// A record of `topic` (and of `stream`, when the caller read one stream) from a row of
/// `read_stream.sql` or `read_partition.sql`.
pub(super) fn record(
    row: &PgRow,
    topic: &Topic,
    stream: Option<&StreamId>,
) -> Result<RecordedEvent> {
    let part: i32 = row
        .try_get("part")
        .map_err(|e| Error::backend("decode a stored record", e))?;
    let offset: i64 = row
        .try_get("log_offset")
        .map_err(|e| Error::backend("decode a stored record", e))?;
    let corrupt = |detail: String| Error::Corrupt {
        topic: topic.clone(),
        partition: Partition(u32::try_from(part).unwrap_or(u32::MAX)),
        offset: Offset(u64::try_from(offset).unwrap_or(u64::MAX)),
        detail,
    };
    let partition = u32::try_from(part).map_err(|_| corrupt(format!("partition {part}")))?;
    let offset_u = u64::try_from(offset).map_err(|_| corrupt(format!("offset {offset}")))?;
    let stream = match stream {
        Some(s) => s.clone(),
        None => {
            let id: &str = row
                .try_get("stream_id")
                .map_err(|e| corrupt(format!("stream_id: {e}")))?;
            StreamId::in_topic(topic, id).map_err(|e| corrupt(format!("stream id: {e}")))?
        }
    };
    let version: i64 = row
        .try_get("version")
        .map_err(|e| corrupt(format!("version: {e}")))?;
    let version = u64::try_from(version).map_err(|_| corrupt("negative version".into()))?;
    let schema_version: i64 = row
        .try_get("schema_version")
        .map_err(|e| corrupt(format!("schema_version: {e}")))?;
    let schema_version =
        u32::try_from(schema_version).map_err(|_| corrupt("schema version out of range".into()))?;
    let uuid = |name: &str| -> Result<Option<Uuid>> {
        row.try_get::<Option<Uuid>, _>(name)
            .map_err(|e| corrupt(format!("{name}: {e}")))
    };
    let event_id = uuid("event_id")?.ok_or_else(|| corrupt("event_id is null".into()))?;
    let command_id: Option<&str> = row
        .try_get("command_id")
        .map_err(|e| corrupt(format!("command_id: {e}")))?;
    let command_id = command_id
        .map(|c| CommandId::new(c).map_err(|e| corrupt(format!("command id: {e}"))))
        .transpose()?;
    let metadata: Option<&str> = row
        .try_get("metadata")
        .map_err(|e| corrupt(format!("metadata: {e}")))?;
    let metadata = match metadata {
        None | Some("") => Metadata::new(),
        Some(json) => serde_json::from_str(json).map_err(|e| corrupt(format!("metadata: {e}")))?,
    };
    Ok(RecordedEvent {
        position: Position {
            topic: topic.clone(),
            partition: Partition(partition),
            offset: Offset(offset_u),
        },
        stream,
        version: StreamVersion(version),
        event_type: row
            .try_get("event_type")
            .map_err(|e| corrupt(format!("event_type: {e}")))?,
        schema_version,
        payload: row
            .try_get("payload")
            .map_err(|e| corrupt(format!("payload: {e}")))?,
        event_id,
        command_id,
        correlation_id: uuid("correlation_id")?,
        causation_id: uuid("causation_id")?,
        timestamp: Timestamp(
            row.try_get("timestamp_us")
                .map_err(|e| corrupt(format!("timestamp_us: {e}")))?,
        ),
        metadata,
    })
}

/// A command record of `stream` from a row with the `commands` table's columns.
pub(super) fn command_record(row: &PgRow, stream: &StreamId) -> Result<CommandRecord> {
    let damaged = |what: &str, detail: &dyn std::fmt::Display| {
        Error::backend(
            "read a command",
            format!("damaged command record on stream {stream}: {what}: {detail}"),
        )
    };
    let get = |name: &str| -> Result<i64> {
        row.try_get::<Option<i64>, _>(name)
            .map_err(|e| damaged(name, &e))?
            .ok_or_else(|| damaged(name, &"null"))
    };
    let get32 = |name: &str| -> Result<i64> {
        row.try_get::<Option<i32>, _>(name)
            .map_err(|e| damaged(name, &e))?
            .map(i64::from)
            .ok_or_else(|| damaged(name, &"null"))
    };
    let fingerprint: Option<Vec<u8>> = row
        .try_get("fingerprint")
        .map_err(|e| damaged("fingerprint", &e))?;
    let fingerprint: [u8; 32] = fingerprint
        .unwrap_or_default()
        .try_into()
        .map_err(|_| damaged("fingerprint", &"not 32 bytes"))?;
    let non_negative = |name: &str, v: i64| u64::try_from(v).map_err(|_| damaged(name, &v));
    let part = non_negative("part", get32("part")?)?;
    let first_version = non_negative("first_version", get("first_version")?)?;
    let first_offset = non_negative("first_offset", get("first_offset")?)?;
    let count = non_negative("count", get32("count")?)?;
    Ok(CommandRecord {
        fingerprint: Fingerprint(fingerprint),
        appended: Appended {
            stream: stream.clone(),
            partition: Partition(u32::try_from(part).map_err(|_| damaged("part", &part))?),
            first_version: StreamVersion(first_version),
            offsets: (first_offset..first_offset + count).map(Offset).collect(),
            replayed: false,
        },
    })
}

/// A snapshot of `stream` from a row of `version, shape, payload, timestamp_us`.
pub(super) fn snapshot(row: &PgRow, stream: &StreamId) -> Result<crate::Snapshot> {
    snapshot_from(row, stream, "shape")
}

/// A snapshot of `stream` from the snapshot row of `read_from_snapshot.sql` (its shape is in
/// the `schema_version` column).
pub(super) fn snapshot_of_load(row: &PgRow, stream: &StreamId) -> Result<crate::Snapshot> {
    snapshot_from(row, stream, "schema_version")
}

fn snapshot_from(row: &PgRow, stream: &StreamId, shape_column: &str) -> Result<crate::Snapshot> {
    let damaged = |e: &dyn std::fmt::Display| {
        Error::backend(
            "read a snapshot",
            format!("damaged snapshot of stream {stream}: {e}"),
        )
    };
    let version: i64 = row.try_get("version").map_err(|e| damaged(&e))?;
    let shape: i64 = row.try_get(shape_column).map_err(|e| damaged(&e))?;
    Ok(crate::Snapshot {
        stream: stream.clone(),
        version: StreamVersion(u64::try_from(version).map_err(|e| damaged(&e))?),
        shape: u32::try_from(shape).map_err(|e| damaged(&e))?,
        payload: row.try_get("payload").map_err(|e| damaged(&e))?,
        timestamp: Timestamp(row.try_get("timestamp_us").map_err(|e| damaged(&e))?),
    })
}
