//! Turning SQLite rows back into records and snapshots, with damage reported as
//! [`Error::Corrupt`].

use crate::envelope::{RecordedEvent, Timestamp};
use crate::ids::{Offset, Partition, Position, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{Error, Result};
use rusqlite::Row;
use rusqlite::types::ValueRef;

/// The columns [`record`] reads, in a `SELECT`, in this order.
pub(super) const COLUMNS: &str =
    "part, log_offset, stream_id, version, event_type, schema_version, payload, envelope";

/// A record of `topic` (and of `stream`, when the caller read one stream) from a row of
/// [`COLUMNS`].
pub(super) fn record(
    row: &Row<'_>,
    topic: &Topic,
    stream: Option<&StreamId>,
) -> Result<RecordedEvent> {
    let part = int(row, 0).unwrap_or(-1);
    let offset = int(row, 1).unwrap_or(-1);
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
            let id = text(row, 2).map_err(|e| corrupt(format!("stream_id: {e}")))?;
            StreamId::in_topic(topic, id).map_err(|e| corrupt(format!("stream id: {e}")))?
        }
    };
    let number =
        |col: usize, name: &str| int(row, col).map_err(|e| corrupt(format!("column {name}: {e}")));
    let version =
        u64::try_from(number(3, "version")?).map_err(|_| corrupt("negative version".into()))?;
    let event_type = text(row, 4).map_err(|e| corrupt(format!("event_type: {e}")))?;
    let schema_version = u32::try_from(number(5, "schema_version")?)
        .map_err(|_| corrupt("schema version out of range".into()))?;
    let payload = blob(row, 6).map_err(|e| corrupt(format!("payload: {e}")))?;
    let envelope = blob(row, 7)
        .map_err(|e| corrupt(format!("envelope: {e}")))
        .and_then(|b| super::packed::unpack(b).map_err(corrupt))?;
    Ok(RecordedEvent {
        position: Position {
            topic: topic.clone(),
            partition: Partition(partition),
            offset: Offset(offset_u),
        },
        stream,
        version: StreamVersion(version),
        event_type: event_type.to_owned(),
        schema_version,
        payload: payload.to_vec(),
        event_id: envelope.event_id,
        command_id: envelope.command_id,
        correlation_id: envelope.correlation_id,
        causation_id: envelope.causation_id,
        timestamp: envelope.timestamp,
        metadata: envelope.metadata,
    })
}

/// A snapshot of `stream` from a row of `version, shape, payload, timestamp`.
pub(super) fn snapshot(row: &Row<'_>, stream: &StreamId) -> Result<Snapshot> {
    let damaged = |e: &dyn std::fmt::Display| {
        Error::backend(
            "read a snapshot",
            format!("damaged snapshot of stream {stream}: {e}"),
        )
    };
    let version = int(row, 0).map_err(|e| damaged(&e))?;
    let shape = int(row, 1).map_err(|e| damaged(&e))?;
    Ok(Snapshot {
        stream: stream.clone(),
        version: StreamVersion(u64::try_from(version).map_err(|e| damaged(&e))?),
        shape: u32::try_from(shape).map_err(|e| damaged(&e))?,
        payload: blob(row, 2).map_err(|e| damaged(&e))?.to_vec(),
        timestamp: Timestamp(int(row, 3).map_err(|e| damaged(&e))?),
    })
}

/// An integer column.
pub(super) fn int(row: &Row<'_>, col: usize) -> std::result::Result<i64, String> {
    match row.get_ref(col).map_err(|e| e.to_string())? {
        ValueRef::Integer(i) => Ok(i),
        other => Err(format!("expected an integer, found {}", other.data_type())),
    }
}

/// A text column, borrowed from the row.
pub(super) fn text<'r>(row: &'r Row<'_>, col: usize) -> std::result::Result<&'r str, String> {
    match row.get_ref(col).map_err(|e| e.to_string())? {
        ValueRef::Text(t) => std::str::from_utf8(t).map_err(|e| e.to_string()),
        other => Err(format!("expected text, found {}", other.data_type())),
    }
}

/// A blob column, borrowed from the row (text is accepted: SQLite may store either).
pub(super) fn blob<'r>(row: &'r Row<'_>, col: usize) -> std::result::Result<&'r [u8], String> {
    match row.get_ref(col).map_err(|e| e.to_string())? {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b),
        other => Err(format!("expected a blob, found {}", other.data_type())),
    }
}
