//! Process managers (sagas): readers that react to events by sending commands, with state per
//! instance, timers in recorded time, and exactly-once effects.
//!
//! A [`ProcessManager`] says which topics it reads ([`Inputs`]), which instance each input
//! belongs to ([`key`](ProcessManager::key): an order id, a transfer id), how an input changes
//! the instance's state and which commands it sends ([`react`](ProcessManager::react)), and
//! what happens when a timer fires ([`timeout`](ProcessManager::timeout)). [`Process`] runs it
//! as a projection: a [`Runner`](crate::Runner) feeds it under a lease, and each batch commits
//! the instances' states, their timers and the reader's recorded time together with the
//! checkpoint, in one view-store transaction. What it guarantees:
//!
//! - **Exactly-once effects.** The commands a batch decides are sent before the batch commits,
//!   each under a command id derived from what triggered it (see [`effects`](mod@crate::effects)).
//!   A crash between sending and committing replays the batch: the same decisions, the same
//!   ids, answered by the event store from the first commit. Nothing is sent twice.
//! - **Timeouts in recorded time.** A timer fires when the reader's recorded time (the ticks
//!   of a [`Ticker`](crate::Ticker), applied once the reader has read up to their heads: see
//!   [`clock`](mod@crate::clock)) reaches it, never by the wall clock, so a replay fires it at the
//!   same point of the input. Compare the timestamps of answers with the deadline, never their
//!   arrival: then a replay decides exactly as the live run did.
//! - **One instance at a time, in log order per partition.** Inputs of one partition reach
//!   `react` in offset order; inputs of several partitions interleave as the runner reads them.
//!
//! Commands sent to one target (the aggregate id given to [`Effects::send`]) go in the order
//! decided; different targets are sent concurrently. Make the handlers of those commands
//! record refusals as events rather than errors where a process waits for an answer: an error
//! is not recorded, so a replay would run the command again against a newer state.

use std::future::Future;
use std::marker::PhantomData;

use keel::{CommandOptions, Timestamp, Topic};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::clock::{self, Time, time_key};
use crate::effects::{self, Effect, Effects, Trigger};
use crate::error::BoxError;
use crate::input::{AnyRecord, Inputs};
use crate::keyed::{KeyedStore, State};
use crate::projection::{Envelope, Projection};

/// A process manager: see the [module docs](self).
///
/// ```
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum OrderEvent { Placed { customer: String }, Paid }
/// use std::time::Duration;
/// use keel::{CommandOptions, Timestamp};
/// use keel_projections::{BoxError, Effects, Envelope, Inputs, ProcessManager, Timer};
///
/// /// Cancels an order that is not paid within 15 minutes of being placed.
/// struct PaymentDeadline;
///
/// #[derive(Debug)]
/// enum Command { Cancel { order: String } }
///
/// impl ProcessManager for PaymentDeadline {
///     type Input = OrderEvent;
///     type State = ();
///     type Command = Command;
///     const NAME: &'static str = "payment_deadline";
///
///     fn inputs(&self) -> Inputs<OrderEvent> {
///         Inputs::new().topic(keel::Topic::new("order").expect("a topic"), |e| e)
///     }
///
///     fn key(&self, input: &Envelope<OrderEvent>) -> Option<String> {
///         Some(input.id().to_owned())
///     }
///
///     fn react(&self, _: &mut (), input: &Envelope<OrderEvent>, out: &mut Effects<Command>) {
///         match input.event {
///             OrderEvent::Placed { .. } => {
///                 let deadline = input.record.timestamp.0 + 15 * 60 * 1_000_000;
///                 out.set_timer("payment", Timestamp(deadline));
///             }
///             OrderEvent::Paid => out.finish(),
///         }
///     }
///
///     fn timeout(&self, _: &mut (), _: &Timer, out: &mut Effects<Command>) {
///         let order = out.key().to_owned();
///         out.send(order.clone(), Command::Cancel { order });
///     }
///
///     async fn send(&self, command: Command, options: CommandOptions) -> Result<(), BoxError> {
///         // Run the command through a repository, with these options (its derived id).
///         let _ = (command, options);
///         Ok(())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel process manager",
    note = "implement `keel_projections::ProcessManager` for `{Self}`: its inputs, key, `react` and `send`"
)]
pub trait ProcessManager: Send + Sync + 'static {
    /// What it reads, decoded from its topics by [`inputs`](Self::inputs).
    type Input: Send + Sync + 'static;
    /// The state of one instance.
    type State: Default + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The commands it sends.
    type Command: Send + Sync + 'static;
    /// The stable name: it keys the state, the checkpoints and the derived command ids
    /// (`[a-z0-9_]`, as a projection's).
    const NAME: &'static str;
    /// The version of its state and logic: bump it to rebuild the state from the log (the
    /// commands a rebuild decides again are answered from the log by their ids).
    const VERSION: u32 = 1;

    /// The topics it reads and how their records decode.
    fn inputs(&self) -> Inputs<Self::Input>;

    /// The instance an input belongs to; `None` passes it over.
    fn key(&self, input: &Envelope<Self::Input>) -> Option<String>;

    /// Handles an input: changes the instance's state, sends commands, sets or cancels
    /// timers, or finishes the instance.
    fn react(
        &self,
        state: &mut Self::State,
        input: &Envelope<Self::Input>,
        out: &mut Effects<Self::Command>,
    );

    /// Handles a timer that fired: recorded time reached `timer.at`.
    fn timeout(&self, state: &mut Self::State, timer: &Timer, out: &mut Effects<Self::Command>) {
        let _ = (state, timer, out);
    }

    /// Carries out a command, under `options` (its derived command id first): usually
    /// `repository.execute_with(id, command, options)`. A domain refusal the process does
    /// not wait on may be `Ok`; an error rolls the batch back and stops the runner (its
    /// commands sent so far are answered from the log when it runs again).
    fn send(
        &self,
        command: Self::Command,
        options: CommandOptions,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// The instance's key.
    pub key: String,
    /// The timer's name.
    pub name: String,
    /// When it was set to fire, in recorded time.
    pub at: Timestamp,
}

/// One instance as stored: its state and timers, or the mark of a finished one. (Whether it
/// is finished is a field of its own: a state of `()` is stored as `null`.)
#[derive(Debug, Serialize, Deserialize)]
struct Instance<T> {
    state: Option<T>,
    timers: Vec<(String, Timestamp)>,
    #[serde(default)]
    finished: bool,
}

const INSTANCES: &str = "instances";
const TIMERS: &str = "timers";
const META: &str = "meta";

/// Runs a [`ProcessManager`] as a projection, keeping its state in keyed store `S`: give it
/// to a [`Runner`](crate::Runner). Time comes from the ticks of a
/// [`Ticker`](crate::Ticker) recorded in the same log.
pub struct Process<M: ProcessManager, S> {
    manager: M,
    inputs: Inputs<M::Input>,
    concurrency: usize,
    store: PhantomData<fn() -> S>,
}

impl<M: ProcessManager, S> std::fmt::Debug for Process<M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &M::NAME)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl<M: ProcessManager, S: KeyedStore> Process<M, S> {
    /// Runs `manager`.
    pub fn new(manager: M) -> Self {
        let inputs = manager.inputs();
        Self {
            manager,
            inputs,
            concurrency: 32,
            store: PhantomData,
        }
    }

    /// Most targets sent commands to at once (default 32).
    #[must_use]
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The process manager.
    pub fn manager(&self) -> &M {
        &self.manager
    }

    /// The state of instance `key`, as of the process's last commit: `None` for an instance
    /// never seen or finished.
    ///
    /// # Errors
    ///
    /// A view-store failure or a state that does not decode.
    pub async fn state(views: &S, key: &str) -> crate::Result<Option<M::State>> {
        let instance: Option<Instance<M::State>> =
            crate::keyed::read(views, M::NAME, INSTANCES, key).await?;
        Ok(instance
            .filter(|i| !i.finished)
            .map(|i| i.state.unwrap_or_default()))
    }

    /// The recorded time the process has reached (`None` before its first tick).
    ///
    /// # Errors
    ///
    /// A view-store failure.
    pub async fn watermark(views: &S) -> crate::Result<Option<Timestamp>> {
        let time: Option<Time> = crate::keyed::read(views, M::NAME, META, "time").await?;
        Ok(time.and_then(|t| t.watermark()))
    }

    /// Handles one input of instance `key`.
    async fn react(
        &self,
        state: &mut State<'_, S>,
        key: String,
        input: &Envelope<M::Input>,
        sent: &mut Vec<Effect<M::Command>>,
    ) -> Result<(), BoxError> {
        let Some(mut instance) = load::<S, M::State>(state, &key).await? else {
            return Ok(()); // finished
        };
        let mut out = Effects::new(M::NAME, key.clone(), Trigger::record(&input.record));
        let current = instance.state.get_or_insert_with(M::State::default);
        self.manager.react(current, input, &mut out);
        save(state, &key, instance, out, sent).await
    }

    /// Fires the timers due at `watermark`, in time order.
    async fn fire(
        &self,
        state: &mut State<'_, S>,
        watermark: Timestamp,
        sent: &mut Vec<Effect<M::Command>>,
    ) -> Result<(), BoxError> {
        loop {
            let due: Vec<(String, Timer)> = state.scan(TIMERS, "", 64).await?;
            let due: Vec<(String, Timer)> = due
                .into_iter()
                .take_while(|(_, t)| t.at <= watermark)
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            for (index_key, timer) in due {
                state.delete(TIMERS, &index_key).await?;
                let Some(mut instance) = load::<S, M::State>(state, &timer.key).await? else {
                    continue;
                };
                // The instance may have moved or cancelled this timer since it was indexed.
                let Some(at) = instance
                    .timers
                    .iter()
                    .find(|(n, _)| *n == timer.name)
                    .map(|(_, at)| *at)
                else {
                    continue;
                };
                if at != timer.at {
                    continue;
                }
                instance.timers.retain(|(n, _)| *n != timer.name);
                let trigger = Trigger::Timer {
                    name: timer.name.clone(),
                    at: timer.at,
                };
                let mut out = Effects::new(M::NAME, timer.key.clone(), trigger);
                let current = instance.state.get_or_insert_with(M::State::default);
                self.manager.timeout(current, &timer, &mut out);
                save(state, &timer.key, instance, out, sent).await?;
            }
        }
    }
}

fn timer_index(at: Timestamp, key: &str, name: &str) -> String {
    format!("{}|{key}|{name}", time_key(at))
}

/// The instance under `key`: a fresh one when never seen, `None` when finished.
async fn load<S: KeyedStore, T: DeserializeOwned + Default>(
    state: &mut State<'_, S>,
    key: &str,
) -> Result<Option<Instance<T>>, BoxError> {
    match state.get::<Instance<T>>(INSTANCES, key).await? {
        Some(instance) if instance.finished => Ok(None),
        Some(instance) => Ok(Some(Instance {
            state: Some(instance.state.unwrap_or_default()),
            ..instance
        })),
        None => Ok(Some(Instance {
            state: Some(T::default()),
            timers: Vec::new(),
            finished: false,
        })),
    }
}

/// Stores an instance after a reaction: its state, its timers (and their index), or the
/// mark of a finished one; queues the commands decided.
async fn save<S: KeyedStore, T: Serialize, C>(
    state: &mut State<'_, S>,
    key: &str,
    mut instance: Instance<T>,
    out: Effects<C>,
    sent: &mut Vec<Effect<C>>,
) -> Result<(), BoxError> {
    let (effects, timers, finished) = out.into_parts();
    sent.extend(effects);
    for (name, at) in timers {
        if let Some(pos) = instance.timers.iter().position(|(n, _)| *n == name) {
            let (_, old) = instance.timers.remove(pos);
            state.delete(TIMERS, &timer_index(old, key, &name)).await?;
        }
        if let Some(at) = at {
            let timer = Timer {
                key: key.to_owned(),
                name: name.clone(),
                at,
            };
            state
                .put(TIMERS, &timer_index(at, key, &name), &timer)
                .await?;
            instance.timers.push((name, at));
        }
    }
    if finished {
        for (name, at) in std::mem::take(&mut instance.timers) {
            state.delete(TIMERS, &timer_index(at, key, &name)).await?;
        }
        instance.state = None;
        instance.finished = true;
    }
    state.put(INSTANCES, key, &instance).await?;
    Ok(())
}

impl<M: ProcessManager, S: KeyedStore> Projection for Process<M, S> {
    type Event = AnyRecord;
    type Store = S;
    const NAME: &'static str = M::NAME;
    const VERSION: u32 = M::VERSION;

    fn topics(&self) -> Vec<Topic> {
        let mut topics = self.inputs.topics();
        topics.push(clock::clock_topic());
        topics
    }

    fn reads(&self, _: &keel::RecordedEvent) -> bool {
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
        let mut sent = Vec::new();
        let clock = clock::clock_topic();
        for env in events {
            while let Some(watermark) = time.ready() {
                self.fire(&mut state, watermark, &mut sent).await?;
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
                if let Some(key) = self.manager.key(&input) {
                    self.react(&mut state, key, &input, &mut sent).await?;
                }
            }
            time.advance(record);
        }
        while let Some(watermark) = time.ready() {
            self.fire(&mut state, watermark, &mut sent).await?;
        }
        state.put(META, "time", &time).await?;
        effects::dispatch(sent, self.concurrency, |command, options| {
            self.manager.send(command, options)
        })
        .await
    }
}
