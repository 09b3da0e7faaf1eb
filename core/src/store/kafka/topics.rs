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
                match self.create(&events, n, true).await? {
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
                    self.create(&companion, count, false).await?;
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

    async fn create(&self, name: &str, partitions: u32, events: bool) -> Result<Created> {
        let min_isr = self.settings.min_insync_replicas.map(|n| n.to_string());
        let mut new = NewTopic::new(
            name,
            i32::try_from(partitions).unwrap_or(i32::MAX),
            TopicReplication::Fixed(self.settings.replication),
        );
        if events {
            new = new
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
                .set("cleanup.policy", "delete");
        } else {
            new = new
                .set("cleanup.policy", "compact")
                .set("segment.ms", "600000")
                .set("min.cleanable.dirty.ratio", "0.1");
        }
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
