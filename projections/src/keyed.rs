//! Keyed state: the key-value space tables, joins, windows and process managers keep in a view
//! store, written in the same batch (the same transaction) as their checkpoints.
//!
//! A [`KeyedStore`] is a [`ViewStore`] that can keep, in each generation, values under
//! `(space, key)`: a space is a name the reader chooses (`rows`, `waiting`, `timers`…), keys
//! are strings kept in byte order, values are bytes (JSON for keel's own readers). What every
//! implementation guarantees, on top of the [`ViewStore`] guarantees:
//!
//! - Writes through a batch ([`KeyedStore::put`], [`KeyedStore::delete`]) commit or roll back
//!   with the batch, so keyed state never runs ahead of or behind the checkpoints.
//! - A batch reads its own writes ([`KeyedStore::get`], [`KeyedStore::scan`]).
//! - Readers ([`KeyedStore::read_key`], [`KeyedStore::read_range`]) see only the active
//!   generation, as of its last commit.
//!
//! Two stores implement it: [`MemoryViews<Keyed>`] (tests; each batch copies the whole state,
//! so keep it small) and, with the `sqlite` or `postgres` feature, `SqliteViews` and
//! `PostgresViews` (a table `<projection>__g<n>__keyed` per generation).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::store::ViewStore;
use crate::store::memory::{MemoryBatch, MemoryViews};

/// A view store that keeps keyed state. See the [module docs](self).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot keep keyed state",
    note = "use `keel_projections::store::memory::MemoryViews<keel_projections::keyed::Keyed>`, `keel_projections::store::sqlite::SqliteViews` or `keel_projections::store::postgres::PostgresViews`"
)]
#[async_trait]
pub trait KeyedStore: ViewStore {
    /// Prepares a new generation for keyed state (creates its table). Called from the
    /// reader's `setup`.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn setup_keyed(batch: &mut Self::Batch) -> Result<()>;

    /// The value under `(space, key)`, as this batch sees it.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn get(batch: &mut Self::Batch, space: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Sets the value under `(space, key)`.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn put(batch: &mut Self::Batch, space: &str, key: &str, value: &[u8]) -> Result<()>;

    /// Removes the value under `(space, key)`, if any.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn delete(batch: &mut Self::Batch, space: &str, key: &str) -> Result<()>;

    /// Up to `limit` entries of `space` with keys `>= from`, in key order.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn scan(
        batch: &mut Self::Batch,
        space: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;

    /// The value under `(space, key)` in the active generation of reader `name`; `None`
    /// when there is none (or the reader has not been built yet).
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn read_key(&self, name: &str, space: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` entries of `space` with keys `>= from`, in key order, in the active
    /// generation of reader `name`.
    ///
    /// # Errors
    ///
    /// A store failure.
    async fn read_range(
        &self,
        name: &str,
        space: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>>;
}

/// Keyed state held in memory: the view value of [`MemoryViews<Keyed>`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyed {
    spaces: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Keyed {
    /// The value under `(space, key)`.
    pub fn get(&self, space: &str, key: &str) -> Option<&[u8]> {
        self.spaces.get(space)?.get(key).map(Vec::as_slice)
    }

    /// Up to `limit` entries of `space` with keys `>= from`, in key order.
    pub fn range(&self, space: &str, from: &str, limit: usize) -> Vec<(String, Vec<u8>)> {
        self.spaces
            .get(space)
            .map(|entries| {
                entries
                    .range(from.to_owned()..)
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many entries `space` holds.
    pub fn len(&self, space: &str) -> usize {
        self.spaces.get(space).map_or(0, BTreeMap::len)
    }

    /// Whether `space` holds nothing.
    pub fn is_empty(&self, space: &str) -> bool {
        self.len(space) == 0
    }
}

#[async_trait]
impl KeyedStore for MemoryViews<Keyed> {
    async fn setup_keyed(_batch: &mut MemoryBatch<Keyed>) -> Result<()> {
        Ok(())
    }

    async fn get(
        batch: &mut MemoryBatch<Keyed>,
        space: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(batch.get(space, key).map(<[u8]>::to_vec))
    }

    async fn put(
        batch: &mut MemoryBatch<Keyed>,
        space: &str,
        key: &str,
        value: &[u8],
    ) -> Result<()> {
        batch
            .spaces
            .entry(space.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn delete(batch: &mut MemoryBatch<Keyed>, space: &str, key: &str) -> Result<()> {
        if let Some(entries) = batch.spaces.get_mut(space) {
            entries.remove(key);
        }
        Ok(())
    }

    async fn scan(
        batch: &mut MemoryBatch<Keyed>,
        space: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(batch.range(space, from, limit))
    }

    async fn read_key(&self, name: &str, space: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(name, |k| k.get(space, key).map(<[u8]>::to_vec))
            .await
            .flatten())
    }

    async fn read_range(
        &self,
        name: &str,
        space: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .read(name, |k| k.range(space, from, limit))
            .await
            .unwrap_or_default())
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use async_trait::async_trait;

    use super::KeyedStore;
    use crate::error::Result;
    use crate::store::sql::fail;
    use crate::store::sqlite::{SqliteBatch, SqliteViews};

    fn limit(n: usize) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    #[async_trait]
    impl KeyedStore for SqliteViews {
        async fn setup_keyed(batch: &mut SqliteBatch) -> Result<()> {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} (space TEXT NOT NULL, key TEXT NOT NULL, \
                 value BLOB NOT NULL, PRIMARY KEY (space, key)) WITHOUT ROWID",
                batch.table("keyed")
            );
            sqlx::query(&sql)
                .execute(batch.conn())
                .await
                .map_err(fail("create the keyed state table"))?;
            Ok(())
        }

        async fn get(batch: &mut SqliteBatch, space: &str, key: &str) -> Result<Option<Vec<u8>>> {
            let sql = format!(
                "SELECT value FROM {} WHERE space = ? AND key = ?",
                batch.table("keyed")
            );
            sqlx::query_scalar(&sql)
                .bind(space)
                .bind(key)
                .fetch_optional(batch.conn())
                .await
                .map_err(fail("read keyed state"))
        }

        async fn put(batch: &mut SqliteBatch, space: &str, key: &str, value: &[u8]) -> Result<()> {
            let sql = format!(
                "INSERT INTO {} (space, key, value) VALUES (?, ?, ?) \
                 ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
                batch.table("keyed")
            );
            sqlx::query(&sql)
                .bind(space)
                .bind(key)
                .bind(value)
                .execute(batch.conn())
                .await
                .map_err(fail("write keyed state"))?;
            Ok(())
        }

        async fn delete(batch: &mut SqliteBatch, space: &str, key: &str) -> Result<()> {
            let sql = format!(
                "DELETE FROM {} WHERE space = ? AND key = ?",
                batch.table("keyed")
            );
            sqlx::query(&sql)
                .bind(space)
                .bind(key)
                .execute(batch.conn())
                .await
                .map_err(fail("delete keyed state"))?;
            Ok(())
        }

        async fn scan(
            batch: &mut SqliteBatch,
            space: &str,
            from: &str,
            n: usize,
        ) -> Result<Vec<(String, Vec<u8>)>> {
            let sql = format!(
                "SELECT key, value FROM {} WHERE space = ? AND key >= ? ORDER BY key LIMIT ?",
                batch.table("keyed")
            );
            sqlx::query_as(&sql)
                .bind(space)
                .bind(from)
                .bind(limit(n))
                .fetch_all(batch.conn())
                .await
                .map_err(fail("scan keyed state"))
        }

        async fn read_key(&self, name: &str, space: &str, key: &str) -> Result<Option<Vec<u8>>> {
            let mut read = self.begin_read().await?;
            let Some(table) = read.table(name, "keyed").await? else {
                read.finish().await?;
                return Ok(None);
            };
            let value = sqlx::query_scalar(&format!(
                "SELECT value FROM {table} WHERE space = ? AND key = ?"
            ))
            .bind(space)
            .bind(key)
            .fetch_optional(read.conn())
            .await
            .map_err(fail("read keyed state"))?;
            read.finish().await?;
            Ok(value)
        }

        async fn read_range(
            &self,
            name: &str,
            space: &str,
            from: &str,
            n: usize,
        ) -> Result<Vec<(String, Vec<u8>)>> {
            let mut read = self.begin_read().await?;
            let Some(table) = read.table(name, "keyed").await? else {
                read.finish().await?;
                return Ok(Vec::new());
            };
            let rows = sqlx::query_as(&format!(
                "SELECT key, value FROM {table} WHERE space = ? AND key >= ? ORDER BY key LIMIT ?"
            ))
            .bind(space)
            .bind(from)
            .bind(limit(n))
            .fetch_all(read.conn())
            .await
            .map_err(fail("read keyed state"))?;
            read.finish().await?;
            Ok(rows)
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use async_trait::async_trait;

    use super::KeyedStore;
    use crate::error::Result;
    use crate::store::postgres::{PgBatch, PostgresViews};
    use crate::store::sql::fail;

    fn limit(n: usize) -> i64 {
        i64::try_from(n).unwrap_or(i64::MAX)
    }

    #[async_trait]
    impl KeyedStore for PostgresViews {
        async fn setup_keyed(batch: &mut PgBatch) -> Result<()> {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} (space TEXT NOT NULL, key TEXT COLLATE \"C\" NOT NULL, \
                 value BYTEA NOT NULL, PRIMARY KEY (space, key))",
                batch.table("keyed")
            );
            sqlx::query(&sql)
                .execute(batch.conn())
                .await
                .map_err(fail("create the keyed state table"))?;
            Ok(())
        }

        async fn get(batch: &mut PgBatch, space: &str, key: &str) -> Result<Option<Vec<u8>>> {
            let sql = format!(
                "SELECT value FROM {} WHERE space = $1 AND key = $2",
                batch.table("keyed")
            );
            sqlx::query_scalar(&sql)
                .bind(space)
                .bind(key)
                .fetch_optional(batch.conn())
                .await
                .map_err(fail("read keyed state"))
        }

        async fn put(batch: &mut PgBatch, space: &str, key: &str, value: &[u8]) -> Result<()> {
            let sql = format!(
                "INSERT INTO {} (space, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
                batch.table("keyed")
            );
            sqlx::query(&sql)
                .bind(space)
                .bind(key)
                .bind(value)
                .execute(batch.conn())
                .await
                .map_err(fail("write keyed state"))?;
            Ok(())
        }

        async fn delete(batch: &mut PgBatch, space: &str, key: &str) -> Result<()> {
            let sql = format!(
                "DELETE FROM {} WHERE space = $1 AND key = $2",
                batch.table("keyed")
            );
            sqlx::query(&sql)
                .bind(space)
                .bind(key)
                .execute(batch.conn())
                .await
                .map_err(fail("delete keyed state"))?;
            Ok(())
        }

        async fn scan(
            batch: &mut PgBatch,
            space: &str,
            from: &str,
            n: usize,
        ) -> Result<Vec<(String, Vec<u8>)>> {
            let sql = format!(
                "SELECT key, value FROM {} WHERE space = $1 AND key >= $2 ORDER BY key LIMIT $3",
                batch.table("keyed")
            );
            sqlx::query_as(&sql)
                .bind(space)
                .bind(from)
                .bind(limit(n))
                .fetch_all(batch.conn())
                .await
                .map_err(fail("scan keyed state"))
        }

        async fn read_key(&self, name: &str, space: &str, key: &str) -> Result<Option<Vec<u8>>> {
            let mut read = self.begin_read().await?;
            let Some(table) = read.table(name, "keyed").await? else {
                read.finish().await?;
                return Ok(None);
            };
            let value = sqlx::query_scalar(&format!(
                "SELECT value FROM {table} WHERE space = $1 AND key = $2"
            ))
            .bind(space)
            .bind(key)
            .fetch_optional(read.conn())
            .await
            .map_err(fail("read keyed state"))?;
            read.finish().await?;
            Ok(value)
        }

        async fn read_range(
            &self,
            name: &str,
            space: &str,
            from: &str,
            n: usize,
        ) -> Result<Vec<(String, Vec<u8>)>> {
            let mut read = self.begin_read().await?;
            let Some(table) = read.table(name, "keyed").await? else {
                read.finish().await?;
                return Ok(Vec::new());
            };
            let rows = sqlx::query_as(&format!(
                "SELECT key, value FROM {table} WHERE space = $1 AND key >= $2 ORDER BY key LIMIT $3"
            ))
            .bind(space)
            .bind(from)
            .bind(limit(n))
            .fetch_all(read.conn())
            .await
            .map_err(fail("read keyed state"))?;
            read.finish().await?;
            Ok(rows)
        }
    }
}

/// A JSON value of keyed state that does not decode: the stored bytes are not of the type the
/// reader expects (another version of the reader wrote them?).
pub(crate) fn decode<T: DeserializeOwned>(space: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::store(
            "decode keyed state",
            format!("the value under {space}/{key} does not decode: {e}"),
        )
    })
}

/// Encodes a value of keyed state as JSON.
pub(crate) fn encode<T: Serialize>(space: &str, key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::store(
            "encode keyed state",
            format!("the value under {space}/{key} does not encode: {e}"),
        )
    })
}

/// Typed access to keyed state inside one batch.
pub(crate) struct State<'a, S: KeyedStore> {
    pub(crate) batch: &'a mut S::Batch,
}

impl<S: KeyedStore> State<'_, S> {
    pub(crate) async fn get<T: DeserializeOwned>(
        &mut self,
        space: &str,
        key: &str,
    ) -> Result<Option<T>> {
        match S::get(self.batch, space, key).await? {
            Some(bytes) => decode(space, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) async fn put<T: Serialize>(
        &mut self,
        space: &str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = encode(space, key, value)?;
        S::put(self.batch, space, key, &bytes).await
    }

    pub(crate) async fn delete(&mut self, space: &str, key: &str) -> Result<()> {
        S::delete(self.batch, space, key).await
    }

    /// Entries of `space` from key `from` on, decoded, up to `limit`.
    pub(crate) async fn scan<T: DeserializeOwned>(
        &mut self,
        space: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, T)>> {
        S::scan(self.batch, space, from, limit)
            .await?
            .into_iter()
            .map(|(k, v)| {
                let value = decode(space, &k, &v)?;
                Ok((k, value))
            })
            .collect()
    }
}

/// Reads a typed value of the active generation of reader `name`.
pub(crate) async fn read<S: KeyedStore, T: DeserializeOwned>(
    views: &S,
    name: &str,
    space: &str,
    key: &str,
) -> Result<Option<T>> {
    match views.read_key(name, space, key).await? {
        Some(bytes) => decode(space, key, &bytes).map(Some),
        None => Ok(None),
    }
}
