"""Health checks: 200 when each part answers, 503 naming the part that does not."""

from __future__ import annotations

import asyncio
import socket

from aiosmtpd.controller import Controller

from models.infrastructure import VpsInstance, VpsStatus
from models.sessions import Database
from penguinmails.settings import Settings
from tests.factories import create_tenant
from tests.graphql_api.conftest import Api, serve


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_health_db_and_queue_answer_200_with_each_part(api: Api) -> None:
    assert (await api.http.get(f"{api.url}/health")).json() == {"status": "ok"}
    db = await api.http.get(f"{api.url}/health/db")
    assert db.status_code == 200
    assert db.json()["checks"] == {"oltp": "ok", "content": "ok", "queue": "ok", "analytics": "ok"}
    queue = await api.http.get(f"{api.url}/health/queue")
    assert queue.status_code == 200 and queue.json()["checks"]["redis"] == "ok"
    assert isinstance(queue.json()["checks"]["ready_jobs"], int)
    assert set(queue.json()["checks"]["redis_messages"]) == {"high", "normal", "low"}


async def test_a_dead_tier_or_redis_is_named_with_503(settings: Settings) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    broken = settings.model_copy(
        update={
            "analytics_database_url": dead,
            "redis_url": f"redis://127.0.0.1:{_closed_port()}/0",
        }
    )
    async for api in serve(broken):
        db = await api.http.get(f"{api.url}/health/db")
        assert db.status_code == 503 and db.json()["failing"] == ["analytics"]
        queue = await api.http.get(f"{api.url}/health/queue")
        assert queue.status_code == 503 and "redis" in queue.json()["failing"]


class _Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


async def test_health_email_checks_the_configured_relay(settings: Settings) -> None:
    port = _closed_port()
    async for api in serve(settings.model_copy(update={"smtp_relay_port": port})):
        down = await api.http.get(f"{api.url}/health/email")
        assert down.status_code == 503 and down.json()["failing"] == [f"relay 127.0.0.1:{port}"]
        controller = Controller(_Sink(), hostname="127.0.0.1", port=port)
        await asyncio.to_thread(controller.start)
        try:
            up = await api.http.get(f"{api.url}/health/email")
        finally:
            await asyncio.to_thread(controller.stop)
        assert up.status_code == 200


async def test_health_email_counts_unreachable_tenant_servers_without_naming_them_or_failing(
    settings: Settings, db: Database
) -> None:
    port = _closed_port()
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        name = f"vps-{tenant.hex[:12]}.mta.example.test"
        s.add(
            VpsInstance(
                tenant_id=tenant, provider="local", status=VpsStatus.ACTIVE, hostname=name,
                smtp_host="127.0.0.1", smtp_port=port,
            )
        )  # fmt: skip
    relay_port = _closed_port()
    relay = Controller(_Sink(), hostname="127.0.0.1", port=relay_port)
    await asyncio.to_thread(relay.start)
    try:
        async for api in serve(settings.model_copy(update={"smtp_relay_port": relay_port})):
            answer = await api.http.get(f"{api.url}/health/email")
    finally:
        await asyncio.to_thread(relay.stop)

    body = answer.json()
    assert answer.status_code == 200 and body["failing"] == []  # the relay answers
    # Counted, not named (the endpoint is public); other tests' servers may be counted too.
    assert body["vps"]["unreachable"] >= 1 and body["vps"]["serving"] >= 1
    assert name not in answer.text
