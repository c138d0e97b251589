"""Campaigns: creating one (steps, sending accounts, window) and moving it through its states
(launch, pause, resume, cancel). Planning the messages is services/planning.py's, sending them
services/sending.py's."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import cancel_campaign, enqueue
from models.campaigns import (
    Campaign,
    CampaignAccount,
    CampaignSequenceStep,
    CampaignStatus,
    Lead,
    LeadStatus,
    Template,
)
from models.infrastructure import AccountStatus, EmailAccount
from models.queue import JobStatus
from models.tenancy import Tenant, TenantStatus
from services import account_mail, templates
from services.errors import DomainError
from services.timezones import check_timezone
from services.usage import Usage, usage

MAX_STEPS = 10
MAX_DELAY_DAYS = 365
PLAN_PRIORITY = 50  # the high tier: a launch should start sending promptly
SENDABLE_ACCOUNTS = (AccountStatus.ACTIVE, AccountStatus.WARMING_UP)
PENDING_JOBS = (JobStatus.QUEUED, JobStatus.FAILED, JobStatus.DISPATCHED)

S = CampaignStatus


@dataclass(frozen=True)
class Transition:
    sources: frozenset[CampaignStatus]
    target: CampaignStatus


# Every action, the states it may start from, and where it leads. COMPLETED and CANCELLED are
# final. (SCHEDULED exists for launches at a later time, not yet offered.)
TRANSITIONS: dict[str, Transition] = {
    "launch": Transition(frozenset({S.DRAFT, S.SCHEDULED}), S.RUNNING),
    "pause": Transition(frozenset({S.RUNNING, S.SCHEDULED}), S.PAUSED),
    "resume": Transition(frozenset({S.PAUSED}), S.RUNNING),
    "cancel": Transition(frozenset({S.DRAFT, S.SCHEDULED, S.RUNNING, S.PAUSED}), S.CANCELLED),
}


@dataclass(frozen=True)
class WindowSpec:
    """When a campaign may send: ISO weekdays (Monday = 1) and hours [start, end) in `timezone`."""

    timezone: str
    days: Sequence[int]
    start_hour: int
    end_hour: int


DEFAULT_WINDOW = WindowSpec("UTC", (1, 2, 3, 4, 5), 9, 17)


@dataclass(frozen=True)
class StepSpec:
    """One message of the sequence, sent `delay_days` after the previous one (the first: after
    launch). Its own body, or a template's: a step without html and text takes the template's
    body, and its subject when the step's is blank."""

    delay_days: int
    subject: str
    html: str | None = None
    text: str | None = None
    template_id: uuid.UUID | None = None


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    account_ids: Sequence[uuid.UUID]
    steps: Sequence[StepSpec]
    window: WindowSpec | None = None  # None: DEFAULT_WINDOW
    daily_limit: int | None = None  # None: the accounts' own caps only


# --- creating --------------------------------------------------------------------------------


async def create_campaign(
    session: AsyncSession, tenant_id: uuid.UUID, spec: CampaignSpec
) -> Campaign:
    """A DRAFT campaign with its steps (positions 1..n) and accounts (in the order given).
    Everything is checked before the first row is written, so a refusal writes nothing."""
    name = spec.name.strip()
    if not name:
        raise DomainError("CAMPAIGN_NAME_REQUIRED", "Name the campaign.", "input.name")
    if len(name) > templates.NAME_MAX_LENGTH:
        raise DomainError(
            "CAMPAIGN_NAME_TOO_LONG",
            f"Use at most {templates.NAME_MAX_LENGTH} characters.",
            "input.name",
        )
    if not 1 <= len(spec.steps) <= MAX_STEPS:
        raise DomainError(
            "CAMPAIGN_STEPS", f"A campaign has 1 to {MAX_STEPS} steps.", "input.steps"
        )
    checks = templates.Checks()  # every step's test render within one time limit
    steps = [
        await _checked_step(session, tenant_id, i, step, checks)
        for i, step in enumerate(spec.steps)
    ]
    account_ids = await _checked_accounts(session, tenant_id, spec.account_ids)
    window = _checked_window(spec.window or DEFAULT_WINDOW)
    if spec.daily_limit is not None and spec.daily_limit <= 0:
        raise DomainError(
            "INVALID_DAILY_LIMIT", "The daily limit must be at least 1.", "input.dailyLimit"
        )

    campaign = Campaign(
        tenant_id=tenant_id, name=name, status=CampaignStatus.DRAFT, timezone=window.timezone,
        window_days=list(window.days), start_hour=window.start_hour, end_hour=window.end_hour,
        daily_limit=spec.daily_limit,
    )  # fmt: skip
    session.add(campaign)
    await session.flush()
    session.add_all(
        CampaignSequenceStep(
            tenant_id=tenant_id, campaign_id=campaign.id, position=position,
            delay_days=step.delay_days, subject=step.subject, html=step.html, text=step.text,
            template_id=step.template_id,
        )
        for position, step in enumerate(steps, start=1)
    )  # fmt: skip
    session.add_all(
        CampaignAccount(
            tenant_id=tenant_id, campaign_id=campaign.id, account_id=account_id, position=position
        )
        for position, account_id in enumerate(account_ids)
    )
    await session.flush()
    return campaign


async def _checked_step(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    index: int,
    step: StepSpec,
    checks: templates.Checks,
) -> StepSpec:
    """The step as it will be stored (a template's body filled in), or a DomainError whose
    field is the step's input path."""
    path = f"input.steps.{index}"
    subject, html, text = (
        step.subject.strip(),
        templates.blank_as_none(step.html),
        templates.blank_as_none(step.text),
    )
    if step.template_id is not None:
        template = await session.scalar(
            select(Template).where(Template.tenant_id == tenant_id, Template.id == step.template_id)
        )
        if template is None:
            raise DomainError("NOT_FOUND", "Template not found.", f"{path}.templateId")
        if html is None and text is None:
            html, text = template.html, template.text
        subject = subject or template.subject
    if html is None and text is None:
        raise DomainError(
            "CAMPAIGN_STEP_EMPTY",
            "Give the step an HTML or text body, or a template.",
            f"{path}.html",
        )
    if not subject:
        raise DomainError(
            "CAMPAIGN_STEP_SUBJECT_REQUIRED", "Give the step a subject.", f"{path}.subject"
        )
    if not 0 <= step.delay_days <= MAX_DELAY_DAYS:
        raise DomainError(
            "CAMPAIGN_STEP_DELAY",
            f"The delay is 0 to {MAX_DELAY_DAYS} days.",
            f"{path}.delayDays",
        )
    try:
        await checks.validated(subject, html, text)
    except DomainError as e:
        field = f"{path}.{e.field}" if e.field else path  # a busy or crashed check has none
        raise DomainError(e.code, e.message, field) from None
    return StepSpec(step.delay_days, subject, html, text, step.template_id)


async def _checked_accounts(
    session: AsyncSession, tenant_id: uuid.UUID, account_ids: Sequence[uuid.UUID]
) -> list[uuid.UUID]:
    """The accounts in the order given, each once."""
    ordered = list(dict.fromkeys(account_ids))
    if not ordered:
        raise DomainError(
            "CAMPAIGN_ACCOUNTS_REQUIRED", "Choose at least one email account.", "input.accountIds"
        )
    found = await session.execute(
        select(EmailAccount.id, EmailAccount.status).where(
            EmailAccount.tenant_id == tenant_id, EmailAccount.id.in_(ordered)
        )
    )
    statuses = {account_id: status for account_id, status in found}
    for account_id in ordered:
        if account_id not in statuses:
            raise DomainError(
                "NOT_FOUND", f"Email account {account_id} not found.", "input.accountIds"
            )
        if statuses[account_id] == AccountStatus.DISABLED:
            raise DomainError(
                "CAMPAIGN_ACCOUNT_DISABLED",
                f"Email account {account_id} is disabled.",
                "input.accountIds",
            )
    return ordered


def _checked_window(window: WindowSpec) -> WindowSpec:
    check_timezone(window.timezone, "input.window.timezone")
    days = sorted(set(window.days))
    if not days or not all(1 <= day <= 7 for day in days):
        raise DomainError(
            "INVALID_WINDOW",
            "Choose one or more days, 1 (Monday) to 7 (Sunday).",
            "input.window.days",
        )
    if not 0 <= window.start_hour < window.end_hour <= 24:
        field = "startHour" if not 0 <= window.start_hour < 24 else "endHour"
        raise DomainError(
            "INVALID_WINDOW",
            "Hours run from 0 to 24, and the start comes before the end.",
            f"input.window.{field}",
        )
    return WindowSpec(window.timezone, days, window.start_hour, window.end_hour)


# --- states ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launcher:
    """Who launches or resumes through the API: a user, or an API key (user_id None), and
    whether their address must be verified (settings.require_verified_email)."""

    user_id: uuid.UUID | None
    require_verified_email: bool = True


async def launch(
    session: AsyncSession, campaign_id: uuid.UUID, by: Launcher | None = None
) -> Campaign:
    """Start sending: needs an active lead, a sending account, emails left on the plan this
    period (else PLAN_LIMIT_EMAILS, and nothing changes), and, launched through the API, a
    verified address (EMAIL_NOT_VERIFIED). Enqueues the planning job once."""
    campaign = await _locked(session, campaign_id, "launch")
    has_leads = await session.scalar(
        select(exists().where(Lead.campaign_id == campaign.id, Lead.status == LeadStatus.ACTIVE))
    )
    if not has_leads:
        raise DomainError("CAMPAIGN_NO_LEADS", "Import at least one lead before launching.")
    await _check_launcher(session, campaign, by)
    await _check_can_send(session, campaign)
    campaign = await _move(session, campaign, "launch", launched_at=func.now())
    await _plan(session, campaign, idempotency_key=f"plan_campaign:{campaign.id}:launch")
    return campaign


async def pause(
    session: AsyncSession, campaign_id: uuid.UUID, *, reason: str | None = None
) -> Campaign:
    """Stop sending until resumed; jobs not yet running are cancelled. `reason` is stored for
    a stop the user did not ask for (the planner: plan limit reached, reputation too low)."""
    campaign = await _locked(session, campaign_id, "pause")
    await _cancel_pending_jobs(session, campaign.id)
    return await _move(session, campaign, "pause", status_reason=reason)


async def resume(
    session: AsyncSession, campaign_id: uuid.UUID, by: Launcher | None = None
) -> Campaign:
    """Carry on where the campaign stopped: the planner picks up each lead at its step."""
    campaign = await _locked(session, campaign_id, "resume")
    await _check_launcher(session, campaign, by)
    await _check_can_send(session, campaign)
    campaign = await _move(session, campaign, "resume")
    # The row lock and the state check already prevent a second plan for this resume; every
    # resume plans anew, so each gets its own key.
    await _plan(session, campaign, idempotency_key=f"plan_campaign:{campaign.id}:{uuid.uuid4()}")
    return campaign


async def cancel(session: AsyncSession, campaign_id: uuid.UUID) -> Campaign:
    """Stop for good; jobs not yet running are cancelled."""
    campaign = await _locked(session, campaign_id, "cancel")
    await _cancel_pending_jobs(session, campaign.id)
    return await _move(session, campaign, "cancel")


def plan_limit_reason(used: Usage) -> str:
    """Why sending stops at the plan's email limit: the launch refusal, and the reason the
    planner stores when it pauses a running campaign for it."""
    plan = f"The {used.plan_name} plan" if used.plan_name else "The plan"
    if used.emails_limit == 0:
        return f"{plan} includes no emails; choose a plan to send."
    return (
        f"{plan}'s {used.emails_limit:,} emails for the period starting "
        f"{used.period_start:%Y-%m-%d} are used up; upgrade the plan to send more."
    )


async def _locked(session: AsyncSession, campaign_id: uuid.UUID, action: str) -> Campaign:
    """The campaign, locked until the transaction ends so two actions on it run one after the
    other, if `action` may start from its state."""
    campaign = await session.scalar(
        select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    )
    if campaign is None:
        raise DomainError("NOT_FOUND", "Campaign not found.", "id")
    if campaign.status not in TRANSITIONS[action].sources:
        raise DomainError(
            "CAMPAIGN_INVALID_TRANSITION",
            f"Cannot {action} a {campaign.status.value} campaign.",
            "id",
        )
    return campaign


async def _move(session: AsyncSession, campaign: Campaign, action: str, **values) -> Campaign:
    """Set the target state of `action` (and `values`), returning the row as stored."""
    values.setdefault("status_reason", None)
    moved = await session.scalar(
        update(Campaign)
        .where(Campaign.id == campaign.id)
        .values(status=TRANSITIONS[action].target, **values)
        .returning(Campaign),
        execution_options={"populate_existing": True},
    )
    assert moved is not None  # locked by _locked
    return moved


async def _check_can_send(session: AsyncSession, campaign: Campaign) -> None:
    tenant = await session.get(Tenant, campaign.tenant_id)
    if tenant.status == TenantStatus.SUSPENDED:
        reason = tenant.sending_suspended_reason or "sending is suspended"
        raise DomainError("TENANT_SUSPENDED", f"Sending is suspended: {reason}.")
    has_account = await session.scalar(
        select(
            exists()
            .where(CampaignAccount.campaign_id == campaign.id)
            .where(CampaignAccount.account_id == EmailAccount.id)
            .where(EmailAccount.status.in_(SENDABLE_ACCOUNTS))
        )
    )
    if not has_account:
        raise DomainError(
            "CAMPAIGN_NO_ACCOUNTS", "None of the campaign's email accounts can send right now."
        )
    used = await usage(session, campaign.tenant_id)
    if used.emails_left == 0:
        raise DomainError("PLAN_LIMIT_EMAILS", plan_limit_reason(used))


async def _check_launcher(session: AsyncSession, campaign: Campaign, by: Launcher | None) -> None:
    """Mail goes out only for someone whose address is known to be theirs."""
    if by is not None and by.require_verified_email:
        await account_mail.check_verified(session, campaign.tenant_id, by.user_id)


async def _plan(session: AsyncSession, campaign: Campaign, *, idempotency_key: str) -> None:
    await enqueue(
        session, "plan_campaign", {"campaign_id": str(campaign.id)},
        tenant_id=campaign.tenant_id, priority=PLAN_PRIORITY, idempotency_key=idempotency_key,
        campaign_id=campaign.id,
    )  # fmt: skip


async def _cancel_pending_jobs(session: AsyncSession, campaign_id: uuid.UUID) -> None:
    """Jobs waiting or handed to a worker but not started; a dispatched one that a worker picks
    up after this finds itself cancelled and does not run. A running job finishes its step."""
    await cancel_campaign(session, campaign_id)
