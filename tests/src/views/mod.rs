//! The view-store suite: what every [`ViewStore`] must do for the projection runner, written
//! once and run on each store, as `keel::conformance_suite!` runs the event store contract
//! on each backend.
//!
//! ```text
//! keel_tests::view_store_suite!(keel_projections::store::sqlite::SqliteViews);
//! ```
//!
//! A store joins the suite by implementing [`SuiteViews`]: how to make a fresh, empty store
//! (and open it again, from another process where it can), and the suite's own projection,
//! [`Tally`] (a balance and an event count per account of the `ledger` topic), written through
//! the store's batch and read back through the store's consistent read. Then
//! [`view_store_suite!`](crate::view_store_suite) makes one `#[tokio::test]` per case.
//!
//! Each case is a public async function that fails with a message naming the broken guarantee.
//! Where a store cannot honour a case, it says so in a constant of [`SuiteViews`] and the case
//! checks the weaker promise instead, never nothing: a memory store does not survive its
//! process ([`SuiteViews::DURABLE`]), so the crash case kills its runner inside the process
//! rather than killing a child process.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use keel::prelude::*;
use keel::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Offset, Partition, RecordedEvent,
    StreamId, Topic,
};
use keel_projections::store::{Generation, ViewState, ViewStore};
use keel_projections::{BoxError, Envelope, Projection, Runner, RunnerConfig, Status};
use serde::{Deserialize, Serialize};

mod crash;
mod faults;
mod leases;
mod memory;
mod postgres;
mod rebuild;
mod sqlite;

pub use crash::*;
pub use faults::*;
pub use leases::*;
pub use rebuild::*;

/// A view store the suite runs on.
pub trait SuiteViews: ViewStore + Sized {
    /// The store's name on the worker's command line (`memory`, `sqlite`, `postgres`).
    const KIND: &'static str;

    /// Whether the views survive the process that wrote them. The crash case kills a child
    /// process building the view on a durable store; on a store that is not, it aborts the
    /// runner inside the process instead (a batch in progress must leave nothing behind).
    const DURABLE: bool;

    /// Prepares a fresh, empty place for a store (a temporary file, a new database).
    fn create() -> impl Future<Output = anyhow::Result<Place>> + Send;

    /// Opens the store at [`Place::at`] (in another process too, for a durable store). A
    /// store that is not durable is new and empty each time.
    fn open(at: &str) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// Closes the store, waiting for its work to finish.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// The tally's setup in a new generation: its tables, if the store has any, and the
    /// generation's build number, which [`read`](Self::read) returns with the rows.
    fn setup(
        batch: &mut Self::Batch,
        build: u64,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Adds each change to its account's row (creating the row, built by `built_by`, if new).
    fn add(
        batch: &mut Self::Batch,
        changes: &[Change],
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Reads the active generation of the tally, rows and build number in one consistent
    /// read; `None` before its first build.
    fn read(&self) -> impl Future<Output = anyhow::Result<Option<TallyView>>> + Send;

    /// The names of the tally's tables in the store, sorted; `None` for a store without
    /// tables.
    fn tables(&self) -> impl Future<Output = anyhow::Result<Option<Vec<String>>>> + Send;
}

/// Where a fresh store lives, kept for as long as the test runs.
#[derive(Debug)]
pub struct Place {
    /// What [`SuiteViews::open`] takes: a file path, a database URL.
    pub at: String,
    /// The temporary directory holding it, if any (removed when dropped).
    pub dir: Option<tempfile::TempDir>,
}

/// One account's row of the tally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Row {
    /// Credits minus debits.
    pub total: i64,
    /// How many of the account's events were applied.
    pub events: u64,
    /// The projection version that created the row.
    pub built_by: u32,
}

/// The tally as a reader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TallyView {
    /// The build number its generation's setup wrote: a new one for every generation.
    pub build: u64,
    /// Account → row.
    pub rows: BTreeMap<String, Row>,
}

/// A change to one account's row, gathered over a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The account.
    pub account: String,
    /// Added to its total.
    pub total: i64,
    /// Added to its event count.
    pub events: u64,
    /// The version of the code writing it.
    pub built_by: u32,
}

/// The events of the suite's log: one stream per account, on topic `ledger`.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The account was opened.
    Opened,
    /// Money in.
    Credited {
        /// How much.
        amount: u64,
    },
    /// Money out.
    Debited {
        /// How much.
        amount: u64,
    },
}

impl Entry {
    /// What it adds to a total.
    pub fn signed(&self) -> i64 {
        let signed = |amount: u64| i64::try_from(amount).unwrap_or(i64::MAX);
        match self {
            Self::Opened => 0,
            Self::Credited { amount } => signed(*amount),
            Self::Debited { amount } => -signed(*amount),
        }
    }
}

/// The stream kind, and so the topic, of the suite's accounts.
pub const LEDGER: &str = "ledger";

/// The tally's projection name.
pub const TALLY: &str = "tally";

/// The credit [`Tally`] fails on while it is broken.
pub const POISON: u64 = 777_777;

/// The suite's topic.
pub fn ledger() -> Topic {
    Topic::new(LEDGER).unwrap_or_else(|_| unreachable!("`ledger` is a valid topic"))
}

/// The stream of account `id`.
pub fn account(id: &str) -> anyhow::Result<StreamId> {
    Ok(StreamId::new(LEDGER, id)?)
}

/// The id of account number `i`.
pub fn account_id(i: usize) -> String {
    format!("acc-{i:04}")
}

/// Build numbers, new for every generation's setup in this process.
static BUILDS: AtomicU64 = AtomicU64::new(1);

/// The suite's projection: a total and an event count per account, written through
/// [`SuiteViews::add`]. Version `V` marks the rows it creates. It records every event it is
/// fed (outside any transaction), and while [`broken`](Self::broken) it fails on a credit of
/// [`POISON`] after writing the events before it in the batch.
pub struct Tally<S, const V: u32 = 1> {
    /// Every event fed to `apply`, as (partition, offset), in the order fed.
    pub fed: Arc<Mutex<Vec<(u32, u64)>>>,
    /// Fail on the poison while set.
    pub broken: Arc<AtomicBool>,
    store: PhantomData<fn() -> S>,
}

impl<S, const V: u32> Default for Tally<S, V> {
    fn default() -> Self {
        Self {
            fed: Arc::default(),
            broken: Arc::default(),
            store: PhantomData,
        }
    }
}

impl<S, const V: u32> Tally<S, V> {
    /// A tally that fails on the poison (until `broken` is cleared).
    pub fn broken() -> Self {
        let tally = Self::default();
        tally.broken.store(true, Ordering::SeqCst);
        tally
    }

    /// The positions fed so far, sorted, and forgets them.
    pub fn take_fed(&self) -> anyhow::Result<Vec<(u32, u64)>> {
        let mut fed = std::mem::take(
            &mut *self
                .fed
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned lock"))?,
        );
        fed.sort_unstable();
        Ok(fed)
    }
}

/// Sums `events` per account, in order of first appearance.
fn changes(events: &[Envelope<Entry>], built_by: u32) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for e in events {
        let total = e.event.signed();
        if let Some(change) = out.iter_mut().find(|c| c.account == e.id()) {
            change.total += total;
            change.events += 1;
        } else {
            out.push(Change {
                account: e.id().to_owned(),
                total,
                events: 1,
                built_by,
            });
        }
    }
    out
}

impl<S: SuiteViews, const V: u32> Projection for Tally<S, V> {
    type Event = Entry;
    type Store = S;
    const NAME: &'static str = TALLY;
    const VERSION: u32 = V;

    fn topics(&self) -> Vec<Topic> {
        vec![ledger()]
    }

    async fn setup(&self, view: &mut S::Batch) -> Result<(), BoxError> {
        S::setup(view, BUILDS.fetch_add(1, Ordering::SeqCst)).await
    }

    async fn apply(&self, view: &mut S::Batch, events: &[Envelope<Entry>]) -> Result<(), BoxError> {
        self.fed
            .lock()
            .map_err(|_| "poisoned lock")?
            .extend(events.iter().map(|e| (e.partition().0, e.offset().0)));
        let poison = self
            .broken
            .load(Ordering::SeqCst)
            .then(|| {
                events
                    .iter()
                    .position(|e| e.event == Entry::Credited { amount: POISON })
            })
            .flatten();
        let good = events
            .get(..poison.unwrap_or(events.len()))
            .unwrap_or(events);
        S::add(view, &changes(good, V)).await?;
        match poison {
            Some(_) => Err(format!("cannot take a credit of {POISON}").into()),
            None => Ok(()),
        }
    }
}

/// The tally of `records` as version `v` must build it.
pub fn expected<'a>(
    records: impl IntoIterator<Item = &'a RecordedEvent>,
    v: u32,
) -> anyhow::Result<BTreeMap<String, Row>> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for r in records {
        let event: Entry = r.decode()?;
        let row = rows.entry(r.stream.id().to_owned()).or_insert(Row {
            built_by: v,
            ..Row::default()
        });
        row.total += event.signed();
        row.events += 1;
    }
    Ok(rows)
}

/// The guard against hangs: nothing in the suite should come near it.
pub const HANG: Duration = Duration::from_secs(120);

/// Runs `future`, failing with `what` if it hangs.
pub async fn guard<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(HANG, future)
        .await
        .with_context(|| format!("{what} did not finish within {HANG:?}"))
}

/// A small deterministic generator (splitmix64), so a log's content depends on its seed.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A number in `0..n`, different on every call and every run.
pub fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % n.max(1)
}

/// Appends `each` events to every account of `accounts` (an `Opened`, then credits and
/// debits), 25 per append, from 16 concurrent tasks. Returns how many were appended.
pub async fn fill(
    log: &Arc<dyn EventStore>,
    accounts: Range<usize>,
    each: usize,
    seed: u64,
) -> anyhow::Result<u64> {
    const TASKS: usize = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = Arc::clone(log);
        let mine: Vec<usize> = accounts.clone().filter(|i| i % TASKS == task).collect();
        tasks.spawn(async move {
            let mut appended = 0u64;
            for i in mine {
                let stream = account(&account_id(i))?;
                let mut mix = Mix(seed ^ (i as u64).wrapping_mul(0x1000_0000_01B3));
                let mut entries = vec![Entry::Opened];
                while entries.len() < each {
                    let amount = 1 + mix.next() % 500;
                    entries.push(if mix.next().is_multiple_of(3) {
                        Entry::Debited { amount }
                    } else {
                        Entry::Credited { amount }
                    });
                }
                for chunk in entries.chunks(25) {
                    let events = chunk
                        .iter()
                        .map(NewEvent::from_event)
                        .collect::<Result<Vec<_>, _>>()?;
                    log.append(AppendRequest::new(
                        stream.clone(),
                        ExpectedVersion::Any,
                        events,
                    ))
                    .await?;
                    appended += chunk.len() as u64;
                }
            }
            anyhow::Ok(appended)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(total)
}

/// Appends `events` to account `id`, whatever its version: how odd events get in.
pub async fn append_to(
    log: &dyn EventStore,
    id: &str,
    events: Vec<NewEvent>,
) -> anyhow::Result<keel::Appended> {
    Ok(log
        .append(AppendRequest::new(
            account(id)?,
            ExpectedVersion::Any,
            events,
        ))
        .await?)
}

/// How many partitions the `ledger` topic has (0 before it exists).
pub async fn partition_count(log: &dyn EventStore) -> anyhow::Result<u32> {
    Ok(log
        .topics()
        .await?
        .into_iter()
        .find(|t| t.topic == ledger())
        .map_or(0, |t| t.partitions))
}

/// Every record of the `ledger` topic, partition by partition, in offset order.
pub async fn read_log(log: &dyn EventStore) -> anyhow::Result<Vec<RecordedEvent>> {
    let mut out = Vec::new();
    for p in 0..partition_count(log).await? {
        out.extend(
            log.read_partition(&ledger(), Partition(p), Offset(0), usize::MAX >> 1)
                .await?,
        );
    }
    Ok(out)
}

/// (partition, offset) of each record, sorted.
pub fn positions<'a>(records: impl IntoIterator<Item = &'a RecordedEvent>) -> Vec<(u32, u64)> {
    let mut p: Vec<_> = records
        .into_iter()
        .map(|r| (r.partition().0, r.offset().0))
        .collect();
    p.sort_unstable();
    p
}

/// The head of each partition of the `ledger` topic.
pub async fn heads(log: &dyn EventStore) -> anyhow::Result<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for p in 0..partition_count(log).await? {
        out.insert(p, log.head(&ledger(), Partition(p)).await?.0);
    }
    Ok(out)
}

/// The active generation of the tally.
pub async fn active<S: ViewStore>(views: &S) -> anyhow::Result<Option<Generation>> {
    Ok(views
        .generations(TALLY)
        .await?
        .into_iter()
        .find(|g| g.state == ViewState::Active))
}

/// The checkpoint of each partition of the `ledger` topic in the tally's active generation
/// (0 where none was committed).
pub async fn active_checkpoints<S: ViewStore>(
    views: &S,
    log: &dyn EventStore,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    let active = active(views)
        .await?
        .context("the tally has an active generation")?;
    let stored: BTreeMap<u32, u64> = views
        .checkpoints(&active.id())
        .await?
        .into_iter()
        .filter(|c| c.topic == ledger())
        .map(|c| (c.partition.0, c.next.0))
        .collect();
    Ok((0..partition_count(log).await?)
        .map(|p| (p, stored.get(&p).copied().unwrap_or(0)))
        .collect())
}

/// The records of `records` before `checkpoints` (per partition).
pub fn before<'a>(
    records: &'a [RecordedEvent],
    checkpoints: &'a BTreeMap<u32, u64>,
) -> impl Iterator<Item = &'a RecordedEvent> + 'a {
    records.iter().filter(|r| {
        checkpoints
            .get(&r.partition().0)
            .is_some_and(|&c| r.offset().0 < c)
    })
}

/// The tally's rows as readers see them (failing when it has no active generation).
pub async fn rows<S: SuiteViews>(views: &S) -> anyhow::Result<BTreeMap<String, Row>> {
    Ok(views
        .read()
        .await?
        .context("the tally has no active generation")?
        .rows)
}

/// A runner configuration that tails closely with small batches.
pub fn tailing() -> RunnerConfig {
    RunnerConfig {
        batch_size: 64,
        poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    }
}

/// Polls the projection's status until the code's version is active, nothing is being
/// built beside it, and it has no lag.
pub async fn caught_up<P: Projection>(runner: &Runner<P>) -> anyhow::Result<Status> {
    guard(&format!("{} catching up", P::NAME), async {
        loop {
            let status = runner.status().await?;
            if status
                .active
                .as_ref()
                .is_some_and(|g| g.version == P::VERSION)
                && status.building.is_none()
                && status.lag == 0
            {
                return anyhow::Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?
}

/// A fresh store of type `S`, with the place it lives in.
pub async fn fresh<S: SuiteViews>() -> anyhow::Result<(Place, Arc<S>)> {
    let place = S::create().await?;
    let views = Arc::new(S::open(&place.at).await?);
    Ok((place, views))
}

/// A fresh in-memory log whose topics get `partitions` partitions.
pub fn memory_log(partitions: u32) -> Arc<dyn EventStore> {
    Arc::new(keel::store::memory::MemoryStore::with_default_partitions(
        partitions,
    ))
}

/// Instantiates every case of the view-store suite as a `#[tokio::test]` for a
/// [`SuiteViews`] store. The crash case runs the `projection_worker` binary of this package
/// as its child process, so the macro is for `keel-tests`' own test files.
#[macro_export]
macro_rules! view_store_suite {
    ($store:ty) => {
        $crate::view_store_suite!(@cases $store;
            a_rebuild_side_by_side_or_in_place_equals_the_incremental_view,
            reads_during_a_side_by_side_rebuild_see_the_whole_old_view_until_one_switch,
            reads_racing_generation_switches_always_answer,
            a_version_bump_rebuilds_beside_the_old_version_and_an_older_version_refuses_to_run,
            a_restart_resumes_exactly_where_the_last_commit_left_off,
            a_generation_created_but_never_set_up_does_not_wedge_the_projection,
            a_second_runner_is_refused_while_the_first_holds_the_lease,
            a_zombie_runner_cannot_commit,
            take_over_replaces_only_the_named_holder,
            a_commit_into_a_dropped_generation_is_refused,
            a_handler_failure_stops_the_projection_naming_the_event,
            with_park_a_handler_failure_is_parked_and_the_rest_applied_once,
            with_park_an_event_that_does_not_decode_is_parked_and_skipped,
        );

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_view_built_under_repeated_kills_equals_the_log() -> ::anyhow::Result<()> {
            $crate::views::a_view_built_under_repeated_kills_equals_the_log::<$store>(env!(
                "CARGO_BIN_EXE_projection_worker"
            ))
            .await
        }
    };
    (@cases $store:ty; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() -> ::anyhow::Result<()> {
                $crate::views::$case::<$store>().await
            }
        )*
    };
}
