"""Live counts of one campaign, from the content and queue tiers (for the progress stream)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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


async def campaign_progress(session: AsyncSession, campaign_id: uuid.UUID) -> Progress:
    row = (
        await session.execute(
            text(statement("progress.sql", "campaign_progress")), {"c": campaign_id}
        )
    ).one()
    return Progress(campaign_id, *row)
