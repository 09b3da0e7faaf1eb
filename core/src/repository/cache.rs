//! The hot-aggregate cache and the per-aggregate queue.
//!
//! Each aggregate a repository touches gets a [`Slot`]: an async mutex around its cached state.
//! A command holds its aggregate's slot from decision to commit, so commands on one aggregate
//! in one process queue behind each other instead of racing to the store (the single-writer
//! principle, per aggregate): they never conflict with each other.
//!
//! The state left in a slot is a true state of the stream at the version it carries: it is
//! only ever the fold of committed events. A command starts from it without reading the store;
//! if another process appended since, the append's expected version fails with a conflict, the
//! slot catches up by reading only the newer events, and the command is decided again.
//!
//! Slots live in a least-recently-used map bounded by a count of aggregates, keyed by the
//! aggregate's id (a repository serves one topic): a command on a cached aggregate finds its
//! slot, and the validated stream id kept in it, without building or checking a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hashlink::LruCache;

use crate::ids::{StreamId, StreamVersion};

/// An aggregate's state at a version of its stream.
#[derive(Debug)]
pub(super) struct Entry<A> {
    pub(super) state: A,
    pub(super) version: StreamVersion,
    /// The version of the latest snapshot known to be stored (0: none).
    pub(super) snapshot_version: StreamVersion,
}

impl<A: Default> Entry<A> {
    /// The state of a stream with no events.
    pub(super) fn new() -> Self {
        Self {
            state: A::default(),
            version: StreamVersion::INITIAL,
            snapshot_version: StreamVersion::INITIAL,
        }
    }
}

/// One aggregate's place in the cache: its stream, the lock commands on it queue behind, and
/// its state when one is cached.
pub(super) struct Slot<A> {
    pub(super) stream: StreamId,
    pub(super) entry: tokio::sync::Mutex<Option<Entry<A>>>,
}

/// Counters of the aggregate cache, from [`Repository::cache_stats`](super::Repository::cache_stats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Commands that found their aggregate's state cached.
    pub hits: u64,
    /// Commands that loaded their aggregate from the store.
    pub misses: u64,
    /// Aggregates in the cache now.
    pub entries: usize,
    /// The most aggregates it keeps.
    pub capacity: usize,
}

impl CacheStats {
    /// Hits over lookups, from 0 to 1 (0 before the first lookup).
    pub fn hit_rate(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

/// How often the hit rate is reported through `tracing`, in lookups.
const REPORT_EVERY: u64 = 16_384;

pub(super) struct Cache<A> {
    slots: Mutex<LruCache<Arc<str>, Arc<Slot<A>>, foldhash::fast::RandomState>>,
    capacity: usize,
    /// Whether states are kept between commands (slots are kept either way, for queueing).
    keep_states: bool,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<A> Cache<A> {
    pub(super) fn new(capacity: usize, keep_states: bool) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: Mutex::new(LruCache::with_hasher(
                capacity,
                foldhash::fast::RandomState::default(),
            )),
            capacity,
            keep_states,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(super) fn keeps_states(&self) -> bool {
        self.keep_states
    }

    /// The slot of aggregate `id`, created with the stream `stream` builds (and checks) when
    /// missing, evicting the least recently used one when full. A slot evicted while a command
    /// holds it stays valid for that command; the next command on that aggregate starts a new
    /// one and reloads.
    ///
    /// # Errors
    ///
    /// What `stream` returns for an id that is not cached.
    pub(super) fn slot<E>(
        &self,
        id: &str,
        stream: impl FnOnce() -> Result<StreamId, E>,
    ) -> Result<Arc<Slot<A>>, E> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(id) {
            return Ok(Arc::clone(slot));
        }
        let stream = stream()?;
        let slot = Arc::new(Slot {
            entry: tokio::sync::Mutex::new(None),
            stream: stream.clone(),
        });
        slots.insert(stream.id_arc(), Arc::clone(&slot));
        Ok(slot)
    }

    /// Counts a lookup and, every [`REPORT_EVERY`] lookups, reports the hit rate.
    pub(super) fn record(&self, kind: &'static str, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        let stats = self.stats_counts();
        if (stats.0 + stats.1).is_multiple_of(REPORT_EVERY) {
            let stats = self.stats();
            tracing::debug!(
                kind,
                hits = stats.hits,
                misses = stats.misses,
                hit_rate = stats.hit_rate(),
                entries = stats.entries,
                "aggregate cache"
            );
        }
    }

    fn stats_counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub(super) fn stats(&self) -> CacheStats {
        let (hits, misses) = self.stats_counts();
        CacheStats {
            hits,
            misses,
            entries: self
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            capacity: self.capacity,
        }
    }

    /// Forgets every cached state (slots held by running commands finish normally).
    pub(super) fn clear(&self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
