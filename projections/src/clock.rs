//! Recorded time: ticks in the log that say up to when every event is in, so that timeouts,
//! window closes and join waits are decided the same way live and in a replay.
//!
//! A reader cannot tell from the wall clock whether an event stamped before some moment is
//! still to come: it may sit in a partition the reader has not caught up with (a replay, a
//! restart with a backlog). So keel records time in the log. A [`Ticker`] appends a
//! [`Tick`] to the `clock` topic (one partition) every interval: a time `t` and the head of
//! every partition of every topic, read *after* `t`. Every event stamped before `t` was
//! committed before those heads were read (the ticker's `skew`, subtracted from the wall
//! clock, covers the time between an event's stamp and its commit), so a reader that has read
//! each of its partitions up to the tick's heads has seen every event stamped before `t`.
//!
//! Readers that keep time ([`Process`](crate::Process), [`JoinView`](crate::JoinView),
//! [`WindowView`](crate::WindowView)) read the clock topic beside their inputs and apply a
//! tick only once they have read every input partition up to its heads — wherever the
//! runner is in each partition, a tick takes effect at the same point of the reader's input.
//! Their recorded time (their *watermark*) is the time of the last tick applied: a timer at
//! `t` fires, a window ending at `t` closes, a join wait expiring at `t` gives up, when the
//! watermark reaches `t`. Decide by event timestamps (an answer counts when it was stamped
//! before the deadline, an event belongs to the window its stamp falls in), never by the
//! order of arrival across partitions, and a replay decides exactly as the live run did.
//!
//! Without a ticker running, recorded time stands still: timers never fire and windows
//! never close. Several tickers (one per process) are fine: each tick is true on its own, and
//! a reader's watermark only moves forward.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keel::store::EventStore;
use keel::{
    AppendRequest, DecodeError, EncodeError, Event, ExpectedVersion, NewEvent, Offset, Partition,
    RecordedEvent, StreamId, Timestamp, Topic,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// The topic ticks are recorded in: one partition, so every reader sees them in one order.
pub const CLOCK_TOPIC: &str = "clock";

/// The head of one partition when a tick was recorded: the offset its next record gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
    /// Its head: every record below it was committed when the tick was recorded.
    pub next: Offset,
}

/// A recorded moment: every event stamped before [`time`](Self::time) is below
/// [`heads`](Self::heads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// The recorded time.
    pub time: Timestamp,
    /// The head of every partition of every other topic, read after `time`.
    pub heads: Vec<Head>,
}

/// The clock topic's one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockEvent {
    /// A tick was recorded.
    Ticked(Tick),
}

impl Event for ClockEvent {
    const EVENT_TYPES: &'static [&'static str] = &["Ticked"];

    fn event_type(&self) -> &'static str {
        "Ticked"
    }

    fn schema_version(&self) -> u32 {
        1
    }

    fn encode(&self) -> std::result::Result<Vec<u8>, EncodeError> {
        let Self::Ticked(tick) = self;
        // Every field of a tick is a string or a number: serialising it cannot fail.
        Ok(serde_json::to_vec(tick).unwrap_or_default())
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &[u8],
    ) -> std::result::Result<Self, DecodeError> {
        if event_type != "Ticked" {
            return Err(DecodeError::unknown_type(
                event_type,
                schema_version,
                Self::EVENT_TYPES,
            ));
        }
        serde_json::from_slice(payload)
            .map(Self::Ticked)
            .map_err(|e| DecodeError::payload(event_type, schema_version, e))
    }
}

/// The clock topic.
pub(crate) fn clock_topic() -> Topic {
    Topic::new(CLOCK_TOPIC).unwrap_or_else(|_| unreachable!("`clock` is a valid topic name"))
}

/// Records ticks in the log. See the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use keel::store::{EventStore, memory::MemoryStore};
/// use keel_projections::Ticker;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let ticker = Ticker::new(Arc::clone(&log));
/// let tick = ticker.tick().await?; // `run(cancel)` ticks every interval
/// assert!(tick.heads.is_empty()); // nothing else in the log yet
/// # Ok(()) }
/// ```
pub struct Ticker {
    log: Arc<dyn EventStore>,
    interval: Duration,
    skew: Duration,
    stream: StreamId,
    topic_ready: AtomicBool,
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("interval", &self.interval)
            .field("skew", &self.skew)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Ticker {
    /// The default time between ticks.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// The default bound on the time between an event's stamp and its commit.
    pub const DEFAULT_SKEW: Duration = Duration::from_secs(1);

    /// A ticker recording into `log`, every second, with a skew of one second.
    pub fn new(log: Arc<dyn EventStore>) -> Self {
        Self {
            log,
            interval: Self::DEFAULT_INTERVAL,
            skew: Self::DEFAULT_SKEW,
            stream: StreamId::in_topic(&clock_topic(), "ticks")
                .unwrap_or_else(|_| unreachable!("`ticks` is a valid stream id")),
            topic_ready: AtomicBool::new(false),
        }
    }

    /// The time between two ticks (the lag of timeouts and window closes, on top of the
    /// skew).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The longest time between an event being stamped and being committed, in the
    /// processes writing to this log: a tick recorded at wall time `w` stands for time
    /// `w - skew`. An event committed later than that after its stamp may arrive after the
    /// tick that should have covered it: it is then late (windows count it as such).
    #[must_use]
    pub fn skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// Records a tick standing for now, minus the skew.
    ///
    /// # Errors
    ///
    /// The event store's error.
    pub async fn tick(&self) -> Result<Tick> {
        let skew = i64::try_from(self.skew.as_micros()).unwrap_or(i64::MAX);
        self.tick_at(Timestamp(Timestamp::now().0.saturating_sub(skew)))
            .await
    }

    /// Records a tick standing for `time`: the heads are read now. A tick later than the
    /// wall clock moves recorded time on ahead of it (tests, tools replaying a day); events
    /// stamped before `time` that commit after it are late.
    ///
    /// # Errors
    ///
    /// The event store's error.
    pub async fn tick_at(&self, time: Timestamp) -> Result<Tick> {
        let clock = clock_topic();
        if !self.topic_ready.load(Ordering::Acquire) {
            self.log.ensure_topic(&clock, 1).await?;
            self.topic_ready.store(true, Ordering::Release);
        }
        let mut heads = Vec::new();
        for info in self.log.topics().await? {
            if info.topic == clock {
                continue;
            }
            for p in 0..info.partitions {
                let partition = Partition(p);
                let next = self.log.head(&info.topic, partition).await?;
                if next > Offset(0) {
                    heads.push(Head {
                        topic: info.topic.clone(),
                        partition,
                        next,
                    });
                }
            }
        }
        let tick = Tick { time, heads };
        let event = NewEvent::from_event(&ClockEvent::Ticked(tick.clone()))
            .map_err(|e| Error::store("record a tick", e))?;
        self.log
            .append(AppendRequest::new(
                self.stream.clone(),
                ExpectedVersion::Any,
                vec![event],
            ))
            .await?;
        Ok(tick)
    }

    /// Whether another ticker recorded a tick within the last half interval: then this one
    /// need not (several processes each running a ticker record about one tick per interval
    /// between them).
    async fn ticked_lately(&self) -> bool {
        let clock = clock_topic();
        let Ok(head) = self.log.head(&clock, Partition(0)).await else {
            return false;
        };
        let Some(last) = head.0.checked_sub(1) else {
            return false;
        };
        let Ok(records) = self
            .log
            .read_partition(&clock, Partition(0), Offset(last), 1)
            .await
        else {
            return false;
        };
        let Some(Ok(tick)) = records.first().and_then(tick_of) else {
            return false;
        };
        let half = i64::try_from((self.interval / 2 + self.skew).as_micros()).unwrap_or(i64::MAX);
        tick.time.0 >= Timestamp::now().0.saturating_sub(half)
    }

    /// Records a tick every interval until `cancel` fires (skipping an interval in which
    /// another ticker of the same log just recorded one). A failed tick is logged and tried
    /// again at the next interval.
    ///
    /// # Errors
    ///
    /// None yet: failures are retried; the result leaves room for stopping on one.
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = every.tick() => {
                    if self.ticked_lately().await {
                        continue;
                    }
                    if let Err(error) = self.tick().await {
                        tracing::warn!(%error, "cannot record a tick; trying again");
                    }
                }
            }
        }
    }
}

/// A tick waiting for the reader to reach its heads: only the heads of the reader's input
/// partitions are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    time: Timestamp,
    needs: Vec<(String, u64)>,
}

/// A reader's recorded time: how far it has read each input partition, the ticks it has
/// read but not reached yet, and its watermark. Kept in the reader's keyed state and
/// committed with its checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Time {
    /// Next offset read, per `topic/partition`.
    progress: BTreeMap<String, u64>,
    /// Ticks read, oldest first, not applied yet.
    pending: VecDeque<Pending>,
    /// The time of the last tick applied.
    watermark: Option<Timestamp>,
    /// Ticks applied so far.
    ticks: u64,
}

fn part_key(topic: &Topic, partition: Partition) -> String {
    format!("{topic}/{}", partition.0)
}

impl Time {
    /// The recorded time: of the last tick applied.
    pub(crate) fn watermark(&self) -> Option<Timestamp> {
        self.watermark
    }

    /// Notes that `record` has been handled.
    pub(crate) fn advance(&mut self, record: &RecordedEvent) {
        let key = part_key(&record.position.topic, record.position.partition);
        let next = record.position.offset.0.saturating_add(1);
        let entry = self.progress.entry(key).or_insert(0);
        *entry = (*entry).max(next);
    }

    /// Queues a tick read from the clock; `reads` says which topics the reader reads.
    pub(crate) fn push(&mut self, tick: Tick, reads: impl Fn(&Topic) -> bool) {
        let needs = tick
            .heads
            .into_iter()
            .filter(|h| reads(&h.topic))
            .map(|h| (part_key(&h.topic, h.partition), h.next.0))
            .collect();
        self.pending.push_back(Pending {
            time: tick.time,
            needs,
        });
    }

    /// Applies the oldest queued tick if the reader has reached its heads; returns the new
    /// watermark then.
    pub(crate) fn ready(&mut self) -> Option<Timestamp> {
        self.ready_tick().map(|tick| tick.watermark)
    }

    /// Applies the oldest queued tick if the reader has reached its heads; returns what it
    /// covers then.
    pub(crate) fn ready_tick(&mut self) -> Option<Applied> {
        let first = self.pending.front()?;
        let reached = first
            .needs
            .iter()
            .all(|(part, next)| self.progress.get(part).copied().unwrap_or(0) >= *next);
        if !reached {
            return None;
        }
        let tick = self.pending.pop_front()?;
        self.ticks += 1;
        let previous = self.watermark;
        let watermark = previous.map_or(tick.time, |w| w.max(tick.time));
        self.watermark = Some(watermark);
        Some(Applied {
            previous,
            watermark,
            heads: tick.needs.into_iter().collect(),
        })
    }
}

/// A tick just applied by a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The watermark before it.
    pub(crate) previous: Option<Timestamp>,
    /// The watermark now.
    pub(crate) watermark: Timestamp,
    /// The heads of the reader's partitions it recorded, by `topic/partition`.
    pub(crate) heads: BTreeMap<String, u64>,
}

impl Applied {
    /// Whether the record at `position` was committed before the tick was recorded.
    pub(crate) fn covers(&self, position: &keel::Position) -> bool {
        self.heads
            .get(&part_key(&position.topic, position.partition))
            .is_some_and(|&next| position.offset.0 < next)
    }
}

/// Decodes a tick from a record of the clock topic; `None` for another type of record.
pub(crate) fn tick_of(record: &RecordedEvent) -> Option<std::result::Result<Tick, DecodeError>> {
    if record.event_type != "Ticked" {
        return None;
    }
    Some(record.decode::<ClockEvent>().map(|ClockEvent::Ticked(t)| t))
}

/// An order-preserving key for a timestamp: keys of later times sort after keys of earlier
/// ones (negative times included).
pub(crate) fn time_key(t: Timestamp) -> String {
    // Shift i64 to u64 so that byte order is numeric order.
    let shifted = (t.0 as u64) ^ (1 << 63);
    format!("{shifted:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_as_times() {
        let times = [i64::MIN, -5, -1, 0, 1, 7, 1_700_000_000_000_000, i64::MAX];
        let keys: Vec<String> = times.iter().map(|&t| time_key(Timestamp(t))).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn a_tick_applies_only_once_every_input_partition_reached_its_head() -> anyhow_free::R {
        let topic = Topic::new("order").map_err(|e| e.to_string())?;
        let other = Topic::new("other").map_err(|e| e.to_string())?;
        let mut time = Time::default();
        time.push(
            Tick {
                time: Timestamp(100),
                heads: vec![
                    Head {
                        topic: topic.clone(),
                        partition: Partition(0),
                        next: Offset(2),
                    },
                    Head {
                        topic: other,
                        partition: Partition(0),
                        next: Offset(9),
                    },
                ],
            },
            |t| t == &topic,
        );
        assert_eq!(time.ready(), None, "partition 0 of order is not read yet");
        let mut record = probe(&topic, 0);
        time.advance(&record);
        assert_eq!(time.ready(), None, "offset 1 is still to read");
        record.position.offset = Offset(1);
        time.advance(&record);
        assert_eq!(
            time.ready(),
            Some(Timestamp(100)),
            "the other topic is not read: ignored"
        );
        assert!(time.pending.is_empty());
        Ok(())
    }

    fn probe(topic: &Topic, offset: u64) -> RecordedEvent {
        RecordedEvent {
            position: keel::Position {
                topic: topic.clone(),
                partition: Partition(0),
                offset: Offset(offset),
            },
            stream: StreamId::in_topic(topic, "x").unwrap_or_else(|_| unreachable!()),
            version: keel::StreamVersion(1),
            event_type: "E".into(),
            schema_version: 1,
            payload: Vec::new(),
            event_id: uuid::Uuid::nil(),
            command_id: None,
            correlation_id: None,
            causation_id: None,
            timestamp: Timestamp(0),
            metadata: keel::Metadata::new(),
        }
    }

    mod anyhow_free {
        pub(super) type R = Result<(), String>;
    }
}
