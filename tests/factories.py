"""Rows for tests: a generic builder that fills any table from its model (so tests that cover
every table need no per-table code), and plain functions for the common objects."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncSession

import models
from jobs.queue import enqueue
from models.billing import Plan
from models.content import EmailEvent, EmailMessage, EventKind, MessageStatus
from models.infrastructure import EmailAccount, IpStatus, SmtpIpAddress
from models.sessions import Database
from models.tenancy import Tenant, User
from penguinmails.settings import Settings
from services import accounts, campaigns, domains, leads

# Values a column's CHECK constraint needs that its type alone does not tell.
CHECKED_VALUES: dict[tuple[str, str], Any] = {
    ("analytics.deliverability_daily", "subject_kind"): "ip",
    ("app.campaign_sequence_steps", "text"): "Hello",
    # A plan a test makes for its rows is never one sign-up offers (the cheapest public one).
    ("app.plans", "public"): False,
    ("app.templates", "text"): "Hello",
    # Users made for a test's rows have confirmed their address (services/account_mail.py).
    ("app.users", "email_verified_at"): dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
}


# Every send rate (services/send_limits.py) out of the way of tests that send many messages.
UNLIMITED_RATES = {
    "tenant_sends_per_minute": 100_000, "domain_sends_per_minute": 100_000,
    "ip_sends_per_minute": 100_000, "account_sends_per_minute": 100_000,
    "provider_sends_per_minute": {"other": 100_000, "gmail": 100_000, "outlook": 100_000,
                                  "yahoo": 100_000},
}  # fmt: skip


def table(fullname: str) -> Table:
    return models.Base.metadata.tables[fullname]


async def create_tenant(session: AsyncSession, name: str = "Tenant") -> uuid.UUID:
    tenant_id = uuid.uuid4()
    slug = f"t-{tenant_id.hex[:12]}"
    await session.execute(insert(Tenant).values(id=tenant_id, name=name, slug=slug))
    return tenant_id


async def create_row(session: AsyncSession, tbl: Table, tenant_id: uuid.UUID | None) -> dict:
    """Insert one row of `tbl` for `tenant_id`, creating the parent rows it refers to (in the
    same tenant). Runs on a system (or owner) session. Returns the row as stored."""
    values = await build_row(session, tbl, tenant_id)
    row = (await session.execute(insert(tbl).values(values).returning(*tbl.c))).one()
    return dict(row._mapping)


async def build_row(session: AsyncSession, tbl: Table, tenant_id: uuid.UUID | None) -> dict:
    """Values for a new row of `tbl` (parents are inserted, the row itself is not)."""
    values: dict[str, Any] = {}
    for col in tbl.columns:
        if col.name == "tenant_id" and tenant_id is not None:
            values[col.name] = tenant_id
            continue
        if (tbl.fullname, col.name) in CHECKED_VALUES:
            values[col.name] = CHECKED_VALUES[(tbl.fullname, col.name)]
            continue
        fks = list(col.foreign_keys)
        if fks:
            if col.nullable and not col.primary_key:
                continue
            parent = fks[0].column.table
            parent_values = await create_row(session, parent, tenant_id)
            values[col.name] = parent_values[fks[0].column.name]
            continue
        has_default = col.identity is not None or col.server_default is not None
        if has_default or col.default is not None or (col.nullable and not col.primary_key):
            continue
        values[col.name] = value_for(col)
    return values


def value_for(col) -> Any:
    t = col.type
    token = uuid.uuid4().hex
    if isinstance(t, Enum):
        first = t.enums[0]
        return (
            t.enum_class(first) if t.enum_class and issubclass(t.enum_class, enum.Enum) else first
        )
    if isinstance(t, UUID):
        return uuid.uuid4()
    if isinstance(t, INET):
        n = int(token[:6], 16)
        return f"127.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    if isinstance(t, (String, Text)):
        if "email" in col.name or "address" in col.name:
            return f"x{token[:12]}@example.com"
        length = getattr(t, "length", None) or 32
        return ("x" + token)[: min(length, 24)]
    if isinstance(t, Boolean):
        return False
    if isinstance(t, (Integer, SmallInteger, BigInteger)):
        return 1
    if isinstance(t, DateTime):
        return dt.datetime.now(dt.UTC)
    if isinstance(t, Date):
        return dt.date.today()
    if isinstance(t, JSONB):
        return {}
    if isinstance(t, LargeBinary):
        return b"x"
    raise TypeError(f"no test value for {col.table.fullname}.{col.name} of type {t!r}")


async def mark_verified(db: Database, email: str) -> None:
    """The user with this address has confirmed it, as verifyEmail would record."""
    async with db.system_session() as s:
        await s.execute(
            update(User)
            .where(User.email == email.lower(), User.email_verified_at.is_(None))
            .values(email_verified_at=dt.datetime.now(dt.UTC))
        )


# --- a sent message (tracking and inbound tests) -------------------------------------------


@dataclass(frozen=True)
class Sent:
    tenant: uuid.UUID
    campaign: uuid.UUID
    lead: uuid.UUID
    email: str
    message: EmailMessage


async def sent_message(db: Database) -> Sent:
    """A tenant, a campaign with a lead, and one message sent to the lead (its address in mixed
    case, as a mail header may carry it)."""
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        lead = await create_row(s, table("app.leads"), tenant)
        token = uuid.uuid4().hex
        message = await s.scalar(
            insert(EmailMessage)
            .values(
                tenant_id=tenant,
                campaign_id=lead["campaign_id"],
                lead_id=lead["id"],
                step_position=1,
                idempotency_key=f"{lead['campaign_id']}:{lead['id']}:1",
                message_id_header=f"<{token}@mail.example.com>",
                verp_token=token,
                from_address="sender@example.com",
                to_address=lead["email"].capitalize(),
                subject="Hello",
            )
            .returning(EmailMessage)
        )
    return Sent(tenant, lead["campaign_id"], lead["id"], lead["email"], message)


async def written_messages(db: Database, ages_in_days: list[float]) -> list[uuid.UUID]:
    """Sent messages of a new tenant, written that many days ago (retention tests), each with a
    body and a SENT event."""
    tenant, now = uuid.uuid4(), dt.datetime.now(dt.UTC)
    ids = []
    async with db.system_session("content") as s:
        for age in ages_in_days:
            token = uuid.uuid4().hex
            written = now - dt.timedelta(days=age)
            message_id = await s.scalar(
                insert(EmailMessage)
                .values(
                    tenant_id=tenant, idempotency_key=token,
                    message_id_header=f"<{token}@mail.example.com>", verp_token=token,
                    from_address="sender@example.com", to_address="lead@example.com",
                    subject="Hello", body_compressed=zlib.compress(f"body {token}".encode()),
                    status=MessageStatus.SENT, sent_at=written, created_at=written,
                    updated_at=written,
                )
                .returning(EmailMessage.id)
            )  # fmt: skip
            await s.execute(
                insert(EmailEvent).values(
                    tenant_id=tenant, kind=EventKind.SENT, message_id=message_id,
                    occurred_at=written,
                )
            )  # fmt: skip
            ids.append(message_id)
    return ids


@dataclass
class PendingSends:
    """Queued send jobs: two of the sent message's lead, one of another lead of its tenant."""

    mine: list[uuid.UUID]
    theirs: uuid.UUID
    other_lead: uuid.UUID


async def pending_sends(db: Database, sent: Sent) -> PendingSends:
    async with db.system_session() as s:
        other_lead = (await create_row(s, table("app.leads"), sent.tenant))["id"]
    async with db.tenant_session(sent.tenant) as s:
        mine = [
            await enqueue(s, "send_step", {"lead_id": str(sent.lead)}, tenant_id=sent.tenant)
            for _ in range(2)
        ]
        theirs = await enqueue(s, "send_step", {"lead_id": str(other_lead)}, tenant_id=sent.tenant)
    return PendingSends(mine, theirs, other_lead)


async def events(db: Database, message_id: uuid.UUID) -> list[EmailEvent]:
    async with db.system_session("content") as s:
        return list(
            await s.scalars(
                select(EmailEvent).where(EmailEvent.message_id == message_id).order_by("seq")
            )
        )


async def sending_campaign(
    db: Database, settings: Settings, lead_count: int, steps: int, accounts_n: int
):
    """A running campaign of `lead_count` leads (lead<n>@inbox.example), `steps` steps and
    `accounts_n` accounts of one DKIM-keyed domain, on the scale plan; (tenant, campaign id,
    domain id). Other tests' unfinished work is cancelled first."""
    from tests.jobs.helpers import quiet_queue

    await quiet_queue(db, settings)  # other tests' campaigns must not send into this test's sink
    async with db.system_session() as s:
        tenant = await create_tenant(s, "Sender")
        plan = await s.scalar(select(Plan.id).where(Plan.code == "scale"))
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan))
    async with db.tenant_session(tenant) as s:
        domain = await domains.add_domain(s, settings, tenant, f"send-{tenant.hex[:8]}.example")
        senders = [
            await accounts.create_email_account(
                s, settings, tenant, domain.id, f"rep{n}", f"Rep {n}", None
            )
            for n in range(accounts_n)
        ]
        spec = campaigns.CampaignSpec(
            name="e2e",
            account_ids=[a.id for a in senders],
            steps=[
                campaigns.StepSpec(
                    delay_days=0,
                    subject="Hi {{ first_name }}" if n == 0 else "Re: hi",
                    html=f"<p>Step {n + 1} for {{{{ company }}}} <a href='https://example.com/x'>link</a></p>",
                    text=f"Step {n + 1}",
                )
                for n in range(steps)
            ],
            window=campaigns.WindowSpec(
                timezone="UTC", days=[1, 2, 3, 4, 5, 6, 7], start_hour=0, end_hour=24
            ),
        )
        campaign = await campaigns.create_campaign(s, tenant, spec)
        campaign.send_spacing_seconds = 0
        for a in senders:
            a.daily_limit = 100_000
        csv = "email,first_name,company\n" + "".join(
            f"lead{n}@inbox.example,L{n},Co{n}\n" for n in range(lead_count)
        )
        await leads.import_leads(s, settings, campaign.id, csv)
        await s.flush()
        await campaigns.launch(s, campaign.id)
    return tenant, campaign.id, domain.id


async def sending_ip(db: Database, tenant: uuid.UUID, **columns: Any) -> uuid.UUID:
    """An ACTIVE sending IP of the tenant (10.x.y.z), unless `columns` say otherwise (status,
    listings, guard), given to every email account of the tenant; its id."""
    address = ".".join(["10", *(str(b) for b in uuid.uuid4().bytes[:3])])
    async with db.tenant_session(tenant) as s:
        ip = SmtpIpAddress(
            tenant_id=tenant, address=address, **{"status": IpStatus.ACTIVE, **columns}
        )
        s.add(ip)
        await s.flush()
        await s.execute(update(EmailAccount).values(ip_id=ip.id))
    return ip.id


# A catalogue of one plan (services/plan_catalogue.py), as text that tests edit into their case.
SOLO_CATALOGUE = """
[plans.solo]
name = "Solo"
price_cents = 1_000
currency = "USD"
interval = "month"
emails_per_month = 1_000
domains = 1
ips = 0
email_accounts = 1
seats = 1
"""


def catalogue_file(directory: Path, text: str = SOLO_CATALOGUE) -> Path:
    path = directory / "plans.toml"
    path.write_text(text)
    return path
