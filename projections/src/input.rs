//! What a table, a join, a window or a process manager reads: topics, each with the event type
//! its records decode to, gathered into one input type of the reader's choosing.

use std::sync::Arc;

use keel::{Aggregate, DecodeError, Event, RecordedEvent, Topic};

type Decoder<I> = Arc<dyn Fn(&RecordedEvent) -> Result<I, DecodeError> + Send + Sync>;

struct Source<I> {
    topic: Topic,
    reads: fn(&str) -> bool,
    decode: Decoder<I>,
}

impl<I> Clone for Source<I> {
    fn clone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            reads: self.reads,
            decode: Arc::clone(&self.decode),
        }
    }
}

/// The topics a reader reads and how their records become its input type `I`: each topic
/// decodes to an event type, wrapped into `I` (usually an enum with one variant per source).
/// Records of a topic whose type is not one of its event type's are passed over.
///
/// ```
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum OrderEvent { Placed { total: u64 } }
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum PaymentEvent { Captured { amount: u64 } }
/// use keel::Topic;
/// use keel_projections::Inputs;
///
/// enum Input {
///     Order(OrderEvent),
///     Payment(PaymentEvent),
/// }
///
/// let inputs = Inputs::new()
///     .topic(Topic::new("order")?, Input::Order)
///     .topic(Topic::new("payment")?, Input::Payment);
/// assert_eq!(inputs.topics().len(), 2);
/// # Ok::<_, keel::IdError>(())
/// ```
pub struct Inputs<I> {
    sources: Vec<Source<I>>,
}

impl<I> Clone for Inputs<I> {
    fn clone(&self) -> Self {
        Self {
            sources: self.sources.clone(),
        }
    }
}

impl<I> std::fmt::Debug for Inputs<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sources.iter().map(|s| s.topic.as_str()))
            .finish()
    }
}

impl<I> Default for Inputs<I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I> Inputs<I> {
    /// No topics yet.
    pub fn new() -> Self {
        Self {
            sources: Vec::new(),
        }
    }

    /// Reads `topic`, decoding its records as `E` and wrapping them with `wrap`.
    #[must_use]
    pub fn topic<E: Event>(
        mut self,
        topic: Topic,
        wrap: impl Fn(E) -> I + Send + Sync + 'static,
    ) -> Self {
        self.sources.push(Source {
            topic,
            reads: E::reads,
            decode: Arc::new(move |record| record.decode::<E>().map(&wrap)),
        });
        self
    }

    /// Reads the topic of aggregate `A` (named after its kind), decoding its events.
    #[must_use]
    pub fn aggregate<A: Aggregate>(
        self,
        wrap: impl Fn(A::Event) -> I + Send + Sync + 'static,
    ) -> Self {
        match Topic::new(A::KIND) {
            Ok(topic) => self.topic(topic, wrap),
            // An aggregate kind that is not a topic name cannot be appended to either: it
            // has no events to read.
            Err(_) => self,
        }
    }

    /// The topics read, without duplicates, in the order added.
    pub fn topics(&self) -> Vec<Topic> {
        let mut topics: Vec<Topic> = Vec::new();
        for s in &self.sources {
            if !topics.contains(&s.topic) {
                topics.push(s.topic.clone());
            }
        }
        topics
    }

    /// Whether `topic` is one of the topics read.
    pub fn reads_topic(&self, topic: &Topic) -> bool {
        self.sources.iter().any(|s| &s.topic == topic)
    }

    /// Whether a source reads `record`'s topic and type.
    pub fn decode_types(&self, record: &RecordedEvent) -> bool {
        self.sources
            .iter()
            .any(|s| s.topic == record.position.topic && (s.reads)(&record.event_type))
    }

    /// Decodes `record` into the input type: `None` when no source reads its topic and type,
    /// an error when one does and the payload does not decode.
    ///
    /// # Errors
    ///
    /// The [`DecodeError`] naming the record.
    pub fn decode(&self, record: &RecordedEvent) -> Option<Result<I, DecodeError>> {
        self.sources
            .iter()
            .find(|s| s.topic == record.position.topic && (s.reads)(&record.event_type))
            .map(|s| (s.decode)(record))
    }
}

/// The event type of readers that decode their records themselves (through [`Inputs`]):
/// every record decodes to it, and the reader reads the record it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnyRecord;

impl Event for AnyRecord {
    const EVENT_TYPES: &'static [&'static str] = &[];

    fn event_type(&self) -> &'static str {
        "AnyRecord"
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> Result<Vec<u8>, keel::EncodeError> {
        Ok(Vec::new())
    }

    fn decode(_: &str, _: u32, _: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}
