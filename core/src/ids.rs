//! Identifiers and positions: newtypes for the numbers and names that must never be confused.
//!
//! Every identifier that comes from a user is validated when it is built ([`StreamId::new`],
//! [`CommandId::new`], [`Topic::new`]), so a value of these types is always within the limits
//! stated in [`crate::limits`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::limits;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The identifier is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which kind of identifier (`stream id`, `command id`, `topic`, …).
        what: &'static str,
    },
    /// The identifier is longer than its limit.
    #[error("{what} is {len} bytes long, the limit is {max}")]
    TooLong {
        /// Which kind of identifier.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The identifier holds a character outside its allowed set.
    #[error("{what} {value:?} holds {found:?} at byte {at}; allowed: {allowed}")]
    BadCharacter {
        /// Which kind of identifier.
        what: &'static str,
        /// The refused value (cut to its limit).
        value: String,
        /// The first refused character.
        found: char,
        /// Its byte index.
        at: usize,
        /// The allowed set, in words.
        allowed: &'static str,
    },
    /// The bytes are not valid UTF-8.
    #[error("{what} is not valid UTF-8 (byte {valid_up_to} starts an invalid sequence)")]
    InvalidUtf8 {
        /// Which kind of identifier.
        what: &'static str,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
}

const ID_ALLOWED: &str = "ASCII letters, digits and - _ . : @ + ~ =";
const NAME_ALLOWED: &str = "ASCII letters, digits and - _ .";

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@' | '+' | '~' | '=')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

pub(crate) fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    allowed_text: &'static str,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.len() > max {
        return Err(IdError::TooLong {
            what,
            len: value.len(),
            max,
        });
    }
    // Every allowed set is ASCII: a byte test decides the common case, and only a refused
    // value is walked again by character to report where.
    if value
        .bytes()
        .all(|b| b.is_ascii() && allowed(char::from(b)))
    {
        return Ok(());
    }
    if let Some((at, found)) = value.char_indices().find(|(_, c)| !allowed(*c)) {
        return Err(IdError::BadCharacter {
            what,
            value: value.to_owned(),
            found,
            at,
            allowed: allowed_text,
        });
    }
    Ok(())
}

fn from_utf8<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a str, IdError> {
    std::str::from_utf8(bytes).map_err(|e| IdError::InvalidUtf8 {
        what,
        valid_up_to: e.valid_up_to(),
    })
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:ident, $allowed_text:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value` and wraps it.
            ///
            /// # Errors
            ///
            /// [`IdError`] when the value is empty, too long or holds a character outside
            /// the allowed set.
            pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
                let value = value.as_ref();
                check($what, value, $max, $allowed, $allowed_text)?;
                Ok(Self(Arc::from(value)))
            }

            /// Validates raw bytes (from a file, a header, a socket) and wraps them.
            ///
            /// # Errors
            ///
            /// [`IdError::InvalidUtf8`] for bytes that are not UTF-8, and the errors of
            /// [`Self::new`].
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
                Self::new(from_utf8($what, bytes)?)
            }

            /// Wraps a value without checking it: only for naming things in error reports.
            #[allow(dead_code, reason = "not every identifier needs it")]
            pub(crate) fn unchecked(value: &str) -> Self {
                Self(Arc::from(value))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A topic: a named, partitioned log. Each aggregate kind writes to the topic named after it.
    ///
    /// At most [`limits::MAX_NAME_BYTES`] bytes of ASCII letters, digits, `-`, `_` and `.`
    /// (a subset of what Kafka accepts, so every topic name is valid on every backend).
    Topic,
    "topic",
    limits::MAX_NAME_BYTES,
    is_name_char,
    NAME_ALLOWED
);

string_id!(
    /// The id of a command, the key of idempotent appends together with the stream.
    ///
    /// At most [`limits::MAX_ID_BYTES`] bytes of ASCII letters, digits and `- _ . : @ + ~ =`,
    /// so a UUID, a request id or an id derived from an event (`evt:<uuid>`) all fit.
    ///
    /// ```
    /// use keel::CommandId;
    /// let id: CommandId = "open-alice".parse()?;
    /// assert_eq!(id.as_str(), "open-alice");
    /// assert!(CommandId::new("drop table; --").is_err());
    /// # Ok::<_, keel::IdError>(())
    /// ```
    CommandId,
    "command id",
    limits::MAX_ID_BYTES,
    is_id_char,
    ID_ALLOWED
);

impl CommandId {
    /// A fresh random command id (a UUID v7), for commands that have no natural id.
    pub fn random() -> Self {
        Self(Arc::from(uuid::Uuid::now_v7().to_string()))
    }
}

/// One aggregate instance's stream: its kind (which names its topic) and its id.
///
/// The kind follows the topic rules, the id the command-id rules (see [`crate::limits`]).
///
/// ```
/// use keel::StreamId;
/// let stream = StreamId::new("account", "alice")?;
/// assert_eq!(stream.to_string(), "account/alice");
/// assert!(StreamId::new("account", "").is_err());
/// assert!(StreamId::new("account", "x' OR 1=1").is_err());
/// # Ok::<_, keel::IdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawStreamId")]
pub struct StreamId {
    kind: Topic,
    id: Arc<str>,
}

impl StreamId {
    /// Validates and builds a stream id.
    ///
    /// # Errors
    ///
    /// [`IdError`] when the kind or the id is empty, too long or holds a refused character.
    pub fn new(kind: impl AsRef<str>, id: impl AsRef<str>) -> Result<Self, IdError> {
        let kind = kind.as_ref();
        check(
            "aggregate kind",
            kind,
            limits::MAX_NAME_BYTES,
            is_name_char,
            NAME_ALLOWED,
        )?;
        let id = id.as_ref();
        check(
            "stream id",
            id,
            limits::MAX_ID_BYTES,
            is_id_char,
            ID_ALLOWED,
        )?;
        Ok(Self {
            kind: Topic(Arc::from(kind)),
            id: Arc::from(id),
        })
    }

    /// A stream of `topic`'s kind, validating only the id.
    ///
    /// # Errors
    ///
    /// [`IdError`] when the id is empty, too long or holds a refused character.
    pub fn in_topic(topic: &Topic, id: &str) -> Result<Self, IdError> {
        check(
            "stream id",
            id,
            limits::MAX_ID_BYTES,
            is_id_char,
            ID_ALLOWED,
        )?;
        Ok(Self {
            kind: topic.clone(),
            id: Arc::from(id),
        })
    }

    /// Validates raw bytes for the id part.
    ///
    /// # Errors
    ///
    /// [`IdError::InvalidUtf8`] and the errors of [`Self::new`].
    pub fn from_bytes(kind: &str, id: &[u8]) -> Result<Self, IdError> {
        Self::new(kind, from_utf8("stream id", id)?)
    }

    /// The aggregate kind.
    pub fn kind(&self) -> &str {
        self.kind.as_str()
    }

    /// The topic the stream's events go to: the one named after its kind.
    pub fn topic(&self) -> &Topic {
        &self.kind
    }

    /// The instance id, whose bytes choose the partition.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance id, shared rather than copied.
    pub(crate) fn id_arc(&self) -> Arc<str> {
        Arc::clone(&self.id)
    }
}

#[derive(Deserialize)]
struct RawStreamId {
    kind: String,
    id: String,
}

impl TryFrom<RawStreamId> for StreamId {
    type Error = IdError;
    fn try_from(raw: RawStreamId) -> Result<Self, IdError> {
        Self::new(raw.kind, raw.id)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({self})")
    }
}

macro_rules! number {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw number.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                Self(v)
            }
        }
    };
}

number!(
    /// A partition number inside a topic, `0..partitions`.
    Partition(u32)
);

number!(
    /// A record's offset inside its partition.
    ///
    /// Offsets grow strictly in commit order. They are dense on SQL backends but may skip
    /// values on Kafka, so treat them as opaque: resume from [`Offset::next`] of the last
    /// record seen, never compute an "expected next".
    Offset(u64)
);

impl Offset {
    /// The offset right after this one: where a reader resumes.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

number!(
    /// A stream's version: 1 for its first event, then 2, 3… without gaps. 0 means "no events".
    StreamVersion(u64)
);

impl StreamVersion {
    /// The version before the first event: the stream does not exist yet.
    pub const INITIAL: Self = Self(0);

    /// The version after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// Where a record sits in the log.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The topic.
    pub topic: Topic,
    /// The partition inside the topic.
    pub partition: Partition,
    /// The offset inside the partition.
    pub offset: Offset,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({self})")
    }
}

/// A reader's progress through one partition: the next offset to read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
    /// The next offset to read (the last one processed, plus one).
    pub next: Offset,
}

impl Checkpoint {
    /// A checkpoint at the start of a partition.
    pub fn start(topic: Topic, partition: Partition) -> Self {
        Self {
            topic,
            partition,
            next: Offset(0),
        }
    }

    /// Moves past `offset`, the last record processed.
    pub fn advance_past(&mut self, offset: Offset) {
        if offset >= self.next {
            self.next = offset.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_reject_what_they_promise_to_reject() {
        assert!(matches!(
            StreamId::new("account", ""),
            Err(IdError::Empty { .. })
        ));
        assert!(matches!(
            StreamId::new("account", "a'b"),
            Err(IdError::BadCharacter {
                found: '\'',
                at: 1,
                ..
            })
        ));
        assert!(matches!(
            StreamId::new("account", "x".repeat(limits::MAX_ID_BYTES + 1)),
            Err(IdError::TooLong { .. })
        ));
        assert!(matches!(
            StreamId::from_bytes("account", &[0x61, 0xff]),
            Err(IdError::InvalidUtf8 { valid_up_to: 1, .. })
        ));
        assert!(StreamId::new("acc ount", "a").is_err());
        let ok = StreamId::new("account", "0192f0c4-7a1e-7c3b-9d2e-5f6a7b8c9d0e");
        assert!(ok.is_ok());
    }

    #[test]
    fn deserialising_validates() {
        let bad: Result<CommandId, _> = serde_json::from_str("\"a;b\"");
        assert!(bad.is_err());
        let good: CommandId = serde_json::from_str("\"a-b\"").expect("valid id");
        assert_eq!(good.as_str(), "a-b");
    }

    #[test]
    fn checkpoint_never_moves_back() {
        let mut cp = Checkpoint::start(Topic::new("t").expect("topic"), Partition(0));
        cp.advance_past(Offset(5));
        cp.advance_past(Offset(2));
        assert_eq!(cp.next, Offset(6));
    }
}
