//! Where the bank keeps its log: a SQLite file (the default) or a PostgreSQL database.
//!
//! The bank itself only sees an `Arc<dyn EventStore>`; this module is the one place that
//! names the backends. Adding one is a variant of [`Backend`], its arm in
//! [`Backend::open`] and in [`Log::close`].
//!
//! ```no_run
//! use bank::Bank;
//! use bank::backend::Backend;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
//! let backend = Backend::choose("bank.db", Some("postgres://bank@localhost/bank"));
//! let log = backend.open().await?;
//! let bank = Bank::new(log.store());
//! bank.deposit("alice", 10, None).await?;
//! drop(bank);
//! log.close().await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel::EventStore;
use keel::store::postgres::PostgresStore;
use keel::store::sqlite::SqliteStore;

/// Where the log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// A SQLite file, created if missing.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://user:password@host:port/database`); the log lives in
    /// its `keel` schema, created if missing.
    Postgres(String),
}

impl Backend {
    /// The log on PostgreSQL when a database URL is given, else in the SQLite file `db`.
    pub fn choose(db: impl AsRef<Path>, database_url: Option<&str>) -> Self {
        match database_url {
            Some(url) if !url.is_empty() => Self::Postgres(url.to_owned()),
            _ => Self::Sqlite(db.as_ref().to_path_buf()),
        }
    }

    /// Opens the log.
    ///
    /// # Errors
    ///
    /// [`keel::store::Error`] when the file or the database cannot be opened.
    pub async fn open(&self) -> Result<Log, keel::store::Error> {
        Ok(match self {
            Self::Sqlite(path) => Log::Sqlite(Arc::new(SqliteStore::open(path).await?)),
            Self::Postgres(url) => Log::Postgres(Arc::new(PostgresStore::connect(url).await?)),
        })
    }
}

/// The log's place, for people: the file's path, or the database URL without its password.
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&without_password(url)),
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

/// An open log.
#[derive(Debug, Clone)]
pub enum Log {
    /// In a SQLite file.
    Sqlite(Arc<SqliteStore>),
    /// In a PostgreSQL database.
    Postgres(Arc<PostgresStore>),
}

impl Log {
    /// The store, for a [`Bank`](crate::Bank) or the projections.
    pub fn store(&self) -> Arc<dyn EventStore> {
        match self {
            Self::Sqlite(store) => Arc::clone(store) as Arc<dyn EventStore>,
            Self::Postgres(store) => Arc::clone(store) as Arc<dyn EventStore>,
        }
    }

    /// Finishes pending writes and closes the log. Later calls through clones of
    /// [`store`](Self::store) fail.
    pub async fn close(self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_puts_the_log_on_postgres() {
        assert_eq!(
            Backend::choose("bank.db", None),
            Backend::Sqlite("bank.db".into())
        );
        assert_eq!(
            Backend::choose("bank.db", Some("")),
            Backend::Sqlite("bank.db".into())
        );
        assert_eq!(
            Backend::choose("bank.db", Some("postgres://h/db")),
            Backend::Postgres("postgres://h/db".into())
        );
    }

    #[test]
    fn the_description_hides_the_password() {
        let shown = Backend::Postgres("postgres://bank:s3cret@db.local:5432/bank".into());
        assert_eq!(shown.to_string(), "postgres://bank:***@db.local:5432/bank");
        let no_password = Backend::Postgres("postgres://bank@db.local/bank".into());
        assert_eq!(no_password.to_string(), "postgres://bank@db.local/bank");
    }
}
