//! The size limits Keel enforces at its edge, on every backend.
//!
//! Anything over a limit is refused with a typed error before it reaches storage, so stored
//! data always fits every backend (Kafka's default `max.message.bytes` is 1 MiB).

/// Longest topic name, aggregate kind or event type name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Longest stream id or command id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Largest event payload, in bytes (512 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// Largest metadata of one event, serialised, in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// Most events in one append.
pub const MAX_EVENTS_PER_APPEND: usize = 1024;

/// Most appends (streams) in one atomic append to several streams
/// ([`EventStore::append_all`](crate::EventStore::append_all)).
pub const MAX_STREAMS_PER_APPEND: usize = 64;

/// Most partitions in one topic.
pub const MAX_PARTITIONS: u32 = 1024;

/// Largest snapshot of one aggregate's state, in bytes (896 KiB: it fits a Kafka record of
/// the default 1 MiB with room for its headers).
pub const MAX_SNAPSHOT_BYTES: usize = 896 * 1024;
