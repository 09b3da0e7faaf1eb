//! [`Service`]: one instance of a service whose instances share a Kafka log's partitions.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::aggregate::Handle;
use crate::ids::{Partition, Topic};
use crate::repository::Repository;
use crate::store::kafka::{KafkaStore, KafkaStoreBuilder};
use crate::store::{Error, EventStore, Result};

use super::dispatch::{self, Handler, RepositoryHandler};
use super::group::{Member, MemberConfig};
use super::replies::Replies;
use super::routed::Routed;

/// Options of a [`Service`]; start from [`Service::builder`].
#[derive(Debug)]
#[must_use]
pub struct ServiceBuilder {
    store: KafkaStoreBuilder,
    instance: Option<String>,
    session_timeout: Duration,
    revoke_timeout: Duration,
    command_timeout: Duration,
    reply_partitions: u32,
    metrics_every: Duration,
}

impl ServiceBuilder {
    /// This instance's id (default `<group>-<host>-<pid>-<random>`): the consumer group
    /// shows it as the owner of the partitions it holds, and answers to its routed commands
    /// are addressed to it. Two live instances must not share an id.
    pub fn instance(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// How long the group waits for a silent instance before giving its partitions to
    /// the others (default 10 s; the broker accepts 6 s to 300 s by default). A killed
    /// instance's partitions move after about this long.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long an instance may take to let a revoked partition go: to finish the commands
    /// it is running and its writer's last transaction (default 30 s).
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// How long a routed command waits for its answer by default (30 s); see
    /// [`Routed::timeout`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The partition count of the group's replies topic, when this instance creates it
    /// (default 4). Each instance reads one partition.
    pub fn reply_partitions(mut self, partitions: u32) -> Self {
        self.reply_partitions = partitions.max(1);
        self
    }

    /// How often the per-partition metrics are logged (default 10 s; see the
    /// [module docs](super#lag-and-health)).
    pub fn metrics_every(mut self, every: Duration) -> Self {
        self.metrics_every = every;
        self
    }

    /// Opens the store (owning no partition until the group assigns some), the replies
    /// reader and the commands producer. Serve aggregates with [`Service::serve`].
    ///
    /// # Errors
    ///
    /// As [`KafkaStoreBuilder::open`]; [`Error::Backend`] when the store is not
    /// transactional (routing commits consumer offsets in transactions) or a client cannot
    /// be made.
    pub async fn open(self) -> Result<Service> {
        let store = Arc::new(self.store.own_partitions([]).open().await?);
        let ctx = Arc::clone(store.ctx());
        if !ctx.transactional {
            return Err(Error::backend(
                "open a Kafka service",
                "routing commands needs Kafka transactions; the store was opened with \
                 transactional(false)",
            ));
        }
        let group = ctx.group.clone();
        let instance = self.instance.unwrap_or_else(|| default_instance(&group));
        let replies_topic = ctx.names.replies(&group);
        let partitions = store
            .admin()
            .ensure_replies(&group, self.reply_partitions)
            .await?;
        let reply_partition = crate::partitioner::partition_for(instance.as_bytes(), partitions);
        let reply_partition = i32::try_from(reply_partition.0).unwrap_or(0);
        let replies = {
            let (base, topic, instance, timeout) = (
                ctx.base.clone(),
                replies_topic.clone(),
                instance.clone(),
                ctx.timeout,
            );
            tokio::task::spawn_blocking(move || {
                Replies::start(&base, &topic, reply_partition, &instance, timeout)
            })
            .await
            .map_err(|e| Error::backend("start the replies reader", e))??
        };
        let mut producer = ClientConfig::clone(&ctx.base);
        producer
            .set("client.id", format!("{instance}-commands"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", ctx.timeout.as_millis().to_string());
        let producer: FutureProducer = producer
            .create()
            .map_err(|e| Error::backend("create a Kafka producer", e))?;
        let (events, received) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            store,
            instance,
            group,
            session_timeout: self.session_timeout,
            revoke_timeout: self.revoke_timeout,
            command_timeout: self.command_timeout,
            reply_partition,
            replies,
            producer,
            handlers: RwLock::new(HashMap::new()),
            member: std::sync::Mutex::new(None),
            events,
            serving: watch::Sender::new(BTreeSet::new()),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let dispatcher = tokio::spawn(dispatch::run(Arc::downgrade(&inner), received));
        let metrics = tokio::spawn(dispatch::metrics(
            Arc::downgrade(&inner),
            self.metrics_every,
        ));
        inner.lock_tasks().extend([dispatcher, metrics]);
        Ok(Service { inner })
    }
}

fn default_instance(group: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let random = uuid::Uuid::now_v7().simple().to_string();
    let tail = random.get(random.len() - 6..).unwrap_or("0");
    format!("{group}-{host}-{}-{tail}", std::process::id())
}

/// What a service's parts share.
pub(crate) struct Inner {
    pub(crate) store: Arc<KafkaStore>,
    pub(crate) instance: String,
    pub(crate) group: String,
    session_timeout: Duration,
    pub(crate) revoke_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) reply_partition: i32,
    pub(crate) replies: Replies,
    pub(crate) producer: FutureProducer,
    handlers: RwLock<HashMap<Topic, Arc<dyn Handler>>>,
    pub(crate) member: std::sync::Mutex<Option<Arc<Member>>>,
    events: mpsc::Sender<super::group::Event>,
    /// The partitions this instance serves now (taken over, not yet released).
    pub(crate) serving: watch::Sender<BTreeSet<(Topic, Partition)>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    pub(crate) fn handler(&self, topic: &Topic) -> Option<Arc<dyn Handler>> {
        self.handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(topic)
            .cloned()
    }

    /// The topics this instance serves.
    pub(crate) fn topics(&self) -> Vec<Topic> {
        let mut topics: Vec<Topic> = self
            .handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        topics.sort();
        topics
    }

    pub(crate) fn member(&self) -> Option<Arc<Member>> {
        self.member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One instance of a service whose instances share the partitions of a Kafka log. See the
/// [module docs](super).
///
/// ```no_run
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
/// # pub enum CounterEvent { Incremented { by: u32 } }
/// # #[derive(Debug, thiserror::Error, Serialize, Deserialize)]
/// # pub enum CounterError { #[error("zero")] Zero }
/// # #[derive(Aggregate, Default, Debug)]
/// # #[aggregate(kind = "counter", event = CounterEvent, error = CounterError)]
/// # pub struct Counter { total: u64 }
/// # impl Apply<CounterEvent> for Counter {
/// #     fn apply(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.total += u64::from(*by); }
/// # }
/// # #[keel::commands]
/// # impl Counter {
/// #     pub fn increment(&self, by: u32) -> Result<CounterEvent, CounterError> {
/// #         if by == 0 { Err(CounterError::Zero) } else { Ok(CounterEvent::Incremented { by }) }
/// #     }
/// # }
/// use keel::kafka::Service;
/// use keel::store::kafka::KafkaStore;
/// use keel::{CommandId, Repository};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let service = Service::builder(
///     KafkaStore::builder("127.0.0.1:9092").group("counters").replication_factor(1),
/// )
/// .open()
/// .await?;
/// // Joins the group: this instance owns some of the 6 partitions, the others the rest.
/// let counters = service
///     .serve(Repository::<Counter, _>::new(service.store().clone()), 6)
///     .await?;
/// // Runs here when this instance owns c1's partition, else on its owner.
/// let id = CommandId::new("req-1")?;
/// let done = counters.execute_with("c1", CounterCommand::Increment { by: 2 }, id.into()).await?;
/// println!("c1 is at version {}", done.version);
/// service.close().await;
/// # Ok(()) }
/// ```
pub struct Service {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("instance", &self.inner.instance)
            .field("group", &self.inner.group)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service on the store `store` would open. Its group (the store's
    /// [`group`](KafkaStoreBuilder::group)) names the consumer group the instances share.
    pub fn builder(store: KafkaStoreBuilder) -> ServiceBuilder {
        ServiceBuilder {
            store,
            instance: None,
            session_timeout: Duration::from_secs(10),
            revoke_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            reply_partitions: 4,
            metrics_every: Duration::from_secs(10),
        }
    }

    /// The event store: it writes (and serves reads of) the partitions this instance owns.
    pub fn store(&self) -> &Arc<KafkaStore> {
        &self.inner.store
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Serves aggregate `A`: creates its topic with `partitions` partitions when missing
    /// (and its commands topic), joins the group for it, and runs the commands routed to
    /// the partitions this instance is assigned with `repository` (which must be over
    /// [`store`](Self::store)). Returns the handle that runs commands wherever their owner is.
    ///
    /// The aggregate's error travels back to callers on other instances: it must implement
    /// serde's `Serialize` and `Deserialize`.
    ///
    /// # Errors
    ///
    /// [`Error::PartitionCount`] when the topic exists with another count, or a broker
    /// failure.
    pub async fn serve<A, S>(
        &self,
        repository: Repository<A, S>,
        partitions: u32,
    ) -> Result<Routed<A, S>>
    where
        A: Handle,
        A::Error: Serialize + DeserializeOwned,
        S: EventStore + ?Sized,
    {
        let topic = Topic::new(A::KIND)?;
        let store = &self.inner.store;
        let n = store.resolve(&topic, partitions).await?;
        store.admin().ensure_commands(&topic, n).await?;
        self.inner
            .handlers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                topic.clone(),
                Arc::new(RepositoryHandler::new(repository.clone())),
            );
        self.subscribe()?;
        Ok(Routed::new(Arc::clone(&self.inner), repository, topic, n))
    }

    /// Joins the group (or changes the subscription) for every served topic.
    fn subscribe(&self) -> Result<()> {
        let ctx = self.inner.store.ctx();
        let topics: Vec<String> = self
            .inner
            .handlers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .map(|t| ctx.names.commands(t))
            .collect();
        let mut member = self
            .inner
            .member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(member) = member.as_ref() {
            return member.subscribe(&topics);
        }
        let store: Weak<Inner> = Arc::downgrade(&self.inner);
        let names = ctx.names.clone();
        let fence = Box::new(move |assigned: &[(String, i32)]| {
            let Some(inner) = store.upgrade() else {
                return;
            };
            // Fence every newly assigned partition's earlier writers before the consumer
            // reads their committed command offsets: no earlier owner can commit past them.
            std::thread::scope(|scope| {
                for (kafka, p) in assigned {
                    let (Some(topic), Ok(p)) = (names.of_commands(kafka), u32::try_from(*p)) else {
                        continue;
                    };
                    let inner = &inner;
                    scope.spawn(move || {
                        if let Err(e) = inner.store.fence_blocking(&topic, Partition(p)) {
                            tracing::warn!(%topic, partition = p, error = %e,
                                "fencing an assigned partition failed; the takeover fences it again");
                        }
                    });
                }
            });
        });
        let joined = Member::join(
            MemberConfig {
                base: ctx.base.clone(),
                group: self.inner.group.clone(),
                instance: self.inner.instance.clone(),
                session_timeout: self.inner.session_timeout,
                topics,
                consume: true,
                revoke_timeout: self.inner.revoke_timeout,
            },
            self.inner.events.clone(),
            Some(fence),
        )?;
        *member = Some(Arc::new(joined));
        Ok(())
    }

    /// The partitions this instance serves now: taken over and not yet let go.
    pub fn owned(&self) -> Vec<(Topic, Partition)> {
        self.inner.serving.borrow().iter().cloned().collect()
    }

    /// Watches the partitions this instance serves (to wait for an assignment to settle).
    pub fn ownership(&self) -> watch::Receiver<BTreeSet<(Topic, Partition)>> {
        self.inner.serving.subscribe()
    }

    /// Leaves the group: finishes the commands it is running, lets every partition go (each
    /// with a last writer-state snapshot, so the next owner reads a short tail), stops
    /// reading answers and closes the store. Commands routed to this instance after it
    /// left go to the next owner.
    pub async fn close(&self) {
        let member = self
            .inner
            .member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(member) = member {
            // Blocks until the revocations are handled, which the dispatcher does meanwhile.
            let _ = tokio::task::spawn_blocking(move || member.leave()).await;
        }
        for task in self.inner.lock_tasks().drain(..) {
            task.abort();
        }
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.replies.stop()).await;
        self.inner.store.close().await;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Leave the group in the background when not closed: the partitions are revoked
        // and let go as usual.
        if let Some(member) = self
            .inner
            .member
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            drop(member);
        }
    }
}
