//! The record envelope on Kafka: key = stream id, value = the payload (JSON for derived
//! events), everything else in headers whose values are UTF-8 text, so a plain consumer
//! (Kafka's console consumer, a Java or Python client) can read and understand a record
//! without Keel.
//!
//! | header | value |
//! |---|---|
//! | `keel.type` | event type name |
//! | `keel.schema` | schema version of the payload (decimal) |
//! | `keel.version` | the event's version in its stream (decimal) |
//! | `keel.event-id` | event id (UUID) |
//! | `keel.timestamp` | when the event was decided, microseconds since the Unix epoch |
//! | `keel.command-id` | the command that wrote it (absent without one) |
//! | `keel.fingerprint` | the command's fingerprint, hex (with `keel.command-id`) |
//! | `keel.correlation-id`, `keel.causation-id` | UUIDs (absent when not given) |
//! | `keel.metadata` | metadata as a JSON object of strings (absent when empty) |

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use uuid::Uuid;

use crate::envelope::{CommandMeta, Fingerprint, Metadata, NewEvent, RecordedEvent, Timestamp};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};
use std::collections::HashMap;

use crate::snapshot::Snapshot;
use crate::store::{Error, Result, validate};

/// Header names.
pub(crate) mod header {
    pub(crate) const TYPE: &str = "keel.type";
    pub(crate) const SCHEMA: &str = "keel.schema";
    pub(crate) const VERSION: &str = "keel.version";
    pub(crate) const EVENT_ID: &str = "keel.event-id";
    pub(crate) const TIMESTAMP: &str = "keel.timestamp";
    pub(crate) const COMMAND_ID: &str = "keel.command-id";
    pub(crate) const FINGERPRINT: &str = "keel.fingerprint";
    pub(crate) const CORRELATION_ID: &str = "keel.correlation-id";
    pub(crate) const CAUSATION_ID: &str = "keel.causation-id";
    pub(crate) const METADATA: &str = "keel.metadata";
}

fn push(headers: OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key,
        value: Some(value.as_bytes()),
    })
}

/// The headers of one event of an append.
pub(crate) fn headers(
    event: &NewEvent,
    version: StreamVersion,
    command: Option<&CommandMeta>,
) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(10);
    h = push(h, header::TYPE, &event.event_type);
    h = push(h, header::SCHEMA, &event.schema_version.to_string());
    h = push(h, header::VERSION, &version.to_string());
    h = push(h, header::EVENT_ID, &event.event_id.to_string());
    h = push(h, header::TIMESTAMP, &event.timestamp.0.to_string());
    if let Some(c) = command {
        h = push(h, header::COMMAND_ID, c.id.as_str());
        h = push(h, header::FINGERPRINT, &hex(&c.fingerprint.0));
        if let Some(id) = c.correlation_id {
            h = push(h, header::CORRELATION_ID, &id.to_string());
        }
        if let Some(id) = c.causation_id {
            h = push(h, header::CAUSATION_ID, &id.to_string());
        }
    }
    // Checked against its limit before the append reached the writer.
    if let Ok(json) = validate::metadata_json(event)
        && !json.is_empty()
    {
        h = push(h, header::METADATA, &json);
    }
    h
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A decoded record with what the writer's index needs beyond the envelope.
pub(crate) struct Decoded {
    pub(crate) record: RecordedEvent,
    pub(crate) fingerprint: Option<Fingerprint>,
    /// The broker's timestamp of the record, in microseconds (when it was produced).
    pub(crate) produced_at: Timestamp,
}

/// Decodes a Kafka record of `topic` (Keel's name for it) into a [`RecordedEvent`]; a record
/// whose key or headers do not parse is [`Error::Corrupt`] naming where it is and what.
pub(crate) fn decode<M: Message>(topic: &Topic, message: &M) -> Result<Decoded> {
    let partition = Partition(u32::try_from(message.partition()).unwrap_or(u32::MAX));
    let offset = Offset(u64::try_from(message.offset()).unwrap_or(u64::MAX));
    let corrupt = |detail: String| Error::Corrupt {
        topic: topic.clone(),
        partition,
        offset,
        detail,
    };
    let key = message
        .key()
        .ok_or_else(|| corrupt("the record has no key (keel keys records by stream id)".into()))?;
    let id = std::str::from_utf8(key).map_err(|e| corrupt(format!("key: {e}")))?;
    let stream = StreamId::in_topic(topic, id).map_err(|e| corrupt(format!("key {id:?}: {e}")))?;

    let mut fields: [Option<&str>; 10] = [None; 10];
    const NAMES: [&str; 10] = [
        header::TYPE,
        header::SCHEMA,
        header::VERSION,
        header::EVENT_ID,
        header::TIMESTAMP,
        header::COMMAND_ID,
        header::FINGERPRINT,
        header::CORRELATION_ID,
        header::CAUSATION_ID,
        header::METADATA,
    ];
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            if let Some(slot) = NAMES.iter().position(|n| *n == h.key)
                && let Some(field) = fields.get_mut(slot)
            {
                let value = h.value.unwrap_or_default();
                let text = std::str::from_utf8(value)
                    .map_err(|e| corrupt(format!("header {}: {e}", h.key)))?;
                *field = Some(text);
            }
        }
    }
    let [
        event_type,
        schema,
        version,
        event_id,
        timestamp,
        command_id,
        fingerprint,
        correlation,
        causation,
        metadata,
    ] = fields;
    let missing = |name: &str| corrupt(format!("header {name} is missing (not a keel record?)"));
    let number = |value: Option<&str>, name: &str| -> Result<u64> {
        let text = value.ok_or_else(|| missing(name))?;
        text.parse()
            .map_err(|e| corrupt(format!("header {name} {text:?}: {e}")))
    };
    let uuid = |value: Option<&str>, name: &str| -> Result<Option<Uuid>> {
        value
            .map(|t| Uuid::parse_str(t).map_err(|e| corrupt(format!("header {name} {t:?}: {e}"))))
            .transpose()
    };
    let event_type = event_type.ok_or_else(|| missing(header::TYPE))?.to_owned();
    let schema_version = u32::try_from(number(schema, header::SCHEMA)?)
        .map_err(|e| corrupt(format!("header {}: {e}", header::SCHEMA)))?;
    let version = StreamVersion(number(version, header::VERSION)?);
    let event_id = uuid(event_id, header::EVENT_ID)?
        .ok_or_else(|| corrupt(format!("header {} is missing", header::EVENT_ID)))?;
    let micros = timestamp.ok_or_else(|| missing(header::TIMESTAMP))?;
    let timestamp = Timestamp(
        micros
            .parse()
            .map_err(|e| corrupt(format!("header {} {micros:?}: {e}", header::TIMESTAMP)))?,
    );
    let command_id = command_id
        .map(|c| {
            CommandId::new(c).map_err(|e| corrupt(format!("header {}: {e}", header::COMMAND_ID)))
        })
        .transpose()?;
    let fingerprint = match (&command_id, fingerprint) {
        (Some(_), Some(text)) => Some(Fingerprint(unhex(text).ok_or_else(|| {
            corrupt(format!(
                "header {} {text:?} is not 64 hex digits",
                header::FINGERPRINT
            ))
        })?)),
        (Some(_), None) => {
            return Err(corrupt(format!(
                "header {} is missing beside {}",
                header::FINGERPRINT,
                header::COMMAND_ID
            )));
        }
        (None, _) => None,
    };
    let metadata: Metadata = match metadata {
        None | Some("") => Metadata::new(),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| corrupt(format!("header {}: {e}", header::METADATA)))?,
    };
    let produced_at = message
        .timestamp()
        .to_millis()
        .map_or(timestamp, |ms| Timestamp(ms.saturating_mul(1000)));
    Ok(Decoded {
        record: RecordedEvent {
            position: Position {
                topic: topic.clone(),
                partition,
                offset,
            },
            stream,
            version,
            event_type,
            schema_version,
            payload: message.payload().unwrap_or_default().to_vec(),
            event_id,
            command_id,
            correlation_id: uuid(correlation, header::CORRELATION_ID)?,
            causation_id: uuid(causation, header::CAUSATION_ID)?,
            timestamp,
            metadata,
        },
        fingerprint,
        produced_at,
    })
}

/// An aggregate snapshot record: key = stream id, value = the encoded state, the rest in
/// headers: the version it covers, its shape, when it was taken and, when the writer knows
/// it, the offset of the event at that version (`keel.offset`).
pub(crate) fn snapshot_headers(snapshot: &Snapshot, covers: Option<Offset>) -> OwnedHeaders {
    let push = |h: OwnedHeaders, key: &str, value: String| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    };
    let h = OwnedHeaders::new_with_capacity(4);
    let h = push(h, header::VERSION, snapshot.version.to_string());
    let h = push(h, "keel.shape", snapshot.shape.to_string());
    let h = push(h, header::TIMESTAMP, snapshot.timestamp.0.to_string());
    match covers {
        Some(offset) => push(h, SNAPSHOT_OFFSET, offset.to_string()),
        None => h,
    }
}

/// The header of an aggregate snapshot naming the offset of the event it covers.
pub(crate) const SNAPSHOT_OFFSET: &str = "keel.offset";

pub(crate) fn decode_snapshot(topic: &Topic, m: &impl Message) -> Result<Option<Snapshot>> {
    let (Some(key), Some(payload)) = (m.key(), m.payload()) else {
        return Ok(None);
    };
    let corrupt = |detail: String| Error::Corrupt {
        topic: topic.clone(),
        partition: Partition(u32::try_from(m.partition()).unwrap_or(u32::MAX)),
        offset: Offset(u64::try_from(m.offset()).unwrap_or(u64::MAX)),
        detail: format!("aggregate snapshot: {detail}"),
    };
    let id = std::str::from_utf8(key).map_err(|e| corrupt(format!("key: {e}")))?;
    let stream = StreamId::in_topic(topic, id).map_err(|e| corrupt(format!("key: {e}")))?;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    if let Some(headers) = m.headers() {
        use rdkafka::message::Headers as _;
        for h in headers.iter() {
            if let Some(v) = h.value.and_then(|v| std::str::from_utf8(v).ok()) {
                fields.insert(h.key, v);
            }
        }
    }
    let number = |name: &str| -> Result<u64> {
        fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(format!("header {name} is missing or not a number")))
    };
    Ok(Some(Snapshot {
        stream,
        version: StreamVersion(number(header::VERSION)?),
        shape: u32::try_from(number("keel.shape")?).map_err(|e| corrupt(e.to_string()))?,
        payload: payload.to_vec(),
        timestamp: Timestamp(i64::try_from(number(header::TIMESTAMP)?).unwrap_or(i64::MAX)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_through_hex() {
        let f = Fingerprint::of_bytes(b"deposit 5");
        assert_eq!(unhex(&hex(&f.0)), Some(f.0));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
