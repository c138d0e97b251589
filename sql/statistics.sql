-- Fresh planner statistics on request, for the application roles (they do not own the tables).
-- After a bulk load (a lead import of thousands of rows) the statistics are stale until
-- autovacuum's next round, and with row-level security a stale estimate ("this tenant has 6
-- rows") makes the planner answer a primary-key lookup by scanning all of the tenant's rows.
-- The same holds for the messages of a big campaign's first minutes.

-- name: refresh_statistics
CREATE OR REPLACE FUNCTION app.refresh_statistics(target text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF target NOT IN ('app.leads', 'content.email_messages') THEN
        RAISE EXCEPTION 'statistics of % are not refreshed on request', target;
    END IF;
    -- One refresh of a table at a time: many tenants' loads ask for the same one.
    IF NOT pg_try_advisory_xact_lock(hashtext('refresh_statistics:' || target)) THEN
        RETURN;
    END IF;
    EXECUTE 'ANALYZE ' || target;
END
$fn$;

-- name: refresh_statistics_private
REVOKE ALL ON FUNCTION app.refresh_statistics(text) FROM PUBLIC;
