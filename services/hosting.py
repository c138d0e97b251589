"""Hosting providers: where VPS instances and their IP addresses are bought, looked up, named
(reverse DNS) and given back, behind one interface (HostingProvider) that provisioning drives.
Two providers: `local` (development: instances on loopback addresses, state in a JSON file) and
`hostwinds` (the Hostwinds Cloud API).

A step that buys something can crash after the purchase and before its result is stored, so an
instance carries our label ("pm-<vps uuid>") and a step looks for it (find_instance) before it
buys; add_ip confirms the address it bought by listing the instance's addresses.

The Hostwinds Cloud API as used here (https://developers.hostwinds.com/cloud/, as summarised in
penguinmails.github.io docs/implementation-technical/api/hostwinds/, and as scripts that call the
live API read its answers):
- one endpoint, `POST {hostwinds_api_base}/cloud/api.php`, form-encoded, `action=<name>` and the
  key as `API=<key>`;
- answers are JSON with HTTP 200 whether or not the call worked: an error is an object (or a
  list of them) with `"result": "error"`, a `message` and sometimes an internal `ERROR` code;
  a refused key is `{"result": "error", "action": "Authorization", "message": "Not
  Authorized!"}` (the overview also lists 401/403 for it); reads answer `{"success": …}`;
- `add_instance` (template, rid, location_id, srvrname, qty, billingcycle) answers
  `[{"result": "success", "action": "Invoice Paid", …}, {"result": "success", "action": "Add
  Instance", "message": "Server is being Created!"}]`: no id, so the new instance is found by
  its `srvrname` in `get_instances` (`{"success": [<instance>, …]}`);
- `get_instance` (serviceid) answers `{"success": <instance>}`; an instance has `serviceid`,
  `srvrname`, `location_id`, `main_ip`, `ips`, `status`, `vm_state`, `task_state`;
- `get_instance_ips` (serviceid) answers `{"success": {"IP Addresses": [{"ip": …}, …]}}`;
- `delete_ip` (serviceid, ip), `set_rdns` (serviceid, ip, rdns), `terminate` (serviceid).

Assumed where the documentation is silent (each in one place here, to correct against the live
API):
- ordering a secondary IP is the action ADD_IP_ACTION with `serviceid`, one address per call,
  answered like the other orders (a list of `result` objects, no address): the address is the
  one new in `get_instance_ips` afterwards;
- `status` "active" (any case) with no `task_state` is ACTIVE, "error"/"failed" is ERROR,
  anything else (building, a task running) is BUILDING; `vm_state` stands in for a missing
  `status`;
- an error message naming the serviceid ("A valid serviceid is required.") means no such
  instance (so terminating one twice is fine); messages naming an invalid location, template
  or a disabled product are not worth retrying; any other error (out of stock, rate limit) is;
- an instance's host name is `vps-<vps uuid>.<vps_hostname_domain>` (its label without "pm-"),
  and MailU's admin API answers there over HTTPS.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from penguinmails.settings import Settings

BUILDING = "BUILDING"
ACTIVE = "ACTIVE"
ERROR = "ERROR"
LABEL_PREFIX = "pm-"

T = TypeVar("T")
PublishPtr = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class Instance:
    provider_id: str
    label: str  # our name for it, "pm-<vps uuid>": how a step finds what exists after a crash
    state: str  # BUILDING | ACTIVE | ERROR (the provider's states mapped)
    primary_ip: str | None
    region: str


@dataclass(frozen=True)
class Management:
    """Where the platform reaches an instance."""

    ssh: tuple[str, int] | None  # None: nothing to deploy to (local provider without SSH)
    admin_url: str | None  # MailU admin API base URL (…/api/v1), None: none
    submission: tuple[str, int]  # where its accounts submit mail (host, port)
    imap: tuple[str, int]


class HostingError(Exception):
    """The provider refused or failed. `reason` is one readable line shown on the VPS;
    retryable=False when retrying cannot help (bad API key, unknown region, no such instance)."""

    # refused: the provider answered no (an error answer, a refused key), so nothing was
    # bought; otherwise (a timeout, a lost connection, a 5xx) an order may have gone through.
    refused: bool = False

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class NoSuchInstance(HostingError):
    """The provider does not know the instance (never created, or deleted)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, retryable=False)


class HostingProvider(Protocol):
    name: str  # "local" | "hostwinds" (stored in vps_instances.provider)
    vps_monthly_cost_cents: int
    ip_monthly_cost_cents: int

    def regions(self) -> list[str]: ...

    def default_region(self) -> str: ...

    async def find_instance(self, label: str) -> Instance | None: ...

    async def create_instance(self, label: str, region: str) -> Instance: ...

    async def get_instance(self, provider_id: str) -> Instance: ...

    async def list_ips(self, provider_id: str) -> list[str]:
        """Every address of the instance, primary first."""
        ...

    async def add_ip(self, provider_id: str) -> str:
        """Buys one secondary IP, confirms it by listing the instance's IPs, returns it."""
        ...

    async def remove_ip(self, provider_id: str, address: str) -> None:
        """Idempotent: an address already gone is fine."""
        ...

    async def set_ptr(self, address: str, hostname: str) -> None:
        """The reverse DNS name of an address."""
        ...

    async def delete_instance(self, provider_id: str) -> None:
        """Idempotent."""
        ...

    def management(self, instance: Instance) -> Management: ...

    async def aclose(self) -> None: ...


def vps_hostname(settings: Settings, label: str) -> str:
    """The VPS's name, from its label (pm-<VPS id>): vps-<12 hex digits>.<vps_hostname_domain>,
    what its A record and MX are, and its MailU's HOSTNAME."""
    short = label.removeprefix(LABEL_PREFIX).replace("-", "")[:12]
    return f"vps-{short}.{settings.vps_hostname_domain}"


def provider(
    settings: Settings, name: str | None = None, *, publish_ptr: PublishPtr | None = None
) -> HostingProvider:
    """The provider called `name` (None: settings.hosting_provider). `publish_ptr` is for the
    local provider, which has no reverse DNS of its own."""
    name = name or settings.hosting_provider
    if name == LocalProvider.name:
        return LocalProvider(settings, publish_ptr)
    if name == HostwindsProvider.name:
        return HostwindsProvider(settings)
    raise ValueError(f"unknown hosting provider {name!r}")


def _unknown_region(region: str, known: Iterable[str]) -> HostingError:
    error = HostingError(
        f"no such region {region!r}; this provider serves {', '.join(known) or 'none'}",
        retryable=False,
    )
    error.refused = True  # refused before anything was ordered
    return error


# --- local -------------------------------------------------------------------------------------


NOTHING_BOUGHT = {"instances": 0, "ips": 0}


class LocalProvider:
    """Development: instances that exist only in a JSON file (`local_hosting_state`, by default
    `data_dir/local-hosting.json`), active at once,
    whose addresses are the lowest free host addresses of local_hosting_network (loopback
    addresses this machine answers on). Several processes share the file: each change is one
    read-modify-write under an exclusive lock, written by replacing the file. The file also
    counts purchases, so a test can tell that nothing was bought twice."""

    name = "local"

    def __init__(self, settings: Settings, publish_ptr: PublishPtr | None = None) -> None:
        self.settings = settings
        self.publish_ptr = publish_ptr
        self.path = settings.local_hosting_state or settings.data_dir / "local-hosting.json"
        self.network = ipaddress.ip_network(settings.local_hosting_network)
        self.vps_monthly_cost_cents = settings.local_hosting_vps_monthly_cost_cents
        self.ip_monthly_cost_cents = settings.local_hosting_ip_monthly_cost_cents

    def regions(self) -> list[str]:
        return list(self.settings.local_hosting_regions)

    def default_region(self) -> str:
        return self.settings.local_hosting_regions[0]

    async def find_instance(self, label: str) -> Instance | None:
        def find(state: dict[str, Any]) -> Instance | None:
            for provider_id, held in state["instances"].items():
                if held["label"] == label:
                    return _local_instance(provider_id, held)
            return None

        return await self._read(find)

    async def create_instance(self, label: str, region: str) -> Instance:
        if region not in self.settings.local_hosting_regions:
            raise _unknown_region(region, self.settings.local_hosting_regions)

        def create(state: dict[str, Any]) -> Instance:
            # Unique beyond this file (a fresh state file must not reuse an id the platform
            # still records for a deleted instance).
            provider_id = f"local-{uuid.uuid4().hex[:12]}"
            held = {"label": label, "region": region, "addresses": [self._free_address(state)]}
            state["instances"][provider_id] = held
            state["purchases"]["instances"] += 1
            return _local_instance(provider_id, held)

        return await self._change(create)

    async def get_instance(self, provider_id: str) -> Instance:
        return await self._read(
            lambda state: _local_instance(provider_id, _held(state, provider_id))
        )

    async def list_ips(self, provider_id: str) -> list[str]:
        return await self._read(lambda state: list(_held(state, provider_id)["addresses"]))

    async def add_ip(self, provider_id: str) -> str:
        def add(state: dict[str, Any]) -> str:
            held = _held(state, provider_id)
            address = self._free_address(state)
            held["addresses"].append(address)
            state["purchases"]["ips"] += 1
            return address

        return await self._change(add)

    async def remove_ip(self, provider_id: str, address: str) -> None:
        def remove(state: dict[str, Any]) -> None:
            held = state["instances"].get(provider_id)
            if held is None or address not in held["addresses"]:
                return  # gone already, with its instance or by an earlier call
            if held["addresses"][0] == address:
                raise HostingError(
                    f"{address} is the primary address of instance {provider_id}; "
                    "it goes with the instance",
                    retryable=False,
                )
            held["addresses"].remove(address)
            state["ptr"].pop(address, None)

        await self._change(remove)

    async def set_ptr(self, address: str, hostname: str) -> None:
        def record(state: dict[str, Any]) -> None:
            if not any(address in held["addresses"] for held in state["instances"].values()):
                raise HostingError(f"no local instance holds {address}", retryable=False)
            state["ptr"][address] = hostname

        await self._change(record)
        if self.publish_ptr is not None:
            await self.publish_ptr(address, hostname)

    async def delete_instance(self, provider_id: str) -> None:
        def delete(state: dict[str, Any]) -> None:
            held = state["instances"].pop(provider_id, None)
            for address in held["addresses"] if held else []:
                state["ptr"].pop(address, None)

        await self._change(delete)

    def management(self, instance: Instance) -> Management:
        assert instance.primary_ip is not None  # local instances have an address from the start
        configured = self.settings.local_hosting_ssh
        ssh = _host_port(configured) if configured else None
        if ssh is not None:
            submission = (instance.primary_ip, self.settings.vps_submission_port)
        else:  # nothing deployed: accounts submit to the development sink
            submission = (self.settings.smtp_relay_host, self.settings.smtp_relay_port)
        return Management(
            ssh=ssh,
            admin_url=self.settings.local_hosting_admin_url or None,
            submission=submission,
            imap=(instance.primary_ip, self.settings.vps_imap_port),
        )

    async def aclose(self) -> None:
        return None

    async def purchases(self) -> dict[str, int]:
        """How many instances and IPs were ever bought, {"instances": n, "ips": n}."""
        return await self._read(lambda state: dict(state["purchases"]))

    async def ptr_records(self) -> dict[str, str]:
        """The reverse DNS names set, by address."""
        return await self._read(lambda state: dict(state["ptr"]))

    def _free_address(self, state: dict[str, Any]) -> str:
        taken = {a for held in state["instances"].values() for a in held["addresses"]}
        for host in self.network.hosts():
            if str(host) not in taken:
                return str(host)
        raise HostingError(
            f"every address of {self.network} is taken (PENGUINMAILS_LOCAL_HOSTING_NETWORK)",
            retryable=False,
        )

    async def _read(self, read: Callable[[dict[str, Any]], T]) -> T:
        return await asyncio.to_thread(self._locked, read, False)

    async def _change(self, change: Callable[[dict[str, Any]], T]) -> T:
        return await asyncio.to_thread(self._locked, change, True)

    def _locked(self, use: Callable[[dict[str, Any]], T], write: bool) -> T:
        """`use` on the state under the lock (in a thread: waiting for another process's lock
        does not stop the event loop); with `write`, the state is saved after, unless `use`
        raised."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self._load()
                result = use(state)
                if write:
                    self._save(state)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"instances": {}, "ptr": {}, "purchases": NOTHING_BOUGHT.copy()}

    def _save(self, state: dict[str, Any]) -> None:
        """Replaced whole: a reader without the lock sees the old file or the new one."""
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(state, out, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            os.unlink(temporary)
            raise


def _held(state: dict[str, Any], provider_id: str) -> dict[str, Any]:
    held = state["instances"].get(provider_id)
    if held is None:
        raise NoSuchInstance(f"no local instance {provider_id}")
    return held


def _local_instance(provider_id: str, held: dict[str, Any]) -> Instance:
    return Instance(provider_id, held["label"], ACTIVE, held["addresses"][0], held["region"])


def _host_port(value: str) -> tuple[str, int]:
    """The (host, port) of "host:port" ("[::1]:22" for IPv6)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {value!r}")
    return host.strip("[]"), int(port)


# --- Hostwinds ---------------------------------------------------------------------------------

PATH = "/cloud/api.php"
ADD_IP_ACTION = "add_ip"  # assumed (see the module's docstring)
NOT_AUTHORIZED = "not authorized"
NO_SUCH_INSTANCE = ("serviceid", "service id")
# Errors a retry cannot mend: the request itself is wrong for this account.
PERMANENT = ("location id", "is invalid", "template", "disabled", "does not exist", "not found")


class HostwindsProvider:
    """The Hostwinds Cloud API, for the calls provisioning makes. Every answer's body is read
    for an error, whatever its HTTP status."""

    name = "hostwinds"
    # add_ip looks for the address it bought this many times, this many seconds apart.
    ip_confirm_attempts = 5
    ip_confirm_interval = 2.0

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.vps_monthly_cost_cents = settings.hostwinds_vps_monthly_cost_cents
        self.ip_monthly_cost_cents = settings.hostwinds_ip_monthly_cost_cents
        self.url = settings.hostwinds_api_base.rstrip("/") + PATH
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=settings.hostwinds_timeout_seconds)
        self._owners: dict[str, str] = {}  # address -> serviceid, as listed by this object

    def regions(self) -> list[str]:
        return list(self.settings.hostwinds_locations)

    def default_region(self) -> str:
        return next(iter(self.settings.hostwinds_locations))

    async def find_instance(self, label: str) -> Instance | None:
        found = [i for i in await self._instances() if i.get("srvrname") == label]
        if not found:
            return None
        # Two with our label: an order was repeated; the older one is the one we know.
        return self._instance(min(found, key=lambda i: int(i.get("serviceid") or 0)))

    async def create_instance(self, label: str, region: str) -> Instance:
        location = self.settings.hostwinds_locations.get(region)
        if location is None:
            raise _unknown_region(region, self.settings.hostwinds_locations)
        await self._call(
            "add_instance",
            template=self.settings.hostwinds_image_id,
            rid=self.settings.hostwinds_plan_id,
            location_id=location,
            srvrname=label,
            qty=1,
            billingcycle="monthly",
        )
        created = await self.find_instance(label)
        if created is None:
            raise HostingError(
                f"Hostwinds took the order for {label} but does not list it yet; "
                "look for it again before ordering another"
            )
        return created

    async def get_instance(self, provider_id: str) -> Instance:
        found = _success(await self._call("get_instance", serviceid=provider_id))
        if not isinstance(found, dict):
            raise HostingError(f"Hostwinds get_instance: unexpected answer {found!r:.200}")
        return self._instance(found)

    async def list_ips(self, provider_id: str) -> list[str]:
        primary = (await self.get_instance(provider_id)).primary_ip
        listed = await self._ips(provider_id)
        return ([primary] if primary else []) + [a for a in listed if a != primary]

    async def add_ip(self, provider_id: str) -> str:
        before = set(await self.list_ips(provider_id))
        await self._call(ADD_IP_ACTION, serviceid=provider_id)
        for attempt in range(self.ip_confirm_attempts):
            if attempt:
                await asyncio.sleep(self.ip_confirm_interval)
            new = [a for a in await self._ips(provider_id) if a not in before]
            if len(new) == 1:
                return new[0]
            if new:
                raise HostingError(
                    f"Hostwinds lists {len(new)} new addresses on instance {provider_id} "
                    f"({', '.join(new)}) after one was ordered; which is ours is unclear",
                    retryable=False,
                )
        waited = (self.ip_confirm_attempts - 1) * self.ip_confirm_interval
        raise HostingError(
            f"Hostwinds took the order for an IP on instance {provider_id} but lists no new "
            f"address after {waited:g} s; list its addresses before ordering another"
        )

    async def remove_ip(self, provider_id: str, address: str) -> None:
        try:
            addresses = await self.list_ips(provider_id)
        except NoSuchInstance:
            return  # the address went with its instance
        if address not in addresses:
            return
        if addresses[0] == address:
            raise HostingError(
                f"{address} is the primary address of instance {provider_id}; "
                "it goes with the instance",
                retryable=False,
            )
        await self._call("delete_ip", serviceid=provider_id, ip=address)
        self._owners.pop(address, None)

    async def set_ptr(self, address: str, hostname: str) -> None:
        owner = self._owners.get(address) or await self._owner_of(address)
        await self._call("set_rdns", serviceid=owner, ip=address, rdns=hostname)

    async def delete_instance(self, provider_id: str) -> None:
        try:
            await self._call("terminate", serviceid=provider_id)
        except NoSuchInstance:
            return

    def management(self, instance: Instance) -> Management:
        ip = instance.primary_ip
        if ip is None:
            raise HostingError(f"instance {instance.provider_id} has no address yet")
        names = {"hostname": vps_hostname(self.settings, instance.label), "ip": ip}
        mail_host = self.settings.vps_mail_host.format(**names)
        return Management(
            ssh=(ip, self.settings.vps_ssh_port),
            admin_url=self.settings.vps_admin_url.format(**names),
            # By name by default: MailU's certificate (Let's Encrypt) is for its name.
            submission=(mail_host, self.settings.vps_submission_port),
            imap=(mail_host, self.settings.vps_imap_port),
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    # --- the calls -----------------------------------------------------------------------------

    async def _instances(self) -> list[dict[str, Any]]:
        listed = _success(await self._call("get_instances"))
        values = listed.values() if isinstance(listed, dict) else listed
        return [i for i in values or [] if isinstance(i, dict)]

    async def _ips(self, provider_id: str) -> list[str]:
        listed = _success(await self._call("get_instance_ips", serviceid=provider_id))
        if isinstance(listed, dict):
            listed = listed.get("IP Addresses", [])
        addresses = [a for a in map(_address, listed or []) if a]
        for address in addresses:
            self._owners[address] = provider_id
        return addresses

    async def _owner_of(self, address: str) -> str:
        """The serviceid of the instance holding `address`: a main IP is in the list of
        instances; a secondary one may be only in its instance's own list."""
        instances = await self._instances()
        for i in instances:
            if address == i.get("main_ip") or address in map(_address, i.get("ips") or []):
                return str(i["serviceid"])
        for i in instances:
            if str(i.get("srvrname", "")).startswith(LABEL_PREFIX):
                if address in await self._ips(str(i["serviceid"])):
                    return str(i["serviceid"])
        raise HostingError(f"no Hostwinds instance holds {address}", retryable=False)

    def _instance(self, found: dict[str, Any]) -> Instance:
        location = str(found.get("location_id"))
        regions = {str(id_): r for r, id_ in self.settings.hostwinds_locations.items()}
        region = regions.get(location, location)
        return Instance(
            provider_id=str(found.get("serviceid")),
            label=str(found.get("srvrname") or ""),
            state=_state(found),
            primary_ip=found.get("main_ip") or None,
            region=region,
        )

    async def _call(self, action: str, **params: str | int) -> Any:
        """The answer's body, or HostingError with its reason."""
        key = self.settings.hostwinds_api_key
        if key is None:
            raise HostingError(
                "no Hostwinds API key is set (PENGUINMAILS_HOSTWINDS_API_KEY)", retryable=False
            )
        form = {"action": action, "API": key.get_secret_value()}
        form.update({name: str(value) for name, value in params.items()})
        timeout = self.settings.hostwinds_timeout_seconds
        try:
            response = await self.client.post(self.url, data=form, timeout=timeout)
        except httpx.TimeoutException as e:
            raise HostingError(f"Hostwinds {action}: timed out after {timeout:g} s") from e
        except httpx.HTTPError as e:
            raise HostingError(f"Hostwinds {action}: no answer ({type(e).__name__}: {e})") from e
        try:
            body = response.json()
        except ValueError:
            body = None
        error = _error(body)
        if response.status_code in (401, 403) or NOT_AUTHORIZED in (error or "").lower():
            raise _refused(HostingError(
                f"Hostwinds refused the API key ({error or f'HTTP {response.status_code}'}): "
                "check PENGUINMAILS_HOSTWINDS_API_KEY and the addresses the key is allowed from",
                retryable=False,
            ))  # fmt: skip
        if not response.is_success:
            detail = error or response.text[:200].strip()
            raise HostingError(
                f"Hostwinds {action}: HTTP {response.status_code}"
                + (f": {detail}" if detail else ""),
                retryable=response.status_code in (408, 429) or response.status_code >= 500,
            )
        if error is not None:
            lowered = error.lower()
            if any(words in lowered for words in NO_SUCH_INSTANCE):
                raise NoSuchInstance(f"Hostwinds {action}: no such instance ({error})")
            permanent = any(words in lowered for words in PERMANENT)
            raise _refused(HostingError(f"Hostwinds {action}: {error}", retryable=not permanent))
        if body is None:
            raise HostingError(
                f"Hostwinds {action}: the answer is not JSON: {response.text[:200]!r}"
            )
        return body


def _refused(error: HostingError) -> HostingError:
    """Hostwinds answered no: nothing was bought."""
    error.refused = True
    return error


def _error(body: Any) -> str | None:
    """The message of the first `"result": "error"` object of an answer (one, or a list), with
    Hostwinds' internal code when it gave one; None when the answer reports no error."""
    for item in body if isinstance(body, list) else [body]:
        if isinstance(item, dict) and str(item.get("result", "")).lower() == "error":
            message = str(item.get("message") or "error without a message").strip()
            code = item.get("ERROR")
            return f"{message} (Hostwinds error {code})" if code else message
    return None


def _success(body: Any) -> Any:
    """A read's payload: `{"success": payload}`."""
    return body.get("success") if isinstance(body, dict) and "success" in body else body


def _address(entry: Any) -> str | None:
    """An address as Hostwinds lists it: a string, or an object with `ip`."""
    if isinstance(entry, str):
        return entry or None
    if isinstance(entry, dict):
        return entry.get("ip") or entry.get("ip_address") or entry.get("address") or None
    return None


def _state(found: dict[str, Any]) -> str:
    status = str(found.get("status") or found.get("vm_state") or "").lower()
    if status in ("error", "failed"):
        return ERROR
    if status == "active" and not found.get("task_state"):
        return ACTIVE
    return BUILDING
