-- A stream's events from a version on. $1: topic, $2: stream id, $3: first version.
SELECT part, log_offset, stream_id, version, event_type, schema_version, payload, event_id,
       command_id, correlation_id, causation_id, timestamp_us, metadata
FROM events
WHERE topic = $1 AND stream_id = $2 AND version >= $3
ORDER BY version
