"""The tracking routes over real HTTP: the open pixel, tracked links, and the unsubscribe page
with its RFC 8058 one-click POST."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from graphql_api.app import create_app
from models.campaigns import Lead, LeadStatus, Suppression
from models.content import EventKind
from models.queue import Job, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from services import tracking
from tests.factories import events, pending_sends, sent_message
from tests.graphql_api.conftest import running

READER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:127.0) Gecko/20100101 Firefox/127.0"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@dataclass
class Served:
    url: str
    settings: Settings
    http: httpx.AsyncClient
    redis: Redis

    def path(self, public_url: str) -> str:
        """A link as signed into a message, pointed at this test server."""
        return self.url + public_url.removeprefix(self.settings.public_url)


@pytest.fixture(scope="module")
async def served(settings: Settings) -> AsyncIterator[Served]:
    app = create_app(settings)
    async with (
        running(app) as url,
        httpx.AsyncClient(timeout=30, follow_redirects=False) as http,
    ):
        yield Served(url, settings, http, app.state.redis)


async def test_the_open_pixel_is_a_transparent_gif_and_records_an_open(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)

    response = await served.http.get(
        served.path(tracking.open_url(served.settings, sent.message.id)),
        headers={"User-Agent": READER},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"].startswith("no-store")
    assert response.content[:6] == b"GIF89a" and len(response.content) == 43
    assert response.content[-1:] == b";"
    [event] = await events(db, sent.message.id)
    assert (event.kind, event.machine, event.lead_id) == (EventKind.OPEN, False, sent.lead)


async def test_an_open_through_gmails_image_proxy_is_flagged_as_a_machine_open(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)

    response = await served.http.get(
        served.path(tracking.open_url(served.settings, sent.message.id)),
        headers={"User-Agent": GMAIL_PROXY},
    )

    assert response.status_code == 200
    [event] = await events(db, sent.message.id)
    assert (event.kind, event.machine) == (EventKind.OPEN, True)


async def test_a_click_redirects_to_exactly_the_signed_url_and_records_the_click(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)
    target = "https://shop.example.com/pricing?plan=pro&utm_source=mail#annual"

    response = await served.http.get(
        served.path(tracking.click_url(served.settings, sent.message.id, target)),
        headers={"User-Agent": READER},
    )

    assert response.status_code == 302
    assert response.headers["location"] == target
    [event] = await events(db, sent.message.id)
    assert (event.kind, event.url, event.machine) == (EventKind.CLICK, target, False)


def _flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1 :]


async def test_a_tampered_or_misused_token_gets_404_records_nothing_and_never_redirects(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)
    good = tracking.click_url(served.settings, sent.message.id, "https://example.com/a")
    token = good.rsplit("/", 1)[1]
    # The same token with another URL in it: the signature no longer matches.
    other_url = tracking.sign(
        served.settings, tracking.CLICK, sent.message.id, "https://evil.test/"
    )
    swapped = other_url[:-22] + token[-22:]
    opened = tracking.sign(served.settings, tracking.OPEN, sent.message.id)
    unsub = tracking.sign(served.settings, tracking.UNSUBSCRIBE, sent.message.id)

    bad = [
        f"/t/c/{_flip(token, 0)}",
        f"/t/c/{_flip(token, len(token) // 2)}",
        f"/t/c/{_flip(token, len(token) - 1)}",
        f"/t/c/{swapped}",
        f"/t/c/{opened}",  # another kind
        f"/t/c/{unsub}",
        "/t/c/https%3A%2F%2Fevil.test%2F",
        f"/t/o/{token}",
        f"/t/o/{_flip(opened, 3)}",
        f"/u/{opened}",
        f"/u/{_flip(unsub, 5)}",
    ]
    for path in bad:
        response = await served.http.get(served.url + path)
        assert response.status_code == 404, path
        assert "location" not in response.headers, path
    response = await served.http.post(
        f"{served.url}/u/{_flip(unsub, 5)}", data={"List-Unsubscribe": "One-Click"}
    )
    assert response.status_code == 404

    assert await events(db, sent.message.id) == []
    async with db.system_session() as s:
        assert await s.scalar(select(Lead.status).where(Lead.id == sent.lead)) == LeadStatus.ACTIVE


async def test_one_click_unsubscribe_suppresses_the_address_and_cancels_only_that_leads_sends(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)
    sends = await pending_sends(db, sent)
    mine, theirs, other_lead = sends.mine, sends.theirs, sends.other_lead
    url = served.path(tracking.unsubscribe_url(served.settings, sent.message.id))

    first = await served.http.post(url, data={"List-Unsubscribe": "One-Click"})
    second = await served.http.post(url, data={"List-Unsubscribe": "One-Click"})

    assert first.status_code == second.status_code == 200
    async with db.system_session() as s:
        assert await s.scalar(select(Lead.status).where(Lead.id == sent.lead)) == (
            LeadStatus.UNSUBSCRIBED
        )
        assert await s.scalar(select(Lead.status).where(Lead.id == other_lead)) == (
            LeadStatus.ACTIVE
        )
        assert list(
            await s.scalars(select(Suppression.email).where(Suppression.tenant_id == sent.tenant))
        ) == [sent.email]
        jobs = dict((await s.execute(select(Job.id, Job.status).where(Job.tenant_id == sent.tenant))).all())  # fmt: skip
    assert [jobs[j] for j in mine] == [JobStatus.CANCELLED] * 2
    assert jobs[theirs] == JobStatus.QUEUED
    assert [e.kind for e in await events(db, sent.message.id)] == [EventKind.UNSUBSCRIBE]


async def test_opening_the_unsubscribe_link_shows_a_form_and_changes_nothing(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)
    url = served.path(tracking.unsubscribe_url(served.settings, sent.message.id))

    response = await served.http.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in response.text
    assert await events(db, sent.message.id) == []
    async with db.system_session() as s:
        assert await s.scalar(select(Lead.status).where(Lead.id == sent.lead)) == LeadStatus.ACTIVE
        assert (
            await s.scalar(select(Suppression.id).where(Suppression.tenant_id == sent.tenant))
            is None
        )


async def test_each_event_is_published_on_the_tenants_email_channel(
    served: Served, db: Database
) -> None:
    sent = await sent_message(db)
    pubsub = served.redis.pubsub()
    await pubsub.subscribe(tracking.email_channel(sent.tenant))
    try:
        await served.http.get(
            served.path(tracking.click_url(served.settings, sent.message.id, "https://a.test/")),
            headers={"User-Agent": READER},
        )
        message = None
        async with asyncio.timeout(5):
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    finally:
        await pubsub.aclose()

    body = json.loads(message["data"])
    assert body["kind"] == "CLICK"
    assert body["messageId"] == str(sent.message.id)
    assert body["campaignId"] == str(sent.campaign)
    assert body["at"]


async def test_a_valid_token_for_a_message_that_no_longer_exists_records_nothing(
    served: Served, db: Database
) -> None:
    gone = uuid.uuid4()

    pixel = await served.http.get(served.path(tracking.open_url(served.settings, gone)))
    link = await served.http.get(
        served.path(tracking.click_url(served.settings, gone, "https://a.test/x"))
    )
    unsub = await served.http.post(served.path(tracking.unsubscribe_url(served.settings, gone)))

    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert (link.status_code, link.headers["location"]) == (302, "https://a.test/x")
    assert unsub.status_code == 404
    assert await events(db, gone) == []
