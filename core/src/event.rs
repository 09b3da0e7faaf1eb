//! Events: the facts an aggregate records, and how they become payload bytes and back.
//!
//! Derive [`Event`] on an enum (with the `derive` feature). Each variant gets a stable type
//! name (the variant's name unless `#[event(name = "...")]` says otherwise) and a schema
//! version (`#[event(version = N)]` on the variant or the enum, default 1). The payload is the
//! variant's content as JSON, so a plain consumer reads `{"amount":5}` under the type name
//! `Deposited`, not a Rust-specific wrapper.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ids::{Position, StreamId, StreamVersion};

/// An enum of the facts one aggregate records.
///
/// Implemented by `#[derive(Event)]`; the variant type names are its wire contract and must
/// never change once events are stored.
///
/// ```
/// use keel::Event;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Event, Serialize, Deserialize, Debug, PartialEq)]
/// enum LightEvent {
///     SwitchedOn,
///     #[event(name = "light.dimmed", version = 2)]
///     Dimmed { level: u8 },
/// }
///
/// let e = LightEvent::Dimmed { level: 3 };
/// assert_eq!(e.event_type(), "light.dimmed");
/// assert_eq!(e.schema_version(), 2);
/// assert_eq!(LightEvent::EVENT_TYPES, &["SwitchedOn", "light.dimmed"]);
/// let bytes = e.encode()?;
/// assert_eq!(bytes, br#"{"level":3}"#);
/// assert_eq!(LightEvent::decode("light.dimmed", 2, &bytes)?, e);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel event",
    label = "not an event enum",
    note = "add `#[derive(keel::Event, serde::Serialize, serde::Deserialize)]` to the enum"
)]
pub trait Event: Sized + Send + Sync + 'static {
    /// Every type name this enum writes, in declaration order.
    const EVENT_TYPES: &'static [&'static str];

    /// The stable type name of this event.
    fn event_type(&self) -> &'static str;

    /// The schema version this event is written with.
    fn schema_version(&self) -> u32;

    /// The payload bytes.
    ///
    /// # Errors
    ///
    /// [`EncodeError`] when serde refuses the value (a map with non-string keys, say).
    fn encode(&self) -> Result<Vec<u8>, EncodeError>;

    /// Rebuilds an event from its type name, schema version and payload.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the type name is unknown or the payload does not decode.
    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError>;
}

/// An event could not be turned into payload bytes.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode event {event_type}")]
#[non_exhaustive]
pub struct EncodeError {
    /// The event's type name.
    pub event_type: &'static str,
    /// What serde said.
    #[source]
    pub source: serde_json::Error,
}

/// Why stored bytes did not become an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The type name is not one the event enum knows.
    #[error("unknown event type (known: {known})")]
    UnknownType {
        /// The names the enum knows, comma separated.
        known: String,
    },
    /// The payload is not valid for the type.
    #[error("payload does not decode")]
    Payload(#[source] serde_json::Error),
}

/// Stored bytes did not become an event: which record, which type, and why.
///
/// Reading goes on past such a record: this error names it so it can be fixed, upcast or
/// parked; nothing is skipped in silence. Its message ends with the [`DecodeErrorKind`]; its
/// [`source`](std::error::Error::source) is the kind's own cause (serde's error), so a chain
/// says each part once: `cannot decode event type "Deposited" (schema v1) of stream
/// account/a version 2 at topic account partition 0 offset 1: payload does not decode:
/// invalid type: string "x", expected u64 at line 1 column 14`.
#[derive(Debug)]
#[non_exhaustive]
pub struct DecodeError {
    /// The stored type name.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// Where the record sits, when known.
    pub position: Option<Position>,
    /// Its stream and version, when known.
    pub stream: Option<(StreamId, StreamVersion)>,
    /// Why it failed.
    pub kind: DecodeErrorKind,
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The kind is part of the message: its cause comes next.
        std::error::Error::source(&self.kind)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode event type {:?} (schema v{})",
            self.event_type, self.schema_version
        )?;
        if let Some((stream, version)) = &self.stream {
            write!(f, " of stream {stream} version {version}")?;
        }
        if let Some(p) = &self.position {
            write!(
                f,
                " at topic {} partition {} offset {}",
                p.topic, p.partition, p.offset
            )?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl DecodeError {
    /// An unknown type name.
    pub fn unknown_type(event_type: &str, schema_version: u32, known: &[&str]) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            position: None,
            stream: None,
            kind: DecodeErrorKind::UnknownType {
                known: known.join(", "),
            },
        }
    }

    /// A payload that does not decode.
    pub fn payload(event_type: &str, schema_version: u32, source: serde_json::Error) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            position: None,
            stream: None,
            kind: DecodeErrorKind::Payload(source),
        }
    }

    /// Adds where the record was read from.
    #[must_use]
    pub fn at(mut self, position: Position, stream: StreamId, version: StreamVersion) -> Self {
        self.position = Some(position);
        self.stream = Some((stream, version));
        self
    }
}

/// Serialises a serde enum value (externally tagged, serde's default) to its variant content.
pub(crate) fn encode_variant<T: Serialize>(
    value: &T,
    event_type: &'static str,
) -> Result<Vec<u8>, EncodeError> {
    use serde_json::Value;
    let err = |source| EncodeError { event_type, source };
    let content = match serde_json::to_value(value).map_err(err)? {
        // A unit variant serialises as its name; its content is `null`.
        Value::String(_) => Value::Null,
        Value::Object(map) if map.len() == 1 => map
            .into_iter()
            .next()
            .map_or(Value::Null, |(_, content)| content),
        _ => {
            return Err(err(serde::ser::Error::custom(
                "an event enum must use serde's default, externally tagged representation",
            )));
        }
    };
    serde_json::to_vec(&content).map_err(err)
}

/// Deserialises variant `tag` of a serde enum from the variant's content bytes, in one pass.
pub(crate) fn decode_variant<T: DeserializeOwned>(
    tag: &'static str,
    event_type: &str,
    schema_version: u32,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = T::deserialize(variant::Tagged { tag, de: &mut de })
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| DecodeError::payload(event_type, schema_version, e))?;
    Ok(value)
}

/// A serde `Deserializer` that presents "variant `tag` with this JSON content" as an enum.
mod variant {
    use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
    use serde::forward_to_deserialize_any;

    pub(super) struct Tagged<'a, 'de> {
        pub(super) tag: &'static str,
        pub(super) de: &'a mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
    }

    impl<'de> de::Deserializer<'de> for Tagged<'_, 'de> {
        type Error = serde_json::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("an event must deserialise as an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            visitor.visit_enum(self)
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    impl<'de> de::EnumAccess<'de> for Tagged<'_, 'de> {
        type Error = serde_json::Error;
        type Variant = Self;

        fn variant_seed<S: DeserializeSeed<'de>>(
            self,
            seed: S,
        ) -> Result<(S::Value, Self), Self::Error> {
            let tag: de::value::StrDeserializer<'_, serde_json::Error> =
                self.tag.into_deserializer();
            let value = seed.deserialize(tag)?;
            Ok((value, self))
        }
    }

    impl<'de> de::VariantAccess<'de> for Tagged<'_, 'de> {
        type Error = serde_json::Error;

        fn unit_variant(self) -> Result<(), Self::Error> {
            // A unit variant is stored as `null`; accept an empty object too.
            de::IgnoredAny::deserialize(&mut *self.de).map(|_| ())
        }

        fn newtype_variant_seed<S: DeserializeSeed<'de>>(
            self,
            seed: S,
        ) -> Result<S::Value, Self::Error> {
            seed.deserialize(&mut *self.de)
        }

        fn tuple_variant<V: Visitor<'de>>(
            self,
            len: usize,
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Self::Error> {
            de::Deserializer::deserialize_struct(&mut *self.de, "", fields, visitor)
        }
    }

    use serde::Deserialize;
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Sample {
        Unit,
        Newtype(u32),
        Tuple(u8, String),
        Struct { a: u64, b: Option<String> },
    }

    #[test]
    fn variants_round_trip_through_their_content() {
        let cases = [
            (Sample::Unit, "Unit", "null"),
            (Sample::Newtype(7), "Newtype", "7"),
            (Sample::Tuple(1, "x".into()), "Tuple", r#"[1,"x"]"#),
            (
                Sample::Struct { a: 3, b: None },
                "Struct",
                r#"{"a":3,"b":null}"#,
            ),
        ];
        for (value, tag, json) in cases {
            let bytes = encode_variant(&value, tag).expect("encodes");
            assert_eq!(std::str::from_utf8(&bytes).expect("utf8"), json);
            let back: Sample = decode_variant(tag, tag, 1, &bytes).expect("decodes");
            assert_eq!(back, value);
        }
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        for payload in [
            &b"{"[..],
            b"[1]",
            b"{\"a\":\"x\"}",
            b"\xff",
            b"{\"a\":1} trailing",
        ] {
            let r: Result<Sample, _> = decode_variant("Struct", "Struct", 1, payload);
            let err = r.expect_err("must not decode");
            assert!(matches!(err.kind, DecodeErrorKind::Payload(_)), "{err}");
        }
    }
}
