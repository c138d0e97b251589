-- Content retention (services/retention.py): what is kept only so long.

-- name: drop_message_bodies
-- One batch: the bodies of up to $2 messages older than $1 days, oldest first, set to NULL; the
-- rows and their events stay. The partial index ix_email_messages_created_at_with_body holds
-- just the messages that still have a body. A row a sender holds locked is left for the next run.
-- `= ANY(ARRAY(...))` rather than `IN (...)`: the update then looks the batch up by primary key,
-- where IN let the planner hash-join it against a scan of the whole table.
WITH dropped AS (
    UPDATE content.email_messages SET body_compressed = NULL
    WHERE id = ANY(ARRAY(
        SELECT id FROM content.email_messages
        WHERE body_compressed IS NOT NULL AND created_at < now() - make_interval(days => $1)
        ORDER BY created_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING 1
)
SELECT count(*) FROM dropped;
