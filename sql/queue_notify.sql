-- Wakes the queuers (LISTEN queue_jobs) when a statement inserts jobs that are ready now.
-- A statement-level trigger: a bulk enqueue of 100,000 jobs notifies once.

-- name: notify_function
CREATE OR REPLACE FUNCTION queue.notify_ready_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_jobs WHERE run_at <= now()) THEN
        PERFORM pg_notify('queue_jobs', '');
    END IF;
    RETURN NULL;
END
$$;

-- name: drop_trigger
DROP TRIGGER IF EXISTS jobs_notify_ready ON queue.jobs;

-- name: create_trigger
CREATE TRIGGER jobs_notify_ready AFTER INSERT ON queue.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION queue.notify_ready_jobs();
