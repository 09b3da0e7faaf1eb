//! Events: the facts an aggregate records, and how they become payload bytes and back.
//!
//! Derive [`Event`] on an enum (with the `derive` feature). Each variant gets a stable type
//! name (the variant's name unless `#[event(name = "...")]` says otherwise) and a schema
//! version (`#[event(version = N)]` on the variant or the enum, default 1). The payload is the
//! variant's content as JSON, so a plain consumer reads `{"amount":5}` under the type name
//! `Deposited`, not a Rust-specific wrapper.
//!
//! Events change over the years their records live; the derive declares how (see
//! [`crate::upcast`] and the book's chapter on evolving events):
//!
//! - `upcast(from = N, with = path)` on a variant: a function turning the stored JSON of
//!   version N into version N + 1. [`Event::decode`] applies the chain up to the current
//!   version, so every reader (aggregates, projections, process managers) sees only current
//!   events; the common case, a record of the current version, costs one comparison more.
//! - `aliases = ["Old"]` on a variant: the type names it was stored under before.
//! - `ignore = ["Removed"]` on the enum: types it no longer has, whose records readers skip.

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

    /// Each type's schema history: its name and version, the names it was stored under
    /// before and the versions it upcasts from, in declaration order. The derive fills it;
    /// the schema tools ([`crate::schemas`]) read it. Empty for a hand-written impl.
    const TYPE_INFO: &'static [EventTypeInfo] = &[];

    /// Types this enum no longer has, declared with `#[event(ignore = [...])]`: readers skip
    /// their records instead of failing on an unknown type (see
    /// [`RecordedEvent::decode_unless_ignored`](crate::RecordedEvent::decode_unless_ignored)).
    const IGNORED_TYPES: &'static [&'static str] = &[];

    /// Whether [`decode`](Self::decode) reads records of this type: one of
    /// [`EVENT_TYPES`](Self::EVENT_TYPES) or an alias (a name a type was stored under before).
    fn reads(event_type: &str) -> bool {
        Self::EVENT_TYPES.contains(&event_type)
            || Self::TYPE_INFO
                .iter()
                .any(|info| info.aliases.contains(&event_type))
    }

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
    /// A payload of an older schema version goes through the type's upcasters first, up to
    /// the current version; one of a newer version is refused.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the type name is unknown (or declared ignored), the payload does
    /// not decode, no upcaster leads from its version, or its version is newer than the code's.
    fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self, DecodeError>;
}

/// One event type of an event enum, as the derive declares it: what the schema tools need
/// to export it and to judge a change to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventTypeInfo {
    /// The stored type name.
    pub name: &'static str,
    /// The current schema version.
    pub version: u32,
    /// The name serde knows the variant by (its tag in the enum's JSON Schema).
    pub variant: &'static str,
    /// Names records of this type were stored under before (`aliases = [...]`).
    pub aliases: &'static [&'static str],
    /// The versions an upcaster turns into the next one (`upcast(from = N, ...)`), ascending.
    pub upcasts_from: &'static [u32],
}

impl EventTypeInfo {
    /// Describes a type (the derive's constructor; the fields are public to read).
    pub const fn new(
        name: &'static str,
        version: u32,
        variant: &'static str,
        aliases: &'static [&'static str],
        upcasts_from: &'static [u32],
    ) -> Self {
        Self {
            name,
            version,
            variant,
            aliases,
            upcasts_from,
        }
    }

    /// The first version in `from..version` no upcaster starts from: `None` when records of
    /// version `from` can be read (upcast step by step up to the current version).
    pub fn missing_upcast(&self, from: u32) -> Option<u32> {
        (from..self.version).find(|v| !self.upcasts_from.contains(v))
    }
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
    /// The event enum declares the type removed (`#[event(ignore = [...])]`): readers skip
    /// such records (see
    /// [`RecordedEvent::decode_unless_ignored`](crate::RecordedEvent::decode_unless_ignored)).
    #[error("the type was removed and is declared ignored: readers skip it")]
    Ignored,
    /// The record's schema version is older than the code's and no upcaster starts from
    /// version `missing`.
    #[error(
        "no upcaster from schema version {missing} to the version {current} this code reads: \
         declare `upcast(from = {missing}, with = ...)` on the variant"
    )]
    NoUpcastPath {
        /// The version with no upcaster to the next.
        missing: u32,
        /// The version the code reads.
        current: u32,
    },
    /// The record was written with a schema version newer than the code's.
    #[error(
        "it is newer than version {current}, the newest this code reads: upgrade this service \
         to a build that knows it before it reads these events"
    )]
    NewerThanCode {
        /// The version the code reads.
        current: u32,
    },
    /// An upcaster refused the payload: which one, and why.
    #[error(transparent)]
    Upcast(Box<crate::upcast::UpcastError>),
    /// The upcasters ran, but what they made does not decode as the current version.
    #[error("the payload upcast to schema version {current} does not decode")]
    Upcasted {
        /// The version the code reads.
        current: u32,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
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

    /// A record whose schema version, or its upcasting, is the problem (`kind` is one of
    /// [`Ignored`](DecodeErrorKind::Ignored), [`NoUpcastPath`](DecodeErrorKind::NoUpcastPath),
    /// [`NewerThanCode`](DecodeErrorKind::NewerThanCode), [`Upcast`](DecodeErrorKind::Upcast)
    /// or [`Upcasted`](DecodeErrorKind::Upcasted)).
    pub fn new(event_type: &str, schema_version: u32, kind: DecodeErrorKind) -> Self {
        Self {
            event_type: event_type.to_owned(),
            schema_version,
            position: None,
            stream: None,
            kind,
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
    let mut bytes = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::new(&mut bytes);
    value
        .serialize(content::Content(&mut ser))
        .map_err(|source| EncodeError { event_type, source })?;
    Ok(bytes)
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

/// A serde `Serializer` that writes only the content of an enum variant (serde's default,
/// externally tagged representation), in one pass: `Deposited { amount: 5 }` becomes
/// `{"amount":5}`, a unit variant `null`.
mod content {
    use serde::ser::{self, Impossible, Serialize};

    type Json<'a> = &'a mut serde_json::Serializer<&'a mut Vec<u8>>;

    pub(super) struct Content<'a>(pub(super) Json<'a>);

    fn not_an_enum() -> serde_json::Error {
        ser::Error::custom(
            "an event enum must use serde's default, externally tagged representation",
        )
    }

    macro_rules! refuse {
        ($($method:ident($($arg:ty),*)),* $(,)?) => {
            $(
                fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> {
                    Err(not_an_enum())
                }
            )*
        };
    }

    impl<'a> ser::Serializer for Content<'a> {
        type Ok = ();
        type Error = serde_json::Error;
        type SerializeSeq = Impossible<(), serde_json::Error>;
        type SerializeTuple = Impossible<(), serde_json::Error>;
        type SerializeTupleStruct = Impossible<(), serde_json::Error>;
        type SerializeTupleVariant = TupleContent<'a>;
        type SerializeMap = Impossible<(), serde_json::Error>;
        type SerializeStruct = Impossible<(), serde_json::Error>;
        type SerializeStructVariant = StructContent<'a>;

        refuse! {
            serialize_bool(bool), serialize_i8(i8), serialize_i16(i16), serialize_i32(i32),
            serialize_i64(i64), serialize_i128(i128), serialize_u8(u8), serialize_u16(u16),
            serialize_u32(u32), serialize_u64(u64), serialize_u128(u128), serialize_f32(f32),
            serialize_f64(f64), serialize_char(char), serialize_str(&str),
            serialize_bytes(&[u8]), serialize_none(), serialize_unit(),
            serialize_unit_struct(&'static str),
        }

        fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
        ) -> Result<(), Self::Error> {
            ser::Serializer::serialize_unit(self.0)
        }

        fn serialize_newtype_struct<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<(), Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            value: &T,
        ) -> Result<(), Self::Error> {
            value.serialize(self.0)
        }

        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            len: usize,
        ) -> Result<Self::SerializeTupleVariant, Self::Error> {
            ser::Serializer::serialize_tuple(self.0, len).map(TupleContent)
        }

        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Self::Error> {
            Err(not_an_enum())
        }

        fn serialize_struct_variant(
            self,
            name: &'static str,
            _: u32,
            _: &'static str,
            len: usize,
        ) -> Result<Self::SerializeStructVariant, Self::Error> {
            ser::Serializer::serialize_struct(self.0, name, len).map(StructContent)
        }
    }

    type JsonCompound<'a> =
        serde_json::ser::Compound<'a, &'a mut Vec<u8>, serde_json::ser::CompactFormatter>;

    pub(super) struct TupleContent<'a>(JsonCompound<'a>);

    impl ser::SerializeTupleVariant for TupleContent<'_> {
        type Ok = ();
        type Error = serde_json::Error;

        fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Self::Error> {
            ser::SerializeTuple::serialize_element(&mut self.0, value)
        }

        fn end(self) -> Result<(), Self::Error> {
            ser::SerializeTuple::end(self.0)
        }
    }

    pub(super) struct StructContent<'a>(JsonCompound<'a>);

    impl ser::SerializeStructVariant for StructContent<'_> {
        type Ok = ();
        type Error = serde_json::Error;

        fn serialize_field<T: ?Sized + Serialize>(
            &mut self,
            key: &'static str,
            value: &T,
        ) -> Result<(), Self::Error> {
            ser::SerializeStruct::serialize_field(&mut self.0, key, value)
        }

        fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
            ser::SerializeStruct::skip_field(&mut self.0, key)
        }

        fn end(self) -> Result<(), Self::Error> {
            ser::SerializeStruct::end(self.0)
        }
    }
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
    fn only_externally_tagged_enums_encode() {
        #[derive(Serialize)]
        #[serde(tag = "type")]
        enum Internal {
            Struct { a: u64 },
        }
        #[derive(Serialize)]
        struct NotAnEnum {
            a: u64,
        }
        let message = encode_variant(&Internal::Struct { a: 1 }, "Struct")
            .expect_err("an internally tagged enum is refused")
            .source
            .to_string();
        assert!(message.contains("externally tagged"), "{message}");
        assert!(encode_variant(&NotAnEnum { a: 1 }, "NotAnEnum").is_err());
        assert!(encode_variant(&7u8, "Seven").is_err());
    }

    #[test]
    fn a_decode_error_stays_small() {
        // It travels inside every reader's error type: keep it as small as the unknown type's
        // list of names makes it.
        assert!(
            std::mem::size_of::<DecodeErrorKind>() <= std::mem::size_of::<String>(),
            "{}",
            std::mem::size_of::<DecodeErrorKind>()
        );
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
