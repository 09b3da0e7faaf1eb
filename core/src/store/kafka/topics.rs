//! Topics on the broker: names, creation and the settings Keel checks.
//!
//! Each Keel topic (an aggregate kind) is three Kafka topics with the same partition count,
//! so the owner of partition `p` of the events owns partition `p` of the other two:
//!
//! | Kafka topic | holds | settings |
//! |---|---|---|
//! | `<prefix><topic>` | the events | `retention.ms=-1`, `retention.bytes=-1`, `cleanup.policy=delete` |
//! | `<prefix><topic>.keel-writer-state` | writer-state snapshots | `cleanup.policy=compact` |
//! | `<prefix><topic>.keel-snapshots` | aggregate snapshots, keyed by stream id | `cleanup.policy=compact` |
//!
//! A [service](crate::kafka::Service) adds a commands topic per Keel topic (same partition
//! count, so commands for partition `p` reach the owner of events partition `p`) and one
//! replies topic per group:
//!
//! | Kafka topic | holds | settings |
//! |---|---|---|
//! | `<prefix><topic>.keel-commands` | routed commands, keyed by stream id | `cleanup.policy=delete`, `retention.ms` 7 days |
//! | `<prefix><group>.keel-replies` | their answers, keyed by command id | `cleanup.policy=delete`, `retention.ms` 1 hour |
//!
//! An existing events topic with finite retention (or compaction) is refused, naming the
//! setting, unless the store is told to allow it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::ids::Topic;
use crate::store::{Error, Result, validate};

/// Suffix of the Kafka topic holding an events topic's writer-state snapshots.
pub const WRITER_STATE_SUFFIX: &str = ".keel-writer-state";
/// Suffix of the Kafka topic holding an events topic's aggregate snapshots.
pub const SNAPSHOTS_SUFFIX: &str = ".keel-snapshots";
/// Suffix of the Kafka topic holding the commands routed to an events topic's owners.
pub const COMMANDS_SUFFIX: &str = ".keel-commands";
/// Suffix of the Kafka topic holding a group's answers to routed commands.
pub const REPLIES_SUFFIX: &str = ".keel-replies";

/// How long a routed command stays in its topic.
const COMMANDS_RETENTION_MS: &str = "604800000";
/// How long an answer stays in the replies topic.
const REPLIES_RETENTION_MS: &str = "3600000";

/// How Keel topics map to Kafka topics.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) prefix: String,
}

impl Names {
    pub(crate) fn events(&self, topic: &Topic) -> String {
        format!("{}{topic}", self.prefix)
    }
    pub(crate) fn writer_state(&self, topic: &Topic) -> String {
        format!("{}{topic}{WRITER_STATE_SUFFIX}", self.prefix)
    }
    pub(crate) fn snapshots(&self, topic: &Topic) -> String {
        format!("{}{topic}{SNAPSHOTS_SUFFIX}", self.prefix)
    }
    pub(crate) fn commands(&self, topic: &Topic) -> String {
        format!("{}{topic}{COMMANDS_SUFFIX}", self.prefix)
    }
    pub(crate) fn replies(&self, group: &str) -> String {
        format!("{}{group}{REPLIES_SUFFIX}", self.prefix)
    }
    /// The Keel topic whose commands a Kafka topic holds.
    pub(crate) fn of_commands(&self, kafka: &str) -> Option<Topic> {
        let keel = kafka
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(COMMANDS_SUFFIX)?;
        Topic::new(keel).ok()
    }
    /// The Keel topic a Kafka events topic holds.
    pub(crate) fn of_events(&self, kafka: &str) -> Option<Topic> {
        Topic::new(kafka.strip_prefix(self.prefix.as_str())?).ok()
    }
}

/// What topic creation needs to know.
#[derive(Clone, Debug)]
pub(crate) struct TopicSettings {
    pub(crate) replication: i32,
    pub(crate) min_insync_replicas: Option<u32>,
    pub(crate) allow_finite_retention: bool,
    pub(crate) check_configs: bool,
}

/// Creates and checks topics.
pub(crate) struct Admin {
    client: std::sync::Arc<AdminClient<DefaultClientContext>>,
    names: Names,
    settings: TopicSettings,
    timeout: Duration,
}

fn kafka<'a>(operation: &'static str, topic: &'a str) -> impl Fn(KafkaError) -> Error + 'a {
    move |e| Error::backend(operation, format!("topic {topic}: {e}"))
}

impl Admin {
    pub(crate) fn new(
        config: &ClientConfig,
        names: Names,
        settings: TopicSettings,
        timeout: Duration,
    ) -> Result<Self> {
        let client = config
            .create()
            .map_err(|e| Error::backend("create the Kafka admin client", e))?;
        Ok(Self {
            client: std::sync::Arc::new(client),
            names,
            settings,
            timeout,
        })
    }

    pub(crate) fn names(&self) -> &Names {
        &self.names
    }

    /// The partition count of a Kafka topic, `None` when it does not exist.
    pub(crate) async fn partitions(&self, name: &str) -> Result<Option<u32>> {
        let names = self.all_partitions(Some(name)).await?;
        Ok(names.into_iter().find(|(n, _)| n == name).map(|(_, p)| p))
    }

    /// Every topic (or one) with its partition count; topics still without partitions
    /// (being created) are left out.
    pub(crate) async fn all_partitions(&self, one: Option<&str>) -> Result<Vec<(String, u32)>> {
        let client = std::sync::Arc::clone(&self.client);
        let timeout = self.timeout;
        let one = one.map(str::to_owned);
        // Metadata calls block: run them off the runtime.
        let metadata = tokio::task::spawn_blocking(move || {
            client.inner().fetch_metadata(one.as_deref(), timeout)
        })
        .await
        .map_err(|e| Error::backend("read Kafka metadata", e))?;
        let metadata = metadata.map_err(|e| Error::backend("read Kafka metadata", e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| {
                (
                    t.name().to_owned(),
                    u32::try_from(t.partitions().len()).unwrap_or(u32::MAX),
                )
            })
            .collect())
    }

    /// Makes sure the three Kafka topics of `topic` exist, creating them with `requested`
    /// partitions (or `default`) when `create`; returns the partition count, or `None` when
    /// the topic does not exist and may not be created.
    pub(crate) async fn ensure(
        &self,
        topic: &Topic,
        requested: Option<u32>,
        default: u32,
        create: bool,
    ) -> Result<Option<u32>> {
        let events = self.names.events(topic);
        let existing = self.partitions(&events).await?;
        let count = match (existing, requested) {
            (Some(n), Some(r)) if n != r => {
                return Err(Error::PartitionCount {
                    topic: topic.clone(),
                    existing: n,
                    requested: r,
                });
            }
            (Some(n), _) => {
                self.check_events_config(&events).await?;
                n
            }
            (None, _) if !create => return Ok(None),
            (None, r) => {
                let n = r.unwrap_or(default);
                validate::check_partitions(topic, n)?;
                match self.create(&events, n, Kind::Events).await? {
                    Created::Now => {}
                    Created::Already => {
                        // Someone else created it first: check theirs.
                        return Box::pin(self.ensure(topic, requested, default, false)).await;
                    }
                }
                n
            }
        };
        for companion in [self.names.writer_state(topic), self.names.snapshots(topic)] {
            match self.partitions(&companion).await? {
                Some(n) if n == count => {}
                Some(n) => {
                    return Err(Error::TopicSetting {
                        topic: companion,
                        setting: "partitions".into(),
                        found: n.to_string(),
                        required: format!("{count}, as many as its events topic {events}"),
                    });
                }
                None => {
                    self.create(&companion, count, Kind::Compacted).await?;
                }
            }
        }
        self.wait_for(&[
            &events,
            &self.names.writer_state(topic),
            &self.names.snapshots(topic),
        ])
        .await?;
        Ok(Some(count))
    }

    /// Makes sure the commands topic of `topic` exists with `partitions` partitions (its
    /// events topic's count).
    pub(crate) async fn ensure_commands(&self, topic: &Topic, partitions: u32) -> Result<()> {
        let name = self.names.commands(topic);
        self.ensure_plain(&name, partitions, Kind::Commands, true)
            .await
    }

    /// Makes sure a group's replies topic exists (any partition count is accepted); returns
    /// its partition count.
    pub(crate) async fn ensure_replies(&self, group: &str, partitions: u32) -> Result<u32> {
        let name = self.names.replies(group);
        self.ensure_plain(&name, partitions, Kind::Replies, false)
            .await?;
        Ok(self.partitions(&name).await?.unwrap_or(partitions))
    }

    async fn ensure_plain(
        &self,
        name: &str,
        partitions: u32,
        kind: Kind,
        exact: bool,
    ) -> Result<()> {
        match self.partitions(name).await? {
            Some(n) if n == partitions || !exact => {}
            Some(n) => {
                return Err(Error::TopicSetting {
                    topic: name.to_owned(),
                    setting: "partitions".into(),
                    found: n.to_string(),
                    required: format!("{partitions}, as many as its events topic"),
                });
            }
            None => {
                if let Created::Already = self.create(name, partitions, kind).await? {
                    return Box::pin(self.ensure_plain(name, partitions, kind, exact)).await;
                }
            }
        }
        self.wait_for(&[name]).await
    }

    async fn create(&self, name: &str, partitions: u32, kind: Kind) -> Result<Created> {
        let min_isr = self.settings.min_insync_replicas.map(|n| n.to_string());
        let mut new = NewTopic::new(
            name,
            i32::try_from(partitions).unwrap_or(i32::MAX),
            TopicReplication::Fixed(self.settings.replication),
        );
        new = match kind {
            Kind::Events => new
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
                .set("cleanup.policy", "delete"),
            Kind::Compacted => new
                .set("cleanup.policy", "compact")
                .set("segment.ms", "600000")
                .set("min.cleanable.dirty.ratio", "0.1"),
            Kind::Commands => new
                .set("cleanup.policy", "delete")
                .set("retention.ms", COMMANDS_RETENTION_MS),
            Kind::Replies => new
                .set("cleanup.policy", "delete")
                .set("retention.ms", REPLIES_RETENTION_MS)
                .set("segment.ms", REPLIES_RETENTION_MS),
        };
        if let Some(n) = &min_isr {
            new = new.set("min.insync.replicas", n);
        }
        let opts = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .client
            .create_topics([&new], &opts)
            .await
            .map_err(kafka("create a topic", name))?;
        for result in results {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(Created::Already),
                Err((topic, code)) => {
                    return Err(Error::backend(
                        "create a topic",
                        format!("topic {topic}: {code}"),
                    ));
                }
            }
        }
        tracing::info!(topic = name, partitions, "created Kafka topic");
        Ok(Created::Now)
    }

    /// Waits until the metadata shows every topic with its partitions.
    async fn wait_for(&self, names: &[&str]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let all = self.all_partitions(None).await?;
            if names.iter().all(|n| all.iter().any(|(t, _)| t == n)) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::backend(
                    "create a topic",
                    format!(
                        "topics {names:?} did not appear in the metadata within {:?}",
                        self.timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refuses an events topic that would delete events: finite retention or compaction.
    async fn check_events_config(&self, name: &str) -> Result<()> {
        if !self.settings.check_configs || self.settings.allow_finite_retention {
            return Ok(());
        }
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let results = self
            .client
            .describe_configs([&ResourceSpecifier::Topic(name)], &opts)
            .await
            .map_err(kafka("read a topic's settings", name))?;
        for result in results {
            let resource = result.map_err(|code| {
                Error::backend("read a topic's settings", format!("topic {name}: {code}"))
            })?;
            for (setting, required) in [
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
                ("cleanup.policy", "delete"),
            ] {
                let found = resource.get(setting).and_then(|e| e.value.clone());
                if let Some(found) = found
                    && found != required
                {
                    return Err(Error::TopicSetting {
                        topic: name.to_owned(),
                        setting: setting.to_owned(),
                        found,
                        required: format!(
                            "{setting}={required} so no event is ever deleted (or allow finite retention on the store)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

enum Created {
    Now,
    Already,
}

/// What a Kafka topic Keel creates holds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Events,
    Compacted,
    Commands,
    Replies,
}
