"""A tenant's own servers over HTTP: requestVps (an unknown region refused), acquireIp once the
server exists, releaseIp, decommissionVps and retryProvisioning; VpsInstance's and SendingIp's
status, failure, PTR and cost fields; every transition published as a deliverability event."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from graphql_api.ids import parse_id
from models.infrastructure import VpsInstance
from models.sessions import Database
from penguinmails.settings import Settings
from services import deliverability_events
from tests.graphql_api.conftest import Api, sign_up
from tests.graphql_api.flows import call, put_on_plan
from tests.provisioning import run_step

VPS = "id status region primaryIp failedStep failureReason monthlyCostCents"
IP = "id address status ptr ptrStatus monthlyCostCents"
REQUEST = f"""mutation($region: String) {{ requestVps(region: $region) {{
  vps {{ {VPS} }} errors {{ code field message }} }} }}"""
ACQUIRE = f"""mutation($id: ID!) {{ acquireIp(vpsId: $id) {{
  sendingIp {{ {IP} }} errors {{ code field message }} }} }}"""
RELEASE = f"""mutation($id: ID!) {{ releaseIp(id: $id) {{
  sendingIp {{ {IP} }} errors {{ code field message }} }} }}"""
DECOMMISSION = f"""mutation($id: ID!) {{ decommissionVps(id: $id) {{
  vps {{ {VPS} ips {{ status }} }} errors {{ code field message }} }} }}"""
RETRY = f"""mutation($id: ID!) {{ retryProvisioning(id: $id) {{
  vps {{ {VPS} }} errors {{ code field message }} }} }}"""


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url or "")
    yield client
    await client.aclose()


async def test_an_unknown_region_is_a_user_error_naming_the_regions(api: Api, db: Database):
    owner = await sign_up(api, "Regions")
    await put_on_plan(db, owner, "growth")

    refused = await call(api, owner, REQUEST, {"region": "atlantis"}, "requestVps")

    assert refused["vps"] is None
    [error] = refused["errors"]
    assert (error["code"], error["field"]) == ("REGION_UNKNOWN", "region")
    assert "regions: local" in error["message"]


async def test_a_vps_and_its_ips_through_their_lifecycle_with_an_event_per_transition(
    api: Api, db: Database, redis: Redis
):
    owner = await sign_up(api, "Servers")
    await put_on_plan(db, owner, "growth")
    tenant = parse_id(owner.tenant)[1]
    events = redis.pubsub()
    await events.subscribe(deliverability_events.channel(tenant))

    vps = (await call(api, owner, REQUEST, {"region": None}, "requestVps"))["vps"]
    early = await call(api, owner, ACQUIRE, {"id": vps["id"]}, "acquireIp")
    vps_id = parse_id(vps["id"])[1]
    await run_step(db, db.settings, redis, tenant, vps_id)  # as a worker runs the first step
    ip = (await call(api, owner, ACQUIRE, {"id": vps["id"]}, "acquireIp"))["sendingIp"]
    listed = await api.gql(
        f"{{ vpsInstances {{ {VPS} ips {{ {IP} }} }} sendingIps {{ address vps {{ id }} }} }}",
        token=owner.token,
    )
    released = await call(api, owner, RELEASE, {"id": ip["id"]}, "releaseIp")
    gone = await call(api, owner, DECOMMISSION, {"id": vps["id"]}, "decommissionVps")
    again = await call(api, owner, RETRY, {"id": vps["id"]}, "retryProvisioning")

    assert vps["status"] == "REQUESTED" and vps["failedStep"] is None
    assert vps["monthlyCostCents"] == db.settings.local_hosting_vps_monthly_cost_cents
    assert [e["code"] for e in early["errors"]] == ["VPS_NOT_READY"]
    assert (ip["status"], ip["ptr"], ip["ptrStatus"]) == ("PENDING", None, "PENDING")
    assert ip["monthlyCostCents"] == db.settings.local_hosting_ip_monthly_cost_cents
    [shown] = listed["data"]["vpsInstances"]
    assert shown["status"] == "CONFIGURING_SMTP" and shown["primaryIp"]
    assert [i["address"] for i in shown["ips"]] == [shown["primaryIp"], ip["address"]]
    assert shown["ips"][0]["monthlyCostCents"] == 0  # the server's own address
    assert {i["vps"]["id"] for i in listed["data"]["sendingIps"]} == {vps["id"]}
    assert released["sendingIp"]["status"] == "RELEASED"
    assert gone["vps"]["status"] == "DECOMMISSIONED"
    assert {i["status"] for i in gone["vps"]["ips"]} == {"RELEASED"}
    assert [e["code"] for e in again["errors"]] == ["NOT_FAILED"]

    published: list[dict] = []
    deadline = time.monotonic() + 5
    while len(published) < 4 and time.monotonic() < deadline:
        message = await events.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:  # (None also for the subscribe confirmation it skips)
            published.append(json.loads(message["data"]))
    await events.aclose()
    assert [(p["kind"], p["subjectType"]) for p in published] == [
        ("vps_requested", "VpsInstance"),
        ("vps_provisioning", "VpsInstance"),
        ("vps_configuring_smtp", "VpsInstance"),
        ("vps_decommissioned", "VpsInstance"),
    ]


async def test_a_failed_vps_shows_its_step_and_reason_and_resumes_from_that_step(
    api: Api, db: Database
):
    owner = await sign_up(api, "Failing")
    await put_on_plan(db, owner, "growth")
    vps = (await call(api, owner, REQUEST, {"region": None}, "requestVps"))["vps"]
    async with db.system_session() as s:
        await s.execute(
            update(VpsInstance)
            .where(VpsInstance.id == parse_id(vps["id"])[1])
            .values(
                status="FAILED", failed_step="CONFIGURING_DNS",
                failure_reason="DNS did not verify: a.example (mx MISSING)",
            )
        )  # fmt: skip

    shown = await api.gql(f"{{ vpsInstances {{ {VPS} }} }}", token=owner.token)
    resumed = await call(api, owner, RETRY, {"id": vps["id"]}, "retryProvisioning")

    [failed] = shown["data"]["vpsInstances"]
    assert (failed["status"], failed["failedStep"], failed["failureReason"]) == (
        "FAILED", "CONFIGURING_DNS", "DNS did not verify: a.example (mx MISSING)",
    )  # fmt: skip
    assert resumed["errors"] == []
    assert (resumed["vps"]["status"], resumed["vps"]["failedStep"]) == ("CONFIGURING_DNS", None)
