"""Live counts of one campaign, from the content and queue tiers (for the progress stream)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from models.sqlfiles import statement


@dataclass(frozen=True)
class Progress:
    campaign_id: uuid.UUID
    sent: int
    opened: int
    clicked: int
    replied: int
    bounced: int
    queued: int


async def campaign_progress(
    db: AsyncSession | AsyncConnection, tenant_id: uuid.UUID, campaign_id: uuid.UUID
) -> Progress:
    """One statement (one round trip outside a transaction: it binds the tenant for itself)."""
    row = (
        await db.execute(
            text(statement("progress.sql", "campaign_progress")),
            {"tenant": tenant_id, "c": campaign_id},
        )
    ).one()
    return Progress(campaign_id, *row)
