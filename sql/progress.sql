-- name: campaign_progress
-- Distinct messages per outcome (an open counted once per message), plus pending send jobs.
SELECT
    (SELECT count(*) FROM content.email_messages WHERE campaign_id = :c AND status = 'SENT') AS sent,
    count(DISTINCT message_id) FILTER (WHERE kind = 'OPEN') AS opened,
    count(DISTINCT message_id) FILTER (WHERE kind = 'CLICK') AS clicked,
    count(DISTINCT message_id) FILTER (WHERE kind = 'REPLY') AS replied,
    count(DISTINCT message_id) FILTER (WHERE kind = 'BOUNCE') AS bounced,
    (SELECT count(*) FROM queue.jobs
     WHERE campaign_id = :c AND status IN ('queued', 'failed', 'dispatched', 'running')) AS queued
FROM content.email_events
WHERE campaign_id = :c;
