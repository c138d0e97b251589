"""Tracking: signed tokens that cannot be forged or bent, machine-open detection, and what an open,
a click or an unsubscribe leaves in the tables."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import func, select

from jobs.queue import enqueue
from models.campaigns import Lead, LeadStatus, Suppression, SuppressionReason
from models.content import EventKind
from models.queue import Job, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from services import tracking
from tests.factories import events, pending_sends, sent_message

# --- arranging -------------------------------------------------------------------------------


@pytest.fixture
async def redis(settings: Settings):
    client = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


# --- tokens ----------------------------------------------------------------------------------


def test_a_signed_token_verifies_to_its_kind_message_and_url(settings: Settings) -> None:
    message_id = uuid.uuid4()
    url = "https://example.com/pricing?plan=pro&ref=mail#top"

    click = tracking.click_url(settings, message_id, url)
    token = click.removeprefix(f"{settings.public_url}/t/c/")

    assert tracking.verify(settings, token, tracking.CLICK) == tracking.Token(
        tracking.CLICK, message_id, url
    )
    opened = tracking.open_url(settings, message_id).removeprefix(f"{settings.public_url}/t/o/")
    assert tracking.verify(settings, opened, tracking.OPEN) == tracking.Token(
        tracking.OPEN, message_id
    )
    assert len(opened) < 60  # compact: 1 + 16 + 16 bytes


def test_every_changed_character_of_a_token_is_refused(settings: Settings) -> None:
    token = tracking.sign(settings, tracking.CLICK, uuid.uuid4(), "https://example.com/a")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

    for i, char in enumerate(token):
        for other in alphabet.replace(char, "")[::7]:
            tampered = token[:i] + other + token[i + 1 :]
            assert tracking.verify(settings, tampered, tracking.CLICK) is None, (i, other)


def test_a_token_is_refused_for_another_kind_or_another_key(settings: Settings) -> None:
    message_id = uuid.uuid4()
    opened = tracking.sign(settings, tracking.OPEN, message_id)
    other_key = settings.model_copy(update={"secret_key": SecretStr("another-secret")})

    assert tracking.verify(settings, opened, tracking.UNSUBSCRIBE) is None
    assert tracking.verify(settings, opened, tracking.CLICK) is None
    assert tracking.verify(other_key, opened, tracking.OPEN) is None
    for junk in ("", "x", "not a token!", "A" * 5000, opened + "=", opened + "AA"):
        assert tracking.verify(settings, junk, tracking.OPEN) is None


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:text/html,hi", "//evil.example", "ftp://example.com/x", "https:"],
)
def test_only_web_links_can_be_signed_for_clicks(settings: Settings, url: str) -> None:
    with pytest.raises(ValueError):
        tracking.click_url(settings, uuid.uuid4(), url)


@pytest.mark.parametrize(
    ("agent", "machine"),
    [
        ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", True),
        ("Mozilla/5.0", True),  # Apple Mail Privacy Protection
        ("", True),
        (None, True),
        ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", True),
        ("Mozilla/4.0 (compatible; ms-office; MSOffice 16)", True),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", False),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36", False),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:127.0) Gecko/20100101 Firefox/127.0", False),
    ],
)  # fmt: skip
def test_proxy_prefetches_and_scanners_are_machines_and_readers_are_not(
    agent: str | None, machine: bool
) -> None:
    assert tracking.is_machine(agent) is machine


# --- recording -------------------------------------------------------------------------------


async def test_every_open_is_an_event_and_counts_leave_out_machine_opens(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    reader = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15"

    await tracking.record_open(db, redis, sent.message, user_agent="Mozilla/5.0")
    first = await tracking.record_open(db, redis, sent.message, user_agent=reader)
    await tracking.record_open(db, redis, sent.message, user_agent=reader)

    recorded = await events(db, sent.message.id)
    assert [(e.kind, e.machine) for e in recorded] == [
        (EventKind.OPEN, True),
        (EventKind.OPEN, False),
        (EventKind.OPEN, False),
    ]
    assert recorded[0].tenant_id == sent.tenant and recorded[0].campaign_id == sent.campaign
    assert recorded[0].lead_id == sent.lead and recorded[0].step_position == 1
    async with db.tenant_session(sent.tenant, tier="content") as s:
        assert await tracking.open_counts(s, sent.message.id) == (first.occurred_at, 2)
        _, total = await tracking.open_counts(s, sent.message.id, include_machine=True)
        assert total == 3


async def test_unsubscribing_twice_changes_things_once(db: Database, redis: Redis) -> None:
    sent = await sent_message(db)

    assert await tracking.unsubscribe(db, redis, sent.message) is True
    assert await tracking.unsubscribe(db, redis, sent.message) is False

    async with db.system_session() as s:
        assert await s.scalar(select(Lead.status).where(Lead.id == sent.lead)) == (
            LeadStatus.UNSUBSCRIBED
        )
        suppressions = (
            await s.execute(
                select(Suppression.email, Suppression.reason, Suppression.source).where(
                    Suppression.tenant_id == sent.tenant
                )
            )
        ).all()
    assert suppressions == [(sent.email, SuppressionReason.UNSUBSCRIBE, str(sent.message.id))]
    assert [e.kind for e in await events(db, sent.message.id)] == [EventKind.UNSUBSCRIBE]


async def test_unsubscribing_cancels_only_that_leads_pending_sends(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    sends = await pending_sends(db, sent)
    mine, theirs = sends.mine, sends.theirs
    async with db.tenant_session(sent.tenant) as s:
        other_kind = await enqueue(s, "verify_domain", {"lead_id": str(sent.lead)}, tenant_id=sent.tenant)  # fmt: skip

    await tracking.unsubscribe(db, redis, sent.message)

    async with db.system_session("queue") as s:
        status = dict((await s.execute(select(Job.id, Job.status).where(Job.tenant_id == sent.tenant))).all())  # fmt: skip
        finished = await s.scalar(
            select(func.count()).where(Job.id.in_(mine), Job.finished_at.is_not(None))
        )
    assert [status[j] for j in mine] == [JobStatus.CANCELLED, JobStatus.CANCELLED]
    assert finished == 2
    assert status[theirs] == JobStatus.QUEUED
    assert status[other_kind] == JobStatus.QUEUED
