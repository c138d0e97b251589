"""Subscriptions over graphql-transport-ws: token in connection_init, 4401/4403, live pushes."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from graphql_api.ids import parse_id
from jobs.queue import enqueue
from models.sessions import Database
from services import live
from tests.graphql_api.conftest import Api, sign_up
from tests.graphql_api.test_hardening import fragment_bomb


def _ws_url(api: Api) -> str:
    return api.url.replace("http://", "ws://") + "/graphql"


async def _init(ws, payload: dict) -> dict:
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


async def test_a_connection_without_a_valid_token_is_closed_with_4401(api: Api) -> None:
    async with connect(_ws_url(api), subprotocols=["graphql-transport-ws"]) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await _init(ws, {"Authorization": "Bearer not-a-token"})
    assert closed.value.rcvd.code == 4401


async def test_a_user_outside_the_tenant_is_closed_with_4403(api: Api) -> None:
    account, other = await sign_up(api), await sign_up(api, "Other")
    async with connect(_ws_url(api), subprotocols=["graphql-transport-ws"]) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await _init(ws, {"Authorization": f"Bearer {account.token}", "tenantId": other.tenant})
    assert closed.value.rcvd.code == 4403


async def test_queue_status_is_pushed_when_a_change_of_the_tenants_queue_is_published(
    api: Api, db: Database
) -> None:
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    async with connect(_ws_url(api), subprotocols=["graphql-transport-ws"]) as ws:
        ack = await _init(
            ws, {"Authorization": f"Bearer {account.token}", "tenantId": account.tenant}
        )
        assert ack["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription { queueStatus { queued tiers { name ready } } }"
                    },
                }
            )
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["payload"]["data"]["queueStatus"]["queued"] == 0
        async with db.tenant_session(tenant_id) as s:
            await enqueue(s, "noop", {}, tenant_id=tenant_id, priority=10)
        await live.publish(api.app.state.redis, [live.Change(tenant_id)])  # as its committer does
        second = json.loads(await asyncio.wait_for(ws.recv(), 5))
        status = second["payload"]["data"]["queueStatus"]
        assert status["queued"] == 1
        assert {"name": "high", "ready": 1} in status["tiers"]


async def test_deliverability_events_published_for_the_tenant_reach_its_subscribers_only(
    api: Api,
) -> None:
    import uuid
    from datetime import UTC, datetime

    from graphql_api.ids import encode_id
    from services.deliverability_events import Event, publish

    account, other = await sign_up(api), await sign_up(api, "Other")
    tenant_id, other_id = parse_id(account.tenant)[1], parse_id(other.tenant)[1]
    async with connect(_ws_url(api), subprotocols=["graphql-transport-ws"]) as ws:
        await _init(ws, {"Authorization": f"Bearer {account.token}", "tenantId": account.tenant})
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription { deliverabilityEvents { kind subjectId message } }"
                    },
                }
            )
        )
        await asyncio.sleep(0.3)  # the subscription is registered with Redis
        ip, now = uuid.uuid4(), datetime.now(UTC)
        await publish(
            api.app.state.redis,
            [
                Event(uuid.UUID(str(other_id)), "other", "SendingIp", ip, "not yours", now),
                Event(uuid.UUID(str(tenant_id)), "ip_listed", "SendingIp", ip, "listed", now),
            ],
        )
        pushed = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert pushed["payload"]["data"]["deliverabilityEvents"] == {
        "kind": "ip_listed",
        "subjectId": encode_id("SendingIp", ip),
        "message": "listed",
    }


async def test_launch_pause_and_resume_each_push_the_campaigns_progress(
    api: Api, db: Database
) -> None:
    from tests.graphql_api.flows import build_estate

    account = await sign_up(api)
    estate = await build_estate(api, db, account, "progress")
    async with connect(_ws_url(api), subprotocols=["graphql-transport-ws"]) as ws:
        await _init(ws, {"Authorization": f"Bearer {account.token}", "tenantId": account.tenant})
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription($id: ID!) { campaignProgress(campaignId: $id) { campaignId sent queued } }",
                        "variables": {"id": estate.campaign["id"]},
                    },
                }
            )
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["payload"]["data"]["campaignProgress"] == {
            "campaignId": estate.campaign["id"],
            "sent": 0,
            "queued": 0,
        }
        queued = []
        for action in ("launchCampaign", "pauseCampaign", "resumeCampaign"):
            answer = await api.gql(
                f"mutation($id: ID!) {{ {action}(id: $id) {{ errors {{ code }} }} }}",
                {"id": estate.campaign["id"]},
                token=account.token,
            )
            assert answer["data"][action]["errors"] == []
            pushed = json.loads(await asyncio.wait_for(ws.recv(), 5))
            queued.append(pushed["payload"]["data"]["campaignProgress"]["queued"])
    assert queued == [1, 0, 1]  # the planning job; cancelled by the pause; planned again


async def test_a_fragment_bomb_sent_as_a_subscription_is_refused_with_its_code(api: Api) -> None:
    account = await sign_up(api)
    bomb = (
        fragment_bomb(40)
        .replace("query {", "subscription {", 1)
        .replace("on Query", "on Subscription")
    )
    async with connect(_ws_url(api), subprotocols=["graphql-transport-ws"]) as ws:
        await _init(ws, {"Authorization": f"Bearer {account.token}", "tenantId": account.tenant})
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": bomb}}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert answer["type"] == "error", answer
    assert answer["payload"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
