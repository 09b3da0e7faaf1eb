//! The event store's error type.

use crate::ids::{CommandId, IdError, Offset, Partition, StreamId, StreamVersion, Topic};
use crate::store::ExpectedVersion;

/// `Result` with the event store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an event of an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEvent {
    /// The type name is empty, too long or holds a refused character.
    #[error("bad event type name")]
    TypeName(#[source] IdError),
    /// The payload is over [`MAX_PAYLOAD_BYTES`](crate::limits::MAX_PAYLOAD_BYTES).
    #[error("payload is {size} bytes, the limit is {max}")]
    PayloadTooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The metadata is over [`MAX_METADATA_BYTES`](crate::limits::MAX_METADATA_BYTES).
    #[error("metadata is {size} bytes, the limit is {max}")]
    MetadataTooLarge {
        /// The metadata's serialised size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The schema version is 0; versions start at 1.
    #[error("schema version 0; versions start at 1")]
    SchemaVersionZero,
}

/// Why an event store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream is not at the expected version. Reload the stream and decide again.
    #[error("conflict on stream {stream}: expected {expected}, stream is at version {actual}")]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's actual version.
        actual: StreamVersion,
    },
    /// This command id was committed on this stream with another fingerprint: a different
    /// command reuses the id. Give the new command its own id.
    #[error("command id {command_id} was already used on stream {stream} for a different command")]
    CommandIdReused {
        /// The stream.
        stream: StreamId,
        /// The reused command id.
        command_id: CommandId,
    },
    /// The append holds no events. Nothing was written and no stream was created.
    #[error("empty append to stream {stream}: an append needs at least one event")]
    EmptyAppend {
        /// The stream.
        stream: StreamId,
    },
    /// The append holds more events than [`MAX_EVENTS_PER_APPEND`](crate::limits::MAX_EVENTS_PER_APPEND).
    #[error("append to stream {stream} holds {count} events, the limit is {max}")]
    TooManyEvents {
        /// The stream.
        stream: StreamId,
        /// How many events.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One event of the append is invalid; none was written.
    #[error("event {index} ({event_type:?}) of the append to stream {stream} is invalid")]
    InvalidEvent {
        /// The stream.
        stream: StreamId,
        /// The event's index in the append, from 0.
        index: usize,
        /// Its type name (cut to 128 bytes).
        event_type: String,
        /// What is wrong with it.
        #[source]
        reason: InvalidEvent,
    },
    /// An identifier was refused.
    #[error(transparent)]
    InvalidId(IdError),
    /// The topic exists with another partition count.
    #[error("topic {topic} has {existing} partitions; it cannot be opened with {requested}")]
    PartitionCount {
        /// The topic.
        topic: Topic,
        /// Its stored partition count.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },
    /// A partition count of 0 or above [`MAX_PARTITIONS`](crate::limits::MAX_PARTITIONS).
    #[error("topic {topic} cannot have {requested} partitions (1 to {max})")]
    BadPartitionCount {
        /// The topic.
        topic: Topic,
        /// The count asked for.
        requested: u32,
        /// The limit.
        max: u32,
    },
    /// The topic does not exist.
    #[error("topic {topic} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: Topic,
    },
    /// The partition is outside the topic's range.
    #[error("topic {topic} has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        /// The topic.
        topic: Topic,
        /// The partition asked for.
        partition: Partition,
        /// How many the topic has.
        partitions: u32,
    },
    /// A snapshot claims a version its stream does not have (yet). Nothing was saved.
    #[error(
        "snapshot of stream {stream} at version {version} is ahead of the stream, which is at version {actual}"
    )]
    SnapshotAhead {
        /// The stream.
        stream: StreamId,
        /// The snapshot's version.
        version: StreamVersion,
        /// The stream's version.
        actual: StreamVersion,
    },
    /// A snapshot was refused before anything was saved: version 0, or too large.
    #[error("snapshot of stream {stream} refused: {reason}")]
    InvalidSnapshot {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: String,
    },
    /// A stored record's envelope is damaged (a column that does not parse).
    #[error("damaged record at topic {topic} partition {partition} offset {offset}: {detail}")]
    Corrupt {
        /// The topic.
        topic: Topic,
        /// The partition.
        partition: Partition,
        /// The offset.
        offset: Offset,
        /// What is wrong.
        detail: String,
    },
    /// Another writer took this partition over (on Kafka: a transactional producer with the
    /// same `transactional.id` was initialised after this one). Nothing of the failed append
    /// was written; this store no longer writes to the partition.
    #[error("fenced: another writer owns topic {topic} partition {partition} now; {detail}")]
    Fenced {
        /// The topic.
        topic: Topic,
        /// The partition.
        partition: Partition,
        /// What the backend reported.
        detail: String,
    },
    /// This store does not own the partition the stream lives in, so it cannot write it (or
    /// serve it from local state). Send the command to the partition's owner.
    #[error("this store does not own topic {topic} partition {partition}")]
    NotOwner {
        /// The topic.
        topic: Topic,
        /// The partition.
        partition: Partition,
    },
    /// An existing topic has a setting the store refuses (for example finite retention on
    /// an events topic, which would delete events). Nothing was written.
    #[error("topic {topic} has {setting}={found}; keel needs {required}")]
    TopicSetting {
        /// The topic as the backend names it.
        topic: String,
        /// The setting.
        setting: String,
        /// Its value on the topic.
        found: String,
        /// What the store needs instead.
        required: String,
    },
    /// A command was sent to the owner of its stream's partition (on Kafka, through the
    /// commands topic) and no answer came within the caller's timeout. It may have been
    /// applied or not: send it again with the same command id to learn its outcome — it is
    /// never applied twice.
    #[error(
        "no answer within {waited:?} for command {command_id} on stream {stream}, sent to the owner of topic {topic} partition {partition}; \
         it may have been applied: send it again with the same command id to learn its outcome"
    )]
    Timeout {
        /// The topic.
        topic: Topic,
        /// The stream's partition.
        partition: Partition,
        /// The stream.
        stream: StreamId,
        /// The command's id (the caller's, or the one made for the trip).
        command_id: CommandId,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// The store's writer has stopped (the store was closed or its task failed).
    #[error("the event store is closed")]
    Closed,
    /// This backend cannot do what was asked (see [`Capabilities`](crate::store::Capabilities)).
    /// Nothing was written.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// What was asked.
        operation: &'static str,
        /// The backend that cannot do it.
        backend: &'static str,
    },
    /// An atomic append to several streams names more streams than
    /// [`MAX_STREAMS_PER_APPEND`](crate::limits::MAX_STREAMS_PER_APPEND). Nothing was written.
    #[error("an atomic append names {count} streams, the limit is {max}")]
    TooManyStreams {
        /// How many appends it holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The backend failed.
    #[error("{operation} failed")]
    Backend {
        /// What the store was doing.
        operation: &'static str,
        /// The backend's error, a [`BackendError`](crate::BackendError) when made by
        /// [`Error::backend`].
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// A backend failure during `operation`. The backend's error is kept as a
    /// [`BackendError`](crate::BackendError), so its causes print once.
    pub fn backend(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            operation,
            source: Box::new(crate::BackendError::new(source)),
        }
    }

    /// Whether retrying the same append after reloading may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
