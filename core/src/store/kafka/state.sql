-- Keel's local state store for one owned Kafka partition (as Kafka Streams keeps RocksDB):
-- derived data, rebuilt from the writer-state snapshot topic and the partition's tail, never
-- the source of truth. Every statement is idempotent.

CREATE TABLE IF NOT EXISTS keel_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

INSERT OR IGNORE INTO keel_meta (key, value) VALUES ('schema_version', '1');

-- The partition's records this store has seen, by offset (offsets are Kafka's: not dense).
CREATE TABLE IF NOT EXISTS keel_events (
    log_offset     INTEGER PRIMARY KEY,
    stream_id      TEXT NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB NOT NULL,
    event_id       BLOB NOT NULL,
    command_id     TEXT,
    correlation_id BLOB,
    causation_id   BLOB,
    timestamp      INTEGER NOT NULL,
    metadata       TEXT
);

CREATE UNIQUE INDEX IF NOT EXISTS keel_events_by_stream ON keel_events (stream_id, version);

-- The writer's stream index: each stream's current version.
CREATE TABLE IF NOT EXISTS keel_streams (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
) WITHOUT ROWID;

-- Command ids committed within the window, with what they wrote (offsets as a JSON array).
CREATE TABLE IF NOT EXISTS keel_commands (
    stream_id     TEXT NOT NULL,
    command_id    TEXT NOT NULL,
    fingerprint   BLOB NOT NULL,
    first_version INTEGER NOT NULL,
    offsets       TEXT NOT NULL,
    committed_at  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, command_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS keel_commands_by_age ON keel_commands (committed_at);

-- The latest aggregate snapshot of each stream (from the snapshots topic).
CREATE TABLE IF NOT EXISTS keel_snapshots (
    stream_id TEXT PRIMARY KEY,
    version   INTEGER NOT NULL,
    shape     INTEGER NOT NULL,
    payload   BLOB NOT NULL,
    timestamp INTEGER NOT NULL
) WITHOUT ROWID;
