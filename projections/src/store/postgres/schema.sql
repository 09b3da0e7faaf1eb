-- Keel's PostgreSQL view store: generations, checkpoints, leases and parked events of projections.
-- View data lives in tables named `<projection>__g<generation>__<table>` in the same schema.

CREATE TABLE IF NOT EXISTS keel_view_names (
    name            TEXT PRIMARY KEY,
    last_generation BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS keel_view_generations (
    name       TEXT NOT NULL,
    generation BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('building', 'active')),
    PRIMARY KEY (name, generation)
);

CREATE TABLE IF NOT EXISTS keel_view_checkpoints (
    name        TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    topic       TEXT NOT NULL,
    part        BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (name, generation, topic, part)
);

-- One runner per projection: the lease names it and runs until `expires_at` (Unix ms).
CREATE TABLE IF NOT EXISTS keel_view_leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS keel_view_parked (
    name       TEXT NOT NULL,
    generation BIGINT NOT NULL,
    topic      TEXT NOT NULL,
    part       BIGINT NOT NULL,
    log_offset BIGINT NOT NULL,
    stream_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    error      TEXT NOT NULL,
    PRIMARY KEY (name, generation, topic, part, log_offset)
);

-- Why a generation's runner last stopped on an error (cleared when a runner starts on it).
CREATE TABLE IF NOT EXISTS keel_view_stops (
    name       TEXT NOT NULL,
    generation BIGINT NOT NULL,
    stopped_at BIGINT NOT NULL,
    error      TEXT NOT NULL,
    PRIMARY KEY (name, generation)
);

-- Never holds a row: readers lock it in ACCESS SHARE mode before their snapshot, generation
-- switches and drops in ACCESS EXCLUSIVE mode, so a read never sees a generation dropped under it.
CREATE TABLE IF NOT EXISTS keel_view_switch (
    unused BOOLEAN
);
