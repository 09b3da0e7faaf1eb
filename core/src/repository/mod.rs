//! The command side: load an aggregate, decide, append, retry on conflict.
//!
//! A [`Repository`] runs commands of one aggregate type. For each command it:
//!
//! 1. checks the caller's command id (a committed one returns the first outcome without
//!    running the handler again);
//! 2. takes the aggregate's place in an in-process queue, so commands on one aggregate never
//!    race each other to the store;
//! 3. starts from the aggregate's cached state when it has one (no read at all), or loads it
//!    from its latest snapshot plus the later events;
//! 4. decides, and appends the decided events expecting the version it decided on;
//! 5. on a conflict (another process appended), reads only the newer events and decides
//!    again, under a bounded [`RetryPolicy`].
//!
//! A cached state is always the fold of committed events at the version it carries, so a
//! stale one can only cause a conflict, never a wrong append. When the handler rejects a
//! command or decides nothing, the repository first checks (one cheap read of the stream's
//! version) that the cached state was current, so a rejection is never based on stale state.
//!
//! ```
//! # use keel::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
//! # pub enum CounterEvent { Incremented { by: u32 } }
//! # #[derive(Debug, thiserror::Error)]
//! # pub enum CounterError { #[error("zero")] Zero }
//! # #[derive(Aggregate, Default, Debug)]
//! # #[aggregate(kind = "counter", event = CounterEvent, error = CounterError)]
//! # pub struct Counter { total: u64 }
//! # impl Apply<CounterEvent> for Counter {
//! #     fn apply(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.total += u64::from(*by); }
//! # }
//! # #[keel::commands]
//! # impl Counter {
//! #     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
//! #         if by == 0 { Err(CounterError::Zero) } else { Ok(CounterEvent::Incremented { by }) }
//! #     }
//! # }
//! use std::sync::Arc;
//! use keel::{CommandId, Repository, store::memory::MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let repo = Repository::<Counter, _>::new(Arc::new(MemoryStore::new()));
//! let id = CommandId::new("req-1")?;
//! let first = repo.execute_with("c1", CounterCommand::Increment { by: 2 }, id.clone().into()).await?;
//! // A retry of the same request is answered from the log, not run again.
//! let again = repo.execute_with("c1", CounterCommand::Increment { by: 2 }, id.into()).await?;
//! assert!(again.replayed);
//! assert_eq!(again.version, first.version);
//! assert_eq!(repo.load("c1").await?.state.total, 2);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::aggregate::{Aggregate, Handle};
use crate::envelope::{CommandMeta, Fingerprint, Metadata, NewEvent};
use crate::event::{DecodeError, EncodeError, Event};
use crate::ids::{CommandId, IdError, Position, StreamId, StreamVersion, Topic};
use crate::snapshot::Snapshot;
use crate::store::{self, AppendRequest, EventStore, ExpectedVersion};

mod cache;

pub use self::cache::CacheStats;
use self::cache::{Cache, Entry};

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The aggregate rejected the command; nothing was written.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// The aggregate id is not a valid stream id.
    #[error("invalid aggregate id: {0}")]
    InvalidId(IdError),
    /// The command could not be fingerprinted (it does not serialise).
    #[error("cannot serialise the command to fingerprint it")]
    Fingerprint(#[source] serde_json::Error),
    /// A decided event could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A stored event could not be decoded while loading the aggregate.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Other writers kept moving the stream; every attempt met a conflict.
    #[error("stream {stream} kept changing: gave up after {attempts} attempts")]
    TooManyConflicts {
        /// The stream.
        stream: StreamId,
        /// How many times the command was decided.
        attempts: u32,
    },
    /// The event store failed, or refused the append (a reused command id, bad input).
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl<E> From<IdError> for Error<E> {
    fn from(e: IdError) -> Self {
        Self::InvalidId(e)
    }
}

/// How often to decide again after a conflict, and how long to wait in between.
///
/// Commands on one aggregate in one process never conflict with each other (they queue), so
/// conflicts come only from writers in other processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts in all (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled each time, with jitter.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// Never retry: a conflict is returned as [`Error::TooManyConflicts`] after one attempt.
    pub const NONE: Self = Self {
        max_attempts: 1,
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1 << attempt.min(16))
            .min(self.max_backoff);
        // Jitter from the low bits of a fresh UUID v7's random part: spreads writers apart.
        let jitter = (Uuid::now_v7().as_u128() & 0xff) as u32;
        base.mul_f64(0.5 + f64::from(jitter) / 512.0)
    }
}

/// Ids and metadata of one command execution.
#[derive(Clone, Debug, Default)]
pub struct CommandOptions {
    /// The command's id: the idempotency key. Without one the command is not idempotent: a
    /// retry by the caller runs it again, and its events carry no command id (unless a
    /// correlation or causation id is given, which needs one: a fresh id is used then).
    pub command_id: Option<CommandId>,
    /// Ties together everything one request caused.
    pub correlation_id: Option<Uuid>,
    /// The message that caused this command.
    pub causation_id: Option<Uuid>,
    /// Metadata copied onto every event written.
    pub metadata: Metadata,
    /// A hint that the aggregate does not exist yet (its id is fresh): when it is not cached,
    /// the command is decided on the aggregate's default state without reading the store.
    /// The outcome is the same either way — if the aggregate does exist, the append meets a
    /// conflict (or a rejection is checked against the store) and the command is decided
    /// again on the loaded state — so a wrong hint only costs that wasted attempt.
    pub expect_new: bool,
}

impl From<CommandId> for CommandOptions {
    fn from(id: CommandId) -> Self {
        Self {
            command_id: Some(id),
            ..Self::default()
        }
    }
}

/// An aggregate's state and the version it was loaded at.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream's version the state reflects (0: no events yet).
    pub version: StreamVersion,
}

/// One committed event, with where it landed.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedEvent<E> {
    /// The event.
    pub event: E,
    /// Its version in the stream.
    pub version: StreamVersion,
    /// Its position in the log.
    pub position: Position,
}

/// The outcome of a committed command.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed<E> {
    /// The stream.
    pub stream: StreamId,
    /// The events the command wrote, in order (empty when it decided nothing).
    pub events: Vec<CommittedEvent<E>>,
    /// The stream's version after the command.
    pub version: StreamVersion,
    /// `true` when the command id had already been committed: these are the first
    /// execution's events, and the handler did not run again.
    pub replayed: bool,
    /// How many times the command was decided: 1, plus one per conflict with another
    /// writer (or per stale cached state found before a rejection). 0 for a replay.
    pub attempts: u32,
}

impl<E> Committed<E> {
    /// The position of each event the command wrote, in order: what a reader waits for to
    /// see this command's effect (read-your-writes).
    pub fn positions(&self) -> impl Iterator<Item = &Position> + '_ {
        self.events.iter().map(|e| &e.position)
    }
}

/// A command decided on an aggregate's current state but not appended yet: what
/// [`Repository::prepare`] returns, for an atomic append to several streams
/// ([`EventStore::append_all`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared<E> {
    /// The append that commits the decision: the decided events, expecting the version they
    /// were decided on, under the command's id (when it has one).
    pub request: AppendRequest,
    /// The decided events, in order (empty when the command decides nothing).
    pub events: Vec<E>,
}

/// Loads aggregates of type `A` from a store and runs their commands. See the
/// [module docs](self).
///
/// Clones share the cache and the per-aggregate queue: clone a repository rather than
/// creating a second one over the same store.
pub struct Repository<A: Handle, S: EventStore + ?Sized> {
    store: Arc<S>,
    context: Arc<A::Context>,
    retry: RetryPolicy,
    snapshot_every: u64,
    cache: Arc<Cache<A>>,
    /// The aggregate kind's topic, checked once (`None` when the kind is not a valid topic
    /// name: every command then fails with the id error).
    topic: Option<Topic>,
}

impl<A: Handle, S: EventStore + ?Sized> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            context: Arc::clone(&self.context),
            retry: self.retry,
            snapshot_every: self.snapshot_every,
            cache: Arc::clone(&self.cache),
            topic: self.topic.clone(),
        }
    }
}

impl<A, S> Repository<A, S>
where
    A: Handle<Context = ()>,
    S: EventStore + ?Sized,
{
    /// A repository for aggregates whose handlers take no context.
    pub fn new(store: Arc<S>) -> Self {
        Self::with_context(store, Arc::new(()))
    }
}

impl<A: Handle, S: EventStore + ?Sized> Repository<A, S> {
    /// The default bound of the aggregate cache, in aggregates.
    pub const DEFAULT_CACHE_CAPACITY: usize = 16_384;

    /// A repository whose handlers share `context` (services, clocks, clients).
    pub fn with_context(store: Arc<S>, context: Arc<A::Context>) -> Self {
        Self {
            store,
            context,
            retry: RetryPolicy::default(),
            snapshot_every: A::SNAPSHOT.map_or(0, |s| s.every),
            cache: Arc::new(Cache::new(Self::DEFAULT_CACHE_CAPACITY, true)),
            topic: Topic::new(A::KIND).ok(),
        }
    }

    /// Sets the retry policy for conflicts.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Keeps the state of at most `capacity` recently used aggregates between commands
    /// (default [`Self::DEFAULT_CACHE_CAPACITY`]); `0` keeps none, so every command loads its
    /// aggregate. Starts a new, empty cache.
    #[must_use]
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = Arc::new(if capacity == 0 {
            Cache::new(Self::DEFAULT_CACHE_CAPACITY, false)
        } else {
            Cache::new(capacity, true)
        });
        self
    }

    /// Saves a snapshot every `every` events (0: never), overriding the aggregate's
    /// `snapshot(every = ...)`. Has no effect on an aggregate without `snapshot(...)`.
    #[must_use]
    pub fn snapshot_every(mut self, every: u64) -> Self {
        self.snapshot_every = if A::SNAPSHOT.is_some() { every } else { 0 };
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Counters of the aggregate cache.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Forgets every cached aggregate state: the next command on each loads it again.
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// The stream of aggregate `id`.
    ///
    /// # Errors
    ///
    /// [`IdError`] when `id` is not a valid stream id.
    pub fn stream(id: &str) -> Result<StreamId, IdError> {
        StreamId::new(A::KIND, id)
    }

    /// The stream of aggregate `id` in this repository's topic (checked once, at creation).
    fn stream_of(&self, id: &str) -> Result<StreamId, IdError> {
        match &self.topic {
            Some(topic) => StreamId::in_topic(topic, id),
            None => Self::stream(id),
        }
    }

    /// Loads aggregate `id` from the store: its latest snapshot of the current shape, if any,
    /// plus the events after it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`], [`Error::Decode`] naming the record that does not decode, or
    /// [`Error::Store`].
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error<A::Error>> {
        let stream = Self::stream(id)?;
        let entry = self.load_entry(&stream).await?;
        Ok(Loaded {
            state: entry.state,
            version: entry.version,
        })
    }

    async fn load_entry(&self, stream: &StreamId) -> Result<Entry<A>, Error<A::Error>> {
        let mut entry = Entry::new();
        let shape = A::SNAPSHOT.map(|config| config.version);
        let (snapshot, records) = self
            .store
            .as_ref()
            .read_from_snapshot(stream, shape)
            .await?;
        let records = match snapshot {
            Some(snapshot) => match A::decode_snapshot(&snapshot.payload) {
                Ok(state) => {
                    entry.state = state;
                    entry.version = snapshot.version;
                    entry.snapshot_version = snapshot.version;
                    records
                }
                Err(error) => {
                    tracing::warn!(
                        %stream,
                        version = %snapshot.version,
                        error = %error,
                        "ignoring a snapshot that does not decode"
                    );
                    self.store
                        .as_ref()
                        .read_stream(stream, StreamVersion(1))
                        .await?
                }
            },
            None => records,
        };
        for record in &records {
            // A type the event enum declares removed is skipped (a constant check: it goes
            // when there are none).
            if !<A::Event as Event>::IGNORED_TYPES.contains(&record.event_type.as_str()) {
                entry.state.apply_event(&record.decode::<A::Event>()?);
            }
            entry.version = record.version;
        }
        Ok(entry)
    }

    /// Brings a stale entry up to date: the events after its version, or a whole load
    /// (snapshot first) for an entry that never read the store.
    async fn refresh(
        &self,
        stream: &StreamId,
        entry: &mut Entry<A>,
    ) -> Result<(), Error<A::Error>> {
        if entry.version == StreamVersion::INITIAL {
            *entry = self.load_entry(stream).await?;
            Ok(())
        } else {
            self.catch_up(stream, entry).await
        }
    }

    /// Folds the events after the entry's version into it.
    async fn catch_up(
        &self,
        stream: &StreamId,
        entry: &mut Entry<A>,
    ) -> Result<(), Error<A::Error>> {
        let records = self
            .store
            .as_ref()
            .read_stream(stream, entry.version.next())
            .await?;
        for record in &records {
            // A type the event enum declares removed is skipped (a constant check: it goes
            // when there are none).
            if !<A::Event as Event>::IGNORED_TYPES.contains(&record.event_type.as_str()) {
                entry.state.apply_event(&record.decode::<A::Event>()?);
            }
            entry.version = record.version;
        }
        Ok(())
    }

    /// Runs `command` on aggregate `id`, without a command id (see
    /// [`CommandOptions::command_id`]).
    ///
    /// # Errors
    ///
    /// See [`Self::execute_with`].
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Committed<A::Event>, Error<A::Error>> {
        self.execute_with(id, command, CommandOptions::default())
            .await
    }

    /// Runs `command` on aggregate `id`: checks the command id (a committed one returns the
    /// first outcome without running the handler), takes the aggregate's place in the
    /// in-process queue, decides against its cached or loaded state, appends with that
    /// state's version as the expectation, and decides again on conflict under the retry
    /// policy. See the [module docs](self).
    ///
    /// A command that decides no events writes nothing, so its id is not recorded: a retry
    /// runs the handler again against the state of that moment.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] with the aggregate's error, [`Error::TooManyConflicts`],
    /// [`Error::Store`] (with [`store::Error::CommandIdReused`] for an id reused by another
    /// command), [`Error::Decode`], [`Error::InvalidId`].
    #[tracing::instrument(level = "debug", skip_all, fields(kind = A::KIND, id, command = crate::Command::name(&command)))]
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        options: CommandOptions,
    ) -> Result<Committed<A::Event>, Error<A::Error>> {
        let slot = self.cache.slot(id, || self.stream_of(id))?;
        let stream = slot.stream.clone();
        let CommandOptions {
            command_id,
            correlation_id,
            causation_id,
            metadata,
            expect_new,
        } = options;
        let given = command_id.is_some();
        // Without a caller's id nobody can retry the command, so no idempotency record is
        // kept for it (unless correlation or causation ids need a command to travel with).
        let meta = if given || correlation_id.is_some() || causation_id.is_some() {
            Some(CommandMeta {
                id: command_id.unwrap_or_else(CommandId::random),
                fingerprint: Fingerprint::of(&command).map_err(Error::Fingerprint)?,
                correlation_id,
                causation_id,
            })
        } else {
            None
        };
        if given
            && let Some(meta) = &meta
            && let Some(record) = self.store.as_ref().command(&stream, &meta.id).await?
        {
            if record.fingerprint != meta.fingerprint {
                return Err(store::Error::CommandIdReused {
                    stream,
                    command_id: meta.id.clone(),
                }
                .into());
            }
            return self.committed(record.appended.into_replayed()).await;
        }

        let mut guard = slot.entry.lock().await;
        // Taken out: if this command fails or is cancelled midway, the slot is left empty
        // and the next command reloads.
        let cached = guard.take();
        self.cache.record(A::KIND, cached.is_some());
        let (mut entry, mut current) = match cached {
            Some(entry) => (entry, false),
            // Not read: the append's expected version (0) or the check before a rejection
            // finds out if the hint was wrong.
            None if expect_new => (Entry::new(), false),
            None => (self.load_entry(&stream).await?, true),
        };
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let decided = entry.state.handle(command.clone(), &self.context).await;
            let events = match decided {
                Ok(events) if !events.is_empty() => events,
                outcome => {
                    // A rejection or an empty decision must not rest on a stale state.
                    if !current {
                        current = true;
                        if self.store.as_ref().stream_version(&stream).await? != entry.version {
                            self.refresh(&stream, &mut entry).await?;
                            continue;
                        }
                    }
                    let version = entry.version;
                    self.keep(&mut guard, entry);
                    return match outcome {
                        Err(rejection) => Err(Error::Rejected(rejection)),
                        Ok(_) => Ok(Committed {
                            stream,
                            events: Vec::new(),
                            version,
                            replayed: false,
                            attempts,
                        }),
                    };
                }
            };
            let new_events = events
                .iter()
                .map(|e| {
                    let mut new = NewEvent::from_event(e)?;
                    if !metadata.is_empty() {
                        new.metadata.clone_from(&metadata);
                    }
                    Ok(new)
                })
                .collect::<Result<Vec<_>, EncodeError>>()?;
            let request = AppendRequest {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(entry.version),
                events: new_events,
                command: meta.clone(),
            };
            match self.store.as_ref().append(request).await {
                Ok(appended) if appended.replayed => {
                    // Committed before (by a concurrent retry of the same command id): the
                    // cached state is still true at its version.
                    self.keep(&mut guard, entry);
                    return self.committed(appended).await;
                }
                Ok(appended) => {
                    for event in &events {
                        entry.state.apply_event(event);
                    }
                    entry.version = appended.last_version();
                    self.snapshot_if_due(&stream, &mut entry).await;
                    self.keep(&mut guard, entry);
                    let version = appended.last_version();
                    let events = events
                        .into_iter()
                        .zip(appended.versions().zip(appended.positions()))
                        .map(|(event, (version, position))| CommittedEvent {
                            event,
                            version,
                            position,
                        })
                        .collect();
                    return Ok(Committed {
                        stream,
                        events,
                        version,
                        replayed: false,
                        attempts,
                    });
                }
                Err(e) if e.is_conflict() => {
                    tracing::debug!(attempt = attempts, error = %e, "conflict; deciding again");
                    if attempts >= max_attempts {
                        return Err(Error::TooManyConflicts { stream, attempts });
                    }
                    tokio::time::sleep(self.retry.delay(attempts - 1)).await;
                    self.refresh(&stream, &mut entry).await?;
                    current = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Decides `command` on aggregate `id`'s current state without appending: returns the
    /// append that would commit it, expecting the version it was decided on. Put several of
    /// them in one [`EventStore::append_all`] to commit decisions on several aggregates
    /// together or not at all; on a conflict, prepare them again.
    ///
    /// The state is read from the store (not from the cache), and the command id is not
    /// looked up: a request whose command id was committed before is answered by the store
    /// with its first result.
    ///
    /// ```
    /// # use keel::prelude::*;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
    /// # pub enum CounterEvent { Incremented { by: u32 } }
    /// # #[derive(Debug, thiserror::Error)]
    /// # pub enum CounterError { #[error("zero")] Zero }
    /// # #[derive(Aggregate, Default, Debug)]
    /// # #[aggregate(kind = "counter", event = CounterEvent, error = CounterError)]
    /// # pub struct Counter { total: u64 }
    /// # impl Apply<CounterEvent> for Counter {
    /// #     fn apply(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.total += u64::from(*by); }
    /// # }
    /// # #[keel::commands]
    /// # impl Counter {
    /// #     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
    /// #         if by == 0 { Err(CounterError::Zero) } else { Ok(CounterEvent::Incremented { by }) }
    /// #     }
    /// # }
    /// use std::sync::Arc;
    /// use keel::{CommandOptions, EventStore, Repository, store::memory::MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = Repository::<Counter, _>::new(Arc::new(MemoryStore::new()));
    /// let a = repo.prepare("a", CounterCommand::Increment { by: 1 }, CommandOptions::default()).await?;
    /// let b = repo.prepare("b", CounterCommand::Increment { by: 2 }, CommandOptions::default()).await?;
    /// repo.store().append_all(vec![a.request, b.request]).await?; // both or neither
    /// assert_eq!(repo.load("b").await?.state.total, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] with the aggregate's error, [`Error::InvalidId`],
    /// [`Error::Fingerprint`], [`Error::Encode`], [`Error::Decode`] or [`Error::Store`].
    pub async fn prepare(
        &self,
        id: &str,
        command: A::Command,
        options: CommandOptions,
    ) -> Result<Prepared<A::Event>, Error<A::Error>> {
        let stream = self.stream_of(id)?;
        let CommandOptions {
            command_id,
            correlation_id,
            causation_id,
            metadata,
            expect_new: _,
        } = options;
        let meta = if command_id.is_some() || correlation_id.is_some() || causation_id.is_some() {
            Some(CommandMeta {
                id: command_id.unwrap_or_else(CommandId::random),
                fingerprint: Fingerprint::of(&command).map_err(Error::Fingerprint)?,
                correlation_id,
                causation_id,
            })
        } else {
            None
        };
        let entry = self.load_entry(&stream).await?;
        let events = entry
            .state
            .handle(command, &self.context)
            .await
            .map_err(Error::Rejected)?;
        let new_events = events
            .iter()
            .map(|e| {
                let mut new = NewEvent::from_event(e)?;
                new.metadata.clone_from(&metadata);
                Ok(new)
            })
            .collect::<Result<Vec<_>, EncodeError>>()?;
        Ok(Prepared {
            request: AppendRequest {
                stream,
                expected: ExpectedVersion::Exact(entry.version),
                events: new_events,
                command: meta,
            },
            events,
        })
    }

    /// Puts a state back in its slot, when the cache keeps states.
    fn keep(&self, slot: &mut Option<Entry<A>>, entry: Entry<A>) {
        if self.cache.keeps_states() {
            *slot = Some(entry);
        }
    }

    /// Saves a snapshot when `snapshot_every` events have passed since the last one. A
    /// failure is logged, never the command's failure: snapshots are derived data.
    async fn snapshot_if_due(&self, stream: &StreamId, entry: &mut Entry<A>) {
        let Some(config) = A::SNAPSHOT else { return };
        if self.snapshot_every == 0
            || entry.version.0 - entry.snapshot_version.0 < self.snapshot_every
        {
            return;
        }
        let payload = match entry.state.encode_snapshot() {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%stream, error = %error, "cannot encode a snapshot");
                return;
            }
        };
        let snapshot = Snapshot::new(stream.clone(), entry.version, config.version, payload);
        match self.store.as_ref().save_snapshot(snapshot).await {
            Ok(()) => entry.snapshot_version = entry.version,
            Err(error) => tracing::warn!(%stream, error = %error, "cannot save a snapshot"),
        }
    }

    /// Reads back what a committed command wrote.
    async fn committed(
        &self,
        appended: store::Appended,
    ) -> Result<Committed<A::Event>, Error<A::Error>> {
        let records = self
            .store
            .read_stream(&appended.stream, appended.first_version)
            .await?;
        let events = records
            .iter()
            .take(appended.offsets.len())
            .map(|r| {
                Ok(CommittedEvent {
                    event: r.decode::<A::Event>()?,
                    version: r.version,
                    position: r.position.clone(),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(Committed {
            version: appended.last_version(),
            stream: appended.stream,
            events,
            replayed: appended.replayed,
            attempts: 0,
        })
    }
}

impl<A: Handle, S: EventStore + ?Sized> std::fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("kind", &A::KIND)
            .field("retry", &self.retry)
            .field("snapshot_every", &self.snapshot_every)
            .field("cache", &self.cache.stats())
            .finish_non_exhaustive()
    }
}

/// Folds events into a fresh aggregate: what [`Repository::load`] does, without a store.
pub fn fold<'a, A: Aggregate>(events: impl IntoIterator<Item = &'a A::Event>) -> A {
    let mut state = A::default();
    state.apply_all(events);
    state
}
