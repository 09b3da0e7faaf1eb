-- Reads streams and commands again, after lock_and_read.sql found that another writer committed
-- to the batch's partitions while the batch waited for their locks (same columns as there).
-- $1, $2: streams (topic, stream id); $3, $4, $5: commands (topic, stream id, command id).
SELECT 'stream' AS kind, w.topic, w.stream_id, NULL::text AS command_id, NULL::int AS part,
       (SELECT max(e.version) FROM events AS e
        WHERE e.topic = w.topic AND e.stream_id = w.stream_id) AS version,
       NULL::bytea AS fingerprint, NULL::bigint AS first_version, NULL::bigint AS first_offset,
       NULL::int AS count
FROM unnest($1::text[], $2::text[]) AS w (topic, stream_id)
UNION ALL
SELECT 'command', c.topic, c.stream_id, c.command_id, c.part, NULL, c.fingerprint,
       c.first_version, c.first_offset, c.count
FROM commands AS c
JOIN unnest($3::text[], $4::text[], $5::text[]) AS w (topic, stream_id, command_id)
  ON c.topic = w.topic AND c.stream_id = w.stream_id AND c.command_id = w.command_id
