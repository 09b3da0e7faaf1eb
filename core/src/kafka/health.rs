//! Who owns each partition, how far its writer got, and what waits for it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::EventStore as _;
use crate::ids::{Offset, Partition, Topic};
use crate::store::{Error, Result};

use super::service::Service;

/// One partition of a served topic, as [`Service::health`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionHealth {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
    /// The instance the consumer group assigned the partition to (its client id), `None`
    /// while nobody holds it (a rebalance, or every instance gone).
    pub owner: Option<String>,
    /// The offset after the writer's last committed record: the partition's last stable
    /// offset (positions are Kafka offsets; markers take some).
    pub end: Offset,
    /// Routed commands sent to the partition and not answered yet (the commands topic's end
    /// minus the group's committed offset).
    pub pending_commands: u64,
}

impl Service {
    /// Each partition of the topics this instance serves: its owner, its writer's end and
    /// the commands waiting for it, read from the brokers (the group coordinator's view of
    /// the assignment, the committed offsets, the partitions' ends).
    ///
    /// # Errors
    ///
    /// A broker failure, or [`Error::Closed`] after [`close`](Self::close).
    pub async fn health(&self) -> Result<Vec<PartitionHealth>> {
        let inner = &self.inner;
        let member = inner.member().ok_or(Error::Closed)?;
        let ctx = Arc::clone(inner.store.ctx());
        let topics = inner.topics();
        let mut commands = Vec::new();
        for topic in &topics {
            let n = inner.store.partition_count(topic).await?;
            for p in 0..n {
                commands.push((ctx.names.commands(topic), i32::try_from(p).unwrap_or(0)));
            }
        }
        let (group, timeout) = (inner.group.clone(), ctx.timeout);
        let asked = commands.clone();
        let (members, committed) = tokio::task::spawn_blocking(move || {
            Ok::<_, Error>((
                member.describe(&group, timeout)?,
                member.committed(&asked, timeout)?,
            ))
        })
        .await
        .map_err(|e| Error::backend("describe the consumer group", e))??;
        let owners: HashMap<(String, i32), String> = members
            .into_iter()
            .flat_map(|(client, partitions)| {
                partitions.into_iter().map(move |tp| (tp, client.clone()))
            })
            .collect();
        let committed: HashMap<(String, i32), Option<i64>> = committed.into_iter().collect();
        let mut out = Vec::with_capacity(commands.len());
        for topic in &topics {
            let n = inner.store.partition_count(topic).await?;
            let kafka = ctx.names.commands(topic);
            for p in 0..n {
                let partition = Partition(p);
                let key = (kafka.clone(), i32::try_from(p).unwrap_or(0));
                let sent = ctx.reader.end(&kafka, partition).await?;
                let done = committed
                    .get(&key)
                    .copied()
                    .flatten()
                    .map_or(0, |o| u64::try_from(o).unwrap_or(0));
                out.push(PartitionHealth {
                    topic: topic.clone(),
                    partition,
                    owner: owners.get(&key).cloned(),
                    end: inner.store.head(topic, partition).await?,
                    pending_commands: sent.0.saturating_sub(done),
                });
            }
        }
        Ok(out)
    }
}
