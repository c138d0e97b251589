"""Campaign planning: the send jobs of a campaign, inside its sending window.

Planning puts step 1 of every not-yet-contacted lead on the queue, round robin over the
campaign's usable accounts, each account sending at most its daily limit per local day with
`send_spacing_seconds` between its sends, always inside the window. Step N+1 is planned by the
send of step N (`plan_follow_ups`), `delay_days` later, from the same account (so it threads),
and never for a lead who replied, bounced, complained or unsubscribed.

A WARMING_UP account's daily limit is its warm-up ramp's target today (services/warmup.py),
never above its own. The days planned ahead get today's target too: below the ramp's, which
only grows unless a bounce or complaint steps it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue, enqueue_many
from models.campaigns import (
    Campaign,
    CampaignAccount,
    CampaignSequenceStep,
    CampaignStatus,
    Lead,
    LeadStatus,
)
from models.infrastructure import AccountStatus, EmailAccount, WarmupState
from services import statistics, usage
from services.errors import DomainError

SEND_KIND = "send_step"
SEND_PRIORITY = 100
PLAN_PRIORITY = 50
USABLE_ACCOUNTS = (AccountStatus.ACTIVE, AccountStatus.WARMING_UP)


# --- the sending window ----------------------------------------------------------------------


def next_open(campaign: Campaign, at: datetime) -> datetime:
    """The first instant at or after `at` inside the campaign's window (its time zone, ISO
    weekdays, [start_hour, end_hour) local time). DST gaps and repeats are the zone's."""
    zone = ZoneInfo(campaign.timezone)
    local = at.astimezone(zone)
    for _ in range(8 * 24):  # at most a week of hours ahead
        if local.isoweekday() in campaign.window_days:
            start = local.replace(hour=campaign.start_hour, minute=0, second=0, microsecond=0)
            end = _local_hour(local, campaign.end_hour)
            if local < start:
                local = start
            if local < end:
                return local.astimezone(UTC)
        local = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    raise DomainError("INVALID_WINDOW", "the sending window never opens")


def _local_hour(local: datetime, hour: int) -> datetime:
    if hour == 24:
        return (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0)


def slots(campaign: Campaign, start: datetime, daily_limit: int) -> Iterator[datetime]:
    """Send times of one account: spaced, capped per local day, inside the window."""
    zone = ZoneInfo(campaign.timezone)
    spacing = timedelta(seconds=campaign.send_spacing_seconds)
    at, day, sent = next_open(campaign, start), None, 0
    while True:
        local_day = at.astimezone(zone).date()
        if local_day != day:
            day, sent = local_day, 0
        if sent >= daily_limit:
            tomorrow = datetime.combine(local_day + timedelta(days=1), datetime.min.time(), zone)
            at = next_open(campaign, tomorrow)
            continue
        yield at
        sent += 1
        at = next_open(campaign, at + spacing)


# --- planning --------------------------------------------------------------------------------


async def plan_campaign(
    session: AsyncSession, campaign_id: uuid.UUID, now: datetime | None = None
) -> int:
    """Queues step 1 for every lead not yet contacted; returns how many sends it planned.
    Re-planning is harmless: a send job's idempotency key is its campaign, lead and step."""
    now = now or datetime.now(UTC)
    campaign = await session.get(Campaign, campaign_id, with_for_update=True)
    if campaign is None or campaign.status != CampaignStatus.RUNNING:
        return 0
    senders = list(
        await session.scalars(
            select(EmailAccount)
            .join(CampaignAccount, CampaignAccount.account_id == EmailAccount.id)
            .where(
                CampaignAccount.campaign_id == campaign_id, EmailAccount.status.in_(USABLE_ACCOUNTS)
            )
            .order_by(CampaignAccount.position, EmailAccount.address)
        )
    )
    if not senders:
        return 0
    leads = list(
        await session.scalars(
            select(Lead.id)
            .where(
                Lead.campaign_id == campaign_id,
                Lead.status == LeadStatus.ACTIVE,
                Lead.current_step == 0,
            )
            .order_by(Lead.id)
        )
    )
    used = await usage.usage(session, campaign.tenant_id)
    if len(leads) > used.emails_left:
        leads = leads[: used.emails_left]
        campaign.status_reason = f"{used.emails_left} sends left this period on the plan; the rest wait for the next period"
    limits = await _daily_limits(session, senders)
    per_account = campaign.daily_limit or None
    streams = [
        slots(campaign, now, min(limits[a.id], per_account) if per_account else limits[a.id])
        for a in senders
    ]
    payloads, times = [], []
    for n, lead_id in enumerate(leads):
        account = senders[n % len(senders)]
        times.append(next(streams[n % len(senders)]))
        payloads.append(
            {
                "campaign_id": str(campaign_id),
                "lead_id": str(lead_id),
                "step": 1,
                "account_id": str(account.id),
            }
        )
    planned = len(
        await enqueue_many(
            session,
            SEND_KIND,
            payloads,
            tenant_id=campaign.tenant_id,
            priority=SEND_PRIORITY,
            run_at=times,
            campaign_id=campaign_id,
            idempotency_keys=[send_key(p["campaign_id"], p["lead_id"], 1) for p in payloads],
        )
    )
    if planned >= statistics.BULK_ROWS:
        # Thousands of messages are about to be written: once the first are, the planner must
        # know, or it reads the tenant's messages to find one by its key.
        await statistics.refresh_later(
            session, campaign.tenant_id, "content.email_messages", after_seconds=5
        )
    return planned


async def _daily_limits(session: AsyncSession, senders: list[EmailAccount]) -> dict[uuid.UUID, int]:
    """Each account's daily limit: its own, or for a WARMING_UP account with warm-up on, its
    ramp's target today when that is lower (its start before the first tick). Warm-up mail does
    not count against it (services/warmup.py says why)."""
    warming = [a.id for a in senders if a.status == AccountStatus.WARMING_UP]
    target = func.coalesce(func.nullif(WarmupState.today_target, 0), WarmupState.start)
    rows = await session.execute(
        select(WarmupState.account_id, target).where(
            WarmupState.account_id.in_(warming), WarmupState.enabled
        )
    )
    targets = dict(rows.all())
    return {a.id: min(a.daily_limit, targets.get(a.id, a.daily_limit)) for a in senders}


def send_key(campaign_id: str, lead_id: str, step: int) -> str:
    return f"send:{campaign_id}:{lead_id}:{step}"


@dataclass
class FollowUp:
    """A lead whose step `after` went out from `account_id`."""

    campaign: Campaign
    lead_id: uuid.UUID
    account_id: uuid.UUID
    after: int


async def plan_follow_ups(
    session: AsyncSession,
    steps: dict[tuple[uuid.UUID, int], CampaignSequenceStep],
    sent: list[FollowUp],
) -> None:
    """The next step of each lead, `delay_days` after now, inside the window, from the same
    account (so it threads). Idempotent by the job's key."""
    now = datetime.now(UTC)
    by_campaign: dict[uuid.UUID, list[tuple[FollowUp, int, datetime]]] = {}
    for f in sent:
        following = steps.get((f.campaign.id, f.after + 1))
        if following is None:
            continue
        at = next_open(f.campaign, now + timedelta(days=following.delay_days))
        by_campaign.setdefault(f.campaign.id, []).append((f, following.position, at))
    for campaign_id, group in by_campaign.items():
        await enqueue_many(
            session,
            SEND_KIND,
            [
                {
                    "campaign_id": str(campaign_id),
                    "lead_id": str(f.lead_id),
                    "step": position,
                    "account_id": str(f.account_id),
                }
                for f, position, _ in group
            ],
            tenant_id=group[0][0].campaign.tenant_id,
            priority=SEND_PRIORITY,
            run_at=[at for _, _, at in group],
            campaign_id=campaign_id,
            idempotency_keys=[
                send_key(str(campaign_id), str(f.lead_id), position) for f, position, _ in group
            ],
        )


async def plan_running_campaigns(session: AsyncSession, now: datetime | None = None) -> int:
    """Queues a planning job for every running campaign (leads imported after launch, accounts
    back from a pause). Runs on a system session; one job per campaign per minute at most."""
    now = now or datetime.now(UTC)
    minute = now.strftime("%Y%m%d%H%M")
    queued = 0
    for campaign_id, tenant_id in await session.execute(
        select(Campaign.id, Campaign.tenant_id).where(Campaign.status == CampaignStatus.RUNNING)
    ):
        await enqueue(
            session,
            "plan_campaign",
            {"campaign_id": str(campaign_id)},
            tenant_id=tenant_id,
            priority=PLAN_PRIORITY,
            campaign_id=campaign_id,
            idempotency_key=f"plan_campaign:{campaign_id}:{minute}",
        )
        queued += 1
    return queued
