"""daily_analytics and campaign_analytics from hand-made events: the definitions, the tenant's
days, late commits, reruns and rebuilds."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pipelines
from models.analytics import ALL_CAMPAIGNS

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _daily(olap, tenant, campaign=ALL_CAMPAIGNS):
    return olap.frame(
        "SELECT day, sent, delivered, opened, opens_total, clicked, clicks_total, machine_opens,"
        " machine_clicks, replied, bounced, soft_bounced, complained, unsubscribed"
        " FROM analytics.daily_analytics WHERE tenant_id = $1::uuid AND campaign_id = $2::uuid"
        " ORDER BY day",
        str(tenant), str(campaign),
    )  # fmt: skip


def _run_all(settings, **kwargs):
    return {name: pipelines.run(settings, name, **kwargs) for name in pipelines.NAMES}


def test_counts_follow_the_definitions(scratch) -> None:
    settings, olap = scratch
    tenant, campaign = olap.tenant(), uuid.uuid4()
    a = olap.event(tenant, "SENT", T0, campaign=campaign)
    b = olap.event(tenant, "SENT", T0, campaign=campaign)
    c = olap.event(tenant, "SENT", T0, campaign=campaign, step=2)
    olap.event(tenant, "OPEN", T0 + timedelta(minutes=1), message=a, campaign=campaign)
    olap.event(tenant, "OPEN", T0 + timedelta(minutes=2), message=a, campaign=campaign)
    olap.event(tenant, "OPEN", T0 + timedelta(seconds=5), message=b, campaign=campaign,
               machine=True)  # fmt: skip
    olap.event(tenant, "CLICK", T0 + timedelta(minutes=3), message=b, campaign=campaign)
    olap.event(tenant, "CLICK", T0 + timedelta(minutes=4), message=b, campaign=campaign)
    olap.event(tenant, "CLICK", T0 + timedelta(seconds=9), message=c, campaign=campaign,
               step=2, machine=True)  # fmt: skip
    olap.event(tenant, "REPLY", T0 + timedelta(minutes=5), message=a, campaign=campaign)
    olap.event(tenant, "BOUNCE", T0 + timedelta(minutes=1), message=c, campaign=campaign,
               step=2, details='{"hard": true}')  # fmt: skip
    olap.event(tenant, "BOUNCE", T0 + timedelta(minutes=1), message=b, campaign=campaign,
               details='{"hard": false}')  # fmt: skip
    olap.event(tenant, "COMPLAINT", T0 + timedelta(minutes=6), message=a, campaign=campaign)
    olap.event(tenant, "UNSUBSCRIBE", T0 + timedelta(minutes=7), message=b, campaign=campaign)
    olap.event(tenant, "SENT", T0)  # no campaign: the tenant-wide row only

    _run_all(settings)

    row = _daily(olap, tenant).row(0, named=True)
    assert row == {
        "day": date(2026, 3, 10), "sent": 4, "delivered": 3, "opened": 2, "opens_total": 2,
        "clicked": 1, "clicks_total": 2, "machine_opens": 1, "machine_clicks": 1, "replied": 1,
        "bounced": 1, "soft_bounced": 1, "complained": 1, "unsubscribed": 1,
    }  # fmt: skip
    per_campaign = _daily(olap, tenant, campaign).row(0, named=True)
    assert per_campaign["sent"] == 3 and per_campaign["opened"] == 2
    steps = olap.frame(
        "SELECT step, sent, delivered, opened, clicked, bounced, open_rate, bounce_rate"
        " FROM analytics.campaign_analytics WHERE tenant_id = $1::uuid ORDER BY step",
        str(tenant),
    ).rows(named=True)
    assert steps == [
        {"step": 1, "sent": 2, "delivered": 2, "opened": 2, "clicked": 1, "bounced": 0,
         "open_rate": 1.0, "bounce_rate": 0.0},
        {"step": 2, "sent": 1, "delivered": 0, "opened": 0, "clicked": 0, "bounced": 1,
         "open_rate": 0.0, "bounce_rate": 1.0},
    ]  # fmt: skip
