-- Creates a topic with its head rows, or finds the existing one; returns its partition count
-- either way. When a concurrent transaction created it after this statement's snapshot, the
-- result is empty: run the statement again.
-- $1: topic, $2: partition count.
WITH created AS (
    INSERT INTO topics (topic, partitions) VALUES ($1, $2)
    ON CONFLICT (topic) DO NOTHING
    RETURNING topic, partitions
),
heads AS (
    INSERT INTO partitions (topic, part, next_offset)
    SELECT topic, generate_series(0, partitions - 1), 0 FROM created
)
SELECT partitions FROM created
UNION ALL
SELECT partitions FROM topics WHERE topic = $1
