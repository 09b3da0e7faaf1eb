//! Where views live: the [`ViewStore`] trait and its implementations.
//!
//! A view store keeps, for each projection, its **generations** (one per build: a version
//! bump or a rebuild makes a new one beside the active one), each generation's **view data**
//! and **checkpoints**, a **lease** naming the one runner allowed to write, and the **parked**
//! events. What every implementation guarantees:
//!
//! - A batch's view changes, its checkpoint moves and its parked events commit together or not
//!   at all ([`ViewStore::commit`]).
//! - A commit moves each checkpoint only from the offset the runner read it at, and only while
//!   the lease still names the runner (a lease past its expiry that nobody else claimed still
//!   does; the commit renews it): otherwise it fails with
//!   [`Error::LeaseLost`](crate::Error::LeaseLost) and nothing of the batch is kept. Two runners
//!   of one projection can never both apply a batch.
//! - Readers see only the **active** generation; a generation being built is invisible to them
//!   until [`ViewStore::activate`] switches it in one step.
//! - Why a generation's runner last stopped ([`ViewStore::set_stopped`]) is kept with the
//!   generation until cleared or the generation is dropped, so `projections status` can show it
//!   from another process.
//! - Who holds a lease and until when is readable ([`ViewStore::lease`]); a lease is only ever
//!   taken from a live holder by waiting for it to expire, or from a holder whose process is
//!   provably gone by [`ViewStore::take_over`], which names the holder it replaces.

use std::time::Duration;

use async_trait::async_trait;
use keel::{Offset, Partition, Topic};

use crate::error::{EventRef, Result};

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// One generation of one projection's view.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewId {
    /// The projection's name.
    pub name: String,
    /// The generation: 1 for the first build, then 2, 3… for each rebuild beside it.
    pub generation: u64,
}

impl std::fmt::Display for ViewId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.name, self.generation)
    }
}

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewState {
    /// Being built beside the active one; readers do not see it.
    Building,
    /// The one readers see.
    Active,
}

impl ViewState {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "building" => Some(Self::Building),
            "active" => Some(Self::Active),
            _ => None,
        }
    }
}

/// A generation and the code version that builds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Generation {
    /// The projection's name.
    pub name: String,
    /// The generation number.
    pub generation: u64,
    /// The projection's code version that builds it.
    pub version: u32,
    /// Building or active.
    pub state: ViewState,
    /// Why its runner last stopped on an error, unless a runner has started on it since.
    pub stopped: Option<Stopped>,
}

/// Why a generation's runner stopped: recorded by the runner, shown by `projections status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stopped {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The error, with its causes (cut to [`Stopped::MAX_ERROR_BYTES`]).
    pub error: String,
}

impl Stopped {
    /// The most bytes of an error a store keeps.
    pub const MAX_ERROR_BYTES: usize = 4096;

    /// A stop now, on `error` (its message and causes, joined by ": ").
    pub fn now(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = error.to_string();
        let mut cause = error.source();
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        if text.len() > Self::MAX_ERROR_BYTES {
            let end = (0..=Self::MAX_ERROR_BYTES)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(end);
            text.push('…');
        }
        Self {
            at_ms: now_ms(),
            error: text,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Who holds a projection's lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    /// The runner holding it: `<runner>#<claim>@<host>:<pid>` for keel's runners (see
    /// [`RunnerConfig::owner`](crate::RunnerConfig::owner)).
    pub owner: String,
    /// When the lease runs out unless renewed, in milliseconds since the Unix epoch (in the
    /// past for a lease its holder never released).
    pub expires_at_ms: i64,
}

impl Generation {
    /// Its id.
    pub fn id(&self) -> ViewId {
        ViewId {
            name: self.name.clone(),
            generation: self.generation,
        }
    }
}

/// The right to write a projection, held by one runner until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The projection.
    pub name: String,
    /// The runner holding it.
    pub owner: String,
    /// How long each claim or commit extends it.
    pub ttl: Duration,
}

/// A checkpoint move in a commit: from the offset the runner read, to the next one to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMove {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
    /// The checkpoint the runner read (the commit fails if it is not that any more).
    pub from: Offset,
    /// The new checkpoint.
    pub to: Offset,
}

/// An event set aside because it could not be projected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Parked {
    /// Which event.
    #[serde(serialize_with = "ser_event_ref")]
    pub event: EventRef,
    /// Why (the error's message, with its sources).
    pub error: String,
}

fn ser_event_ref<S: serde::Serializer>(e: &EventRef, s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("EventRef", 6)?;
    st.serialize_field("topic", e.topic.as_str())?;
    st.serialize_field("partition", &e.partition.0)?;
    st.serialize_field("offset", &e.offset.0)?;
    st.serialize_field("stream", &e.stream.to_string())?;
    st.serialize_field("version", &e.version.0)?;
    st.serialize_field("event_type", &e.event_type)?;
    st.end()
}

/// What a batch commits besides the view changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Checkpoint moves, compare-and-set.
    pub moves: Vec<CheckpointMove>,
    /// Events to park.
    pub park: Vec<Parked>,
    /// Parked events now applied, to remove from the parked list.
    pub unpark: Vec<(Topic, Partition, Offset)>,
}

/// A store of projection views. See the [module docs](self) for the guarantees.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel view store",
    note = "use `keel_projections::store::memory::MemoryViews`, `keel_projections::store::sqlite::SqliteViews` or `keel_projections::store::postgres::PostgresViews`"
)]
#[async_trait]
pub trait ViewStore: Send + Sync + 'static {
    /// An open batch: the transaction a projection writes its view changes in.
    type Batch: Send;

    /// The projection's generations, oldest first.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn generations(&self, name: &str) -> Result<Vec<Generation>>;

    /// Registers a new generation, in state [`ViewState::Building`], and returns it. Its
    /// checkpoints start at offset 0.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn create_generation(&self, name: &str, version: u32) -> Result<Generation>;

    /// Makes `view` the active generation and drops every other generation of the projection,
    /// with its data, checkpoints and parked events, in one step.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn activate(&self, view: &ViewId) -> Result<()>;

    /// Drops one generation with its data, checkpoints and parked events.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn drop_generation(&self, view: &ViewId) -> Result<()>;

    /// Claims (or renews) the projection's lease for `owner`, for `ttl`.
    ///
    /// # Errors
    ///
    /// [`Error::Held`](crate::Error::Held) when another owner holds an unexpired lease.
    async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease>;

    /// Takes the projection's lease over from `from`, expired or not, for `owner` — only if it
    /// still names `from` (or nobody). Runners do this only when `from`'s process is provably
    /// gone; the checkpoint compare-and-set keeps a mistaken take-over safe all the same.
    ///
    /// # Errors
    ///
    /// [`Error::Held`](crate::Error::Held) when the lease names another owner by now.
    async fn take_over(&self, name: &str, from: &str, owner: &str, ttl: Duration) -> Result<Lease>;

    /// Who holds the projection's lease and until when, if anyone does.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn lease(&self, name: &str) -> Result<Option<LeaseHolder>>;

    /// Records why the generation's runner stopped, or clears the record (`None`). Does
    /// nothing for a generation that does not exist.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn set_stopped(&self, view: &ViewId, stopped: Option<&Stopped>) -> Result<()>;

    /// Gives the lease up, if `lease` still holds it.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// The generation's checkpoints (partitions never committed are absent: offset 0).
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn checkpoints(&self, view: &ViewId) -> Result<Vec<keel::Checkpoint>>;

    /// Opens a batch on a generation.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn begin(&self, view: &ViewId) -> Result<Self::Batch>;

    /// Commits a batch's view changes with its checkpoint moves and parked events, if the
    /// lease is still this runner's and every checkpoint is still where the runner read it.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) (nothing kept), or a store failure
    /// (nothing kept).
    async fn commit(&self, batch: Self::Batch, lease: &Lease, commit: Commit) -> Result<()>;

    /// Discards a batch.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn rollback(&self, batch: Self::Batch) -> Result<()>;

    /// The generation's parked events, in log order per partition.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn parked(&self, view: &ViewId) -> Result<Vec<Parked>>;
}
