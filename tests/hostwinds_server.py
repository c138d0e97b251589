"""A local stand-in for the Hostwinds Cloud API, for the platform's real client
(`PENGUINMAILS_HOSTWINDS_API_BASE`; services/hosting.py says which documented shapes it speaks
and what it assumes).

One endpoint, `POST /cloud/api.php`, a form with `action` and the key as `API`, JSON answered
with HTTP 200 whether or not the call worked: `{"success": …}` for reads, lists of `{"result":
"success" | "error", "action", "message"}` for orders. An instance answers "building" to its
first `build_reads` reads, then "active"; addresses come from a loopback network, lowest free
first. `fail_next(action, message)` makes the next call of an action fail (an HTTP 200 error
unless `status` says otherwise); a wrong key is answered "Not Authorized!"; `slow_seconds`
delays every answer; `ip_lag` hides a bought IP from that many listings. `purchases` counts
instances and IPs bought; every request is recorded, the key left out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.graphql_api.conftest import running

API_KEY = "hostwinds-test-key"
LOCATIONS = {1, 2, 3}
NETWORK = ipaddress.ip_network("127.88.0.0/16")  # each stand-in hands out a /24 of its own
_networks = itertools.cycle(NETWORK.subnets(new_prefix=24))
TITLES = {
    "add_instance": "Add Instance",
    "get_instance": "Get Instance",
    "get_instances": "Get Instances",
    "get_instance_ips": "Get Instance IPs",
    "add_ip": "Add IP",
    "delete_ip": "Delete IP",
    "set_rdns": "Set rDNS",
    "terminate": "Terminate",
}


class Received(NamedTuple):
    action: str
    params: dict[str, str]  # the form without `action` and `API`
    key: str | None


class FakeHostwinds:
    def __init__(self, build_reads: int = 2) -> None:
        self.build_reads = build_reads
        self.requests: list[Received] = []
        self.instances: dict[int, dict[str, Any]] = {}
        self.rdns: dict[str, str] = {}
        self.purchases: Counter[str] = Counter()
        self.slow_seconds = 0.0
        self.ip_lag = 0
        # Its addresses: the tests share one database, where an address is held once.
        self.network = next(_networks)
        self.list_lag = 0  # listings of all instances a new one is missing from
        # action -> seconds: the call is done, then its answer waits (a worker killed meanwhile
        # never hears that it bought); `hanging` is set while one waits.
        self.hang_after: dict[str, float] = {}
        self.hanging = asyncio.Event()
        self.on_rdns: Callable[[str, str], None] | None = None
        self._failures: dict[str, tuple[str, int]] = {}
        # Service ids differ between stand-ins: the tests share one database, where an id is
        # unique per provider, as at Hostwinds.
        self._ids = itertools.count(random.randrange(10_000, 1_000_000_000))
        self._hidden: dict[str, int] = {}  # bought address -> listings it is still hidden from

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/cloud/api.php", self.api, methods=["POST"])])

    def fail_next(self, action: str, message: str, status: int = 200) -> None:
        self._failures[action] = (message, status)

    def actions(self) -> list[str]:
        return [r.action for r in self.requests]

    def orders(self) -> list[Received]:
        """The requests that buy, change or give back something."""
        return [r for r in self.requests if not r.action.startswith("get_")]

    async def api(self, request: Request) -> JSONResponse:
        # parse_qsl, not request.form(): that needs python-multipart, which is not installed.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        action = form.pop("action", "")
        key = form.pop("API", None)
        self.requests.append(Received(action, form, key))
        if self.slow_seconds:
            await asyncio.sleep(self.slow_seconds)
        if key != API_KEY:
            return JSONResponse(
                {"result": "error", "action": "Authorization", "message": "Not Authorized!"}
            )
        if action in self._failures:
            message, status = self._failures.pop(action)
            return _error(action, message, status)
        handler = getattr(self, f"_{action}", None)
        if handler is None:
            return _error(action, f"Unknown action {action}.")
        answer = handler(form)
        if action in self.hang_after:
            self.hanging.set()
            await asyncio.sleep(self.hang_after.pop(action))
        return answer

    # --- actions -------------------------------------------------------------------------------

    def _add_instance(self, form: dict[str, str]) -> JSONResponse:
        for required in ("template", "rid", "location_id"):
            if not form.get(required):
                return _error("add_instance", f"{required} is required.")
        if int(form["location_id"]) not in LOCATIONS:
            return _error("add_instance", "Location Id is invalid.", code="342432")
        serviceid = next(self._ids)
        self.instances[serviceid] = {
            "serviceid": serviceid, "srvrname": form.get("srvrname", f"Server#{serviceid}"),
            "hostname": f"hwsrv-{serviceid}.hostwindsdns.com",
            "location_id": int(form["location_id"]), "main_ip": self._free_address(),
            "ips": None, "secondary": [], "reads_left": self.build_reads,
            "template_uuid": form["template"], "product_id": int(form["rid"]),
            "billingcycle": form.get("billingcycle", "monthly"),
        }  # fmt: skip
        self.instances[serviceid]["unlisted"] = self.list_lag
        self.purchases["instances"] += 1
        return JSONResponse([
            {"result": "success", "action": "Invoice Paid", "message": "Invoice has been paid."},
            {"result": "success", "action": "Add Instance", "message": "Server is being Created!"},
        ])  # fmt: skip

    def _get_instances(self, form: dict[str, str]) -> JSONResponse:
        shown = []
        for instance in self.instances.values():
            if instance.get("unlisted", 0) > 0:  # ordered, not in the list yet
                instance["unlisted"] -= 1
                continue
            shown.append(self._shown(instance))
        return JSONResponse({"success": shown})

    def _get_instance(self, form: dict[str, str]) -> JSONResponse:
        found = self._find(form)
        if found is None:
            return _error("get_instance", "A valid serviceid is required.")
        return JSONResponse({"success": self._shown(found)})

    def _get_instance_ips(self, form: dict[str, str]) -> JSONResponse:
        found = self._find(form)
        if found is None:
            return _error("get_instance_ips", "A valid serviceid is required.")
        listed = [found["main_ip"]]
        for address in found["secondary"]:
            if self._hidden.get(address, 0) > 0:
                self._hidden[address] -= 1
            else:
                listed.append(address)
        return JSONResponse(
            {"success": {"IP Addresses": [{"ip": a, "rdns": self.rdns.get(a)} for a in listed]}}
        )

    def _add_ip(self, form: dict[str, str]) -> JSONResponse:
        found = self._find(form)
        if found is None:
            return _error("add_ip", "A valid serviceid is required.")
        address = self._free_address()
        found["secondary"].append(address)
        self._hidden[address] = self.ip_lag
        self.purchases["ips"] += 1
        return JSONResponse([
            {"result": "success", "action": "Invoice Paid", "message": "Invoice has been paid."},
            {"result": "success", "action": "Add IP", "message": "IP address has been added."},
        ])  # fmt: skip

    def _delete_ip(self, form: dict[str, str]) -> JSONResponse:
        found = self._find(form)
        if found is None:
            return _error("delete_ip", "A valid serviceid is required.")
        if form.get("ip") == found["main_ip"]:
            return _error("delete_ip", "The main IP cannot be removed.")
        if form.get("ip") not in found["secondary"]:
            return _error("delete_ip", "IP address not found on this instance.")
        found["secondary"].remove(form["ip"])
        self.rdns.pop(form["ip"], None)
        return JSONResponse([{"result": "success", "action": "Delete IP", "message": "IP removed"}])

    def _set_rdns(self, form: dict[str, str]) -> JSONResponse:
        found = self._find(form)
        if found is None:
            return _error("set_rdns", "A valid serviceid is required.")
        if form.get("ip") not in [found["main_ip"], *found["secondary"]]:
            return _error("set_rdns", "IP address not found on this instance.")
        self.rdns[form["ip"]] = form.get("rdns", "")
        if self.on_rdns is not None:  # Hostwinds' reverse zone, served by a test DNS server
            self.on_rdns(form["ip"], self.rdns[form["ip"]])
        return JSONResponse(
            [{"result": "success", "action": "Set rDNS", "message": "rDNS record updated."}]
        )

    def _terminate(self, form: dict[str, str]) -> JSONResponse:
        found = self._find(form)
        if found is None:
            return _error("terminate", "A valid serviceid is required.")
        del self.instances[found["serviceid"]]
        for address in [found["main_ip"], *found["secondary"]]:
            self.rdns.pop(address, None)
        return JSONResponse([{"result": "success", "message": "Instance deleted"}])

    # --- state ---------------------------------------------------------------------------------

    def _find(self, form: dict[str, str]) -> dict[str, Any] | None:
        serviceid = form.get("serviceid", "")
        return self.instances.get(int(serviceid)) if serviceid.isdigit() else None

    def _shown(self, found: dict[str, Any]) -> dict[str, Any]:
        """The instance object; each read of a building one brings it nearer to active."""
        building = found["reads_left"] > 0
        if building:
            found["reads_left"] -= 1
        shown = {k: v for k, v in found.items() if k not in ("secondary", "reads_left")}
        return {
            **shown,
            "status": "building" if building else "active",
            "vm_state": "building" if building else "active",
            "task_state": "spawning" if building else None,
        }

    def _free_address(self) -> str:
        taken = {a for i in self.instances.values() for a in [i["main_ip"], *i["secondary"]]}
        return next(str(h) for h in self.network.hosts() if str(h) not in taken)


def _error(action: str, message: str, status: int = 200, code: str | None = None) -> JSONResponse:
    error = {"result": "error", "action": TITLES.get(action, action), "message": message}
    if code:
        error["ERROR"] = code
    return JSONResponse([error], status)


@asynccontextmanager
async def running_hostwinds(build_reads: int = 2) -> AsyncIterator[tuple[str, FakeHostwinds]]:
    """The fake served on a free loopback port: (its base URL, the fake)."""
    fake = FakeHostwinds(build_reads)
    async with running(fake.app()) as url:
        yield url, fake
