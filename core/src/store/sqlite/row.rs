//! Turning SQLite rows back into records, with damage reported as [`Error::Corrupt`].

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

use crate::envelope::{Metadata, RecordedEvent, Timestamp};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::store::{Error, Result};

/// The columns [`record`] reads, in a `SELECT`.
pub(super) const COLUMNS: &str = "topic, part, log_offset, stream_id, version, event_type, \
     schema_version, payload, event_id, command_id, correlation_id, causation_id, timestamp, metadata";

fn backend(e: sqlx::Error) -> Error {
    Error::backend("decode a stored record", e)
}

pub(super) fn record(row: &SqliteRow) -> Result<RecordedEvent> {
    let topic: String = row.try_get("topic").map_err(backend)?;
    let part: i64 = row.try_get("part").map_err(backend)?;
    let offset: i64 = row.try_get("log_offset").map_err(backend)?;
    let corrupt = |detail: String| Error::Corrupt {
        topic: Topic::unchecked(&topic),
        partition: Partition(u32::try_from(part).unwrap_or(u32::MAX)),
        offset: Offset(u64::try_from(offset).unwrap_or(u64::MAX)),
        detail,
    };
    let get = |col: &str| -> Result<i64> {
        row.try_get::<i64, _>(col)
            .map_err(|e| corrupt(format!("column {col}: {e}")))
    };
    let topic_id = Topic::new(&topic).map_err(|e| corrupt(format!("topic: {e}")))?;
    let partition = u32::try_from(part).map_err(|_| corrupt(format!("partition {part}")))?;
    let offset_u = u64::try_from(offset).map_err(|_| corrupt(format!("offset {offset}")))?;
    let stream_id: String = row
        .try_get("stream_id")
        .map_err(|e| corrupt(format!("stream_id: {e}")))?;
    let stream =
        StreamId::new(&topic, &stream_id).map_err(|e| corrupt(format!("stream id: {e}")))?;
    let version = u64::try_from(get("version")?).map_err(|_| corrupt("negative version".into()))?;
    let schema_version = u32::try_from(get("schema_version")?)
        .map_err(|_| corrupt("schema version out of range".into()))?;
    let uuid = |col: &str| -> Result<Option<Uuid>> {
        let bytes: Option<Vec<u8>> = row
            .try_get(col)
            .map_err(|e| corrupt(format!("column {col}: {e}")))?;
        bytes
            .map(|b| Uuid::from_slice(&b).map_err(|e| corrupt(format!("column {col}: {e}"))))
            .transpose()
    };
    let event_id = uuid("event_id")?.ok_or_else(|| corrupt("event_id is null".into()))?;
    let command_id: Option<String> = row
        .try_get("command_id")
        .map_err(|e| corrupt(format!("command_id: {e}")))?;
    let command_id = command_id
        .map(|c| CommandId::new(c).map_err(|e| corrupt(format!("command id: {e}"))))
        .transpose()?;
    let metadata: Option<String> = row
        .try_get("metadata")
        .map_err(|e| corrupt(format!("metadata: {e}")))?;
    let metadata = match metadata.as_deref() {
        None | Some("") => Metadata::new(),
        Some(json) => serde_json::from_str(json).map_err(|e| corrupt(format!("metadata: {e}")))?,
    };
    Ok(RecordedEvent {
        position: Position {
            topic: topic_id,
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
        timestamp: Timestamp(get("timestamp")?),
        metadata,
    })
}
