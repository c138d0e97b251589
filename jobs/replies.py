"""The reply poll's job: read one email account's inbox for replies (services.replies)."""

from __future__ import annotations

import uuid

from jobs.registry import JobContext, handler
from services import replies


@handler(replies.POLL_KIND)
async def poll_replies(job: JobContext) -> None:
    await replies.poll_account(
        job.db, job.settings, job.redis, job.tenant_id, uuid.UUID(job.payload["account_id"])
    )
