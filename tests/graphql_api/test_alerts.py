"""Alerts through the API: a tenant's `deliverability { alerts }` lists its own open alerts,
never another tenant's and never the platform's (tenant_id NULL, hidden by row-level
security)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from graphql_api.ids import parse_id
from models.operations import Alert, AlertSeverity
from models.sessions import Database
from services.alerts import raise_alert
from tests.graphql_api.conftest import Api, sign_up

ALERTS = "{ deliverability { alerts { kind message } } }"


async def test_a_tenant_sees_its_own_alerts_and_never_the_platforms(api: Api, db: Database) -> None:
    ours, theirs = await sign_up(api, "Own Alerts"), await sign_up(api, "Other Alerts")
    marker = uuid.uuid4().hex[:8]
    async with db.system_session() as session:
        for account in (ours, theirs):
            tenant = parse_id(account.tenant)[1]
            raise_alert(session, tenant, "ip_blacklisted", marker, f"{account.tenant} {marker}")
        session.add(
            Alert(
                tenant_id=None, kind="dead_job", severity=AlertSeverity.CRITICAL,
                subject=f"kind-{marker}", message=f"platform {marker}",
            )
        )  # fmt: skip

    body = await api.gql(ALERTS, token=ours.token, tenant=ours.tenant)

    alerts = [a for a in body["data"]["deliverability"]["alerts"] if marker in a["message"]]
    assert alerts == [{"kind": "ip_blacklisted", "message": f"{ours.tenant} {marker}"}]


async def test_alerts_resolved_in_the_last_day_are_listed_after_the_open_ones_with_their_time(
    api: Api, db: Database
) -> None:
    account = await sign_up(api, "Resolved Alerts")
    tenant = parse_id(account.tenant)[1]
    marker = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    async with db.system_session() as session:
        for subject, resolved in (("open", None), ("hour", now - timedelta(hours=1)),
                                  ("days", now - timedelta(days=2))):  # fmt: skip
            session.add(
                Alert(
                    tenant_id=tenant, kind="bounce_rate", severity=AlertSeverity.WARNING,
                    subject=subject, message=f"{subject} {marker}", resolved_at=resolved,
                )
            )  # fmt: skip

    body = await api.gql(
        "{ deliverability { alerts { message resolvedAt } } }",
        token=account.token,
        tenant=account.tenant,
    )

    alerts = [a for a in body["data"]["deliverability"]["alerts"] if marker in a["message"]]
    assert [a["message"] for a in alerts] == [f"open {marker}", f"hour {marker}"]
    assert alerts[0]["resolvedAt"] is None
    assert datetime.fromisoformat(alerts[1]["resolvedAt"]) == now - timedelta(hours=1)
