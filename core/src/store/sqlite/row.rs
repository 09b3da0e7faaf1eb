//! Turning SQLite rows back into records, with damage reported as [`Error::Corrupt`].

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::envelope::{Metadata, RecordedEvent, Timestamp};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::store::{Error, Result};

/// The columns [`record`] reads, in a `SELECT`, in this order.
pub(super) const COLUMNS: &str = "part, log_offset, stream_id, version, event_type, schema_version, \
     payload, event_id, command_id, correlation_id, causation_id, timestamp, metadata";

fn backend(e: sqlx::Error) -> Error {
    Error::backend("decode a stored record", e)
}

/// A record of `topic` (and of `stream`, when the caller read one stream) from a row of
/// [`COLUMNS`].
pub(super) fn record(
    row: &SqliteRow,
    topic: &Topic,
    stream: Option<&StreamId>,
) -> Result<RecordedEvent> {
    let part: i64 = row.try_get(0).map_err(backend)?;
    let offset: i64 = row.try_get(1).map_err(backend)?;
    let corrupt = |detail: String| Error::Corrupt {
        topic: topic.clone(),
        partition: Partition(u32::try_from(part).unwrap_or(u32::MAX)),
        offset: Offset(u64::try_from(offset).unwrap_or(u64::MAX)),
        detail,
    };
    let get = |col: usize, name: &str| -> Result<i64> {
        row.try_get::<i64, _>(col)
            .map_err(|e| corrupt(format!("column {name}: {e}")))
    };
    let partition = u32::try_from(part).map_err(|_| corrupt(format!("partition {part}")))?;
    let offset_u = u64::try_from(offset).map_err(|_| corrupt(format!("offset {offset}")))?;
    let stream = match stream {
        Some(s) => s.clone(),
        None => {
            let id: &str = row
                .try_get(2)
                .map_err(|e| corrupt(format!("stream_id: {e}")))?;
            StreamId::in_topic(topic, id).map_err(|e| corrupt(format!("stream id: {e}")))?
        }
    };
    let version =
        u64::try_from(get(3, "version")?).map_err(|_| corrupt("negative version".into()))?;
    let schema_version = u32::try_from(get(5, "schema_version")?)
        .map_err(|_| corrupt("schema version out of range".into()))?;
    let uuid = |col: usize, name: &str| -> Result<Option<Uuid>> {
        let bytes: Option<&[u8]> = row
            .try_get(col)
            .map_err(|e| corrupt(format!("column {name}: {e}")))?;
        bytes
            .map(|b| Uuid::from_slice(b).map_err(|e| corrupt(format!("column {name}: {e}"))))
            .transpose()
    };
    let event_id = uuid(7, "event_id")?.ok_or_else(|| corrupt("event_id is null".into()))?;
    let command_id: Option<&str> = row
        .try_get(8)
        .map_err(|e| corrupt(format!("command_id: {e}")))?;
    let command_id = command_id
        .map(|c| CommandId::new(c).map_err(|e| corrupt(format!("command id: {e}"))))
        .transpose()?;
    let metadata: Option<&str> = row
        .try_get(12)
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
            .try_get(4)
            .map_err(|e| corrupt(format!("event_type: {e}")))?,
        schema_version,
        payload: row
            .try_get(6)
            .map_err(|e| corrupt(format!("payload: {e}")))?,
        event_id,
        command_id,
        correlation_id: uuid(9, "correlation_id")?,
        causation_id: uuid(10, "causation_id")?,
        timestamp: Timestamp(get(11, "timestamp")?),
        metadata,
    })
}

/// A snapshot of `stream` from a row of `version, shape, payload, timestamp`.
pub(super) fn snapshot(row: &SqliteRow, stream: &StreamId) -> Result<crate::Snapshot> {
    let damaged = |e: &dyn std::fmt::Display| {
        Error::backend(
            "read a snapshot",
            format!("damaged snapshot of stream {stream}: {e}"),
        )
    };
    let version: i64 = row.try_get(0).map_err(|e| damaged(&e))?;
    let shape: i64 = row.try_get(1).map_err(|e| damaged(&e))?;
    Ok(crate::Snapshot {
        stream: stream.clone(),
        version: StreamVersion(u64::try_from(version).map_err(|e| damaged(&e))?),
        shape: u32::try_from(shape).map_err(|e| damaged(&e))?,
        payload: row.try_get(2).map_err(|e| damaged(&e))?,
        timestamp: Timestamp(row.try_get(3).map_err(|e| damaged(&e))?),
    })
}
