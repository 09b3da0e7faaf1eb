//! Windowed aggregation over event time: tumbling, hopping and sliding windows with an allowed
//! lateness, results emitted as windows close, late events counted and reported.
//!
//! A [`Windowed`] reader picks a key and a value from each input
//! ([`select`](Windowed::select)), puts the value into the windows its event time falls in
//! ([`time`](Windowed::time): the record's timestamp by default), folds it into each window's
//! aggregate ([`add`](Windowed::add)), and turns each window into an output when it closes
//! ([`close`](Windowed::close)), sent on by [`emit`](Windowed::emit) under a command id
//! derived from the window (or, for a sliding window, from its event): once per window.
//!
//! A window ending at `end` closes when the reader's recorded time (the ticks of a
//! [`Ticker`](crate::Ticker), applied once the reader has read up to their heads: see
//! [`clock`](mod@crate::clock)) reaches `end + grace`. The ticks guarantee that by then every
//! event stamped before `end` has been read, wherever it sits in the log.
//!
//! Events are placed into their windows tick by tick: when a tick is applied, the events
//! committed before it (below its heads) and not placed yet go into their windows, then the
//! windows due close. An event whose window had closed at the tick before — recorded time had
//! passed its end plus grace before the event was even committed — is **late**: it is left
//! out, counted in [`WindowStats`] and logged with where it is. Which events are late, and
//! what each window holds, depends only on the log, never on the order the runner reads the
//! partitions in: a replay emits the same results. The grace period is for event times that
//! come from elsewhere than the record's stamp (a time in the payload), which may be older
//! than the ticks around the event's commit.
//!
//! Windows are aligned on the Unix epoch:
//! - [`Windows::tumbling`]: `[k·size, (k+1)·size)`, each event in one window;
//! - [`Windows::hopping`]: windows of `size` starting every `advance`, each event in
//!   `size / advance` of them;
//! - [`Windows::sliding`]: one window per event, the `size` before it up to and including it,
//!   `(t - size, t]`: "the last hour as of this order". It closes at `t + grace` and its
//!   output names the event ([`Window::event`]).

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use keel::{CommandOptions, Position, RecordedEvent, Timestamp, Topic};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{self, Applied, Time, time_key};
use crate::effects::{self, Effect, derive_id};
use crate::error::BoxError;
use crate::input::{AnyRecord, Inputs};
use crate::keyed::{self, KeyedStore, State};
use crate::projection::{Envelope, Projection};

/// How events are grouped in time: see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    kind: Kind,
    size: i64,
    advance: i64,
    grace: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fixed,
    Sliding,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

impl Windows {
    /// Back-to-back windows of `size`.
    pub fn tumbling(size: Duration) -> Self {
        Self::hopping(size, size)
    }

    /// Windows of `size` starting every `advance` (at most `size`).
    pub fn hopping(size: Duration, advance: Duration) -> Self {
        let size = micros(size);
        Self {
            kind: Kind::Fixed,
            size,
            advance: micros(advance).min(size),
            grace: 0,
        }
    }

    /// One window per event: the `size` before it, up to and including it.
    pub fn sliding(size: Duration) -> Self {
        Self {
            kind: Kind::Sliding,
            size: micros(size),
            advance: 0,
            grace: 0,
        }
    }

    /// How long after its end, in recorded time, a window still takes events (default 0).
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        self
    }

    /// The starts of the fixed windows holding time `t`, earliest first.
    fn starts(&self, t: i64) -> Vec<i64> {
        let last = t.div_euclid(self.advance) * self.advance;
        let mut starts = Vec::new();
        let mut s = last;
        while s > t - self.size {
            starts.push(s);
            s -= self.advance;
        }
        starts.reverse();
        starts
    }
}

/// A window as it closes.
#[derive(Debug, Clone, PartialEq)]
pub struct Window<V, A> {
    /// The key.
    pub key: String,
    /// Its start: included for tumbling and hopping windows, excluded for sliding ones.
    pub start: Timestamp,
    /// Its end: excluded for tumbling and hopping windows, included for sliding ones.
    pub end: Timestamp,
    /// The aggregate of the values in it.
    pub aggregate: A,
    /// For a sliding window, the value of the event it is the window of.
    pub event: Option<V>,
}

/// A windowed aggregation: see the [module docs](self).
///
/// ```
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum SaleEvent { Sold { cents: u64 } }
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use keel::{AppendRequest, CommandOptions, EventStore, ExpectedVersion, NewEvent, StreamId, Timestamp, Topic};
/// use keel::store::memory::MemoryStore;
/// use keel_projections::keyed::Keyed;
/// use keel_projections::store::memory::MemoryViews;
/// use keel_projections::{BoxError, Envelope, Inputs, Runner, Ticker, Window, WindowView, Windowed, Windows};
///
/// /// Sales per till per hour, reported as each hour closes.
/// struct Hourly { reports: Arc<Mutex<Vec<(String, u64)>>> }
/// impl Windowed for Hourly {
///     type Input = SaleEvent;
///     type Value = u64;
///     type Aggregate = u64;
///     type Output = (String, u64);
///     const NAME: &'static str = "hourly";
///     fn inputs(&self) -> Inputs<SaleEvent> { Inputs::new().topic(Topic::new("till").expect("topic"), |e| e) }
///     fn windows(&self) -> Windows { Windows::tumbling(Duration::from_secs(3600)) }
///     fn select(&self, e: &Envelope<SaleEvent>) -> Option<(String, u64)> {
///         let SaleEvent::Sold { cents } = e.event;
///         Some((e.id().to_owned(), cents))
///     }
///     fn add(&self, total: &mut u64, cents: &u64) { *total += cents; }
///     fn close(&self, w: &Window<u64, u64>) -> Option<(String, u64)> { Some((w.key.clone(), w.aggregate)) }
///     async fn emit(&self, report: (String, u64), _: CommandOptions) -> Result<(), BoxError> {
///         self.reports.lock().expect("not poisoned").push(report);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let mut stamp = Timestamp(0);
/// for cents in [120, 80] {
///     let event = NewEvent::from_event(&SaleEvent::Sold { cents })?;
///     stamp = event.timestamp;
///     log.append(AppendRequest::new(StreamId::new("till", "t1")?, ExpectedVersion::Any, vec![event])).await?;
/// }
/// let reports = Arc::new(Mutex::new(Vec::new()));
/// let view = WindowView::new(Hourly { reports: Arc::clone(&reports) });
/// let runner = Runner::new(view, Arc::clone(&log), Arc::new(MemoryViews::<Keyed>::new()));
/// // Recorded time passes the end of the sales' hour: it closes.
/// let hour = 3_600_000_000;
/// Ticker::new(Arc::clone(&log)).tick_at(Timestamp((stamp.0 / hour + 1) * hour)).await?;
/// runner.catch_up().await?;
/// assert_eq!(*reports.lock().expect("not poisoned"), vec![("t1".to_owned(), 200)]);
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel windowed aggregation",
    note = "implement `keel_projections::Windowed` for `{Self}`: its inputs, windows, `select`, `add`, `close` and `emit`"
)]
pub trait Windowed: Send + Sync + 'static {
    /// What it reads, decoded by [`inputs`](Self::inputs).
    type Input: Send + Sync + 'static;
    /// What an input adds to its windows.
    type Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// A window's aggregate.
    type Aggregate: Default + Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// What a closed window becomes.
    type Output: Send + Sync + 'static;
    /// The stable name (`[a-z0-9_]`): it keys the state, the checkpoints and the derived
    /// command ids.
    const NAME: &'static str;
    /// The version of its state and logic: bump it to rebuild.
    const VERSION: u32 = 1;

    /// The topics it reads and how their records decode.
    fn inputs(&self) -> Inputs<Self::Input>;

    /// How it groups events in time.
    fn windows(&self) -> Windows;

    /// The key and value an input adds to its windows; `None` passes it over.
    fn select(&self, input: &Envelope<Self::Input>) -> Option<(String, Self::Value)>;

    /// An input's event time: its record's timestamp unless overridden.
    fn time(&self, input: &Envelope<Self::Input>) -> Timestamp {
        input.record.timestamp
    }

    /// Folds a value into a window's aggregate.
    fn add(&self, aggregate: &mut Self::Aggregate, value: &Self::Value);

    /// What a closed window becomes; `None` emits nothing.
    fn close(&self, window: &Window<Self::Value, Self::Aggregate>) -> Option<Self::Output>;

    /// Sends an output on, under `options` (its derived command id first).
    fn emit(
        &self,
        output: Self::Output,
        options: CommandOptions,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Counters of a windowed aggregation, kept with its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Windows closed (and handed to [`Windowed::close`]).
    pub closed: u64,
    /// Events left out of a window they belong to because it had closed.
    pub late: u64,
    /// The last late event: where it is, its event time, and the recorded time it met.
    pub last_late: Option<LateEvent>,
}

/// A late event, as [`WindowStats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateEvent {
    /// Where it is in the log.
    pub position: Position,
    /// Its event time.
    pub time: Timestamp,
    /// The reader's recorded time when it came.
    pub watermark: Timestamp,
}

/// A fixed window's state.
#[derive(Debug, Serialize, Deserialize)]
struct Open<A> {
    key: String,
    start: Timestamp,
    end: Timestamp,
    aggregate: A,
}

/// A sliding window waiting to close: the window of one event.
#[derive(Debug, Serialize, Deserialize)]
struct Due<V> {
    key: String,
    time: Timestamp,
    value: V,
    position: Position,
}

/// An event read, waiting for the tick that covers it to be placed into its windows.
#[derive(Debug, Serialize, Deserialize)]
struct Unplaced<V> {
    key: String,
    time: Timestamp,
    value: V,
    position: Position,
}

const UNPLACED: &str = "unplaced";
const OPEN: &str = "open";
const DUE: &str = "due";
const VALUES: &str = "values";
const META: &str = "meta";

/// Runs a [`Windowed`] aggregation as a projection in keyed store `S`: give it to a
/// [`Runner`](crate::Runner), with a [`Ticker`](crate::Ticker) recording time in the log.
pub struct WindowView<W: Windowed, S> {
    windowed: W,
    inputs: Inputs<W::Input>,
    windows: Windows,
    store: PhantomData<fn() -> S>,
}

impl<W: Windowed, S> std::fmt::Debug for WindowView<W, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowView")
            .field("name", &W::NAME)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

/// What handling one batch gathers.
struct Pass<'s, 'b, S: KeyedStore, O> {
    state: &'s mut State<'b, S>,
    stats: WindowStats,
    outputs: Vec<Effect<O>>,
}

impl<W: Windowed, S: KeyedStore> WindowView<W, S> {
    /// Runs `windowed`.
    pub fn new(windowed: W) -> Self {
        let inputs = windowed.inputs();
        let windows = windowed.windows();
        Self {
            windowed,
            inputs,
            windows,
            store: PhantomData,
        }
    }

    /// The aggregation's counters, as of its last commit.
    ///
    /// # Errors
    ///
    /// A view-store failure.
    pub async fn stats(views: &S) -> crate::Result<WindowStats> {
        Ok(keyed::read(views, W::NAME, META, "stats")
            .await?
            .unwrap_or_default())
    }

    /// The recorded time the aggregation has reached (`None` before its first tick).
    ///
    /// # Errors
    ///
    /// A view-store failure.
    pub async fn watermark(views: &S) -> crate::Result<Option<Timestamp>> {
        let time: Option<Time> = keyed::read(views, W::NAME, META, "time").await?;
        Ok(time.and_then(|t| t.watermark()))
    }

    fn queue(pass: &mut Pass<'_, '_, S, W::Output>, id: keel::CommandId, output: W::Output) {
        pass.outputs.push(Effect {
            command: output,
            target: id.to_string(),
            options: CommandOptions {
                command_id: Some(id),
                ..CommandOptions::default()
            },
        });
    }

    fn late(
        pass: &mut Pass<'_, '_, S, W::Output>,
        position: &Position,
        time: Timestamp,
        watermark: Timestamp,
    ) {
        pass.stats.late += 1;
        pass.stats.last_late = Some(LateEvent {
            position: position.clone(),
            time,
            watermark,
        });
        tracing::warn!(
            window = W::NAME,
            %position,
            time = time.0,
            watermark = watermark.0,
            "late event: its window has closed; left out"
        );
    }

    /// Keeps an input until the tick that covers it.
    async fn hold(
        &self,
        pass: &mut Pass<'_, '_, S, W::Output>,
        input: &Envelope<W::Input>,
    ) -> Result<(), BoxError> {
        let Some((key, value)) = self.windowed.select(input) else {
            return Ok(());
        };
        let p = &input.record.position;
        let unplaced = Unplaced {
            key,
            time: self.windowed.time(input),
            value,
            position: p.clone(),
        };
        let index = format!("{}/{}/{:020}", p.topic, p.partition.0, p.offset.0);
        pass.state.put(UNPLACED, &index, &unplaced).await?;
        Ok(())
    }

    /// Places the events a tick covers into their windows; those whose windows had closed
    /// before the tick (by the watermark `before` it) are late.
    async fn place_covered(
        &self,
        pass: &mut Pass<'_, '_, S, W::Output>,
        tick: &Applied,
    ) -> Result<(), BoxError> {
        let mut from = String::new();
        loop {
            let page: Vec<(String, Unplaced<W::Value>)> =
                pass.state.scan(UNPLACED, &from, 256).await?;
            let full = page.len() == 256;
            let Some(last) = page.last().map(|(k, _)| k.clone()) else {
                return Ok(());
            };
            for (index, unplaced) in page {
                if tick.covers(&unplaced.position) {
                    pass.state.delete(UNPLACED, &index).await?;
                    self.place(pass, unplaced, tick.previous).await?;
                }
            }
            if !full {
                return Ok(());
            }
            from = format!("{last}\u{0}");
        }
    }

    /// Adds an event to its windows (or counts it late against `watermark`).
    async fn place(
        &self,
        pass: &mut Pass<'_, '_, S, W::Output>,
        event: Unplaced<W::Value>,
        watermark: Option<Timestamp>,
    ) -> Result<(), BoxError> {
        let Unplaced {
            key,
            time: t,
            value,
            position,
        } = event;
        let w = self.windows;
        let closed = |end: i64| watermark.is_some_and(|wm| end.saturating_add(w.grace) <= wm.0);
        match w.kind {
            Kind::Fixed => {
                let mut late = false;
                for start in w.starts(t.0) {
                    let end = start.saturating_add(w.size);
                    if closed(end) {
                        late = true;
                        continue;
                    }
                    let index = format!(
                        "{}|{key}|{}",
                        time_key(Timestamp(end)),
                        time_key(Timestamp(start))
                    );
                    let mut open = pass
                        .state
                        .get::<Open<W::Aggregate>>(OPEN, &index)
                        .await?
                        .unwrap_or_else(|| Open {
                            key: key.clone(),
                            start: Timestamp(start),
                            end: Timestamp(end),
                            aggregate: W::Aggregate::default(),
                        });
                    self.windowed.add(&mut open.aggregate, &value);
                    pass.state.put(OPEN, &index, &open).await?;
                }
                if late && let Some(wm) = watermark {
                    Self::late(pass, &position, t, wm);
                }
            }
            Kind::Sliding => {
                if closed(t.0) {
                    if let Some(wm) = watermark {
                        Self::late(pass, &position, t, wm);
                    }
                    return Ok(());
                }
                let mut values: Vec<(Timestamp, W::Value)> =
                    pass.state.get(VALUES, &key).await?.unwrap_or_default();
                let at = values.partition_point(|(vt, _)| *vt <= t);
                values.insert(at, (t, value.clone()));
                pass.state.put(VALUES, &key, &values).await?;
                let index = format!(
                    "{}|{}/{}/{:020}",
                    time_key(t),
                    position.topic,
                    position.partition.0,
                    position.offset.0
                );
                let due = Due {
                    key,
                    time: t,
                    value,
                    position,
                };
                pass.state.put(DUE, &index, &due).await?;
            }
        }
        Ok(())
    }

    /// Closes the windows whose end plus grace recorded time reached.
    async fn close(
        &self,
        pass: &mut Pass<'_, '_, S, W::Output>,
        watermark: Timestamp,
    ) -> Result<(), BoxError> {
        let w = self.windows;
        let due_at = |end: Timestamp| end.0.saturating_add(w.grace) <= watermark.0;
        match w.kind {
            Kind::Fixed => loop {
                let page: Vec<(String, Open<W::Aggregate>)> = pass.state.scan(OPEN, "", 64).await?;
                let due: Vec<(String, Open<W::Aggregate>)> = page
                    .into_iter()
                    .take_while(|(_, o)| due_at(o.end))
                    .collect();
                if due.is_empty() {
                    return Ok(());
                }
                for (index, open) in due {
                    pass.state.delete(OPEN, &index).await?;
                    pass.stats.closed += 1;
                    let window = Window {
                        key: open.key,
                        start: open.start,
                        end: open.end,
                        aggregate: open.aggregate,
                        event: None,
                    };
                    if let Some(output) = self.windowed.close(&window) {
                        let id = derive_id(
                            W::NAME,
                            &[
                                &window.key,
                                &window.start.0.to_string(),
                                &window.end.0.to_string(),
                            ],
                        );
                        Self::queue(pass, id, output);
                    }
                }
            },
            Kind::Sliding => loop {
                let page: Vec<(String, Due<W::Value>)> = pass.state.scan(DUE, "", 64).await?;
                let due: Vec<(String, Due<W::Value>)> = page
                    .into_iter()
                    .take_while(|(_, d)| due_at(d.time))
                    .collect();
                if due.is_empty() {
                    return Ok(());
                }
                for (index, d) in due {
                    pass.state.delete(DUE, &index).await?;
                    pass.stats.closed += 1;
                    let start = d.time.0.saturating_sub(w.size);
                    let mut values: Vec<(Timestamp, W::Value)> =
                        pass.state.get(VALUES, &d.key).await?.unwrap_or_default();
                    let mut aggregate = W::Aggregate::default();
                    for (_, v) in values.iter().filter(|(t, _)| t.0 > start && *t <= d.time) {
                        self.windowed.add(&mut aggregate, v);
                    }
                    // Values no window still open can hold.
                    let keep_after = watermark.0.saturating_sub(w.grace).saturating_sub(w.size);
                    values.retain(|(t, _)| t.0 > keep_after);
                    if values.is_empty() {
                        pass.state.delete(VALUES, &d.key).await?;
                    } else {
                        pass.state.put(VALUES, &d.key, &values).await?;
                    }
                    let window = Window {
                        key: d.key,
                        start: Timestamp(start),
                        end: d.time,
                        aggregate,
                        event: Some(d.value),
                    };
                    if let Some(output) = self.windowed.close(&window) {
                        let id = derive_id(
                            W::NAME,
                            &[
                                d.position.topic.as_str(),
                                &d.position.partition.0.to_string(),
                                &d.position.offset.0.to_string(),
                            ],
                        );
                        Self::queue(pass, id, output);
                    }
                }
            },
        }
    }
}

impl<W: Windowed, S: KeyedStore> Projection for WindowView<W, S> {
    type Event = AnyRecord;
    type Store = S;
    const NAME: &'static str = W::NAME;
    const VERSION: u32 = W::VERSION;

    fn topics(&self) -> Vec<Topic> {
        let mut topics = self.inputs.topics();
        topics.push(clock::clock_topic());
        topics
    }

    fn reads(&self, _: &RecordedEvent) -> bool {
        true
    }

    async fn setup(&self, view: &mut S::Batch) -> Result<(), BoxError> {
        S::setup_keyed(view).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut S::Batch,
        events: &[Envelope<AnyRecord>],
    ) -> Result<(), BoxError> {
        let mut state = State::<S> { batch: view };
        let mut time: Time = state.get(META, "time").await?.unwrap_or_default();
        let stats: WindowStats = state.get(META, "stats").await?.unwrap_or_default();
        let mut pass = Pass {
            state: &mut state,
            stats,
            outputs: Vec::new(),
        };
        let clock = clock::clock_topic();
        for env in events {
            while let Some(tick) = time.ready_tick() {
                self.place_covered(&mut pass, &tick).await?;
                self.close(&mut pass, tick.watermark).await?;
            }
            let record = &env.record;
            if record.position.topic == clock {
                if let Some(tick) = clock::tick_of(record) {
                    time.push(tick?, |t| self.inputs.reads_topic(t));
                }
            } else if let Some(input) = self.inputs.decode(record) {
                let input = Envelope {
                    event: input?,
                    record: record.clone(),
                };
                self.hold(&mut pass, &input).await?;
            }
            time.advance(record);
        }
        while let Some(tick) = time.ready_tick() {
            self.place_covered(&mut pass, &tick).await?;
            self.close(&mut pass, tick.watermark).await?;
        }
        let Pass { stats, outputs, .. } = pass;
        state.put(META, "time", &time).await?;
        state.put(META, "stats", &stats).await?;
        effects::dispatch(outputs, 32, |output, options| {
            self.windowed.emit(output, options)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_falls_in_every_hopping_window_holding_it() {
        let w = Windows::hopping(Duration::from_micros(10), Duration::from_micros(5));
        assert_eq!(w.starts(12), vec![5, 10]);
        assert_eq!(w.starts(10), vec![5, 10]);
        assert_eq!(w.starts(9), vec![0, 5]);
        assert_eq!(w.starts(-1), vec![-10, -5]);
        let t = Windows::tumbling(Duration::from_micros(10));
        assert_eq!(t.starts(19), vec![10]);
        assert_eq!(t.starts(20), vec![20]);
    }
}
