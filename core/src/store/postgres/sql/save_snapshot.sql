-- Saves a snapshot unless it is ahead of its stream (a stream's version only grows, so checking
-- it in the same statement is enough), replacing a stored one of another shape or of a version
-- not above it. Returns the stream's version, for the caller to refuse a snapshot ahead of it.
-- $1: topic, $2: stream id, $3: version, $4: shape, $5: payload, $6: timestamp.
WITH stream AS (
    SELECT COALESCE(
        (SELECT max(version) FROM events WHERE topic = $1 AND stream_id = $2), 0
    ) AS version
),
saved AS (
    INSERT INTO snapshots (topic, stream_id, version, shape, payload, timestamp_us)
    SELECT $1, $2, $3, $4, $5, $6 FROM stream WHERE $3 <= stream.version
    ON CONFLICT (topic, stream_id) DO UPDATE
        SET version = excluded.version, shape = excluded.shape, payload = excluded.payload,
            timestamp_us = excluded.timestamp_us
        WHERE excluded.shape <> snapshots.shape OR excluded.version >= snapshots.version
)
SELECT version FROM stream
