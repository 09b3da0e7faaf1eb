-- Writes a batch's accepted appends in one round trip: every event (one row per array element),
-- the command ids and the partitions' new heads.
WITH new_events AS (
    INSERT INTO events (topic, part, log_offset, stream_id, version, event_type, schema_version,
                        payload, event_id, command_id, correlation_id, causation_id,
                        timestamp_us, metadata)
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::text[], $7::bigint[], $8::bytea[], $9::uuid[], $10::text[],
                         $11::uuid[], $12::uuid[], $13::bigint[], $14::text[])
),
new_commands AS (
    INSERT INTO commands (topic, stream_id, command_id, fingerprint, part, first_version,
                          first_offset, count)
    SELECT * FROM unnest($15::text[], $16::text[], $17::text[], $18::bytea[], $19::int[],
                         $20::bigint[], $21::bigint[], $22::int[])
),
heads AS (
    UPDATE partitions AS p SET next_offset = h.next_offset
    FROM unnest($23::text[], $24::int[], $25::bigint[]) AS h (topic, part, next_offset)
    WHERE p.topic = h.topic AND p.part = h.part
)
SELECT 1
