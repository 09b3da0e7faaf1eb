//! Checks every backend applies to an append before writing anything.

use crate::envelope::NewEvent;
use crate::ids::{self, StreamId, Topic};
use crate::limits;
use crate::store::{AppendRequest, Error, InvalidEvent, Result};

fn is_type_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

/// Serialised metadata, checked against its limit.
pub(crate) fn metadata_json(event: &NewEvent) -> std::result::Result<String, InvalidEvent> {
    if event.metadata.is_empty() {
        return Ok(String::new());
    }
    // A map of strings always serialises.
    let json = serde_json::to_string(&event.metadata).unwrap_or_default();
    if json.len() > limits::MAX_METADATA_BYTES {
        return Err(InvalidEvent::MetadataTooLarge {
            size: json.len(),
            max: limits::MAX_METADATA_BYTES,
        });
    }
    Ok(json)
}

fn check_event(event: &NewEvent) -> std::result::Result<(), InvalidEvent> {
    ids::check(
        "event type",
        &event.event_type,
        limits::MAX_NAME_BYTES,
        is_type_char,
        "ASCII letters, digits and - _ . :",
    )
    .map_err(InvalidEvent::TypeName)?;
    if event.schema_version == 0 {
        return Err(InvalidEvent::SchemaVersionZero);
    }
    if event.payload.len() > limits::MAX_PAYLOAD_BYTES {
        return Err(InvalidEvent::PayloadTooLarge {
            size: event.payload.len(),
            max: limits::MAX_PAYLOAD_BYTES,
        });
    }
    metadata_json(event).map(|_| ())
}

/// Checks an append's shape and every event; the first problem is the error.
pub(crate) fn check_append(request: &AppendRequest) -> Result<()> {
    let stream = &request.stream;
    if request.events.is_empty() {
        return Err(Error::EmptyAppend {
            stream: stream.clone(),
        });
    }
    if request.events.len() > limits::MAX_EVENTS_PER_APPEND {
        return Err(Error::TooManyEvents {
            stream: stream.clone(),
            count: request.events.len(),
            max: limits::MAX_EVENTS_PER_APPEND,
        });
    }
    for (index, event) in request.events.iter().enumerate() {
        check_event(event).map_err(|reason| Error::InvalidEvent {
            stream: stream.clone(),
            index,
            event_type: truncate(&event.event_type, limits::MAX_NAME_BYTES),
            reason,
        })?;
    }
    Ok(())
}

/// Checks an atomic append to several streams: their number, then each append.
pub(crate) fn check_append_all(requests: &[AppendRequest]) -> Result<()> {
    if requests.len() > limits::MAX_STREAMS_PER_APPEND {
        return Err(Error::TooManyStreams {
            count: requests.len(),
            max: limits::MAX_STREAMS_PER_APPEND,
        });
    }
    requests.iter().try_for_each(check_append)
}

/// Checks a snapshot's shape before it is saved (its version against the stream is the
/// backend's check, made where the stream's version is known).
pub(crate) fn check_snapshot(snapshot: &crate::Snapshot) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::InvalidSnapshot {
            stream: snapshot.stream.clone(),
            reason,
        })
    };
    if snapshot.version == crate::StreamVersion::INITIAL {
        return refuse("version 0: a snapshot covers at least one event".into());
    }
    if snapshot.payload.len() > limits::MAX_SNAPSHOT_BYTES {
        return refuse(format!(
            "it is {} bytes, the limit is {}",
            snapshot.payload.len(),
            limits::MAX_SNAPSHOT_BYTES
        ));
    }
    Ok(())
}

/// Checks a requested partition count.
pub(crate) fn check_partitions(topic: &Topic, partitions: u32) -> Result<()> {
    if partitions == 0 || partitions > limits::MAX_PARTITIONS {
        return Err(Error::BadPartitionCount {
            topic: topic.clone(),
            requested: partitions,
            max: limits::MAX_PARTITIONS,
        });
    }
    Ok(())
}

/// Checks `partition` exists in a topic of `partitions` partitions.
pub(crate) fn check_partition(
    topic: &Topic,
    partition: crate::Partition,
    partitions: u32,
) -> Result<()> {
    if partition.0 >= partitions {
        return Err(Error::UnknownPartition {
            topic: topic.clone(),
            partition,
            partitions,
        });
    }
    Ok(())
}

/// The stream's partition among `partitions`.
pub(crate) fn partition_of(stream: &StreamId, partitions: u32) -> crate::Partition {
    crate::partitioner::partition_for(stream.id().as_bytes(), partitions)
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
