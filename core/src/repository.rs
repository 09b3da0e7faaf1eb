//! The command side: load an aggregate, decide, append, retry on conflict.
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
use crate::event::{DecodeError, EncodeError};
use crate::ids::{CommandId, IdError, Position, StreamId, StreamVersion};
use crate::store::{self, AppendRequest, EventStore, ExpectedVersion};

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The aggregate rejected the command; nothing was written.
    #[error("command rejected")]
    Rejected(#[source] E),
    /// The aggregate id is not a valid stream id.
    #[error("invalid aggregate id")]
    InvalidId(#[from] IdError),
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

/// How often to decide again after a conflict, and how long to wait in between.
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
    /// The command's id: the idempotency key. Without one, a fresh id is used and a retry
    /// by the caller runs the command again.
    pub command_id: Option<CommandId>,
    /// Ties together everything one request caused.
    pub correlation_id: Option<Uuid>,
    /// The message that caused this command.
    pub causation_id: Option<Uuid>,
    /// Metadata copied onto every event written.
    pub metadata: Metadata,
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
}

/// Loads aggregates of type `A` from a store and runs their commands.
pub struct Repository<A: Handle, S: EventStore + ?Sized> {
    store: Arc<S>,
    context: Arc<A::Context>,
    retry: RetryPolicy,
}

impl<A: Handle, S: EventStore + ?Sized> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            context: Arc::clone(&self.context),
            retry: self.retry,
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
    /// A repository whose handlers share `context` (services, clocks, clients).
    pub fn with_context(store: Arc<S>, context: Arc<A::Context>) -> Self {
        Self {
            store,
            context,
            retry: RetryPolicy::default(),
        }
    }

    /// Sets the retry policy for conflicts.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The stream of aggregate `id`.
    ///
    /// # Errors
    ///
    /// [`IdError`] when `id` is not a valid stream id.
    pub fn stream(id: &str) -> Result<StreamId, IdError> {
        StreamId::new(A::KIND, id)
    }

    /// Loads aggregate `id` by folding its events.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidId`], [`Error::Decode`] naming the record that does not decode, or
    /// [`Error::Store`].
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error<A::Error>> {
        let stream = Self::stream(id)?;
        self.load_stream(&stream).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<Loaded<A>, Error<A::Error>> {
        let records = self.store.read_stream(stream, StreamVersion(1)).await?;
        let mut state = A::default();
        let mut version = StreamVersion::INITIAL;
        for record in &records {
            state.apply_event(&record.decode::<A::Event>()?);
            version = record.version;
        }
        Ok(Loaded { state, version })
    }

    /// Runs `command` on aggregate `id` with a fresh command id.
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
    /// first outcome without running the handler), loads the aggregate, decides, appends with
    /// the loaded version as the expectation, and decides again on conflict under the retry
    /// policy.
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
        let stream = Self::stream(id)?;
        // A fresh random id cannot have been committed: only a caller's id is looked up.
        let given = options.command_id.is_some();
        let meta = CommandMeta {
            id: options.command_id.unwrap_or_else(CommandId::random),
            fingerprint: Fingerprint::of(&command).map_err(Error::Fingerprint)?,
            correlation_id: options.correlation_id,
            causation_id: options.causation_id,
        };
        if given && let Some(record) = self.store.command(&stream, &meta.id).await? {
            if record.fingerprint != meta.fingerprint {
                return Err(store::Error::CommandIdReused {
                    stream,
                    command_id: meta.id,
                }
                .into());
            }
            return self.committed(record.appended.into_replayed()).await;
        }
        let attempts = self.retry.max_attempts.max(1);
        for attempt in 0..attempts {
            let loaded = self.load_stream(&stream).await?;
            let events = loaded
                .state
                .handle(command.clone(), &self.context)
                .await
                .map_err(Error::Rejected)?;
            if events.is_empty() {
                return Ok(Committed {
                    stream,
                    events: Vec::new(),
                    version: loaded.version,
                    replayed: false,
                });
            }
            let new_events = events
                .iter()
                .map(|e| {
                    let mut new = NewEvent::from_event(e)?;
                    new.metadata.clone_from(&options.metadata);
                    Ok(new)
                })
                .collect::<Result<Vec<_>, EncodeError>>()?;
            let request = AppendRequest {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(loaded.version),
                events: new_events,
                command: Some(meta.clone()),
            };
            match self.store.append(request).await {
                Ok(appended) if appended.replayed => return self.committed(appended).await,
                Ok(appended) => {
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
                    });
                }
                Err(e) if e.is_conflict() => {
                    tracing::debug!(attempt, error = %e, "conflict; deciding again");
                    if attempt + 1 < attempts {
                        tokio::time::sleep(self.retry.delay(attempt)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::TooManyConflicts { stream, attempts })
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
        })
    }
}

impl<A: Handle, S: EventStore + ?Sized> std::fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("kind", &A::KIND)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Folds events into a fresh aggregate: what [`Repository::load`] does, without a store.
pub fn fold<'a, A: Aggregate>(events: impl IntoIterator<Item = &'a A::Event>) -> A {
    let mut state = A::default();
    state.apply_all(events);
    state
}
