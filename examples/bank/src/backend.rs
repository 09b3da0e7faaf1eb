//! Which event store holds the bank's log, and which view store its read models: the SQLite
//! file for both (the default); a PostgreSQL database for both (`--database-url postgres://…`,
//! or `BANK_DATABASE_URL`: the log in its schema `keel`, the views in its schema `bank_views`);
//! or the log on Apache Kafka (`--kafka HOST:PORT`, or `BANK_KAFKA`; needs the `kafka` feature)
//! with the views in the SQLite file.
//!
//! The bank itself only sees an `Arc<dyn EventStore>`, and the command line a [`Views`]; this
//! module is the one place that names the backends. Adding one is a variant of [`Place`] and of
//! [`Log`] (and of [`Views`] for a new view store), and its arms below.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use bank::projections::{AccountRow, postgres as pg};
use keel::EventStore;
use keel::store::postgres::PostgresStore;
use keel::store::sqlite::SqliteStore;
use keel_projections::store::postgres::PostgresViews;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{Projections, RunnerConfig};

/// The bank on whichever store was chosen.
pub(crate) type AnyBank = bank::Bank<dyn EventStore>;

/// Where the command line puts the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place<'a> {
    /// In the SQLite file, beside the views.
    Sqlite,
    /// In this PostgreSQL database (its `keel` schema).
    Postgres(&'a str),
    /// On Apache Kafka at these bootstrap servers.
    Kafka(&'a str),
}

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
    /// The log in PostgreSQL, and the URL of the database that also holds the views.
    Postgres(Arc<PostgresStore>, String),
    #[cfg(feature = "kafka")]
    Kafka(Arc<keel::store::kafka::KafkaStore>),
}

impl Log {
    /// Opens the log at `place` (the views' SQLite file is `db`).
    pub(crate) async fn open(
        db: &Path,
        place: Place<'_>,
        options: &KafkaOptions<'_>,
    ) -> anyhow::Result<(AnyBank, Self)> {
        match place {
            Place::Sqlite => {
                let store = Arc::new(SqliteStore::open(db).await.with_context(|| {
                    format!(
                        "cannot open {}",
                        crate::args::cut(&db.display().to_string())
                    )
                })?);
                let log: Arc<dyn EventStore> = store.clone();
                Ok((bank::Bank::new(log), Self::Sqlite(store)))
            }
            Place::Postgres(url) => {
                let store = Arc::new(
                    PostgresStore::connect(url)
                        .await
                        .with_context(|| format!("cannot open {}", without_password(url)))?,
                );
                let log: Arc<dyn EventStore> = store.clone();
                Ok((bank::Bank::new(log), Self::Postgres(store, url.to_owned())))
            }
            #[cfg(feature = "kafka")]
            Place::Kafka(bootstrap) => {
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
            Place::Kafka(_) => {
                let _ = (options.group, options.prefix, options.replication);
                anyhow::bail!(
                    "this bank was built without Kafka; run it with \
                     `cargo run -p bank --features kafka -- --kafka HOST:PORT ...`"
                )
            }
        }
    }

    /// Where the log is, for messages (a database URL without its password).
    pub(crate) fn describe(&self, db: &Path) -> String {
        match self {
            Self::Sqlite(_) => db.display().to_string(),
            Self::Postgres(store, _) => format!(
                "PostgreSQL schema {} (views in schema {})",
                store.schema(),
                pg::VIEWS_SCHEMA
            ),
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
            Self::Postgres(store, _) => store.close().await,
            #[cfg(feature = "kafka")]
            Self::Kafka(store) => store.close().await,
        }
    }
}

/// The bank's view store: the SQLite file, or the PostgreSQL database beside the log.
pub(crate) enum Views {
    Sqlite(SqliteViews),
    Postgres(PostgresViews),
}

impl Views {
    /// The bank's projections over `bank`'s log, with views where `log` says: in PostgreSQL
    /// when the log is, else in the SQLite file `db`.
    pub(crate) async fn open(
        bank: &AnyBank,
        log: &Log,
        db: &Path,
    ) -> anyhow::Result<(Projections, Self)> {
        let events: Arc<dyn EventStore> = bank.accounts().store().clone();
        let config = RunnerConfig::default();
        match log {
            Log::Postgres(_, url) => {
                let (projections, views) = pg::bank_projections(events, url, config)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot open the views in {} (schema {})",
                            without_password(url),
                            pg::VIEWS_SCHEMA
                        )
                    })?;
                Ok((projections, Self::Postgres(views)))
            }
            _ => {
                let (projections, views) = bank::projections::bank_projections(events, db, config)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot open the views in {}",
                            crate::args::cut(&db.display().to_string())
                        )
                    })?;
                Ok((projections, Self::Sqlite(views)))
            }
        }
    }

    /// Where the views are, for messages.
    pub(crate) fn describe(&self, db: &Path) -> String {
        match self {
            Self::Sqlite(_) => db.display().to_string(),
            Self::Postgres(_) => format!("PostgreSQL schema {}", pg::VIEWS_SCHEMA),
        }
    }

    /// Every account of the balances view, by id.
    pub(crate) async fn read_balances(&self) -> keel_projections::Result<Vec<AccountRow>> {
        match self {
            Self::Sqlite(views) => bank::projections::read_balances(views).await,
            Self::Postgres(views) => pg::read_balances(views).await,
        }
    }

    /// One account of the balances view, if there.
    pub(crate) async fn read_balance(
        &self,
        account: &str,
    ) -> keel_projections::Result<Option<AccountRow>> {
        match self {
            Self::Sqlite(views) => bank::projections::read_balance(views, account).await,
            Self::Postgres(views) => pg::read_balance(views, account).await,
        }
    }

    /// Closes the store's connections.
    pub(crate) async fn close(self) {
        match self {
            Self::Sqlite(views) => views.close().await,
            Self::Postgres(views) => views.close().await,
        }
    }
}

/// `url` with the password between `user:` and `@` replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        assert_eq!(
            without_password("postgres://bank:s3cret@db.local:5432/bank"),
            "postgres://bank:***@db.local:5432/bank"
        );
        assert_eq!(
            without_password("postgres://bank@db.local/bank"),
            "postgres://bank@db.local/bank"
        );
        assert_eq!(without_password("not a url"), "not a url");
    }
}
