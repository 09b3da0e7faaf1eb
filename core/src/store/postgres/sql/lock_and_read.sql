-- Locks the head rows of the partitions a batch may write and reads what its decisions need, in
-- one round trip:
--
-- - 'locked': each head row, locked (FOR UPDATE, in one order for every writer, so two batches
--   never deadlock) and read as its newest committed version;
-- - 'seen': the same rows as this statement's snapshot shows them;
-- - 'stream': the current version of each stream of the batch (its highest event's; none for a
--   new stream);
-- - 'command': the stored answer of each command id of the batch.
--
-- Streams and commands are read in the statement's snapshot, taken before the locks were
-- granted. Every append advances its partition's head, so when 'locked' and 'seen' agree for
-- every partition, no one committed to these partitions since the snapshot, and the reads are
-- current. When they differ (another writer committed while this one waited for a lock), the
-- caller reads streams and commands again (read.sql), in a snapshot taken after the locks.
--
-- $1, $2: partitions (topic, partition); $3, $4: streams (topic, stream id);
-- $5, $6, $7: commands (topic, stream id, command id).
WITH locked AS (
    SELECT p.topic, p.part, p.next_offset
    FROM partitions AS p
    JOIN unnest($1::text[], $2::int[]) AS w (topic, part)
      ON p.topic = w.topic AND p.part = w.part
    ORDER BY p.topic, p.part
    FOR UPDATE OF p
),
seen AS (
    SELECT p.topic, p.part, p.next_offset
    FROM partitions AS p
    JOIN unnest($1::text[], $2::int[]) AS w (topic, part)
      ON p.topic = w.topic AND p.part = w.part
)
SELECT 'locked' AS kind, topic, NULL::text AS stream_id, NULL::text AS command_id, part,
       next_offset AS version, NULL::bytea AS fingerprint, NULL::bigint AS first_version,
       NULL::bigint AS first_offset, NULL::int AS count
FROM locked
UNION ALL
SELECT 'seen', topic, NULL, NULL, part, next_offset, NULL, NULL, NULL, NULL
FROM seen
UNION ALL
SELECT 'stream', w.topic, w.stream_id, NULL, NULL,
       (SELECT max(e.version) FROM events AS e
        WHERE e.topic = w.topic AND e.stream_id = w.stream_id),
       NULL, NULL, NULL, NULL
FROM unnest($3::text[], $4::text[]) AS w (topic, stream_id)
UNION ALL
SELECT 'command', c.topic, c.stream_id, c.command_id, c.part, NULL, c.fingerprint,
       c.first_version, c.first_offset, c.count
FROM commands AS c
JOIN unnest($5::text[], $6::text[], $7::text[]) AS w (topic, stream_id, command_id)
  ON c.topic = w.topic AND c.stream_id = w.stream_id AND c.command_id = w.command_id
