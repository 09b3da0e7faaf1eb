-- What a batch's decisions need, in one snapshot: the head of each partition the batch may
-- write ('seen'), the current version of each of its streams (its highest event's; none for a
-- new stream) and the stored answer of each of its command ids.
-- $1, $2: partitions (topic, partition); $3, $4: streams (topic, stream id);
-- $5, $6, $7: commands (topic, stream id, command id).
SELECT 'seen' AS kind, p.topic, NULL::text AS stream_id, NULL::text AS command_id, p.part,
       p.next_offset AS version, NULL::bytea AS fingerprint, NULL::bigint AS first_version,
       NULL::bigint AS first_offset, NULL::int AS count
FROM partitions AS p
JOIN unnest($1::text[], $2::int[]) AS w (topic, part)
  ON p.topic = w.topic AND p.part = w.part
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
