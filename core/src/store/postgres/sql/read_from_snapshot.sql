-- A load in one round trip: the stream's snapshot when it has the given shape, then the events
-- after it (all of them without one). $1: topic, $2: stream id, $3: shape (NULL: no snapshot).
WITH snap AS (
    SELECT version, shape, payload, timestamp_us
    FROM snapshots
    WHERE topic = $1 AND stream_id = $2 AND shape = $3
)
SELECT TRUE AS is_snapshot, NULL::int AS part, NULL::bigint AS log_offset,
       NULL::text AS stream_id, version, NULL::text AS event_type, shape AS schema_version,
       payload, NULL::uuid AS event_id, NULL::text AS command_id, NULL::uuid AS correlation_id,
       NULL::uuid AS causation_id, timestamp_us, NULL::text AS metadata
FROM snap
UNION ALL
SELECT FALSE, part, log_offset, stream_id, version, event_type, schema_version, payload,
       event_id, command_id, correlation_id, causation_id, timestamp_us, metadata
FROM events
WHERE topic = $1 AND stream_id = $2 AND version > COALESCE((SELECT version FROM snap), 0)
