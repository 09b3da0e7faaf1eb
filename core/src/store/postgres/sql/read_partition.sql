-- A partition's records from an offset on. Offsets are assigned under the partition's head lock,
-- so every record below the highest one visible here is visible too: nothing is skipped.
-- $1: topic, $2: partition, $3: first offset, $4: most records.
SELECT part, log_offset, stream_id, version, event_type, schema_version, payload, event_id,
       command_id, correlation_id, causation_id, timestamp_us, metadata
FROM events
WHERE topic = $1 AND part = $2 AND log_offset >= $3
ORDER BY log_offset
LIMIT $4
