//! Support for the code `keel-macros` generates. Not a public API: it may change at any time.

pub use schemars;
pub use serde;

use crate::aggregate::{Aggregate, IntoEvents};
use crate::event::{DecodeError, EncodeError};

/// Encodes an event enum value as its variant's content.
///
/// # Errors
///
/// The serde error, with the type name.
pub fn encode_variant<T: serde::Serialize>(
    value: &T,
    event_type: &'static str,
) -> Result<Vec<u8>, EncodeError> {
    crate::event::encode_variant(value, event_type)
}

/// Decodes variant `tag` of an event enum from its content bytes.
///
/// # Errors
///
/// The serde error, with the type name and schema version.
pub fn decode_variant<T: serde::de::DeserializeOwned>(
    tag: &'static str,
    event_type: &str,
    schema_version: u32,
    payload: &[u8],
) -> Result<T, DecodeError> {
    crate::event::decode_variant(tag, event_type, schema_version, payload)
}

/// Normalises a command handler's answer to the aggregate's events or error.
///
/// # Errors
///
/// The handler's rejection.
#[inline]
pub fn into_events<A, T>(answer: T) -> Result<Vec<A::Event>, A::Error>
where
    A: Aggregate,
    T: IntoEvents<A::Event, A::Error>,
{
    answer.into_events()
}

/// Encodes an aggregate's state for a snapshot (serde JSON).
///
/// # Errors
///
/// The serde error, with the aggregate kind.
pub fn encode_snapshot<T: serde::Serialize>(
    kind: &'static str,
    state: &T,
) -> Result<Vec<u8>, crate::SnapshotError> {
    serde_json::to_vec(state).map_err(|e| crate::SnapshotError::new(kind, "encode", e))
}

/// Decodes an aggregate's state from a snapshot (serde JSON).
///
/// # Errors
///
/// The serde error, with the aggregate kind.
pub fn decode_snapshot<T: serde::de::DeserializeOwned>(
    kind: &'static str,
    payload: &[u8],
) -> Result<T, crate::SnapshotError> {
    serde_json::from_slice(payload).map_err(|e| crate::SnapshotError::new(kind, "decode", e))
}

pub use crate::snapshot::SnapshotConfig;
