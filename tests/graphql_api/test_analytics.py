"""The dashboards after a real campaign: signed up and launched over the API, sent by a real
worker to an SMTP sink, opened, clicked and unsubscribed over HTTP, bounced through the inbound
SMTP server, rolled up by the pipelines, and read back over GraphQL; and none of those reads
touches the raw event tables."""

from __future__ import annotations

import asyncio
import email
import html
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import date, timedelta
from email import policy
from email.message import EmailMessage as Mail
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

import pipelines
from graphql_api.ids import parse_id
from jobs.queuer import Queuer
from models.content import EmailMessage
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from tests.factories import UNLIMITED_RATES, Sent
from tests.graphql_api.conftest import Account, Api, sign_up
from tests.graphql_api.flows import (
    ADD_DOMAIN,
    CREATE_ACCOUNT,
    CREATE_CAMPAIGN,
    IMPORT,
    TRANSITION,
    call,
    put_on_plan,
)
from tests.graphql_api.test_tracking import GMAIL_PROXY, READER
from tests.jobs.conftest import QUEUE_SETTINGS, WorkerProcess, spawn_worker
from tests.jobs.helpers import all_sent, quiet_queue, wait_for
from tests.reports import deliver, dsn, running_inbound
from tests.smtp import running_sink

# A real worker starts in seconds to tens of seconds; both tests share the one campaign.
pytestmark = pytest.mark.slow

LEADS = ("a", "b", "c", "d")  # a opens and clicks, b unsubscribes, c bounces, d does nothing
TARGET = "https://shop.example.com/pricing"  # the step's one link
# Four accounts, so round robin sends all four leads at once (one account spaces its sends a
# minute apart); and per-minute rates that never hold a send back.
ACCOUNTS = 4
FAST = UNLIMITED_RATES

COUNTS = ("sent", "delivered", "opened", "clicked", "replied", "bounced", "complained",
          "unsubscribed")  # fmt: skip
RATES = ("openRate", "clickRate", "replyRate", "bounceRate")
# What those outcomes add up to by the definitions (pipelines/email_events.py): delivered =
# sent - hard bounces, opened = messages with a human open or click, rates over delivered
# (bounces over sent).
EXPECTED = {"sent": 4, "delivered": 3, "opened": 1, "clicked": 1, "replied": 0, "bounced": 1,
            "complained": 0, "unsubscribed": 1}  # fmt: skip
EXPECTED_RATES = {"openRate": 1 / 3, "clickRate": 1 / 3, "replyRate": 0.0, "bounceRate": 1 / 4}

DAILY_STATS = """query($from: Date!, $to: Date!, $campaignId: ID) {
  dailyStats(from: $from, to: $to, campaignId: $campaignId) {
    day sent delivered opened clicked replied bounced complained unsubscribed } }"""
STATS = """stats { sent delivered opened clicked replied bounced complained unsubscribed
  openRate clickRate replyRate bounceRate }"""
CAMPAIGN = "query($id: ID!) { node(id: $id) { ... on Campaign { id " + STATS + " } } }"
CAMPAIGNS = "{ campaigns(first: 10) { edges { node { id " + STATS + " } } } }"
DELIVERABILITY = "{ deliverability { bounceRate complaintRate } }"

# Independently of the pipelines: the definitions as SQL over the raw events, per tenant day.
EVENT_COUNTS = text("""
SELECT (e.occurred_at AT TIME ZONE :zone)::date AS day,
       count(*) FILTER (WHERE kind = 'SENT') AS sent,
       count(*) FILTER (WHERE kind = 'SENT')
         - count(*) FILTER (WHERE kind = 'BOUNCE' AND details->>'hard' = 'true') AS delivered,
       count(DISTINCT message_id) FILTER (WHERE kind IN ('OPEN', 'CLICK') AND NOT machine)
         AS opened,
       count(DISTINCT message_id) FILTER (WHERE kind = 'CLICK' AND NOT machine) AS clicked,
       count(*) FILTER (WHERE kind = 'REPLY') AS replied,
       count(*) FILTER (WHERE kind = 'BOUNCE' AND details->>'hard' = 'true') AS bounced,
       count(*) FILTER (WHERE kind = 'COMPLAINT') AS complained,
       count(*) FILTER (WHERE kind = 'UNSUBSCRIBE') AS unsubscribed,
       count(*) FILTER (WHERE kind = 'OPEN' AND NOT machine) AS opens_total,
       count(*) FILTER (WHERE kind = 'OPEN' AND machine) AS machine_opens
FROM content.email_events e
WHERE e.tenant_id = :tenant AND (CAST(:campaign AS uuid) IS NULL OR e.campaign_id = :campaign)
GROUP BY 1 ORDER BY 1""")
ROLLED_UP = text("""
SELECT day, opens_total, machine_opens FROM analytics.daily_analytics
WHERE tenant_id = :tenant AND campaign_id = :campaign ORDER BY day""")


@dataclass
class CampaignRun:
    """A tenant whose one campaign went out to four leads and drew every kind of outcome."""

    account: Account
    tenant: uuid.UUID
    zone: str
    campaign: str  # the Campaign's global id
    campaign_id: uuid.UUID
    first: date  # a range of days holding every event
    last: date


# --- the campaign, end to end ----------------------------------------------------------------


async def launch_campaign(api: Api, db: Database, account: Account, name: str) -> str:
    """Four leads, one step with a link, a window open all week and all day; launched."""
    await put_on_plan(db, account, "growth")
    domain = (await call(api, account, ADD_DOMAIN, {"name": f"{name}.example"}, "addDomain"))[
        "domain"
    ]
    senders = [
        (await call(api, account, CREATE_ACCOUNT, {"domainId": domain["id"], "localPart": f"rep{n}"},
                    "createEmailAccount"))["emailAccount"]["id"]
        for n in range(ACCOUNTS)
    ]  # fmt: skip
    step = {
        "delayDays": 0,
        "subject": "Hi {{ first_name }}",
        "html": f'<p>Hello {{{{ first_name }}}}, see <a href="{TARGET}">our prices</a>.</p>',
        "text": f"Hello {{{{ first_name }}}}, see {TARGET}",
    }
    window = {"timezone": "UTC", "days": [1, 2, 3, 4, 5, 6, 7], "startHour": 0, "endHour": 24}
    campaign = await call(
        api, account, CREATE_CAMPAIGN,
        {"input": {"name": "Launch", "accountIds": senders, "steps": [step], "window": window}},
        "createCampaign",
    )  # fmt: skip
    assert campaign["errors"] == [], campaign
    campaign_id = campaign["campaign"]["id"]
    csv = "email,first_name\n" + "".join(f"{lead}@{name}-leads.example,{lead}\n" for lead in LEADS)
    imported = await call(api, account, IMPORT, {"campaignId": campaign_id, "csv": csv}, "importLeads")  # fmt: skip
    assert imported["imported"] == len(LEADS), imported
    launched = await call(api, account, TRANSITION % "launchCampaign", {"id": campaign_id},
                          "launchCampaign")  # fmt: skip
    assert launched["errors"] == [] and launched["campaign"]["status"] == "RUNNING", launched
    return campaign_id


@dataclass
class Sending:
    """A launched campaign, the real worker that sent it (still to be stopped), and what the
    sink got, by lead (a, b, …): the envelope sender and the parsed message."""

    campaign: str
    worker: WorkerProcess
    received: dict[str, tuple[str, Mail]]


async def send_all(
    db: Database, settings: Settings, log: Path, tenant: uuid.UUID, launch: Awaitable[str]
) -> Sending:
    """Launches the campaign (`launch`, over the API) while a real worker starts, and runs it
    and a real queuer against an SMTP sink until every lead's message is SENT."""
    with running_sink() as (sink, port):
        starting = asyncio.create_task(
            asyncio.to_thread(spawn_worker, settings, log, smtp_relay_port=port, **FAST)
        )
        stop = asyncio.Event()
        queuer = asyncio.create_task(Queuer(settings.model_copy(update=QUEUE_SETTINGS)).run(stop))
        try:
            campaign = await launch

            async def arrived() -> bool:
                return len(sink.messages) >= len(LEADS)

            await wait_for(arrived, within=90)
            await wait_for(all_sent(db, tenant, len(LEADS)), within=30)
        except BaseException:
            (await starting).stop()
            raise
        finally:
            stop.set()
            await asyncio.wait_for(queuer, 10)
        worker = await starting
        assert len(sink.messages) == len(LEADS), worker.log.read_text()
        received = {
            rcpts[0].split("@")[0]: (
                mail_from,
                email.message_from_bytes(raw, policy=policy.default),
            )
            for mail_from, rcpts, raw in sink.messages
        }
    return Sending(campaign, worker, received)


def tracked(mail: Mail, pattern: str) -> str:
    """The one URL of the message's HTML part that `pattern` finds."""
    body = mail.get_body(("html",))
    assert body is not None
    [url] = re.findall(pattern, body.get_content())
    return html.unescape(url)


def on_test_server(api: Api, settings: Settings, url: str) -> str:
    """A link as signed into a message (on settings.public_url), pointed at this test's server."""
    assert url.startswith(settings.public_url), url
    return api.url + url.removeprefix(settings.public_url)


async def bounce(db: Database, settings: Settings, tenant: uuid.UUID, received) -> None:
    """A hard bounce of the message to `received`, as the receiving server reports it: a DSN
    to the message's VERP return path, over SMTP to the inbound server."""
    mail_from, mail = received
    async with db.system_session("content") as s:
        message = await s.scalar(
            select(EmailMessage).where(
                EmailMessage.tenant_id == tenant,
                EmailMessage.message_id_header == str(mail["Message-ID"]),
            )
        )
    assert message is not None
    sent = Sent(tenant, message.campaign_id, message.lead_id, message.to_address, message)
    diagnostic = f"smtp; 550 5.1.1 <{message.to_address}>: Recipient address rejected"
    redis = Redis.from_url(settings.redis_url)
    try:
        async with running_inbound(db, redis, settings) as (_, port):
            reply = await deliver(
                port, mail_from, dsn(sent, action="failed", status="5.1.1", diagnostic=diagnostic)
            )
    finally:
        await redis.aclose()
    assert reply.startswith("OK"), reply


@pytest.fixture(scope="module")
async def campaign_run(
    api: Api, db: Database, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> CampaignRun:
    account = await sign_up(api, "Rollup")
    tenant = parse_id(account.tenant)[1]
    await quiet_queue(db, settings)  # no other test's jobs for this test's worker
    launch = launch_campaign(api, db, account, f"rollup-{tenant.hex[:8]}")
    log = tmp_path_factory.mktemp("analytics") / "worker.log"
    sending = await send_all(db, settings, log, tenant, launch)
    stopped = asyncio.create_task(asyncio.to_thread(sending.worker.stop))
    received = sending.received
    assert sorted(received) == list(LEADS)

    a, b = received["a"][1], received["b"][1]
    pixel = on_test_server(api, settings, tracked(a, r'<img src="([^"]+/t/o/[^"]+)"'))
    for agent in (READER, READER, GMAIL_PROXY):  # Gmail's image proxy: a machine open
        assert (await api.http.get(pixel, headers={"User-Agent": agent})).status_code == 200
    link = on_test_server(api, settings, tracked(a, r'<a href="([^"]+/t/c/[^"]+)"'))
    clicked = await api.http.get(link, headers={"User-Agent": READER})
    assert (clicked.status_code, clicked.headers["location"]) == (302, TARGET)
    [one_click] = re.findall(r"<(https?://[^>]+/u/[^>]+)>", str(b["List-Unsubscribe"]))
    unsubscribed = await api.http.post(  # RFC 8058: what a mail client posts
        on_test_server(api, settings, one_click), data={"List-Unsubscribe": "One-Click"}
    )
    assert unsubscribed.status_code == 200
    await bounce(db, settings, tenant, received["c"])
    await stopped

    for pipeline in pipelines.NAMES:  # the other tests' new events are rolled up too
        await asyncio.to_thread(pipelines.run, settings, pipeline, wait=True)

    async with db.system_session() as s:
        zone = await s.scalar(select(Tenant.timezone).where(Tenant.id == tenant))
    async with db.system_session("content") as s:
        days = (
            await s.execute(
                text("SELECT min(occurred_at AT TIME ZONE :zone)::date, "
                     "max(occurred_at AT TIME ZONE :zone)::date FROM content.email_events "
                     "WHERE tenant_id = :tenant"),
                {"zone": zone, "tenant": tenant},
            )
        ).one()  # fmt: skip
    return CampaignRun(
        account, tenant, zone, sending.campaign, parse_id(sending.campaign)[1],
        days[0] - timedelta(days=1), days[1] + timedelta(days=1),
    )  # fmt: skip


# --- reading it back -------------------------------------------------------------------------


async def dashboards(api: Api, run: CampaignRun) -> dict:
    """Every dashboard read of the tenant and its campaign, over GraphQL as its user."""
    days = {"from": run.first.isoformat(), "to": run.last.isoformat()}
    by_campaign = {**days, "campaignId": run.campaign}
    [edge] = (await call(api, run.account, CAMPAIGNS, {}, "campaigns"))["edges"]
    return {
        "tenant_days": await call(api, run.account, DAILY_STATS, days, "dailyStats"),
        "campaign_days": await call(api, run.account, DAILY_STATS, by_campaign, "dailyStats"),
        "campaign": (await call(api, run.account, CAMPAIGN, {"id": run.campaign}, "node"))["stats"],
        "campaigns": edge["node"]["stats"],
        "deliverability": await call(api, run.account, DELIVERABILITY, {}, "deliverability"),
    }


async def from_events(db: Database, run: CampaignRun, campaign: uuid.UUID | None) -> dict:
    """The counts per tenant day, straight from content.email_events."""
    async with db.system_session("content") as s:
        rows = await s.execute(
            EVENT_COUNTS, {"zone": run.zone, "tenant": run.tenant, "campaign": campaign}
        )
        return {row.day: dict(row._mapping) for row in rows}


def totals(days: list[dict]) -> dict[str, int]:
    return {c: sum(d[c] for d in days) for c in COUNTS}


def with_sends(days: list[dict]) -> dict[date, dict[str, int]]:
    """dailyStats' days that have anything in them (the others are zeros by contract)."""
    return {
        date.fromisoformat(d["day"]): {c: d[c] for c in COUNTS}
        for d in days
        if any(d[c] for c in COUNTS)
    }


async def test_a_campaigns_sends_opens_click_unsubscribe_and_bounce_reach_every_dashboard(
    api: Api, db: Database, campaign_run: CampaignRun
) -> None:
    run = campaign_run

    seen = await dashboards(api, run)

    # What the events say, counted by SQL over content.email_events, day by day.
    tenant_events = await from_events(db, run, None)
    campaign_events = await from_events(db, run, run.campaign_id)
    assert tenant_events == campaign_events  # the tenant sent nothing else
    by_day = {day: {c: row[c] for c in COUNTS} for day, row in campaign_events.items()}
    assert with_sends(seen["tenant_days"]) == by_day
    assert with_sends(seen["campaign_days"]) == by_day
    assert len(seen["tenant_days"]) == (run.last - run.first).days + 1
    # ... and what they must add up to, by hand.
    assert totals(list(by_day.values())) == EXPECTED
    assert totals(seen["tenant_days"]) == totals(seen["campaign_days"]) == EXPECTED
    for stats in (seen["campaign"], seen["campaigns"]):
        assert {c: stats[c] for c in COUNTS} == EXPECTED
        assert {r: stats[r] for r in RATES} == pytest.approx(EXPECTED_RATES)
    assert seen["deliverability"] == pytest.approx({"bounceRate": 1 / 4, "complaintRate": 0.0})
    # Repeat and machine opens are kept, apart from `opened`.
    assert sum(row["opens_total"] for row in campaign_events.values()) == 2
    assert sum(row["machine_opens"] for row in campaign_events.values()) == 1
    async with db.system_session("analytics") as s:
        rolled = (
            await s.execute(ROLLED_UP, {"tenant": run.tenant, "campaign": run.campaign_id})
        ).all()
    assert {day: (total, machine) for day, total, machine in rolled} == {
        day: (row["opens_total"], row["machine_opens"]) for day, row in campaign_events.items()
    }


async def test_the_dashboards_answer_the_same_without_any_right_to_read_the_raw_events(
    api: Api, db: Database, settings: Settings, campaign_run: CampaignRun
) -> None:
    run = campaign_run
    before = await dashboards(api, run)
    role = settings.app_db_role

    async with db.owner_session("content") as s:
        await s.execute(text(f'REVOKE SELECT ON content.email_events FROM "{role}"'))
    try:
        with pytest.raises(DBAPIError, match="permission denied"):  # the revoke holds
            async with db.tenant_session(run.tenant, tier="content") as s:
                await s.execute(text("SELECT count(*) FROM content.email_events"))
        after = await dashboards(api, run)
    finally:
        async with db.owner_session("content") as s:
            await s.execute(text(f'GRANT SELECT ON content.email_events TO "{role}"'))

    assert after == before
    assert totals(after["tenant_days"]) == totals(after["campaign_days"]) == EXPECTED
    assert {c: after["campaign"][c] for c in COUNTS} == EXPECTED
