//! Which partitions a Kafka store owns: taking one over (fence, then read), letting it go,
//! and what a service needs from an owned partition (fencing in a rebalance callback,
//! attaching the commands partition, answering routed commands).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::ids::{Offset, Partition, Topic};
use crate::store::{Error, Result, validate};

use super::topics::Admin;
use super::writer::{Ctx, Job, Owned};
use super::{KafkaStore, commands, release, takeover};

impl KafkaStore {
    /// The partitions this store owns (writes and serves from local state), in order.
    pub fn owned_partitions(&self) -> Vec<(Topic, Partition)> {
        let mut owned: Vec<_> = self
            .read_owned()
            .iter()
            .filter(|(_, o)| !o.shared.fenced.load(Ordering::Acquire))
            .map(|(k, _)| k.clone())
            .collect();
        owned.sort();
        owned
    }

    /// Whether this store owns a partition now: it writes it and serves its streams. (A
    /// fenced writer does not own its partition any more.)
    pub fn owns(&self, topic: &Topic, partition: Partition) -> bool {
        self.read_owned()
            .get(&(topic.clone(), partition))
            .is_some_and(|o| !o.shared.fenced.load(Ordering::Acquire))
    }

    /// The settings, counters and names every writer of this store shares.
    pub(crate) fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// The partition count of `topic`, creating it with `partitions` when missing (and
    /// checking it has that many when it exists).
    pub(crate) async fn resolve(&self, topic: &Topic, partitions: u32) -> Result<u32> {
        validate::check_partitions(topic, partitions)?;
        Ok(self
            .partitions(topic, true, Some(partitions))
            .await?
            .unwrap_or(partitions))
    }

    /// The partition count of a topic known to this store, resolving it (without creating
    /// it) when needed.
    pub(crate) async fn partition_count(&self, topic: &Topic) -> Result<u32> {
        self.partitions(topic, false, None)
            .await?
            .ok_or_else(|| Error::UnknownTopic {
                topic: topic.clone(),
            })
    }

    /// Topic creation and inspection.
    pub(crate) fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Fences the earlier writers of a partition, blocking (in a consumer group's rebalance
    /// callback): the next [`take_partition`](Self::take_partition) of it reads with this
    /// producer. Fencing before the consumer group hands the partition's committed command
    /// offsets over means no earlier owner can commit past them any more.
    pub(crate) fn fence_blocking(&self, topic: &Topic, partition: Partition) -> Result<()> {
        if self.owns(topic, partition) {
            return Ok(());
        }
        let producer = takeover::fence_blocking(&self.ctx, topic, partition)?;
        self.fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((topic.clone(), partition), producer);
        Ok(())
    }

    /// Gives an owned partition the commands partition whose consumer offsets commit with
    /// its transactions.
    pub(crate) fn attach_commands(
        &self,
        topic: &Topic,
        partition: Partition,
        offsets: Arc<commands::CommandOffsets>,
    ) -> Result<()> {
        let owned = self
            .read_owned()
            .get(&(topic.clone(), partition))
            .cloned()
            .ok_or_else(|| Error::NotOwner {
                topic: topic.clone(),
                partition,
            })?;
        *owned
            .shared
            .commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(offsets);
        Ok(())
    }

    /// Writes the answer to a routed command that wrote no events, with its consumer
    /// offset, in the partition's next transaction.
    pub(crate) async fn answer(
        &self,
        topic: &Topic,
        partition: Partition,
        answer: commands::Answer,
    ) -> Result<()> {
        let owned = self.owned(topic, partition)?;
        Self::send(&owned, |reply| Job::Answer { answer, reply }).await
    }

    /// An owned partition's figures for metrics: the offset after its writer's last commit,
    /// and the routed commands consumed and not answered yet.
    pub(crate) fn partition_figures(
        &self,
        topic: &Topic,
        partition: Partition,
    ) -> Option<(Offset, usize)> {
        let owned = self
            .read_owned()
            .get(&(topic.clone(), partition))
            .cloned()?;
        let end = Offset(owned.shared.committed_end.load(Ordering::Acquire));
        let pending = owned.shared.commands().map_or(0, |c| c.pending());
        Some((end, pending))
    }

    /// The writer of an owned partition (not fenced).
    pub(super) fn owned(&self, topic: &Topic, partition: Partition) -> Result<Arc<Owned>> {
        let key = (topic.clone(), partition);
        let owned = self.read_owned().get(&key).cloned();
        match owned {
            Some(owned) if owned.shared.fenced.load(Ordering::Acquire) => {
                // Fenced: another writer owns the partition now. Let it go.
                let removed = {
                    let mut map = self.write_owned();
                    match map.get(&key) {
                        Some(o) if Arc::ptr_eq(o, &owned) => map.remove(&key),
                        _ => None,
                    }
                };
                if let Some(removed) = removed {
                    tracing::info!(%topic, %partition, "fenced by another writer: releasing the partition");
                    tokio::spawn(async move { release(&removed).await });
                }
                Err(Error::NotOwner {
                    topic: topic.clone(),
                    partition,
                })
            }
            Some(owned) => Ok(owned),
            None => Err(Error::NotOwner {
                topic: topic.clone(),
                partition,
            }),
        }
    }

    pub(super) fn read_owned(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(Topic, Partition), Arc<Owned>>> {
        self.owned
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn write_owned(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(Topic, Partition), Arc<Owned>>> {
        self.owned
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a partition: fences any earlier writer, reads the partition to its end and
    /// starts writing it. Taking a partition this store owns already does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], [`Error::UnknownPartition`], or a broker failure (among
    /// them [`KafkaStoreError::TransactionsRefused`](super::KafkaStoreError::TransactionsRefused)).
    pub async fn take_partition(&self, topic: &Topic, partition: Partition) -> Result<()> {
        let partitions =
            self.partitions(topic, false, None)
                .await?
                .ok_or_else(|| Error::UnknownTopic {
                    topic: topic.clone(),
                })?;
        validate::check_partition(topic, partition, partitions)?;
        let _guard = self.resolving.lock().await;
        self.take(topic, partitions, partition).await
    }

    pub(super) async fn take(
        &self,
        topic: &Topic,
        partitions: u32,
        partition: Partition,
    ) -> Result<()> {
        let key = (topic.clone(), partition);
        // Not owned, or fenced (and let go just now): take it.
        if self.owned(topic, partition).is_ok() {
            return Ok(());
        }
        let fenced = self
            .fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        let owned = takeover::take(
            Arc::clone(&self.ctx),
            topic.clone(),
            partitions,
            partition,
            fenced,
        )
        .await?;
        self.write_owned().insert(key, Arc::new(owned));
        Ok(())
    }

    /// Releases a partition: finishes its queued appends, writes a writer-state snapshot so
    /// the next owner reads a short tail, and stops writing it. Later appends to its streams
    /// fail with [`Error::NotOwner`]. A transaction whose outcome was unknown is not
    /// recovered any more (that would fence the next owner): its callers were told to retry.
    pub async fn release_partition(&self, topic: &Topic, partition: Partition) {
        let key = (topic.clone(), partition);
        self.fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key);
        let owned = self.write_owned().remove(&key);
        if let Some(owned) = owned {
            owned.shared.assigned.store(false, Ordering::Release);
            release(&owned).await;
        }
    }

    /// Releases every partition (see [`release_partition`](Self::release_partition)) and
    /// waits for the writers to stop. Later calls fail with [`Error::NotOwner`].
    pub async fn close(&self) {
        let all: Vec<Arc<Owned>> = self.write_owned().drain().map(|(_, o)| o).collect();
        futures::future::join_all(all.iter().map(|o| release(o))).await;
    }
}
