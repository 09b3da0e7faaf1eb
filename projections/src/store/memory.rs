//! Views in memory: a value of your type per generation, for tests, caches and benches.
//!
//! A batch holds the store's lock and hands the projection `&mut V`. It starts from a copy of
//! the view (`V: Clone`), which a rollback (a handler error, a lost lease) restores: so keep
//! memory views small, or make `V` a structure whose clones are cheap (`Arc`-shared or
//! persistent maps). Nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use keel::{Checkpoint, Offset, Partition, Topic};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::error::{Error, Result};
use crate::store::{
    Commit, Generation, Lease, LeaseHolder, Parked, Stopped, ViewId, ViewState, ViewStore, now_ms,
};

struct Slot<V> {
    info: Generation,
    data: V,
    checkpoints: HashMap<(Topic, Partition), Offset>,
    parked: BTreeMap<(Topic, Partition, Offset), Parked>,
}

struct Inner<V> {
    slots: BTreeMap<(String, u64), Slot<V>>,
    leases: HashMap<String, (String, Instant)>,
    last_generation: HashMap<String, u64>,
}

/// Views held in memory, one `V` per generation. Cheap to clone: clones share the views.
pub struct MemoryViews<V> {
    inner: Arc<Mutex<Inner<V>>>,
}

impl<V> Clone for MemoryViews<V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V: Default + Send + 'static> Default for MemoryViews<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> std::fmt::Debug for MemoryViews<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryViews").finish_non_exhaustive()
    }
}

impl<V: Default + Send + 'static> MemoryViews<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                slots: BTreeMap::new(),
                leases: HashMap::new(),
                last_generation: HashMap::new(),
            })),
        }
    }

    /// Reads the active generation of projection `name`, if it has one.
    pub async fn read<R>(&self, name: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        let inner = self.inner.lock().await;
        inner
            .slots
            .iter()
            .find(|((n, _), s)| n == name && s.info.state == ViewState::Active)
            .map(|(_, s)| f(&s.data))
    }
}

/// An open batch on a [`MemoryViews`] generation: derefs to the view value.
pub struct MemoryBatch<V: Default> {
    guard: OwnedMutexGuard<Inner<V>>,
    key: (String, u64),
    slot: Option<Slot<V>>,
    /// The view as it was when the batch began: what a rollback restores.
    before: Option<V>,
}

impl<V: Default> MemoryBatch<V> {
    fn slot(&self) -> &Slot<V> {
        // Present from `begin` until the batch is committed, rolled back or dropped.
        self.slot
            .as_ref()
            .unwrap_or_else(|| unreachable!("a batch holds its slot until it is finished"))
    }

    /// Puts the slot back, kept as is or restored to how it was at the start of the batch.
    fn finish(mut self, keep: bool) {
        if let Some(mut slot) = self.slot.take() {
            if !keep && let Some(before) = self.before.take() {
                slot.data = before;
            }
            let key = self.key.clone();
            self.guard.slots.insert(key, slot);
        }
    }
}

impl<V: Default> Deref for MemoryBatch<V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.slot().data
    }
}

impl<V: Default> DerefMut for MemoryBatch<V> {
    fn deref_mut(&mut self) -> &mut V {
        &mut self
            .slot
            .as_mut()
            .unwrap_or_else(|| unreachable!("a batch holds its slot until it is finished"))
            .data
    }
}

impl<V: Default> Drop for MemoryBatch<V> {
    fn drop(&mut self) {
        // A batch dropped without commit is rolled back: restore, then put back.
        if let Some(mut slot) = self.slot.take() {
            if let Some(before) = self.before.take() {
                slot.data = before;
            }
            self.guard.slots.insert(self.key.clone(), slot);
        }
    }
}

/// Whether `lease` still names the owner. An expired lease nobody else claimed is still its
/// owner's: safety comes from the owner and checkpoint checks, not from the clock.
fn lease_is<V>(inner: &Inner<V>, lease: &Lease) -> bool {
    inner
        .leases
        .get(&lease.name)
        .is_some_and(|(owner, _)| *owner == lease.owner)
}

#[async_trait]
impl<V: Default + Clone + Send + 'static> ViewStore for MemoryViews<V> {
    type Batch = MemoryBatch<V>;

    async fn generations(&self, name: &str) -> Result<Vec<Generation>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .slots
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, s)| s.info.clone())
            .collect())
    }

    async fn create_generation(&self, name: &str, version: u32) -> Result<Generation> {
        let mut inner = self.inner.lock().await;
        let last = inner.last_generation.entry(name.to_owned()).or_insert(0);
        *last += 1;
        let info = Generation {
            name: name.to_owned(),
            generation: *last,
            version,
            state: ViewState::Building,
            stopped: None,
        };
        inner.slots.insert(
            (name.to_owned(), info.generation),
            Slot {
                info: info.clone(),
                data: V::default(),
                checkpoints: HashMap::new(),
                parked: BTreeMap::new(),
            },
        );
        Ok(info)
    }

    async fn activate(&self, view: &ViewId) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let key = (view.name.clone(), view.generation);
        if !inner.slots.contains_key(&key) {
            return Err(Error::store(
                "activate a generation",
                format!("generation {view} does not exist"),
            ));
        }
        inner
            .slots
            .retain(|(n, g), _| *n != view.name || *g == view.generation);
        if let Some(slot) = inner.slots.get_mut(&key) {
            slot.info.state = ViewState::Active;
        }
        Ok(())
    }

    async fn drop_generation(&self, view: &ViewId) -> Result<()> {
        let mut inner = self.inner.lock().await;
        inner.slots.remove(&(view.name.clone(), view.generation));
        Ok(())
    }

    async fn claim(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        if let Some((holder, expires)) = inner.leases.get(name)
            && holder != owner
            && *expires > now
        {
            return Err(Error::Held {
                projection: name.to_owned(),
                owner: holder.clone(),
                remaining_ms: u64::try_from((*expires - now).as_millis()).unwrap_or(u64::MAX),
            });
        }
        inner
            .leases
            .insert(name.to_owned(), (owner.to_owned(), now + ttl));
        Ok(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            ttl,
        })
    }

    async fn take_over(&self, name: &str, from: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        if let Some((holder, expires)) = inner.leases.get(name)
            && holder != from
            && holder != owner
        {
            return Err(Error::Held {
                projection: name.to_owned(),
                owner: holder.clone(),
                remaining_ms: u64::try_from(expires.saturating_duration_since(now).as_millis())
                    .unwrap_or(u64::MAX),
            });
        }
        inner
            .leases
            .insert(name.to_owned(), (owner.to_owned(), now + ttl));
        Ok(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            ttl,
        })
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseHolder>> {
        let inner = self.inner.lock().await;
        let now = Instant::now();
        let to_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Ok(inner.leases.get(name).map(|(owner, expires)| {
            let expires_at_ms = if *expires >= now {
                now_ms().saturating_add(to_ms(*expires - now))
            } else {
                now_ms().saturating_sub(to_ms(now - *expires))
            };
            LeaseHolder {
                owner: owner.clone(),
                expires_at_ms,
            }
        }))
    }

    async fn set_stopped(&self, view: &ViewId, stopped: Option<&Stopped>) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if let Some(slot) = inner.slots.get_mut(&(view.name.clone(), view.generation)) {
            slot.info.stopped = stopped.cloned();
        }
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let mut inner = self.inner.lock().await;
        if inner
            .leases
            .get(&lease.name)
            .is_some_and(|(owner, _)| *owner == lease.owner)
        {
            inner.leases.remove(&lease.name);
        }
        Ok(())
    }

    async fn checkpoints(&self, view: &ViewId) -> Result<Vec<Checkpoint>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .slots
            .get(&(view.name.clone(), view.generation))
            .map(|s| {
                s.checkpoints
                    .iter()
                    .map(|((topic, partition), next)| Checkpoint {
                        topic: topic.clone(),
                        partition: *partition,
                        next: *next,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn begin(&self, view: &ViewId) -> Result<Self::Batch> {
        let mut guard = Arc::clone(&self.inner).lock_owned().await;
        let key = (view.name.clone(), view.generation);
        let slot = guard.slots.remove(&key).ok_or_else(|| {
            Error::store("begin a batch", format!("generation {view} does not exist"))
        })?;
        let before = Some(slot.data.clone());
        Ok(MemoryBatch {
            guard,
            key,
            slot: Some(slot),
            before,
        })
    }

    async fn commit(&self, mut batch: Self::Batch, lease: &Lease, commit: Commit) -> Result<()> {
        let lost = || Error::LeaseLost {
            projection: lease.name.clone(),
        };
        if !lease_is(&batch.guard, lease) {
            batch.finish(false);
            return Err(lost());
        }
        let moved = commit.moves.iter().any(|m| {
            batch
                .slot()
                .checkpoints
                .get(&(m.topic.clone(), m.partition))
                .copied()
                .unwrap_or_default()
                != m.from
        });
        if moved {
            batch.finish(false);
            return Err(lost());
        }
        if let Some(slot) = batch.slot.as_mut() {
            for m in commit.moves {
                slot.checkpoints.insert((m.topic, m.partition), m.to);
            }
            for p in commit.park {
                slot.parked.insert(
                    (p.event.topic.clone(), p.event.partition, p.event.offset),
                    p,
                );
            }
            for key in commit.unpark {
                slot.parked.remove(&key);
            }
        }
        let expires = Instant::now() + lease.ttl;
        batch
            .guard
            .leases
            .insert(lease.name.clone(), (lease.owner.clone(), expires));
        batch.finish(true);
        Ok(())
    }

    async fn rollback(&self, batch: Self::Batch) -> Result<()> {
        batch.finish(false);
        Ok(())
    }

    async fn parked(&self, view: &ViewId) -> Result<Vec<Parked>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .slots
            .get(&(view.name.clone(), view.generation))
            .map(|s| s.parked.values().cloned().collect())
            .unwrap_or_default())
    }
}
