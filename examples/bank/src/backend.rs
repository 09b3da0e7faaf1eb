//! Which event store holds the bank's log: the SQLite file (the default) or Apache Kafka
//! (`--kafka HOST:PORT`, or `BANK_KAFKA`; needs the `kafka` feature). The read models stay in
//! the SQLite file either way.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use keel::EventStore;
use keel::store::sqlite::SqliteStore;

/// The bank on whichever store was chosen.
pub(crate) type AnyBank = bank::Bank<dyn EventStore>;

/// Where the bank's log lives on Kafka, besides the bootstrap servers.
pub(crate) struct KafkaOptions<'a> {
    /// The group naming the transactional ids (and the consumer group of `bank serve`).
    pub(crate) group: &'a str,
    /// A prefix for the Kafka topic names.
    pub(crate) prefix: &'a str,
    /// The replication factor of the topics the bank creates.
    pub(crate) replication: u16,
}

/// The store behind the bank, kept to close it at the end.
pub(crate) enum Log {
    Sqlite(Arc<SqliteStore>),
    #[cfg(feature = "kafka")]
    Kafka(Arc<keel::store::kafka::KafkaStore>),
}

impl Log {
    /// Opens the log: on Kafka when `kafka` names bootstrap servers, else in the SQLite file.
    pub(crate) async fn open(
        db: &Path,
        kafka: Option<&str>,
        options: &KafkaOptions<'_>,
    ) -> anyhow::Result<(AnyBank, Self)> {
        match kafka {
            None => {
                let store = Arc::new(SqliteStore::open(db).await.with_context(|| {
                    format!(
                        "cannot open {}",
                        crate::args::cut(&db.display().to_string())
                    )
                })?);
                let log: Arc<dyn EventStore> = store.clone();
                Ok((bank::Bank::new(log), Self::Sqlite(store)))
            }
            #[cfg(feature = "kafka")]
            Some(bootstrap) => {
                // The local state lives beside the views, so a restart reads only what is new.
                let mut state = db.as_os_str().to_owned();
                state.push(".kafka-state");
                let store = Arc::new(
                    keel::store::kafka::KafkaStore::builder(bootstrap)
                        .group(options.group)
                        .topic_prefix(options.prefix)
                        .replication_factor(options.replication)
                        .state_dir(state)
                        .open()
                        .await
                        .with_context(|| format!("cannot open the log on Kafka at {bootstrap}"))?,
                );
                let log: Arc<dyn EventStore> = store.clone();
                Ok((bank::Bank::new(log), Self::Kafka(store)))
            }
            #[cfg(not(feature = "kafka"))]
            Some(_) => {
                let _ = (options.group, options.prefix, options.replication);
                anyhow::bail!(
                    "this bank was built without Kafka; run it with \
                     `cargo run -p bank --features kafka -- --kafka HOST:PORT ...`"
                )
            }
        }
    }

    /// Where the log is, for messages.
    pub(crate) fn describe(&self, db: &Path) -> String {
        match self {
            Self::Sqlite(_) => db.display().to_string(),
            #[cfg(feature = "kafka")]
            Self::Kafka(store) => {
                format!("Kafka at {} (views in {})", store.bootstrap(), db.display())
            }
        }
    }

    /// Finishes pending writes and closes the store.
    pub(crate) async fn close(self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            #[cfg(feature = "kafka")]
            Self::Kafka(store) => store.close().await,
        }
    }
}
