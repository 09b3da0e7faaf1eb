//! Support for the code `keel-macros` generates. Not a public API: it may change at any time.

pub use schemars;
pub use serde;
pub use serde_json;

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

/// One upcaster, as the `Event` derive lists them: from a version to the next.
pub type Upcaster = crate::upcast::Step;

/// Calls the user's upcaster's output into an [`Upcaster`]'s.
///
/// # Errors
///
/// The upcaster's own error, boxed.
#[inline]
pub fn upcast_output<T: crate::upcast::UpcastOutput>(
    output: T,
) -> Result<serde_json::Value, crate::upcast::BoxError> {
    output.into_upcast()
}

/// Decodes variant `tag` from a record of a version other than the current one, through
/// the variant's upcasters.
///
/// # Errors
///
/// A newer version, a gap in the chain, an upcaster's error, or a payload that does not
/// decode.
#[inline]
pub fn decode_older<T: serde::de::DeserializeOwned>(
    tag: &'static str,
    event_type: &str,
    stored: u32,
    current: u32,
    payload: &[u8],
    steps: &[(u32, Upcaster)],
) -> Result<T, DecodeError> {
    crate::upcast::decode_older(tag, event_type, stored, current, payload, steps)
}

/// The error for a record of a type the enum declares ignored.
#[cold]
pub fn ignored(event_type: &str, schema_version: u32) -> DecodeError {
    DecodeError::new(
        event_type,
        schema_version,
        crate::event::DecodeErrorKind::Ignored,
    )
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

/// The stand-in `#[derive(Aggregate)]` uses for an event or error type its attribute does not
/// name, after reporting that: an event enum and an error with no values, so the aggregate's
/// impl is whole and the code using the aggregate adds no errors of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Missing {}

impl std::fmt::Display for Missing {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Missing {}

impl crate::event::Event for Missing {
    const EVENT_TYPES: &'static [&'static str] = &[];

    fn event_type(&self) -> &'static str {
        match *self {}
    }

    fn schema_version(&self) -> u32 {
        match *self {}
    }

    fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match *self {}
    }

    fn decode(event_type: &str, schema_version: u32, _: &[u8]) -> Result<Self, DecodeError> {
        Err(DecodeError::unknown_type(event_type, schema_version, &[]))
    }
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
