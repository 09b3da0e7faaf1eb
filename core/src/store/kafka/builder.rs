//! [`KafkaStoreBuilder`]: a Kafka store's options, and opening it.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::ClientConfig;
use tokio::sync::{Mutex, watch};

use crate::store::{Error, Result};

use super::KafkaStore;
use super::reader::Reader;
use super::takeover;
use super::topics::{Admin, Names, TopicSettings};
use super::writer::Ctx;

/// Kafka-specific failures, carried as the source of
/// [`Error::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaStoreError {
    /// The cluster refused to start a transactional producer (transactions disabled, not
    /// authorised, or the transaction state topic cannot be created).
    #[error(
        "the Kafka cluster at {bootstrap} refused transactions for transactional.id {transactional_id}: {reason}. \
         Fix the broker, or open the store with KafkaStoreBuilder::transactional(false) to use the \
         idempotent producer alone (weaker guarantees: no fencing, multi-event appends not atomic \
         under failure; see keel::store::kafka)"
    )]
    TransactionsRefused {
        /// The bootstrap servers.
        bootstrap: String,
        /// The transactional id that was refused.
        transactional_id: String,
        /// What librdkafka reported.
        reason: String,
    },
}

/// Options of a [`KafkaStore`]; start from [`KafkaStore::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct KafkaStoreBuilder {
    bootstrap: String,
    group: String,
    prefix: String,
    default_partitions: u32,
    replication: i32,
    min_insync_replicas: Option<u32>,
    transactional: bool,
    window: Duration,
    snapshot_every: u64,
    max_batch: usize,
    linger: Duration,
    timeout: Duration,
    state_dir: Option<PathBuf>,
    own: Option<BTreeSet<u32>>,
    allow_finite_retention: bool,
    check_topic_configs: bool,
    config: Vec<(String, String)>,
}

impl KafkaStoreBuilder {
    pub(super) fn new(bootstrap: String) -> Self {
        Self {
            bootstrap,
            group: "keel".into(),
            prefix: String::new(),
            default_partitions: 4,
            replication: 3,
            min_insync_replicas: None,
            transactional: true,
            window: Duration::from_secs(3600),
            snapshot_every: 1000,
            max_batch: 512,
            linger: Duration::from_millis(2),
            timeout: Duration::from_secs(30),
            state_dir: None,
            own: None,
            allow_finite_retention: false,
            check_topic_configs: true,
            config: Vec::new(),
        }
    }

    /// The group this store's instances belong to (default `keel`): it names the
    /// transactional ids (`<group>-<topic>-<partition>`) and the local state files. Two
    /// stores with the same group fence each other on the partitions they both take.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// A prefix for every Kafka topic name (default none): Keel topic `account` is Kafka
    /// topic `<prefix>account`. Tests use it to keep their topics apart.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The partition count of topics created by an append (default 4).
    pub fn default_partitions(mut self, partitions: u32) -> Self {
        self.default_partitions = partitions;
        self
    }

    /// The replication factor of topics this store creates (default 3; 1 for a single
    /// broker). With more than 1, `min.insync.replicas` is set to 2 unless
    /// [`min_insync_replicas`](Self::min_insync_replicas) says otherwise.
    pub fn replication_factor(mut self, replicas: u16) -> Self {
        self.replication = i32::from(replicas.max(1));
        self
    }

    /// `min.insync.replicas` of the topics this store creates.
    pub fn min_insync_replicas(mut self, replicas: u32) -> Self {
        self.min_insync_replicas = Some(replicas.max(1));
        self
    }

    /// Whether appends use Kafka transactions (default `true`). `false` uses the idempotent
    /// producer alone, with the weaker guarantee stated in the [module docs](super).
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// How long a committed command id is remembered (default 1 hour). Within the window a
    /// retry is answered with the first result, across restarts and takeovers; after it the
    /// id is forgotten and the same id is a new command. Every remembered id is in each
    /// writer-state snapshot, so a longer window costs larger snapshots.
    pub fn command_window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The fewest appends between two writer-state snapshots of a partition (default
    /// 1,000; a large index waits longer, see the `snapshot` module).
    pub fn writer_snapshot_every(mut self, appends: u64) -> Self {
        self.snapshot_every = appends.max(1);
        self
    }

    /// Most appends in one transaction (default 512).
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.clamp(1, 4096);
        self
    }

    /// How long the writer waits for more appends before it starts a transaction (default
    /// 2 ms). A transaction costs a round trip to the coordinator whatever its size, so under
    /// load a short wait fills it; `Duration::ZERO` starts at once. The wait ends early once
    /// the batch holds as many appends as the last commit answered plus those queued while it
    /// ran: callers that append in a loop are all in by then.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long a broker operation (a commit, a takeover's read, topic creation) may take
    /// before it fails (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the local state files live (default: a fresh temporary directory, so every
    /// open rebuilds them from Kafka). A directory that survives restarts makes a takeover
    /// read only what was appended since.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Own only these partitions of each topic (default: all of them).
    pub fn own_partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        self.own = Some(partitions.into_iter().collect());
        self
    }

    /// Accept existing events topics with finite retention or compaction (default: refuse
    /// them, naming the setting).
    pub fn allow_finite_retention(mut self, allow: bool) -> Self {
        self.allow_finite_retention = allow;
        self
    }

    /// Whether to read existing topics' settings (default `true`; turn off for brokers
    /// that do not answer `DescribeConfigs`, such as librdkafka's mock cluster).
    pub fn check_topic_configs(mut self, check: bool) -> Self {
        self.check_topic_configs = check;
        self
    }

    /// Adds a librdkafka setting to every client the store makes (security, timeouts…).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Connects to the cluster and, when transactional, checks that it accepts transactional
    /// producers. Topics are resolved, and their partitions taken, on first use.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when a client cannot be created, the state directory cannot be
    /// made, or the cluster refuses transactions (its source is
    /// [`KafkaStoreError::TransactionsRefused`], naming [`transactional`](Self::transactional)).
    pub async fn open(self) -> Result<KafkaStore> {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.config {
            base.set(k, v);
        }
        let mut producer = base.clone();
        let timeout_ms = self.timeout.as_millis().to_string();
        producer
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", &timeout_ms);
        let (temp, state_dir) = match self.state_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("keel-kafka-state-")
                    .tempdir()
                    .map_err(|e| Error::backend("create the local state directory", e))?;
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let names = Names {
            prefix: self.prefix.clone(),
        };
        let min_isr = self
            .min_insync_replicas
            .or((self.replication > 1).then_some(2));
        let admin = Admin::new(
            &base,
            names.clone(),
            TopicSettings {
                replication: self.replication,
                min_insync_replicas: min_isr,
                allow_finite_retention: self.allow_finite_retention,
                check_configs: self.check_topic_configs,
            },
            self.timeout,
        )?;
        let ctx = Arc::new(Ctx {
            names,
            base: base.clone(),
            producer,
            group: self.group.clone(),
            transactional: self.transactional,
            window: self.window,
            snapshot_every: self.snapshot_every,
            max_batch: self.max_batch,
            linger: self.linger,
            timeout: self.timeout,
            state_dir,
            reader: Reader::new(&base, &self.group, self.timeout),
            bootstrap: self.bootstrap.clone(),
            commits: watch::Sender::new(0),
            transactions: Default::default(),
            appends: Default::default(),
        });
        if ctx.transactional {
            takeover::probe_transactions(&ctx).await?;
        }
        Ok(KafkaStore {
            ctx,
            admin,
            default_partitions: self.default_partitions,
            own: self.own,
            topics: RwLock::new(HashMap::new()),
            owned: RwLock::new(HashMap::new()),
            fenced: std::sync::Mutex::new(HashMap::new()),
            resolving: Mutex::new(()),
            _temp: temp,
        })
    }
}
