-- Keel's SQLite event store, schema version 2. Every statement is idempotent.

CREATE TABLE IF NOT EXISTS keel_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

INSERT OR IGNORE INTO keel_meta (key, value) VALUES ('schema_version', '2');

-- A topic and its partition count, fixed at creation.
CREATE TABLE IF NOT EXISTS keel_topics (
    topic      TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
) WITHOUT ROWID;

-- The next offset of each partition that has records. Only the writer advances it, inside the
-- transaction that inserts the records, so offsets are dense and in commit order.
CREATE TABLE IF NOT EXISTS keel_partitions (
    topic       TEXT NOT NULL,
    part        INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, part)
) WITHOUT ROWID;

-- The log, kept in stream order so that loading an aggregate reads its events side by side;
-- the offset index serves partition reads (and doubles as a guard: an offset is never written
-- twice, as the primary key guards versions). `envelope` packs the event id, timestamp,
-- command, correlation and causation ids and metadata (see packed.rs).
CREATE TABLE IF NOT EXISTS keel_events (
    topic          TEXT NOT NULL,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    part           INTEGER NOT NULL,
    log_offset     INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB NOT NULL,
    envelope       BLOB NOT NULL,
    PRIMARY KEY (topic, stream_id, version)
) WITHOUT ROWID;

CREATE UNIQUE INDEX IF NOT EXISTS keel_events_by_offset ON keel_events (topic, part, log_offset);

-- Each stream's current version and partition.
CREATE TABLE IF NOT EXISTS keel_streams (
    topic     TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    version   INTEGER NOT NULL,
    part      INTEGER NOT NULL,
    PRIMARY KEY (topic, stream_id)
) WITHOUT ROWID;

-- Committed command ids per stream, with what they wrote: the idempotency record.
CREATE TABLE IF NOT EXISTS keel_commands (
    topic         TEXT NOT NULL,
    stream_id     TEXT NOT NULL,
    command_id    TEXT NOT NULL,
    fingerprint   BLOB NOT NULL,
    part          INTEGER NOT NULL,
    first_version INTEGER NOT NULL,
    first_offset  INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (topic, stream_id, command_id)
) WITHOUT ROWID;

-- The latest snapshot of each stream's aggregate: derived data, replaced as the stream grows.
CREATE TABLE IF NOT EXISTS keel_snapshots (
    topic     TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    version   INTEGER NOT NULL,
    shape     INTEGER NOT NULL,
    payload   BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (topic, stream_id)
) WITHOUT ROWID;
