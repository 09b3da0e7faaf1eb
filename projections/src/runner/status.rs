//! Where a projection stands: its generations (and why one stopped), its lease, its lag per
//! partition (counted in records, also where offsets are not dense, as on Kafka) with the
//! runner holding the partition when instances share the projection, and its parked events.

use std::collections::HashMap;

use keel::{EventStore, Offset, Partition, RecordedEvent, Topic};

use super::Runner;
use crate::error::Result;
use crate::holder;
use crate::projection::Projection;
use crate::store::{Generation, Parked, ViewState, ViewStore, now_ms};

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the projection will read.
    pub checkpoint: u64,
    /// The next offset the log will write (on Kafka, the partition's last stable offset).
    pub head: u64,
    /// Records still to read: `head - checkpoint` on dense logs; counted on logs whose
    /// offsets skip values (Kafka's transaction markers take offsets).
    pub lag: u64,
    /// The runner feeding this partition, when instances share the projection (see
    /// [`Runner::run_shared`]): the holder of the partition's lease.
    pub owner: Option<String>,
}

/// The records of a partition with offsets in `[from, head)`: `head - from` where offsets
/// are dense, else counted by reading, up to `cap` (the second value says the count stopped
/// there).
pub(super) async fn records_between(
    log: &dyn EventStore,
    topic: &Topic,
    partition: Partition,
    from: Offset,
    head: Offset,
    cap: u64,
) -> Result<(u64, bool)> {
    if log.capabilities().dense_offsets {
        return Ok((head.0.saturating_sub(from.0), false));
    }
    let mut count = 0u64;
    let mut at = from;
    while at < head {
        if count >= cap {
            return Ok((count, true));
        }
        let page = log.read_partition(topic, partition, at, 1000).await?;
        let Some(last) = page.last().map(RecordedEvent::offset) else {
            break;
        };
        count += page.iter().filter(|r| r.offset() < head).count() as u64;
        at = last.next();
    }
    Ok((count, false))
}

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    /// The projection's name.
    pub name: String,
    /// The version of the code.
    pub code_version: u32,
    /// The active generation, if any.
    pub active: Option<Generation>,
    /// A generation being built beside it, if any.
    pub building: Option<Generation>,
    /// Who holds the projection's lease, if anyone.
    pub lease: Option<LeaseStatus>,
    /// Lag per partition of the active generation (or the building one when none is active;
    /// from offset 0 when the projection was never built).
    pub partitions: Vec<PartitionLag>,
    /// Total lag.
    pub lag: u64,
    /// Parked events.
    pub parked: Vec<Parked>,
}

/// Who holds a projection's lease, as [`Status`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseStatus {
    /// The holder: `<runner>#<claim>@<host>:<pid>` for keel's runners.
    pub owner: String,
    /// When the lease runs out unless renewed, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
    /// How long it still runs (0 once expired: the next claim takes it).
    pub remaining_ms: u64,
    /// Whether the holder is a process of this host that is gone: the next claim takes the
    /// lease over at once.
    pub holder_gone: bool,
}

impl<P: Projection> Runner<P> {
    /// Where the projection stands: generations, lag per partition, parked events.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn status(&self) -> Result<Status> {
        let generations = self.views.generations(P::NAME).await?;
        let active = generations
            .iter()
            .find(|g| g.state == ViewState::Active)
            .cloned();
        let building = generations
            .iter()
            .find(|g| g.state == ViewState::Building)
            .cloned();
        let shown = active.as_ref().or(building.as_ref());
        let checkpoints: HashMap<(Topic, Partition), Offset> = match shown {
            Some(g) => self
                .views
                .checkpoints(&g.id())
                .await?
                .into_iter()
                .map(|c| ((c.topic, c.partition), c.next))
                .collect(),
            // Never built: everything in the log is still to read.
            None => HashMap::new(),
        };
        let mut partitions = Vec::new();
        for (topic, partition) in self.partitions().await? {
            let head = self.log.head(&topic, partition).await?;
            let checkpoint = checkpoints
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or_default();
            let (lag, _) = records_between(
                self.log.as_ref(),
                &topic,
                partition,
                checkpoint,
                head,
                u64::MAX,
            )
            .await?;
            let owner = self
                .views
                .lease(&super::shared::partition_lease(P::NAME, &topic, partition))
                .await?
                .filter(|l| l.expires_at_ms > now_ms())
                .map(|l| l.owner);
            partitions.push(PartitionLag {
                topic: topic.to_string(),
                partition: partition.0,
                checkpoint: checkpoint.0,
                head: head.0,
                lag,
                owner,
            });
        }
        let parked: Vec<Parked> = match shown {
            Some(g) => self.views.parked(&g.id()).await?,
            None => Vec::new(),
        };
        let lease = self.views.lease(P::NAME).await?.map(|l| LeaseStatus {
            remaining_ms: u64::try_from(l.expires_at_ms.saturating_sub(now_ms())).unwrap_or(0),
            holder_gone: holder::is_gone(&l.owner),
            owner: l.owner,
            expires_at_ms: l.expires_at_ms,
        });
        Ok(Status {
            name: P::NAME.to_owned(),
            code_version: P::VERSION,
            lag: partitions.iter().map(|p| p.lag).sum(),
            active,
            building,
            lease,
            partitions,
            parked,
        })
    }
}
