//! What the SQL view stores (SQLite, PostgreSQL) share: error mapping, integer conversion and
//! the names of a generation's tables.

use crate::error::Error;
use crate::store::ViewId;

/// Maps a driver error to [`Error::Store`] naming `operation`.
pub(crate) fn fail(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| Error::store(operation, e)
}

/// A count or offset as SQL's `BIGINT`, saturating.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The prefix of a generation's tables. Projection names hold no `__`, so no other
/// projection's or generation's tables share it.
pub(crate) fn prefix(view: &ViewId) -> String {
    format!("{}__g{}__", view.name, view.generation)
}

/// The quoted name of table `name` under a generation's `prefix`, for SQL text:
/// `"balances__g2__accounts"`.
pub(crate) fn quoted(prefix: &str, name: &str) -> String {
    format!("\"{prefix}{}\"", name.replace('"', ""))
}
