-- What a batch's decisions need, read after its head rows are locked (so in a snapshot that
-- holds every earlier commit to those partitions): the current version of each stream, and the
-- stored answer of each command id.
-- $1, $2: streams (topic, stream id); $3, $4, $5: commands (topic, stream id, command id).
SELECT FALSE AS is_command, s.topic, s.stream_id, NULL::text AS command_id, s.version,
       NULL::bytea AS fingerprint, NULL::int AS part, NULL::bigint AS first_version,
       NULL::bigint AS first_offset, NULL::int AS count
FROM streams AS s
JOIN unnest($1::text[], $2::text[]) AS w (topic, stream_id)
  ON s.topic = w.topic AND s.stream_id = w.stream_id
UNION ALL
SELECT TRUE, c.topic, c.stream_id, c.command_id, NULL, c.fingerprint, c.part, c.first_version,
       c.first_offset, c.count
FROM commands AS c
JOIN unnest($3::text[], $4::text[], $5::text[]) AS w (topic, stream_id, command_id)
  ON c.topic = w.topic AND c.stream_id = w.stream_id AND c.command_id = w.command_id
