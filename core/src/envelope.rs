//! The record envelope: what goes into the log with each event, and what comes back out.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::{DecodeError, EncodeError, Event};
use crate::ids::{CommandId, Offset, Partition, Position, StreamId, StreamVersion, Topic};

/// Free-form string metadata carried with an event (who, from where, trace ids…).
pub type Metadata = BTreeMap<String, String>;

/// A moment, in microseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Self {
        Self::since_epoch(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    fn since_epoch(since: Duration) -> Self {
        Self(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(us) => UNIX_EPOCH + Duration::from_micros(us),
            Err(_) => UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs()),
        }
    }
}

/// A hash of a command's canonical bytes, stored with its id: the same id with another
/// fingerprint is a different command reusing an id, not a retry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// SHA-256 of a value's JSON form (struct fields serialise in declaration order, so
    /// this is stable for a given type).
    ///
    /// # Errors
    ///
    /// The serde error when the value cannot be serialised.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::of_bytes(&serde_json::to_vec(value)?))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

/// The command an append answers: its id (the idempotency key, per stream) and the ids
/// copied onto each event it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandMeta {
    /// The command's id.
    pub id: CommandId,
    /// The hash of the command's canonical bytes.
    pub fingerprint: Fingerprint,
    /// The id tying together everything one request caused.
    pub correlation_id: Option<Uuid>,
    /// The id of the message (event or command) that caused this command.
    pub causation_id: Option<Uuid>,
}

impl CommandMeta {
    /// A command with this id and fingerprint, no correlation or causation.
    pub fn new(id: CommandId, fingerprint: Fingerprint) -> Self {
        Self {
            id,
            fingerprint,
            correlation_id: None,
            causation_id: None,
        }
    }
}

/// An event on its way into the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// The stable type name.
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// The payload bytes (JSON for derived events).
    pub payload: Vec<u8>,
    /// A unique id, a UUID v7 by default.
    pub event_id: Uuid,
    /// When the event was decided.
    pub timestamp: Timestamp,
    /// Free-form metadata.
    pub metadata: Metadata,
}

impl NewEvent {
    /// Encodes a domain event, with a fresh id and the current time.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when the event does not serialise.
    pub fn from_event<E: Event>(event: &E) -> Result<Self, EncodeError> {
        Ok(Self::raw(
            event.event_type(),
            event.schema_version(),
            event.encode()?,
        ))
    }

    /// An event from raw parts, with a fresh id and the current time.
    pub fn raw(event_type: impl Into<String>, schema_version: u32, payload: Vec<u8>) -> Self {
        // One clock read for the timestamp and the id; ids are ordered by a context per
        // thread, which spares each event the lock of uuid's shared context.
        thread_local! {
            static EVENT_IDS: uuid::ContextV7 = const { uuid::ContextV7::new() };
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let event_id = EVENT_IDS.with(|context| {
            Uuid::new_v7(uuid::Timestamp::from_unix(
                context,
                since.as_secs(),
                since.subsec_nanos(),
            ))
        });
        Self {
            event_type: event_type.into(),
            schema_version,
            payload,
            event_id,
            timestamp: Timestamp::since_epoch(since),
            metadata: Metadata::new(),
        }
    }

    /// Adds a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A committed record, as read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Topic, partition and offset.
    pub position: Position,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream (1, 2, 3…).
    pub version: StreamVersion,
    /// The stable type name.
    pub event_type: String,
    /// The schema version of the payload.
    pub schema_version: u32,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The event's unique id.
    pub event_id: Uuid,
    /// The command that wrote it, if any.
    pub command_id: Option<CommandId>,
    /// The correlation id of the command that wrote it.
    pub correlation_id: Option<Uuid>,
    /// The causation id of the command that wrote it.
    pub causation_id: Option<Uuid>,
    /// When the event was decided.
    pub timestamp: Timestamp,
    /// Free-form metadata.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.position.topic
    }

    /// The partition.
    pub fn partition(&self) -> Partition {
        self.position.partition
    }

    /// The offset.
    pub fn offset(&self) -> Offset {
        self.position.offset
    }

    /// Decodes the payload into a domain event.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] naming topic, partition, offset, stream, version and type when the
    /// type is unknown or the payload does not decode.
    pub fn decode<E: Event>(&self) -> Result<E, DecodeError> {
        E::decode(&self.event_type, self.schema_version, &self.payload)
            .map_err(|e| e.at(self.position.clone(), self.stream.clone(), self.version))
    }

    /// Decodes the payload, or `None` for a type the event enum declares removed
    /// ([`Event::IGNORED_TYPES`], `#[event(ignore = [...])]`): what a reader that folds a
    /// stream calls, so that it skips such records instead of failing on them. With no
    /// ignored types this is [`decode`](Self::decode) (the check is a constant, and goes).
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    #[inline]
    pub fn decode_unless_ignored<E: Event>(&self) -> Result<Option<E>, DecodeError> {
        if E::IGNORED_TYPES.contains(&self.event_type.as_str()) {
            return Ok(None);
        }
        self.decode().map(Some)
    }
}
