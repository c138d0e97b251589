"""The demo seed: plans and a complete demo tenant, idempotent, whose campaign sends HTML with a
tracked link and an open pixel."""

from __future__ import annotations

import email
import re
import socket
from email import policy
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import func, select

from models.billing import Plan
from models.campaigns import Campaign, CampaignSequenceStep, Lead
from models.content import EmailMessage
from models.infrastructure import Domain, EmailAccount
from models.queue import Job
from models.sessions import Database
from models.tenancy import Role, TenantUser, User
from penguinmails.settings import Settings
from services import plan_catalogue, planning, sending, tracking
from services.demo import DEMO_EMAIL, DEMO_LEADS, DEMO_PASSWORD, seed_demo
from services.passwords import verify_password
from services.sink import start_sink
from tests.jobs.helpers import quiet_queue


async def _counts(db: Database, tenant_id) -> dict[str, int]:
    async with db.tenant_session(tenant_id) as s:
        return {
            model.__tablename__: await s.scalar(select(func.count()).select_from(model))
            for model in (TenantUser, Domain, EmailAccount, Campaign, CampaignSequenceStep, Lead)
        }


async def test_seed_demo_loads_plans_and_a_working_demo_tenant_and_is_idempotent(
    db: Database,
) -> None:
    async with db.system_session() as s:
        first = await seed_demo(s, db.settings)
    before = await _counts(db, first.tenant_id)
    async with db.system_session() as s:
        second = await seed_demo(s, db.settings)
    after = await _counts(db, second.tenant_id)

    assert second.tenant_id == first.tenant_id
    assert before == after
    assert after == {
        "tenant_users": 1, "domains": 1, "email_accounts": 1, "campaigns": 1,
        "campaign_sequence_steps": 2, "leads": 5,
    }  # fmt: skip
    async with db.anonymous_session() as s:
        codes = set(await s.scalars(select(Plan.code)))
    catalogue = plan_catalogue.load(db.settings.plan_catalogue)
    assert {plan.code for plan in catalogue} <= codes and len(catalogue) >= 3
    async with db.tenant_session(first.tenant_id) as s:
        member = (await s.execute(select(User, TenantUser.role).join(TenantUser))).one()
    assert member.User.email == DEMO_EMAIL and member.role == Role.OWNER
    assert verify_password(member.User.password_hash, DEMO_PASSWORD)


def _sunk(directory: Path) -> list[email.message.EmailMessage]:
    """The messages the sink stored as .eml files."""
    return [
        email.message_from_bytes(file.read_bytes(), policy=policy.default)
        for file in sorted(directory.glob("*.eml"))
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_demo_campaign_sends_html_with_a_tracked_link_and_an_open_pixel(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    async with db.system_session() as s:
        seed = await seed_demo(s, settings)
    async with db.tenant_session(seed.tenant_id) as s:
        campaign_id = await s.scalar(select(Campaign.id))
        await planning.plan_campaign(s, campaign_id)
    async with db.tenant_session(seed.tenant_id, tier="queue") as s:
        payloads = list(await s.scalars(select(Job.payload).where(Job.kind == planning.SEND_KIND)))
    await quiet_queue(db, settings)  # sent here through send_batch, not by a worker
    port = _free_port()
    sink = start_sink(tmp_path, "127.0.0.1", port)  # the sink `penguinmails up` relays to
    redis = Redis.from_url(settings.redis_url)
    try:
        results = await sending.send_batch(
            db, settings.model_copy(update={"smtp_relay_port": port}), redis,
            [(seed.tenant_id, payload, True) for payload in payloads],
        )  # fmt: skip
    finally:
        await redis.aclose()
        sink.stop()

    assert results == ["sent"] * len(DEMO_LEADS)
    async with db.tenant_session(seed.tenant_id, tier="content") as s:
        message_ids = dict(
            (await s.execute(select(EmailMessage.to_address, EmailMessage.id))).all()
        )
    mails = _sunk(tmp_path)
    assert len(mails) == len(DEMO_LEADS)
    for mail in mails:
        message_id = message_ids[mail["To"].addresses[0].addr_spec]
        html = mail.get_body(("html",)).get_content()
        [link] = re.findall(r'<a href="([^"]+)"', html)
        assert link.startswith(f"{settings.public_url}/t/c/")
        click = tracking.verify(settings, link.rsplit("/", 1)[1], tracking.CLICK)
        assert click == tracking.Token(tracking.CLICK, message_id, "https://example.com/pricing")
        [pixel] = re.findall(r'<img src="([^"]+)" width="1" height="1"', html)
        assert pixel == tracking.open_url(settings, message_id)
        text = mail.get_body(("plain",)).get_content()
        assert "See pricing: https://example.com/pricing" in text
