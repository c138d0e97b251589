"""A VPS provisioned through the Hostwinds client (against its local stand-in) by real worker
processes, each killed with SIGKILL inside a step: after the instance was bought but before
the answer arrived, while MailU's containers start, after a PTR was set, and while the warm-up
ramp grows. Each time the step's job is taken again by a new worker; the VPS reaches ACTIVE and
nothing was bought twice."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from models.infrastructure import VpsStatus, WarmupState
from models.sessions import Database
from penguinmails.settings import Settings
from services import dns_providers, provisioning, warmup
from tests.dns_server import DnsServer
from tests.hostwinds_server import API_KEY, running_hostwinds
from tests.imap import free_port
from tests.jobs.helpers import quiet_queue
from tests.mailu_server import running_mailu
from tests.provisioning import status_of
from tests.services.test_provisioning import _env, _tenant_with_account
from tests.ssh_server import ssh_server
from tests.vps_server import running_submission


async def _until(predicate, what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_a_worker_killed_in_every_step_resumes_and_buys_nothing_twice(
    db: Database,
    settings: Settings,
    dns_server: DnsServer,
    tmp_path: Path,
    start_worker,
    run_queuer,
) -> None:
    await quiet_queue(db, settings)
    zones = tmp_path / "zones"
    dns_server.zone.serve_files(zones)
    async with AsyncExitStack() as stack:
        hostwinds_url, hostwinds = await stack.enter_async_context(running_hostwinds(build_reads=1))
        primary = str(next(hostwinds.network.hosts()))  # what it gives its first instance
        ssh = await stack.enter_async_context(ssh_server(tmp_path / "ssh", host=primary))
        mailu_url, mailu = await stack.enter_async_context(running_mailu())
        hostwinds.on_rdns = lambda ip, name: dns_server.zone.add(
            dns_providers.ptr_host(ip), "PTR", name
        )
        mailu.token = lambda: _env(ssh.files.get("/opt/mailu/mailu.env", "")).get("API_TOKEN")
        port = free_port()
        with running_submission(primary, port, tmp_path, mailu.can_log_in) as (_, ca):
            target = ssh.target()
            overrides = {
                "hosting_provider": "hostwinds",
                "hostwinds_api_key": API_KEY,
                "hostwinds_api_base": hostwinds_url,
                "vps_ssh_port": target.port,
                "vps_ssh_key": str(target.client_key),
                "vps_ssh_user": target.username,
                "vps_admin_url": f"{mailu_url}/api/v1",
                "vps_mail_host": "{ip}",  # the test's certificate is for the address
                "vps_submission_port": port,
                "vps_tls_ca_file": str(ca),
                "vps_smtp_ready_seconds": 10.0,
                "dns_provider": "zonefile",
                "dns_zone_dir": str(zones),
                "dns_nameservers": dns_server.nameservers,
                "dns_timeout_seconds": 1.0,
                "provisioning_poll_seconds": 0.2,
                "provisioning_warmup_check_seconds": 0.5,
            }
            configured = settings.model_copy(update=overrides)
            tenant, _, account = await _tenant_with_account(db, configured)
            async with db.tenant_session(tenant) as s:
                vps = await provisioning.request_vps(s, configured, tenant, "dallas")
            run_queuer()

            async def now_in(*statuses: VpsStatus) -> bool:
                return (await status_of(db, tenant, vps.id)).status in statuses

            async def warming_up() -> bool:
                async with db.tenant_session(tenant) as s:
                    state = await s.get(WarmupState, account.id)
                return await now_in(VpsStatus.WARMING_UP) and state is not None and state.enabled

            # PROVISIONING: killed after the instance was bought, before the answer came.
            hostwinds.hang_after["add_instance"] = 5
            worker = start_worker(processes=1, threads=2, **overrides)
            await asyncio.wait_for(hostwinds.hanging.wait(), 30)
            worker.kill()
            assert hostwinds.purchases["instances"] == 1

            # CONFIGURING_SMTP: killed while MailU's containers start.
            ssh.compose_seconds = 5
            worker = start_worker(processes=1, threads=2, **overrides)
            await asyncio.wait_for(ssh.composing.wait(), 30)
            assert await now_in(VpsStatus.CONFIGURING_SMTP)
            worker.kill()

            # CONFIGURING_DNS: killed after a PTR was set, before the answer came.
            hostwinds.hanging.clear()
            hostwinds.hang_after["set_rdns"] = 5
            worker = start_worker(processes=1, threads=2, **overrides)
            await asyncio.wait_for(hostwinds.hanging.wait(), 30)
            assert await now_in(VpsStatus.CONFIGURING_DNS)
            worker.kill()

            # WARMING_UP: killed while the ramp grows; the clock then moves on (a day a tick).
            worker = start_worker(processes=1, threads=2, **overrides)
            await _until(warming_up, "the warm-up to start")
            worker.kill()
            now = time.time()
            for day in range(20):
                await warmup.tick(db, configured, tenant, now=_day(now, day))
            start_worker(processes=1, threads=2, **overrides)
            await _until(lambda: now_in(VpsStatus.ACTIVE), "ACTIVE")

    dns_server.zone.stop_serving_files(zones)
    ordered = [r.action for r in hostwinds.orders()]
    assert hostwinds.purchases == {"instances": 1}  # one instance; no secondary IP asked for
    assert ordered.count("add_instance") == 1
    assert sum(1 for c in ssh.commands if "docker compose up -d" in c) >= 2  # deployed again
    async with db.tenant_session(tenant) as s:
        done = await status_of(db, tenant, vps.id)
    assert (done.status, done.failed_step, done.provider_id) == (
        VpsStatus.ACTIVE, None, str(min(hostwinds.instances)),
    )  # fmt: skip


def _day(now: float, days: int):
    from datetime import UTC, datetime, timedelta

    return datetime.fromtimestamp(now, UTC) + timedelta(days=days)
