//! Stream–table joins: each event of a stream, enriched with the current rows of tables, sent
//! on as a command; an event whose row has not arrived yet waits for it, for a bounded time,
//! and is never dropped silently.
//!
//! A [`Join`] reads its stream through [`Inputs`], keeps the [`Table`]s it looks up
//! ([`Tables`]: their rows live in the join's own keyed state, fed from their topics by the
//! same reader), and turns an event and its rows into an output ([`join`](Join::join)), which
//! [`emit`](Join::emit) sends under a command id derived from the event's position — one
//! output per event, exactly once (see [`effects`](mod@crate::effects)).
//!
//! When a row the event needs is absent, the event **waits** (its position is kept, the
//! record itself is read again from the log when it is released). A row that arrives, stamped
//! before the event's deadline (its timestamp plus [`JoinView::max_wait`]), releases the
//! events waiting for it: they are joined then. When recorded time (see
//! [`clock`](mod@crate::clock)) reaches the deadline first, the event is handed to
//! [`missing`](Join::missing), which may still produce an output (a refusal, a default) or
//! fail. More than [`JoinView::max_waiting`] waiting events fail the batch: the runner stops
//! on the event (or parks it, if configured to) — an event is never dropped without a trace.
//!
//! The rows an event is joined with are the table's rows when the reader handles the event:
//! the deadline decides deterministically whether a late row counts, but a row *updated*
//! around an event's time may be seen before or after the update, depending on which
//! partition the runner reads first. Put what the join used into its output (the rate a
//! payment was converted at) so that the log records it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use keel::store::EventStore;
use keel::{CommandOptions, Offset, Partition, RecordedEvent, Timestamp, Topic};
use serde::{Deserialize, Serialize};

use crate::clock::{self, Time, time_key};
use crate::effects::{self, Effect, derive_id};
use crate::error::BoxError;
use crate::input::{AnyRecord, Inputs};
use crate::keyed::{self, KeyedStore, State};
use crate::projection::{Envelope, Projection};
use crate::table::{AnyTable, Erased, Table};

/// A stream–table join: see the [module docs](self).
///
/// ```
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum OrderEvent { Confirmed { customer: String } }
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum CustomerEvent { Registered { email: String } }
/// use std::sync::{Arc, Mutex};
/// use keel::{AppendRequest, CommandOptions, EventStore, ExpectedVersion, NewEvent, StreamId, Topic};
/// use keel::store::memory::MemoryStore;
/// use keel_projections::keyed::Keyed;
/// use keel_projections::store::memory::MemoryViews;
/// use keel_projections::{BoxError, Envelope, Inputs, Join, JoinView, Missing, Rows, Runner, Table, Tables};
///
/// struct Emails; // customer → address
/// impl Table for Emails {
///     type Input = CustomerEvent;
///     type Row = String;
///     const NAME: &'static str = "emails";
///     fn inputs(&self) -> Inputs<CustomerEvent> { Inputs::new().topic(Topic::new("customer").expect("topic"), |e| e) }
///     fn key(&self, e: &Envelope<CustomerEvent>) -> Option<String> { Some(e.id().to_owned()) }
///     fn update(&self, _: Option<String>, e: &Envelope<CustomerEvent>) -> Option<String> {
///         let CustomerEvent::Registered { email } = &e.event;
///         Some(email.clone())
///     }
/// }
///
/// /// Who to write to about each confirmed order; sent to `outbox` (a command in real life).
/// struct Confirmations { outbox: Arc<Mutex<Vec<(String, String)>>> }
/// impl Join for Confirmations {
///     type Input = OrderEvent;
///     type Output = (String, String);
///     const NAME: &'static str = "confirmations";
///     fn inputs(&self) -> Inputs<OrderEvent> { Inputs::new().topic(Topic::new("order").expect("topic"), |e| e) }
///     fn tables(&self) -> Tables { Tables::new().with(Emails) }
///     fn join(&self, e: &Envelope<OrderEvent>, rows: &Rows<'_>) -> Result<Option<(String, String)>, Missing> {
///         let OrderEvent::Confirmed { customer } = &e.event;
///         Ok(Some((e.id().to_owned(), rows.get::<Emails>(customer)?)))
///     }
///     async fn emit(&self, output: (String, String), _: CommandOptions) -> Result<(), BoxError> {
///         self.outbox.lock().expect("not poisoned").push(output);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
/// let append = |kind: &str, id: &str, event: NewEvent| {
///     let request = AppendRequest::new(StreamId::new(kind, id).expect("id"), ExpectedVersion::Any, vec![event]);
///     let log = Arc::clone(&log);
///     async move { log.append(request).await }
/// };
/// append("order", "o1", NewEvent::from_event(&OrderEvent::Confirmed { customer: "ann".into() })?).await?;
/// let outbox = Arc::new(Mutex::new(Vec::new()));
/// let join = JoinView::new(Confirmations { outbox: Arc::clone(&outbox) }, Arc::clone(&log));
/// let runner = Runner::new(join, Arc::clone(&log), Arc::new(MemoryViews::<Keyed>::new()));
/// runner.catch_up().await?;
/// assert!(outbox.lock().expect("not poisoned").is_empty(), "o1 waits for ann's row");
/// append("customer", "ann", NewEvent::from_event(&CustomerEvent::Registered { email: "ann@a.example".into() })?).await?;
/// runner.catch_up().await?;
/// assert_eq!(*outbox.lock().expect("not poisoned"), vec![("o1".to_owned(), "ann@a.example".to_owned())]);
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel stream-table join",
    note = "implement `keel_projections::Join` for `{Self}`: its inputs, tables, `join` and `emit`"
)]
pub trait Join: Send + Sync + 'static {
    /// The stream's events, decoded by [`inputs`](Self::inputs).
    type Input: Send + Sync + 'static;
    /// What an event and its rows become.
    type Output: Send + Sync + 'static;
    /// The stable name (`[a-z0-9_]`): it keys the state, the checkpoints and the derived
    /// command ids.
    const NAME: &'static str;
    /// The version of its state and logic: bump it to rebuild.
    const VERSION: u32 = 1;

    /// The stream's topics and how their records decode.
    fn inputs(&self) -> Inputs<Self::Input>;

    /// The tables it looks events up in.
    fn tables(&self) -> Tables;

    /// Joins an event with the rows it needs, read from `rows` (a missing row is returned
    /// with `?`: the event waits for it). `Ok(None)` passes the event over.
    ///
    /// # Errors
    ///
    /// [`Missing`] for the first row that is not there (yet).
    fn join(
        &self,
        input: &Envelope<Self::Input>,
        rows: &Rows<'_>,
    ) -> Result<Option<Self::Output>, Missing>;

    /// What an event whose row never came (before recorded time reached its deadline)
    /// becomes. By default, an error: the runner stops on the event (or parks it).
    ///
    /// # Errors
    ///
    /// Whatever should stop the runner.
    fn missing(
        &self,
        input: &Envelope<Self::Input>,
        missing: &Missing,
    ) -> Result<Option<Self::Output>, BoxError> {
        let _ = input;
        Err(JoinError::RowNeverCame {
            join: Self::NAME,
            missing: missing.clone(),
        }
        .into())
    }

    /// Sends an output on, under `options` (its derived command id first).
    fn emit(
        &self,
        output: Self::Output,
        options: CommandOptions,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Why a join failed on an event (the runner stops on it, naming it, or parks it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// Too many events wait for rows already: raise [`JoinView::max_waiting`], or find why
    /// the rows do not come.
    #[error(
        "join {join}: {waiting} events already wait for rows (the limit); {event} waits for {missing}"
    )]
    Backlog {
        /// The join.
        join: &'static str,
        /// How many wait.
        waiting: u64,
        /// The event that would wait too.
        event: crate::EventRef,
        /// The row it needs.
        missing: Missing,
    },
    /// The join looked a row up in a table it does not keep: add the table to
    /// [`Join::tables`].
    #[error("join {join} looked up table {table}, which it does not keep (add it to `tables()`)")]
    UnknownTable {
        /// The join.
        join: &'static str,
        /// The table.
        table: &'static str,
    },
    /// The join asked for more rows for one event than it may (32): a lookup loop?
    #[error("join {join} asked for more than {limit} rows for {event}")]
    TooManyLookups {
        /// The join.
        join: &'static str,
        /// The limit.
        limit: usize,
        /// The event.
        event: crate::EventRef,
    },
    /// A waiting event's record is not in the log any more (the log was replaced?).
    #[error("join {join}: the waiting event at {position} is not in the log")]
    NotInLog {
        /// The join.
        join: &'static str,
        /// Where it was.
        position: keel::Position,
    },
    /// A row never came before the event's deadline, and [`Join::missing`] did not say what
    /// to do instead.
    #[error("join {join}: {missing} never arrived")]
    RowNeverCame {
        /// The join.
        join: &'static str,
        /// The row.
        missing: Missing,
    },
}

/// The tables a join keeps and looks events up in.
#[derive(Clone, Default)]
pub struct Tables {
    tables: Vec<Arc<dyn AnyTable>>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tables.iter().map(|t| t.name()))
            .finish()
    }
}

impl Tables {
    /// No tables yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `table` too.
    #[must_use]
    pub fn with<T: Table>(mut self, table: T) -> Self {
        let inputs = table.inputs();
        self.tables.push(Arc::new(Erased {
            table: Arc::new(table),
            inputs,
        }));
        self
    }

    fn topics(&self) -> Vec<Topic> {
        self.tables.iter().flat_map(|t| t.inputs()).collect()
    }

    fn knows(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t.name() == name)
    }
}

/// A row a join needed that is not there (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The table's name.
    pub table: &'static str,
    /// The row's key.
    pub key: String,
    /// Whether the row was looked up (and is absent) or not read yet.
    looked_up: bool,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "row {:?} of table {}", self.key, self.table)
    }
}

impl std::error::Error for Missing {}

/// The rows of a join's tables, as [`Join::join`] reads them.
pub struct Rows<'a> {
    loaded: &'a HashMap<(&'static str, String), Option<Vec<u8>>>,
    broken: RefCell<Option<String>>,
}

impl std::fmt::Debug for Rows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("loaded", &self.loaded.len())
            .finish_non_exhaustive()
    }
}

impl Rows<'_> {
    /// The row of table `T` under `key`.
    ///
    /// # Errors
    ///
    /// [`Missing`] when it is not there (yet).
    pub fn get<T: Table>(&self, key: &str) -> Result<T::Row, Missing> {
        let missing = |looked_up| Missing {
            table: T::NAME,
            key: key.to_owned(),
            looked_up,
        };
        match self.loaded.get(&(T::NAME, key.to_owned())) {
            None => Err(missing(false)),
            Some(None) => Err(missing(true)),
            Some(Some(bytes)) => keyed::decode(T::NAME, key, bytes).map_err(|e| {
                *self.broken.borrow_mut() = Some(e.to_string());
                missing(true)
            }),
        }
    }
}

/// An event waiting for a row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Waiting {
    topic: Topic,
    partition: Partition,
    offset: Offset,
    deadline: Timestamp,
    table: String,
    key: String,
}

impl Waiting {
    fn wait_key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}/{}/{:020}",
            self.table, self.key, self.topic, self.partition.0, self.offset.0
        )
    }

    fn expiry_key(&self) -> String {
        format!(
            "{}|{}/{}/{:020}",
            time_key(self.deadline),
            self.topic,
            self.partition.0,
            self.offset.0
        )
    }
}

/// Counters of a join, kept with its state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinStats {
    /// Events waiting for a row now.
    pub waiting: u64,
    /// Events joined with their rows into an output (at once or after waiting).
    pub joined: u64,
    /// Events whose rows did not come before their deadline, handed to [`Join::missing`].
    pub expired: u64,
}

const WAITING: &str = "waiting";
const EXPIRY: &str = "expiry";
const META: &str = "meta";

fn row_space(table: &str) -> String {
    format!("row.{table}")
}

/// Runs a [`Join`] as a projection in keyed store `S`: give it to a
/// [`Runner`](crate::Runner), with a [`Ticker`](crate::Ticker) recording time in the log.
pub struct JoinView<J: Join, S> {
    join: J,
    inputs: Inputs<J::Input>,
    tables: Tables,
    log: Arc<dyn EventStore>,
    max_wait: Duration,
    max_waiting: u64,
    store: PhantomData<fn() -> S>,
}

impl<J: Join, S> std::fmt::Debug for JoinView<J, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinView")
            .field("name", &J::NAME)
            .field("inputs", &self.inputs)
            .field("tables", &self.tables)
            .field("max_wait", &self.max_wait)
            .field("max_waiting", &self.max_waiting)
            .finish_non_exhaustive()
    }
}

/// What handling one batch gathers.
struct Pass<'s, 'b, S: KeyedStore, O> {
    state: &'s mut State<'b, S>,
    stats: JoinStats,
    outputs: Vec<Effect<O>>,
}

impl<J: Join, S: KeyedStore> JoinView<J, S> {
    /// Runs `join`, re-reading waiting events from `log` (the log the runner reads).
    pub fn new(join: J, log: Arc<dyn EventStore>) -> Self {
        let inputs = join.inputs();
        let tables = join.tables();
        Self {
            join,
            inputs,
            tables,
            log,
            max_wait: Duration::from_secs(30),
            max_waiting: 10_000,
            store: PhantomData,
        }
    }

    /// How long, in recorded time after its own timestamp, an event waits for a row
    /// (default 30 s).
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Most events waiting at once; one more fails its batch (default 10,000).
    #[must_use]
    pub fn max_waiting(mut self, max_waiting: u64) -> Self {
        self.max_waiting = max_waiting;
        self
    }

    /// The join's counters, as of its last commit.
    ///
    /// # Errors
    ///
    /// A view-store failure.
    pub async fn stats(views: &S) -> crate::Result<JoinStats> {
        Ok(keyed::read(views, J::NAME, META, "stats")
            .await?
            .unwrap_or_default())
    }

    /// The row of table `T` the join keeps under `key`, as of its last commit.
    ///
    /// # Errors
    ///
    /// A view-store failure or a row that does not decode.
    pub async fn row<T: Table>(views: &S, key: &str) -> crate::Result<Option<T::Row>> {
        keyed::read(views, J::NAME, &row_space(T::NAME), key).await
    }

    fn output_id(record: &RecordedEvent) -> keel::CommandId {
        derive_id(
            J::NAME,
            &[
                record.position.topic.as_str(),
                &record.position.partition.0.to_string(),
                &record.position.offset.0.to_string(),
            ],
        )
    }

    fn queue(pass: &mut Pass<'_, '_, S, J::Output>, record: &RecordedEvent, output: J::Output) {
        let id = Self::output_id(record);
        pass.outputs.push(Effect {
            command: output,
            target: id.to_string(),
            options: CommandOptions {
                command_id: Some(id),
                causation_id: Some(record.event_id),
                correlation_id: Some(record.correlation_id.unwrap_or(record.event_id)),
                ..CommandOptions::default()
            },
        });
    }

    /// Joins an event, or makes it wait for the first row it lacks.
    async fn attempt(
        &self,
        pass: &mut Pass<'_, '_, S, J::Output>,
        input: &Envelope<J::Input>,
        deadline: Timestamp,
    ) -> Result<(), BoxError> {
        let mut loaded: HashMap<(&'static str, String), Option<Vec<u8>>> = HashMap::new();
        for _ in 0..32 {
            let rows = Rows {
                loaded: &loaded,
                broken: RefCell::new(None),
            };
            let joined = self.join.join(input, &rows);
            if let Some(broken) = rows.broken.into_inner() {
                return Err(broken.into());
            }
            match joined {
                Ok(output) => {
                    if let Some(output) = output {
                        pass.stats.joined += 1;
                        Self::queue(pass, &input.record, output);
                    }
                    return Ok(());
                }
                Err(missing) if !self.tables.knows(missing.table) => {
                    return Err(JoinError::UnknownTable {
                        join: J::NAME,
                        table: missing.table,
                    }
                    .into());
                }
                Err(missing) if !missing.looked_up => {
                    let row =
                        S::get(pass.state.batch, &row_space(missing.table), &missing.key).await?;
                    loaded.insert((missing.table, missing.key), row);
                }
                Err(missing) => return self.wait(pass, &input.record, missing, deadline).await,
            }
        }
        Err(JoinError::TooManyLookups {
            join: J::NAME,
            limit: 32,
            event: crate::EventRef::from(&input.record),
        }
        .into())
    }

    async fn wait(
        &self,
        pass: &mut Pass<'_, '_, S, J::Output>,
        record: &RecordedEvent,
        missing: Missing,
        deadline: Timestamp,
    ) -> Result<(), BoxError> {
        if pass.stats.waiting >= self.max_waiting {
            return Err(JoinError::Backlog {
                join: J::NAME,
                waiting: pass.stats.waiting,
                event: crate::EventRef::from(record),
                missing,
            }
            .into());
        }
        let waiting = Waiting {
            topic: record.position.topic.clone(),
            partition: record.position.partition,
            offset: record.position.offset,
            deadline,
            table: missing.table.to_owned(),
            key: missing.key,
        };
        pass.state
            .put(WAITING, &waiting.wait_key(), &waiting)
            .await?;
        pass.state
            .put(EXPIRY, &waiting.expiry_key(), &waiting)
            .await?;
        pass.stats.waiting += 1;
        Ok(())
    }

    /// Reads a waiting event back from the log, and forgets that it waits.
    async fn release(
        &self,
        pass: &mut Pass<'_, '_, S, J::Output>,
        waiting: &Waiting,
    ) -> Result<Option<Envelope<J::Input>>, BoxError> {
        pass.state.delete(WAITING, &waiting.wait_key()).await?;
        pass.state.delete(EXPIRY, &waiting.expiry_key()).await?;
        pass.stats.waiting = pass.stats.waiting.saturating_sub(1);
        let record = self
            .log
            .read_partition(&waiting.topic, waiting.partition, waiting.offset, 1)
            .await?
            .into_iter()
            .next()
            .filter(|r| r.position.offset == waiting.offset)
            .ok_or_else(|| JoinError::NotInLog {
                join: J::NAME,
                position: keel::Position {
                    topic: waiting.topic.clone(),
                    partition: waiting.partition,
                    offset: waiting.offset,
                },
            })?;
        let Some(input) = self.inputs.decode(&record) else {
            return Ok(None);
        };
        Ok(Some(Envelope {
            event: input?,
            record,
        }))
    }

    /// Applies a table record to the rows, and joins the events waiting for its row that
    /// were due after its timestamp.
    async fn table_record(
        &self,
        pass: &mut Pass<'_, '_, S, J::Output>,
        table: &dyn AnyTable,
        record: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let Some(change) = table.change(record) else {
            return Ok(());
        };
        let change = change?;
        let space = row_space(table.name());
        let current = S::get(pass.state.batch, &space, &change.key).await?;
        let key = change.key;
        match (change.update)(current.as_deref())? {
            Some(row) => S::put(pass.state.batch, &space, &key, &row).await?,
            None => {
                S::delete(pass.state.batch, &space, &key).await?;
                return Ok(());
            }
        }
        let prefix = format!("{}\u{1f}{key}\u{1f}", table.name());
        // The events waiting for this row, all read before any is joined again (joining may
        // make one wait for another row).
        let mut waiting: Vec<Waiting> = Vec::new();
        let mut from = prefix.clone();
        loop {
            let page: Vec<(String, Waiting)> = pass.state.scan(WAITING, &from, 256).await?;
            let full = page.len() == 256;
            let mut last = None;
            for (k, w) in page {
                if !k.starts_with(&prefix) {
                    last = None;
                    break;
                }
                last = Some(k);
                waiting.push(w);
            }
            match last {
                Some(k) if full => from = format!("{k}\u{0}"),
                _ => break,
            }
        }
        // Only events whose deadline is after the row's stamp: the others expire when
        // recorded time reaches their deadline, whichever partition was read first.
        for waiting in waiting
            .into_iter()
            .filter(|w| w.deadline > record.timestamp)
        {
            if let Some(input) = self.release(pass, &waiting).await? {
                self.attempt(pass, &input, waiting.deadline).await?;
            }
        }
        Ok(())
    }

    /// Hands the events whose deadline recorded time reached to [`Join::missing`].
    async fn expire(
        &self,
        pass: &mut Pass<'_, '_, S, J::Output>,
        watermark: Timestamp,
    ) -> Result<(), BoxError> {
        loop {
            let found: Vec<(String, Waiting)> = pass.state.scan(EXPIRY, "", 64).await?;
            let due: Vec<Waiting> = found
                .into_iter()
                .map(|(_, w)| w)
                .take_while(|w| w.deadline <= watermark)
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            for waiting in due {
                let Some(input) = self.release(pass, &waiting).await? else {
                    continue;
                };
                let missing = Missing {
                    table: self
                        .tables
                        .tables
                        .iter()
                        .map(|t| t.name())
                        .find(|n| *n == waiting.table)
                        .unwrap_or("?"),
                    key: waiting.key.clone(),
                    looked_up: true,
                };
                pass.stats.expired += 1;
                tracing::info!(join = J::NAME, %missing, event = %crate::EventRef::from(&input.record), "row never came: handing the event to `missing`");
                if let Some(output) = self.join.missing(&input, &missing)? {
                    Self::queue(pass, &input.record, output);
                }
            }
        }
    }
}

impl<J: Join, S: KeyedStore> Projection for JoinView<J, S> {
    type Event = AnyRecord;
    type Store = S;
    const NAME: &'static str = J::NAME;
    const VERSION: u32 = J::VERSION;

    fn topics(&self) -> Vec<Topic> {
        let mut topics = self.inputs.topics();
        for t in self.tables.topics() {
            if !topics.contains(&t) {
                topics.push(t);
            }
        }
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
        let stats: JoinStats = state.get(META, "stats").await?.unwrap_or_default();
        let mut pass = Pass {
            state: &mut state,
            stats,
            outputs: Vec::new(),
        };
        let clock = clock::clock_topic();
        let topics = self.topics();
        let max_wait = i64::try_from(self.max_wait.as_micros()).unwrap_or(i64::MAX);
        for env in events {
            while let Some(watermark) = time.ready() {
                self.expire(&mut pass, watermark).await?;
            }
            let record = &env.record;
            if record.position.topic == clock {
                if let Some(tick) = clock::tick_of(record) {
                    time.push(tick?, |t| topics.contains(t));
                }
            } else {
                for table in &self.tables.tables {
                    self.table_record(&mut pass, table.as_ref(), record).await?;
                }
                if let Some(input) = self.inputs.decode(record) {
                    let input = Envelope {
                        event: input?,
                        record: record.clone(),
                    };
                    let deadline = Timestamp(record.timestamp.0.saturating_add(max_wait));
                    self.attempt(&mut pass, &input, deadline).await?;
                }
            }
            time.advance(record);
        }
        while let Some(watermark) = time.ready() {
            self.expire(&mut pass, watermark).await?;
        }
        let Pass { stats, outputs, .. } = pass;
        state.put(META, "time", &time).await?;
        state.put(META, "stats", &stats).await?;
        effects::dispatch(outputs, 32, |output, options| {
            self.join.emit(output, options)
        })
        .await
    }
}
