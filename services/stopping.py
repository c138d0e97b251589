"""Stopping a lead's sequence, for every outcome that ends it (unsubscribe, hard bounce,
complaint, reply): its status, its pending sends cancelled and, for most, its address suppressed
for the tenant."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.campaigns import Lead, LeadStatus, Suppression, SuppressionReason
from models.content import EmailMessage
from models.sessions import Database

CANCEL_LEAD_SENDS = text(
    "UPDATE queue.jobs SET status = 'cancelled', finished_at = now(), lease_until = NULL, "
    "updated_at = now() "
    "WHERE status IN ('queued', 'failed', 'dispatched') AND kind = 'send_step' "
    "AND payload->>'lead_id' = :lead"
)


async def stop_lead(
    db: Database,
    message: EmailMessage,
    status: LeadStatus,
    *,
    suppress: SuppressionReason | None,
    only_from: tuple[LeadStatus, ...] | None = None,
    then: Callable[[], Awaitable[object]] | None = None,
) -> bool:
    """Sets the lead's status (when it is one of `only_from`, or any other status when None),
    cancels its pending sends and, with a `suppress` reason, suppresses the recipient for the
    tenant; whether anything changed. When something did, `then` (recording the event) runs
    before the lead's transaction commits: if it fails, the stop rolls back and a retry redoes
    both, rather than leaving a change with no event."""
    tenant = message.tenant_id
    changed = False
    async with db.tenant_session(tenant) as oltp:
        if suppress is not None:
            suppressed = await oltp.scalar(
                pg_insert(Suppression)
                .values(
                    tenant_id=tenant,
                    email=message.to_address.lower(),
                    reason=suppress,
                    source=str(message.id),
                )
                .on_conflict_do_nothing(index_elements=["tenant_id", "email"])
                .returning(Suppression.id)
            )
            changed = suppressed is not None
        if message.lead_id is not None:
            which = [Lead.id == message.lead_id, Lead.status != status]
            if only_from is not None:
                which.append(Lead.status.in_(only_from))
            lead = await oltp.execute(update(Lead).where(*which).values(status=status))
            async with db.tenant_session(tenant, tier="queue") as queue:
                jobs = await queue.execute(CANCEL_LEAD_SENDS, {"lead": str(message.lead_id)})
            changed = changed or lead.rowcount > 0 or jobs.rowcount > 0
        if changed and then is not None:
            await then()
    return changed
