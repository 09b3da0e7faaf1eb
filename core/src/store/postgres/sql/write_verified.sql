-- Writes a batch decided from read.sql, in one statement and so in one transaction of its own,
-- if and only if no one committed to its partitions since that read.
--
-- It locks the batch's head rows (FOR UPDATE, in one order for every writer) and compares each
-- with the head the read saw. Every append advances its partition's head and heads only grow,
-- so equal heads mean the read is still true: the streams' versions, the command ids and the
-- heads the decisions rest on. Then it inserts the events and the command ids and advances the
-- heads, and the statement's commit releases the locks: appends to a partition still commit one
-- after the other, in offset order. When a head moved, it writes nothing and returns false; the
-- batcher reads and decides again.
--
-- $1-$14: events (as write_batch.sql); $15-$22: commands (as write_batch.sql);
-- $23-$26: partitions (topic, partition, head seen by the read, head after the batch).
WITH expected AS (
    SELECT * FROM unnest($23::text[], $24::int[], $25::bigint[], $26::bigint[])
        AS h (topic, part, seen, next)
),
locked AS (
    SELECT p.topic, p.part, p.next_offset
    FROM partitions AS p
    JOIN expected AS e ON p.topic = e.topic AND p.part = e.part
    ORDER BY p.topic, p.part
    FOR UPDATE OF p
),
verified AS (
    SELECT count(*) = (SELECT count(*) FROM expected) AS ok
    FROM locked AS l
    JOIN expected AS e ON l.topic = e.topic AND l.part = e.part AND l.next_offset = e.seen
),
new_events AS (
    INSERT INTO events (topic, part, log_offset, stream_id, version, event_type, schema_version,
                        payload, event_id, command_id, correlation_id, causation_id,
                        timestamp_us, metadata)
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::text[], $7::bigint[], $8::bytea[], $9::uuid[], $10::text[],
                         $11::uuid[], $12::uuid[], $13::bigint[], $14::text[])
    WHERE (SELECT ok FROM verified)
),
new_commands AS (
    INSERT INTO commands (topic, stream_id, command_id, fingerprint, part, first_version,
                          first_offset, count)
    SELECT * FROM unnest($15::text[], $16::text[], $17::text[], $18::bytea[], $19::int[],
                         $20::bigint[], $21::bigint[], $22::int[])
    WHERE (SELECT ok FROM verified)
),
heads AS (
    UPDATE partitions AS p SET next_offset = e.next
    FROM expected AS e
    WHERE p.topic = e.topic AND p.part = e.part AND e.next <> e.seen
      AND (SELECT ok FROM verified)
)
SELECT ok FROM verified
