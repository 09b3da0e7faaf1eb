-- Keel's PostgreSQL event store, schema version 1.
--
-- Runs in the store's own schema (`keel` unless configured): every connection of the store sets
-- its search_path to that schema alone, so no name here is schema-qualified.

-- A topic and its partition count, fixed at creation.
CREATE TABLE topics (
    topic      TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);

-- The head row of each partition: the offset its next record gets. Created with the topic, one
-- row per partition. An append locks the head rows of the partitions it writes
-- (SELECT ... FOR UPDATE) and advances them in its own transaction, so the appends to one
-- partition commit one after the other and their offsets are dense and in commit order.
CREATE TABLE partitions (
    topic       TEXT NOT NULL REFERENCES topics (topic),
    part        INTEGER NOT NULL CHECK (part >= 0),
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (topic, part)
);

-- The log. The stream index doubles as a guard (a version is never written twice) and as the
-- streams' versions: a stream's version is its highest event's, one index probe away, so no
-- table of versions is rewritten on every append.
CREATE TABLE events (
    topic          TEXT NOT NULL,
    part           INTEGER NOT NULL,
    log_offset     BIGINT NOT NULL,
    stream_id      TEXT NOT NULL,
    version        BIGINT NOT NULL CHECK (version > 0),
    event_type     TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    payload        BYTEA NOT NULL,
    event_id       UUID NOT NULL,
    command_id     TEXT,
    correlation_id UUID,
    causation_id   UUID,
    -- Microseconds since the Unix epoch.
    timestamp_us   BIGINT NOT NULL,
    -- A JSON object of strings, or NULL when empty.
    metadata       TEXT,
    PRIMARY KEY (topic, part, log_offset)
);

CREATE UNIQUE INDEX events_by_stream ON events (topic, stream_id, version);

-- Committed command ids per stream, with what they wrote: the idempotency record. The primary
-- key is what makes a command id count once, across processes and restarts.
CREATE TABLE commands (
    topic         TEXT NOT NULL,
    stream_id     TEXT NOT NULL,
    command_id    TEXT NOT NULL,
    fingerprint   BYTEA NOT NULL,
    part          INTEGER NOT NULL,
    first_version BIGINT NOT NULL,
    first_offset  BIGINT NOT NULL,
    count         INTEGER NOT NULL,
    PRIMARY KEY (topic, stream_id, command_id)
);

-- The latest snapshot of each stream's aggregate: derived data, replaced as the stream grows.
CREATE TABLE snapshots (
    topic        TEXT NOT NULL,
    stream_id    TEXT NOT NULL,
    version      BIGINT NOT NULL,
    shape        BIGINT NOT NULL,
    payload      BYTEA NOT NULL,
    timestamp_us BIGINT NOT NULL,
    PRIMARY KEY (topic, stream_id)
);
