//! Who owns each partition, how far its writer got, and what waits for it.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::EventStore as _;
use crate::ids::{Offset, Partition, Topic};
use crate::store::kafka::KafkaStore;
use crate::store::{Error, Result};

use super::group;
use super::service::Service;

/// One partition of a served topic, as [`health`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionHealth {
    /// The topic.
    pub topic: Topic,
    /// The partition.
    pub partition: Partition,
    /// The instance the consumer group assigned the partition to (its id), `None` while
    /// nobody holds it (a rebalance, or every instance gone).
    pub owner: Option<String>,
    /// The offset after the writer's last committed record: the partition's last stable
    /// offset (positions are Kafka offsets; markers take some).
    pub end: Offset,
    /// Routed commands sent to the partition and not answered yet (the commands topic's end
    /// minus the group's committed offset).
    pub pending_commands: u64,
}

/// Each partition of `topics`, as the instances of the service `store`'s group see them:
/// its owner, its writer's end and the routed commands waiting for it, read from the
/// brokers (the group coordinator's view of the assignment, the committed offsets, the
/// partitions' ends). It does not join the group: any process can ask, such as a command
/// line that shows a service's health.
///
/// ```no_run
/// use keel::Topic;
/// use keel::store::kafka::KafkaStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = KafkaStore::builder("127.0.0.1:9092").group("bank").own_partitions([]).open().await?;
/// for p in keel::kafka::health(&store, &[Topic::new("account")?]).await? {
///     println!("{} {}: owner {:?}, end {}, {} commands waiting",
///         p.topic, p.partition, p.owner, p.end, p.pending_commands);
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::UnknownTopic`] for a topic that does not exist, or a broker failure.
pub async fn health(store: &KafkaStore, topics: &[Topic]) -> Result<Vec<PartitionHealth>> {
    let ctx = store.ctx();
    let mut commands = Vec::new();
    let mut counts = Vec::with_capacity(topics.len());
    for topic in topics {
        let n = store.partition_count(topic).await?;
        counts.push((topic.clone(), n));
        for p in 0..n {
            commands.push((ctx.names.commands(topic), i32::try_from(p).unwrap_or(0)));
        }
    }
    let (mut config, group, timeout) = (ctx.base.clone(), ctx.group.clone(), ctx.timeout);
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false");
    let asked = commands.clone();
    let (members, committed) = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| Error::backend("create a Kafka consumer", e))?;
        Ok::<_, Error>((
            group::describe(&consumer, &group, timeout)?,
            committed(&consumer, &asked, timeout)?,
        ))
    })
    .await
    .map_err(|e| Error::backend("describe the consumer group", e))??;
    let owners: HashMap<(String, i32), String> = members
        .into_iter()
        .flat_map(|(client, partitions)| partitions.into_iter().map(move |tp| (tp, client.clone())))
        .collect();
    let mut out = Vec::with_capacity(commands.len());
    for (topic, n) in counts {
        let kafka = ctx.names.commands(&topic);
        // No commands topic: no instance ever served the topic (nothing routed, no owner).
        let served = store.admin().partitions(&kafka).await?.is_some();
        for p in 0..n {
            let partition = Partition(p);
            let key = (kafka.clone(), i32::try_from(p).unwrap_or(0));
            let sent = if served {
                ctx.reader.end(&kafka, partition).await?
            } else {
                Offset(0)
            };
            let done = committed.get(&key).copied().flatten().unwrap_or(0);
            out.push(PartitionHealth {
                topic: topic.clone(),
                partition,
                owner: owners.get(&key).cloned(),
                end: store.head(&topic, partition).await?,
                pending_commands: sent.0.saturating_sub(done),
            });
        }
    }
    Ok(out)
}

/// The group's committed offset of each partition (`None` when nothing was committed).
fn committed(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<HashMap<(String, i32), Option<u64>>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| Error::backend("read committed offsets", e))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                rdkafka::Offset::Offset(o) => u64::try_from(o).ok(),
                _ => None,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect())
}

impl Service {
    /// Each partition of the topics this instance serves: see [`health`].
    ///
    /// # Errors
    ///
    /// A broker failure.
    pub async fn health(&self) -> Result<Vec<PartitionHealth>> {
        health(&self.inner.store, &self.inner.topics()).await
    }
}
