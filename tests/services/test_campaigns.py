"""Campaigns: creation with its checks, and the launch / pause / resume / cancel transitions
with the jobs they enqueue or cancel."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan
from models.campaigns import (
    Campaign,
    CampaignAccount,
    CampaignSequenceStep,
    CampaignStatus,
    Lead,
    LeadStatus,
)
from models.content import MessageStatus
from models.infrastructure import AccountStatus, EmailAccount
from models.queue import Job, JobStatus
from models.sessions import Database
from models.tenancy import Tenant
from services import campaigns
from services.campaigns import CampaignSpec, StepSpec, WindowSpec, create_campaign
from services.errors import DomainError
from services.saved_templates import create_template
from services.usage import usage
from tests.factories import build_row, create_row, create_tenant, table

S = CampaignStatus


# --- arranging -------------------------------------------------------------------------------


async def tenant_with_accounts(
    db: Database, *statuses: AccountStatus, emails_per_month: int = 1000
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant on a plan with `emails_per_month`, and one email account per status given."""
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        plan = Plan(
            code=f"p{uuid.uuid4().hex[:12]}", name="Test", price_cents=0,
            emails_per_month=emails_per_month, max_domains=5, max_ips=5, max_email_accounts=5,
            max_seats=5,
        )  # fmt: skip
        s.add(plan)
        await s.flush()
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan.id))
        accounts = []
        for status in statuses or (AccountStatus.ACTIVE,):
            row = await create_row(s, table("app.email_accounts"), tenant)
            await s.execute(
                update(EmailAccount).where(EmailAccount.id == row["id"]).values(status=status)
            )
            accounts.append(row["id"])
    return tenant, accounts


def two_step_spec(accounts: list[uuid.UUID], **changes) -> CampaignSpec:
    spec = CampaignSpec(
        name="Q3 outreach",
        account_ids=accounts,
        steps=[
            StepSpec(0, "Hi {{ first_name }}", html="<p>Hello {{ company }}</p>", text="Hello"),
            StepSpec(3, "Re: Hi {{ first_name }}", text="Just bumping this up."),
        ],
        window=WindowSpec("Europe/Berlin", [3, 1, 2, 1], 8, 18),
        daily_limit=200,
    )
    return dataclasses.replace(spec, **changes)


async def ready_campaign(db: Database, *, leads: int = 1, emails_per_month: int = 1000):
    """A DRAFT campaign with an active account and `leads` active leads."""
    tenant, accounts = await tenant_with_accounts(db, emails_per_month=emails_per_month)
    async with db.tenant_session(tenant) as s:
        campaign = await create_campaign(s, tenant, two_step_spec(accounts))
        for n in range(leads):
            s.add(Lead(tenant_id=tenant, campaign_id=campaign.id, email=f"lead{n}@example.com"))
    return tenant, campaign.id


async def set_status(db: Database, campaign_id: uuid.UUID, status: CampaignStatus) -> None:
    async with db.system_session() as s:
        await s.execute(update(Campaign).where(Campaign.id == campaign_id).values(status=status))


async def jobs_of(db: Database, tenant: uuid.UUID) -> list[Job]:
    async with db.tenant_session(tenant) as s:
        return list(await s.scalars(select(Job).order_by(Job.created_at, Job.id)))


async def row_counts(db: Database, tenant: uuid.UUID) -> dict[str, int]:
    async with db.tenant_session(tenant) as s:
        return {
            model.__tablename__: await s.scalar(select(func.count()).select_from(model))
            for model in (Campaign, CampaignSequenceStep, CampaignAccount)
        }


async def act(db: Database, tenant: uuid.UUID, action, campaign_id: uuid.UUID) -> Campaign:
    async with db.tenant_session(tenant) as s:
        return await action(s, campaign_id)


async def refusal(db: Database, tenant: uuid.UUID, action, campaign_id: uuid.UUID) -> DomainError:
    with pytest.raises(DomainError) as raised:
        await act(db, tenant, action, campaign_id)
    return raised.value


# --- creating --------------------------------------------------------------------------------


async def test_create_campaign_stores_a_draft_with_ordered_steps_accounts_and_window(
    db: Database,
):
    tenant, accounts = await tenant_with_accounts(
        db, AccountStatus.ACTIVE, AccountStatus.WARMING_UP, AccountStatus.PAUSED
    )
    given = [accounts[2], accounts[0], accounts[1], accounts[0]]
    async with db.tenant_session(tenant) as s:
        created = await create_campaign(s, tenant, two_step_spec(given))

    async with db.tenant_session(tenant) as s:
        campaign = await s.get(Campaign, created.id)
        steps = list(
            await s.scalars(
                select(CampaignSequenceStep)
                .where(CampaignSequenceStep.campaign_id == created.id)
                .order_by(CampaignSequenceStep.position)
            )
        )
        linked = list(
            await s.scalars(
                select(CampaignAccount.account_id)
                .where(CampaignAccount.campaign_id == created.id)
                .order_by(CampaignAccount.position)
            )
        )
    assert campaign is not None
    assert (campaign.name, campaign.status, campaign.daily_limit) == ("Q3 outreach", S.DRAFT, 200)
    assert (campaign.timezone, campaign.window_days) == ("Europe/Berlin", [1, 2, 3])
    assert (campaign.start_hour, campaign.end_hour) == (8, 18)
    assert [(st.position, st.delay_days, st.subject, st.text) for st in steps] == [
        (1, 0, "Hi {{ first_name }}", "Hello"),
        (2, 3, "Re: Hi {{ first_name }}", "Just bumping this up."),
    ]
    assert steps[0].html == "<p>Hello {{ company }}</p>" and steps[1].html is None
    assert linked == [accounts[2], accounts[0], accounts[1]]  # the order given, each once


async def test_without_a_window_a_campaign_sends_monday_to_friday_nine_to_five_utc(db: Database):
    tenant, accounts = await tenant_with_accounts(db)
    async with db.tenant_session(tenant) as s:
        campaign = await create_campaign(
            s, tenant, two_step_spec(accounts, window=None, daily_limit=None)
        )
    assert (campaign.timezone, campaign.window_days) == ("UTC", [1, 2, 3, 4, 5])
    assert (campaign.start_hour, campaign.end_hour, campaign.daily_limit) == (9, 17, None)


async def test_a_step_from_a_template_takes_its_body_and_its_subject_when_left_blank(
    db: Database,
):
    tenant, accounts = await tenant_with_accounts(db)
    async with db.tenant_session(tenant) as s:
        template = await create_template(
            s, tenant, "Intro", "Hello {{ first_name }}", "<p>{{ company }}</p>", "{{ company }}"
        )
        steps = [StepSpec(0, " ", template_id=template.id), StepSpec(2, "Own", text="Own body")]
        steps.append(StepSpec(2, "Own subject", template_id=template.id))
        campaign = await create_campaign(s, tenant, two_step_spec(accounts, steps=steps))
    async with db.tenant_session(tenant) as s:
        stored = (
            await s.execute(
                select(
                    CampaignSequenceStep.subject,
                    CampaignSequenceStep.html,
                    CampaignSequenceStep.text,
                    CampaignSequenceStep.template_id,
                )
                .where(CampaignSequenceStep.campaign_id == campaign.id)
                .order_by(CampaignSequenceStep.position)
            )
        ).all()
    assert [tuple(row) for row in stored] == [
        ("Hello {{ first_name }}", "<p>{{ company }}</p>", "{{ company }}", template.id),
        ("Own", None, "Own body", None),
        ("Own subject", "<p>{{ company }}</p>", "{{ company }}", template.id),
    ]


def _steps(*steps: StepSpec) -> dict:
    return {"steps": list(steps)}


INVALID_SPECS = [
    ({"name": "  "}, "CAMPAIGN_NAME_REQUIRED", "input.name"),
    ({"name": "x" * 201}, "CAMPAIGN_NAME_TOO_LONG", "input.name"),
    (_steps(), "CAMPAIGN_STEPS", "input.steps"),
    (_steps(*[StepSpec(1, "Hi", text="x")] * 11), "CAMPAIGN_STEPS", "input.steps"),
    (
        _steps(StepSpec(0, "Hi", text="x"), StepSpec(1, "Hi", html=" ")),
        "CAMPAIGN_STEP_EMPTY",
        "input.steps.1.html",
    ),
    (
        _steps(StepSpec(0, "", text="x")),
        "CAMPAIGN_STEP_SUBJECT_REQUIRED",
        "input.steps.0.subject",
    ),
    (_steps(StepSpec(-1, "Hi", text="x")), "CAMPAIGN_STEP_DELAY", "input.steps.0.delayDays"),
    (
        _steps(StepSpec(0, "Hi", text="x"), StepSpec(2, "Hi {{ nme }}", text="x")),
        "TEMPLATE_UNDEFINED_VARIABLE",
        "input.steps.1.subject",
    ),
    (
        _steps(StepSpec(0, "Hi", html="<p>{% if %}</p>")),
        "TEMPLATE_SYNTAX",
        "input.steps.0.html",
    ),
    (
        _steps(StepSpec(0, "Hi", template_id=uuid.uuid4())),
        "NOT_FOUND",
        "input.steps.0.templateId",
    ),
    ({"account_ids": []}, "CAMPAIGN_ACCOUNTS_REQUIRED", "input.accountIds"),
    ({"account_ids": [uuid.uuid4()]}, "NOT_FOUND", "input.accountIds"),
    (
        {"window": WindowSpec("Mars/Olympus", [1], 9, 17)},
        "INVALID_TIMEZONE",
        "input.window.timezone",
    ),
    ({"window": WindowSpec("America", [1], 9, 17)}, "INVALID_TIMEZONE", "input.window.timezone"),
    (
        {"window": WindowSpec("../etc/passwd", [1], 9, 17)},
        "INVALID_TIMEZONE",
        "input.window.timezone",
    ),
    ({"window": WindowSpec("localtime", [1], 9, 17)}, "INVALID_TIMEZONE", "input.window.timezone"),
    ({"window": WindowSpec("UTC", [], 9, 17)}, "INVALID_WINDOW", "input.window.days"),
    ({"window": WindowSpec("UTC", [0, 1], 9, 17)}, "INVALID_WINDOW", "input.window.days"),
    ({"window": WindowSpec("UTC", [8], 9, 17)}, "INVALID_WINDOW", "input.window.days"),
    ({"window": WindowSpec("UTC", [1], 17, 9)}, "INVALID_WINDOW", "input.window.endHour"),
    ({"window": WindowSpec("UTC", [1], 9, 25)}, "INVALID_WINDOW", "input.window.endHour"),
    ({"window": WindowSpec("UTC", [1], -1, 9)}, "INVALID_WINDOW", "input.window.startHour"),
    ({"daily_limit": 0}, "INVALID_DAILY_LIMIT", "input.dailyLimit"),
]


@pytest.mark.parametrize(
    ("changes", "code", "field"), INVALID_SPECS, ids=[f"{c}:{f}" for _, c, f in INVALID_SPECS]
)
async def test_an_invalid_campaign_is_refused_and_leaves_no_rows(
    db: Database, changes: dict, code: str, field: str
):
    tenant, accounts = await tenant_with_accounts(db)
    before = await row_counts(db, tenant)
    # As the API does: the refusal is caught inside the transaction, which then commits.
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as raised:
            await create_campaign(s, tenant, two_step_spec(accounts, **changes))
    assert (raised.value.code, raised.value.field) == (code, field)
    assert await row_counts(db, tenant) == before == {
        "campaigns": 0, "campaign_sequence_steps": 0, "campaign_accounts": 0,
    }  # fmt: skip


async def test_a_disabled_account_is_refused(db: Database):
    tenant, accounts = await tenant_with_accounts(db, AccountStatus.ACTIVE, AccountStatus.DISABLED)
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as raised:
            await create_campaign(s, tenant, two_step_spec(accounts))
    assert (raised.value.code, raised.value.field) == (
        "CAMPAIGN_ACCOUNT_DISABLED",
        "input.accountIds",
    )
    assert (await row_counts(db, tenant))["campaigns"] == 0


async def test_another_tenants_account_or_template_is_not_found(db: Database):
    tenant, _ = await tenant_with_accounts(db)
    other, other_accounts = await tenant_with_accounts(db)
    async with db.tenant_session(other) as s:
        other_template = await create_template(s, other, "Theirs", "Hi", None, "Hello")
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as by_account:
            await create_campaign(s, tenant, two_step_spec(other_accounts))
        with pytest.raises(DomainError) as by_template:
            await create_campaign(
                s, tenant,
                two_step_spec(other_accounts, steps=[StepSpec(0, "Hi", template_id=other_template.id)]),
            )  # fmt: skip
    assert (by_account.value.code, by_account.value.field) == ("NOT_FOUND", "input.accountIds")
    assert (by_template.value.code, by_template.value.field) == (
        "NOT_FOUND",
        "input.steps.0.templateId",
    )


# --- launching -------------------------------------------------------------------------------


async def test_launch_runs_the_campaign_and_enqueues_its_planning_once(db: Database):
    tenant, campaign_id = await ready_campaign(db)

    launched = await act(db, tenant, campaigns.launch, campaign_id)
    again = await refusal(db, tenant, campaigns.launch, campaign_id)

    assert launched.status == S.RUNNING and launched.launched_at is not None
    assert (again.code, again.field) == ("CAMPAIGN_INVALID_TRANSITION", "id")
    [job] = await jobs_of(db, tenant)
    assert (job.kind, job.payload, job.priority) == (
        "plan_campaign",
        {"campaign_id": str(campaign_id)},
        50,
    )
    assert (job.campaign_id, job.status, job.tenant_id) == (campaign_id, JobStatus.QUEUED, tenant)
    assert job.idempotency_key is not None


async def test_two_launches_at_once_run_one_after_the_other_and_plan_once(db: Database):
    tenant, campaign_id = await ready_campaign(db)

    results = await asyncio.gather(
        act(db, tenant, campaigns.launch, campaign_id),
        act(db, tenant, campaigns.launch, campaign_id),
        return_exceptions=True,
    )

    assert sorted(type(r).__name__ for r in results) == ["Campaign", "DomainError"]
    [error] = [r for r in results if isinstance(r, DomainError)]
    assert error.code == "CAMPAIGN_INVALID_TRANSITION"
    assert len(await jobs_of(db, tenant)) == 1


async def test_launch_needs_an_active_lead(db: Database):
    tenant, campaign_id = await ready_campaign(db, leads=0)
    error = await refusal(db, tenant, campaigns.launch, campaign_id)
    assert error.code == "CAMPAIGN_NO_LEADS"

    async with db.tenant_session(tenant) as s:  # a lead that already replied does not count
        s.add(
            Lead(
                tenant_id=tenant, campaign_id=campaign_id, email="done@example.com",
                status=LeadStatus.REPLIED,
            )
        )  # fmt: skip
    error = await refusal(db, tenant, campaigns.launch, campaign_id)
    assert error.code == "CAMPAIGN_NO_LEADS"
    assert await jobs_of(db, tenant) == []


async def test_launch_needs_an_account_that_can_send(db: Database):
    tenant, campaign_id = await ready_campaign(db)
    async with db.system_session() as s:
        await s.execute(
            update(EmailAccount)
            .where(EmailAccount.tenant_id == tenant)
            .values(status=AccountStatus.PAUSED)
        )
    error = await refusal(db, tenant, campaigns.launch, campaign_id)
    assert error.code == "CAMPAIGN_NO_ACCOUNTS"

    async with db.system_session() as s:
        await s.execute(
            update(EmailAccount)
            .where(EmailAccount.tenant_id == tenant)
            .values(status=AccountStatus.WARMING_UP)
        )
    assert (await act(db, tenant, campaigns.launch, campaign_id)).status == S.RUNNING


async def send_messages(session: AsyncSession, tenant: uuid.UUID, n: int) -> None:
    tbl = table("content.email_messages")
    for _ in range(n):
        row = await build_row(session, tbl, tenant)
        row.update(status=MessageStatus.SENT, sent_at=datetime.now(UTC))
        await session.execute(insert(tbl).values(row))


async def test_launch_is_refused_when_the_periods_emails_are_used_up(db: Database):
    tenant, campaign_id = await ready_campaign(db, emails_per_month=3)
    async with db.system_session() as s:
        await send_messages(s, tenant, 3)

    error = await refusal(db, tenant, campaigns.launch, campaign_id)

    assert error.code == "PLAN_LIMIT_EMAILS" and "3" in error.message
    async with db.tenant_session(tenant) as s:
        campaign = await s.get(Campaign, campaign_id)
    assert campaign is not None and (campaign.status, campaign.launched_at) == (S.DRAFT, None)
    assert await jobs_of(db, tenant) == []


async def test_launch_is_allowed_while_emails_are_left_in_the_period(db: Database):
    tenant, campaign_id = await ready_campaign(db, emails_per_month=3)
    async with db.system_session() as s:
        await send_messages(s, tenant, 2)
    assert (await act(db, tenant, campaigns.launch, campaign_id)).status == S.RUNNING


async def test_a_tenant_without_a_plan_cannot_launch(db: Database):
    tenant, campaign_id = await ready_campaign(db)
    async with db.system_session() as s:
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=None))
    error = await refusal(db, tenant, campaigns.launch, campaign_id)
    assert error.code == "PLAN_LIMIT_EMAILS"


# --- pausing, resuming, cancelling -----------------------------------------------------------


async def add_job(db: Database, tenant: uuid.UUID, campaign_id: uuid.UUID, status: JobStatus):
    async with db.system_session() as s:
        job = Job(
            tenant_id=tenant, kind="send_step", payload={}, status=status, campaign_id=campaign_id
        )
        s.add(job)
        await s.flush()
        return job.id


async def test_pause_cancels_the_campaigns_jobs_that_have_not_started(db: Database):
    tenant, campaign_id = await ready_campaign(db)
    await act(db, tenant, campaigns.launch, campaign_id)
    jobs = {status: await add_job(db, tenant, campaign_id, status) for status in JobStatus}
    another_campaigns = await add_job(db, tenant, uuid.uuid4(), JobStatus.QUEUED)
    no_campaigns = await add_job(db, tenant, None, JobStatus.QUEUED)

    paused = await act(db, tenant, campaigns.pause, campaign_id)

    assert paused.status == S.PAUSED and paused.status_reason is None
    after = {job.id: job for job in await jobs_of(db, tenant)}
    for status, job_id in jobs.items():
        cancelled = status in (JobStatus.QUEUED, JobStatus.FAILED, JobStatus.DISPATCHED)
        expected = JobStatus.CANCELLED if cancelled else status
        assert after[job_id].status == expected, status
        assert (after[job_id].finished_at is not None) == cancelled, status
    # The launch's own planning job was still queued: cancelled too.
    assert all(j.status == JobStatus.CANCELLED for j in after.values() if j.kind == "plan_campaign")
    assert after[another_campaigns].status == after[no_campaigns].status == JobStatus.QUEUED


async def test_the_planner_pauses_with_a_reason_that_resume_clears(db: Database):
    tenant, campaign_id = await ready_campaign(db)
    await act(db, tenant, campaigns.launch, campaign_id)
    async with db.tenant_session(tenant) as s:
        used = await usage(s, tenant)
        paused = await campaigns.pause(s, campaign_id, reason=campaigns.plan_limit_reason(used))
    assert paused.status_reason is not None and "1,000 emails" in paused.status_reason

    resumed = await act(db, tenant, campaigns.resume, campaign_id)
    assert (resumed.status, resumed.status_reason) == (S.RUNNING, None)


async def test_resume_runs_the_campaign_again_and_plans_it_anew(db: Database):
    tenant, campaign_id = await ready_campaign(db)
    launched = await act(db, tenant, campaigns.launch, campaign_id)
    await act(db, tenant, campaigns.pause, campaign_id)

    resumed = await act(db, tenant, campaigns.resume, campaign_id)
    await act(db, tenant, campaigns.pause, campaign_id)
    await act(db, tenant, campaigns.resume, campaign_id)

    assert resumed.status == S.RUNNING and resumed.launched_at == launched.launched_at
    plans = [j for j in await jobs_of(db, tenant) if j.kind == "plan_campaign"]
    assert [j.status for j in plans] == [JobStatus.CANCELLED, JobStatus.CANCELLED, JobStatus.QUEUED]
    assert len({j.idempotency_key for j in plans}) == 3


async def test_resume_is_refused_when_the_periods_emails_are_used_up(db: Database):
    tenant, campaign_id = await ready_campaign(db, emails_per_month=2)
    await act(db, tenant, campaigns.launch, campaign_id)
    await act(db, tenant, campaigns.pause, campaign_id)
    async with db.system_session() as s:
        await send_messages(s, tenant, 2)

    error = await refusal(db, tenant, campaigns.resume, campaign_id)

    assert error.code == "PLAN_LIMIT_EMAILS"
    async with db.tenant_session(tenant) as s:
        assert (await s.get(Campaign, campaign_id)).status == S.PAUSED


@pytest.mark.parametrize("start", [S.DRAFT, S.SCHEDULED, S.RUNNING, S.PAUSED])
async def test_cancel_ends_a_campaign_from_any_state_that_is_not_final(
    db: Database, start: CampaignStatus
):
    tenant, campaign_id = await ready_campaign(db)
    await set_status(db, campaign_id, start)
    queued = await add_job(db, tenant, campaign_id, JobStatus.QUEUED)

    cancelled = await act(db, tenant, campaigns.cancel, campaign_id)

    assert cancelled.status == S.CANCELLED
    [job] = [j for j in await jobs_of(db, tenant) if j.id == queued]
    assert job.status == JobStatus.CANCELLED


ILLEGAL = [
    ("launch", S.RUNNING),
    ("launch", S.PAUSED),
    ("launch", S.COMPLETED),
    ("launch", S.CANCELLED),
    ("pause", S.DRAFT),
    ("pause", S.PAUSED),
    ("pause", S.COMPLETED),
    ("pause", S.CANCELLED),
    ("resume", S.DRAFT),
    ("resume", S.SCHEDULED),
    ("resume", S.RUNNING),
    ("resume", S.COMPLETED),
    ("resume", S.CANCELLED),
    ("cancel", S.COMPLETED),
    ("cancel", S.CANCELLED),
]


@pytest.mark.parametrize(("action", "start"), ILLEGAL, ids=[f"{a}-{s}" for a, s in ILLEGAL])
async def test_an_illegal_transition_is_refused_and_changes_nothing(
    db: Database, action: str, start: CampaignStatus
):
    tenant, campaign_id = await ready_campaign(db)
    await set_status(db, campaign_id, start)
    queued = await add_job(db, tenant, campaign_id, JobStatus.QUEUED)

    error = await refusal(db, tenant, getattr(campaigns, action), campaign_id)

    assert (error.code, error.field) == ("CAMPAIGN_INVALID_TRANSITION", "id")
    assert action in error.message and start.value in error.message
    async with db.tenant_session(tenant) as s:
        assert (await s.get(Campaign, campaign_id)).status == start
    assert [(j.id, j.status) for j in await jobs_of(db, tenant)] == [(queued, JobStatus.QUEUED)]


def test_every_transition_leads_out_of_its_sources_and_never_out_of_a_final_state():
    final = {S.COMPLETED, S.CANCELLED}
    for transition in campaigns.TRANSITIONS.values():
        assert transition.target not in transition.sources
        assert not transition.sources & final


@pytest.mark.parametrize("action", ["launch", "pause", "resume", "cancel"])
async def test_another_tenants_campaign_is_not_found(db: Database, action: str):
    owner, campaign_id = await ready_campaign(db)
    await set_status(db, campaign_id, S.PAUSED if action == "resume" else S.DRAFT)
    stranger, _ = await tenant_with_accounts(db)

    error = await refusal(db, stranger, getattr(campaigns, action), campaign_id)

    assert (error.code, error.field) == ("NOT_FOUND", "id")
    assert await jobs_of(db, owner) == []
