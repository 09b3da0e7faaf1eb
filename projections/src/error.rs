//! The projection layer's error type.

use keel::{Offset, Partition, StreamId, StreamVersion, Topic};

/// `Result` with the projection layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a projection's own code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a record sits and what it is: the context of every error about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
    /// The offset.
    pub offset: Offset,
    /// The stream.
    pub stream: StreamId,
    /// The stream version.
    pub version: StreamVersion,
    /// The event type name.
    pub event_type: String,
}

impl std::fmt::Display for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event {:?} of stream {} version {} at topic {} partition {} offset {}",
            self.event_type, self.stream, self.version, self.topic, self.partition, self.offset
        )
    }
}

impl From<&keel::RecordedEvent> for EventRef {
    fn from(r: &keel::RecordedEvent) -> Self {
        Self {
            topic: r.position.topic.clone(),
            partition: r.position.partition,
            offset: r.position.offset,
            stream: r.stream.clone(),
            version: r.version,
            event_type: r.event_type.clone(),
        }
    }
}

/// Why a projection stopped or a view operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event did not decode. The projection stopped before it (or parked it, if so
    /// configured). Fix the data or the code, or configure parking, then start again.
    #[error("projection {projection} stopped at {event}")]
    Decode {
        /// The projection.
        projection: String,
        /// The event.
        event: EventRef,
        /// What the decoder said (its position and stream are in `event`).
        #[source]
        source: keel::DecodeError,
    },
    /// The projection's handler failed on an event. Nothing of its batch was committed.
    #[error("projection {projection} failed on {event}")]
    Handler {
        /// The projection.
        projection: String,
        /// The event.
        event: EventRef,
        /// What the handler said.
        #[source]
        source: BoxError,
    },
    /// The projection's setup (creating its tables) failed.
    #[error("projection {projection} could not set up generation {generation}")]
    Setup {
        /// The projection.
        projection: String,
        /// The generation.
        generation: u64,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// Another runner holds the projection. Wait for its lease to run out, or stop that
    /// runner; a holder whose process is gone (on this host) does not hold anyone up.
    #[error("projection {projection} is held by {owner} for {remaining_ms} ms more")]
    Held {
        /// The projection.
        projection: String,
        /// The runner holding it.
        owner: String,
        /// How long its lease still runs.
        remaining_ms: u64,
    },
    /// This runner's lease was taken over, or the checkpoint moved under it: another runner
    /// owns the projection now. The batch was rolled back; this runner stops.
    #[error("projection {projection} was taken over by another runner; batch rolled back")]
    LeaseLost {
        /// The projection.
        projection: String,
    },
    /// No projection of that name is registered.
    #[error("no projection named {name} (known: {known})")]
    UnknownProjection {
        /// The name asked for, quoted, and cut to 64 bytes when longer (an argument of any
        /// length may come from a command line).
        name: String,
        /// The names registered, comma separated.
        known: String,
    },
    /// The store holds a newer version of the projection than this code.
    #[error(
        "projection {projection} is at version {stored} in the store, the code is at {code}: refusing to go back"
    )]
    VersionBehind {
        /// The projection.
        projection: String,
        /// The version the store's active generation was built by.
        stored: u32,
        /// The version of this code.
        code: u32,
    },
    /// A read-your-writes wait ran out: the view has not applied `position` yet. Its runner
    /// may be behind, stopped, or not running; ask again, or read without waiting.
    #[error("projection {projection} has not applied {position} after {waited_ms} ms")]
    NotYet {
        /// The projection.
        projection: String,
        /// The first position it has not applied.
        position: keel::Position,
        /// How long the wait lasted.
        waited_ms: u64,
    },
    /// The event store failed.
    #[error(transparent)]
    Log(#[from] keel::store::Error),
    /// The command line could not write its output (other than to a closed pipe, which
    /// the command line treats as the reader having seen enough).
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// The view store failed.
    #[error("view store: {operation} failed")]
    Store {
        /// What it was doing.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: BoxError,
    },
}

/// `text` quoted, cut to 64 bytes with its length said when longer: `"xxxx…" (131072 bytes)`.
pub(crate) fn quoted_cut(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return format!("{text:?}");
    }
    let end = (0..=SHOWN)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let prefix = text.get(..end).unwrap_or_default();
    format!("{:?} ({} bytes)", format!("{prefix}…"), text.len())
}

impl Error {
    /// A view store failure during `operation`. The store's error is kept as a
    /// [`keel::BackendError`], so its causes print once.
    pub fn store(operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Store {
            operation,
            source: Box::new(keel::BackendError::new(source)),
        }
    }
}
