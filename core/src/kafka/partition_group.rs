//! [`PartitionGroup`]: partitions shared by the members of a consumer group, for readers that
//! read the log themselves — several instances of a projection split its partitions this way.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::ids::{Partition, Topic};
use crate::store::Result;
use crate::store::kafka::KafkaStore;

use super::group::{Event, KafkaPartition, Member, MemberConfig};

/// What happened to a [`PartitionGroup`] member's partitions.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupChange {
    /// These partitions are this member's now.
    Assigned(Vec<(Topic, Partition)>),
    /// These partitions are being taken away: stop working on them (finish or roll back what
    /// is in progress), then call [`Revocation::done`]. The group gives them to another
    /// member only then (or after the revoke timeout).
    Revoked(Revocation),
}

/// Partitions being taken from a [`PartitionGroup`] member.
#[derive(Debug)]
pub struct Revocation {
    /// The partitions.
    pub partitions: Vec<(Topic, Partition)>,
    /// `true` when the member was thrown out of the group (it was silent longer than the
    /// session timeout): another member may hold them already.
    pub lost: bool,
    done: std::sync::mpsc::SyncSender<()>,
}

impl Revocation {
    /// Says the partitions are let go (dropping the revocation says the same).
    pub fn done(self) {
        let _ = self.done.try_send(());
    }
}

/// A member of a consumer group over some Keel topics' events, holding partitions without
/// consuming them: the group decides which member reads which partition, and the member
/// reads them itself (from its own checkpoints). Cooperative-sticky assignment: a member
/// joining or leaving moves only the partitions that must move.
///
/// ```no_run
/// use keel::Topic;
/// use keel::kafka::{GroupChange, PartitionGroup};
/// use keel::store::kafka::KafkaStore;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = KafkaStore::builder("127.0.0.1:9092").replication_factor(1).open().await?;
/// let mut group = PartitionGroup::builder(&store, "balances", vec![Topic::new("account")?])
///     .join()
///     .await?;
/// while let Some(change) = group.next().await {
///     match change {
///         GroupChange::Assigned(partitions) => println!("reading {partitions:?}"),
///         GroupChange::Revoked(revocation) => {
///             // Stop reading them (commit or roll back the batch in progress), then:
///             revocation.done();
///         }
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct PartitionGroup {
    member: std::sync::Arc<Member>,
    events: mpsc::Receiver<Event>,
    store_names: crate::store::kafka::Names,
    group: String,
    instance: String,
}

impl std::fmt::Debug for PartitionGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionGroup")
            .field("group", &self.group)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Options of a [`PartitionGroup`]; start from [`PartitionGroup::builder`].
#[derive(Debug)]
#[must_use]
pub struct PartitionGroupBuilder<'a> {
    store: &'a KafkaStore,
    group: String,
    topics: Vec<Topic>,
    instance: Option<String>,
    session_timeout: Duration,
    revoke_timeout: Duration,
}

impl PartitionGroupBuilder<'_> {
    /// This member's id, shown by the group's description (default
    /// `<group>-<pid>-<random>`).
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// How long the group waits for a silent member before giving its partitions to the
    /// others (default 10 s).
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long the group waits for a revoked partition to be let go (default 60 s).
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// Joins the group. The topics must exist.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`](crate::store::Error::UnknownTopic) for a topic that does not
    /// exist, or a broker failure.
    pub async fn join(self) -> Result<PartitionGroup> {
        for topic in &self.topics {
            self.store.partition_count(topic).await?;
        }
        let ctx = self.store.ctx();
        let names = ctx.names.clone();
        let group = format!("{}{}", names.prefix, self.group);
        let instance = self.instance.unwrap_or_else(|| {
            let random = uuid::Uuid::now_v7().simple().to_string();
            let tail = random.get(random.len() - 6..).unwrap_or("0");
            format!("{}-{}-{tail}", self.group, std::process::id())
        });
        let (events, received) = mpsc::channel(64);
        let member = Member::join(
            MemberConfig {
                base: ctx.base.clone(),
                group: group.clone(),
                instance: instance.clone(),
                session_timeout: self.session_timeout,
                topics: self.topics.iter().map(|t| names.events(t)).collect(),
                consume: false,
                revoke_timeout: self.revoke_timeout,
            },
            events,
            None,
        )?;
        Ok(PartitionGroup {
            member: std::sync::Arc::new(member),
            events: received,
            store_names: names,
            group,
            instance,
        })
    }
}

impl PartitionGroup {
    /// Options for joining consumer group `group` (prefixed with the store's topic prefix)
    /// over the events of `topics` in `store`'s cluster.
    pub fn builder(
        store: &KafkaStore,
        group: impl Into<String>,
        topics: Vec<Topic>,
    ) -> PartitionGroupBuilder<'_> {
        PartitionGroupBuilder {
            store,
            group: group.into(),
            topics,
            instance: None,
            session_timeout: Duration::from_secs(10),
            revoke_timeout: Duration::from_secs(60),
        }
    }

    /// This member's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The consumer group's id.
    pub fn group(&self) -> &str {
        &self.group
    }

    fn keel(&self, partitions: Vec<KafkaPartition>) -> Vec<(Topic, Partition)> {
        partitions
            .into_iter()
            .filter_map(|(kafka, p)| {
                Some((
                    self.store_names.of_events(&kafka)?,
                    Partition(u32::try_from(p).ok()?),
                ))
            })
            .collect()
    }

    /// The next change to this member's partitions; `None` once it left the group.
    pub async fn next(&mut self) -> Option<GroupChange> {
        loop {
            match self.events.recv().await? {
                Event::Assigned(partitions) => {
                    return Some(GroupChange::Assigned(self.keel(partitions)));
                }
                Event::Revoked {
                    partitions,
                    lost,
                    done,
                } => {
                    return Some(GroupChange::Revoked(Revocation {
                        partitions: self.keel(partitions),
                        lost,
                        done,
                    }));
                }
                // Partitions are paused: no messages come.
                Event::Message(_) => {}
            }
        }
    }

    /// Leaves the group: its partitions are revoked (taken as let go at once: stop working
    /// on them first) and given to the other members.
    pub async fn leave(mut self) {
        let member = std::sync::Arc::clone(&self.member);
        let mut leaving = tokio::task::spawn_blocking(move || member.leave());
        loop {
            tokio::select! {
                _ = &mut leaving => return,
                event = self.events.recv() => if event.is_none() { return },
            }
        }
    }
}
