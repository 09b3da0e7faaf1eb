//! Creating the schema in a new file, and bringing a file of an older schema up to date.
//!
//! | version | what changed |
//! |---|---|
//! | 1 | the first schema: events keyed by partition and offset, one column per envelope field |
//! | 2 | events kept in stream order (loads read them side by side), the envelope fields packed into one column ([`packed`](super::packed)), snapshots |
//!
//! A migration runs in one transaction when the file is opened: it completes or leaves the
//! file as it was. A file of a newer or unknown version is refused, never touched.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::packed;
use crate::envelope::Timestamp;
use crate::ids::CommandId;
use crate::store::{Error, Result};

/// The schema this version of Keel reads and writes.
pub(super) const SCHEMA_VERSION: &str = "2";

fn fail(e: rusqlite::Error) -> Error {
    Error::backend("create the SQLite schema", e)
}

/// Creates or upgrades the schema, or refuses a file of another version.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let has_meta: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'keel_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(fail)?
        > 0;
    let stored: Option<String> = if has_meta {
        tx.query_row(
            "SELECT value FROM keel_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(fail)?
    } else {
        None
    };
    match stored.as_deref() {
        None | Some(SCHEMA_VERSION) => {
            tx.execute_batch(include_str!("schema.sql")).map_err(fail)?;
        }
        Some("1") => {
            tracing::info!("migrating the SQLite event store from schema version 1 to 2");
            tx.execute_batch("ALTER TABLE keel_events RENAME TO keel_events_v1")
                .map_err(fail)?;
            tx.execute_batch(include_str!("schema.sql")).map_err(fail)?;
            copy_events_from_v1(&tx)?;
            tx.execute_batch(
                "DROP TABLE keel_events_v1; \
                 UPDATE keel_meta SET value = '2' WHERE key = 'schema_version';",
            )
            .map_err(fail)?;
        }
        Some(other) => {
            return Err(Error::backend(
                "open the SQLite file",
                format!(
                    "the file has schema version {other}; this keel reads {SCHEMA_VERSION} \
                     (and upgrades 1): open it with the keel that wrote it"
                ),
            ));
        }
    }
    tx.commit().map_err(fail)
}

/// Copies every version-1 event into the version-2 table, packing its envelope.
fn copy_events_from_v1(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let mut read = tx
        .prepare(
            "SELECT topic, part, log_offset, stream_id, version, event_type, schema_version, \
             payload, event_id, command_id, correlation_id, causation_id, timestamp, metadata \
             FROM keel_events_v1",
        )
        .map_err(fail)?;
    let mut write = tx
        .prepare(
            "INSERT INTO keel_events (topic, stream_id, version, part, log_offset, event_type, \
             schema_version, payload, envelope) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(fail)?;
    let mut rows = read.query([]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let topic: String = row.get(0).map_err(fail)?;
        let (part, offset): (i64, i64) = (row.get(1).map_err(fail)?, row.get(2).map_err(fail)?);
        let damaged = |detail: String| {
            Error::backend(
                "migrate the SQLite file",
                format!(
                    "damaged record at topic {topic} partition {part} offset {offset}: {detail}"
                ),
            )
        };
        let uuid = |col: usize| -> Result<Option<uuid::Uuid>> {
            let bytes: Option<Vec<u8>> = row.get(col).map_err(fail)?;
            bytes
                .map(|b| uuid::Uuid::from_slice(&b).map_err(|e| damaged(e.to_string())))
                .transpose()
        };
        let event_id = uuid(8)?.ok_or_else(|| damaged("no event id".into()))?;
        let command_id: Option<String> = row.get(9).map_err(fail)?;
        let command_id = command_id
            .map(|c| CommandId::new(c).map_err(|e| damaged(e.to_string())))
            .transpose()?;
        let metadata: Option<String> = row.get(13).map_err(fail)?;
        let envelope = packed::pack(
            event_id,
            Timestamp(row.get(12).map_err(fail)?),
            command_id.as_ref(),
            uuid(10)?,
            uuid(11)?,
            metadata.as_deref().unwrap_or(""),
        );
        write
            .execute((
                &topic,
                row.get::<_, String>(3).map_err(fail)?,
                row.get::<_, i64>(4).map_err(fail)?,
                part,
                offset,
                row.get::<_, String>(5).map_err(fail)?,
                row.get::<_, i64>(6).map_err(fail)?,
                super::row::blob(row, 7).map_err(damaged)?,
                envelope,
            ))
            .map_err(fail)?;
    }
    Ok(())
}
