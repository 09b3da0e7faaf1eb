-- Locks the head rows of the partitions a batch may write, in one order for every writer (so two
-- batches never deadlock), and returns each partition's next offset. A batch holds these locks
-- until it commits: appends to one partition commit one after the other.
-- $1: topics, $2: partitions (pairs).
SELECT p.topic, p.part, p.next_offset
FROM partitions AS p
JOIN unnest($1::text[], $2::int[]) AS w (topic, part)
  ON p.topic = w.topic AND p.part = w.part
ORDER BY p.topic, p.part
FOR UPDATE OF p
