"""The live hub's reads, one statement each: a function binds the tenant (transaction-local, so
for that statement alone when called outside a transaction) and returns its queue status, with
the depth of each tier, or a campaign's progress. Row-level security applies as for any query of
the application role (the functions run with the caller's rights). Before, a read was five round
trips (begin, bind, two statements, commit), each waiting for a turn of the API's busy loop.

Revision ID: 0023
Revises: 0022
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION queue.tenant_queue_status(tenant uuid)
        RETURNS TABLE (queued bigint, scheduled bigint, running bigint, failed_last_hour bigint,
                       dead bigint, sent_last_minute bigint, tiers jsonb)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM set_config('app.tenant_id', tenant::text, true);
            RETURN QUERY
            SELECT
                count(*) FILTER (WHERE j.status IN ('queued', 'failed') AND j.run_at <= now()),
                count(*) FILTER (WHERE j.status IN ('queued', 'failed') AND j.run_at > now()),
                count(*) FILTER (WHERE j.status IN ('dispatched', 'running')),
                (SELECT count(*) FROM queue.job_logs l
                 WHERE l.status IN ('failed', 'dead') AND l.at > now() - interval '1 hour'),
                count(*) FILTER (WHERE j.status = 'dead'),
                (SELECT count(*) FROM content.email_messages m
                 WHERE m.status = 'SENT' AND m.sent_at > now() - interval '1 minute'),
                (SELECT coalesce(jsonb_object_agg(t.tier, jsonb_build_array(t.ready, t.in_flight)),
                                 '{}'::jsonb)
                 FROM (SELECT CASE WHEN d.priority <= 50 THEN 'high'
                                   WHEN d.priority <= 150 THEN 'normal' ELSE 'low' END AS tier,
                              count(*) FILTER (WHERE d.status IN ('queued', 'failed')
                                               AND d.run_at <= now()) AS ready,
                              count(*) FILTER (WHERE d.status IN ('dispatched', 'running'))
                                  AS in_flight
                       FROM queue.jobs d
                       WHERE d.status IN ('queued', 'failed', 'dispatched', 'running')
                       GROUP BY 1) t)
            FROM queue.jobs j
            WHERE j.status IN ('queued', 'failed', 'dispatched', 'running', 'dead');
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION content.tenant_campaign_progress(tenant uuid, campaign uuid)
        RETURNS TABLE (sent bigint, opened bigint, clicked bigint, replied bigint, bounced bigint,
                       queued bigint)
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM set_config('app.tenant_id', tenant::text, true);
            RETURN QUERY
            SELECT
                (SELECT count(*) FROM content.email_messages m
                 WHERE m.campaign_id = campaign AND m.status = 'SENT'),
                count(DISTINCT e.message_id) FILTER (WHERE e.kind = 'OPEN'),
                count(DISTINCT e.message_id) FILTER (WHERE e.kind = 'CLICK'),
                count(DISTINCT e.message_id) FILTER (WHERE e.kind = 'REPLY'),
                count(DISTINCT e.message_id) FILTER (WHERE e.kind = 'BOUNCE'),
                (SELECT count(*) FROM queue.jobs j
                 WHERE j.campaign_id = campaign
                   AND j.status IN ('queued', 'failed', 'dispatched', 'running'))
            FROM content.email_events e
            WHERE e.campaign_id = campaign;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION content.tenant_campaign_progress(uuid, uuid)")
    op.execute("DROP FUNCTION queue.tenant_queue_status(uuid)")
