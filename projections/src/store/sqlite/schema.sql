-- Keel's SQLite view store: generations, checkpoints, leases and parked events of projections.
-- View data lives in tables named `<projection>__g<generation>__<table>`.

CREATE TABLE IF NOT EXISTS keel_view_names (
    name            TEXT PRIMARY KEY,
    last_generation INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS keel_view_generations (
    name       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('building', 'active')),
    PRIMARY KEY (name, generation)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS keel_view_checkpoints (
    name        TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    part        INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (name, generation, topic, part)
) WITHOUT ROWID;

-- One runner per projection: the lease names it and runs until `expires_at` (Unix ms).
CREATE TABLE IF NOT EXISTS keel_view_leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS keel_view_parked (
    name       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    topic      TEXT NOT NULL,
    part       INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,
    stream_id  TEXT NOT NULL,
    version    INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    error      TEXT NOT NULL,
    PRIMARY KEY (name, generation, topic, part, log_offset)
) WITHOUT ROWID;

-- Why a generation's runner last stopped on an error (cleared when a runner starts on it).
CREATE TABLE IF NOT EXISTS keel_view_stops (
    name       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    stopped_at INTEGER NOT NULL,
    error      TEXT NOT NULL,
    PRIMARY KEY (name, generation)
) WITHOUT ROWID;
