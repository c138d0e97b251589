"""Where the platform publishes DNS records of its own (a VPS's A and PTR names, a provisioned
domain's SPF, DKIM, DMARC, MX and CNAMEs): zone files in a directory (development and the
tests, served by the development DNS server) or a Cloudflare account.

`apply` is an idempotent upsert by *slot*: a record replaces whatever else sits in its slot, and
a second run changes nothing. A slot is (host, type), except for TXT, where it is (host, the
record's kind: "v=spf1", "v=DMARC1", "v=DKIM1"); a TXT record of no known kind is its own slot,
so another party's TXT records at the host (site verification) are left alone. All the records
of one slot in one call make up the slot: a VPS's name gets exactly the addresses given.
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.reversename
import dns.zone
import httpx

from penguinmails.settings import Settings

TYPES = ("A", "AAAA", "TXT", "MX", "CNAME", "PTR")
TXT_KINDS = ("v=spf1", "v=dmarc1", "v=dkim1")
MAX_STRING = 255  # bytes in one DNS character-string (RFC 1035 3.3)
ZONE_TTL = 300
CLOUDFLARE_TTL = 1  # "automatic"
CLOUDFLARE_PAGE = 100
# Cloudflare's codes for a record created meanwhile by someone else: the next try sees it.
CLOUDFLARE_RACES = {81057, 81058}


@dataclass(frozen=True)
class Record:
    host: str  # fully qualified, no trailing dot
    type: str  # A, AAAA, TXT, MX, CNAME, PTR
    value: str  # TXT: the logical string; MX: "10 mx.example.com"; CNAME, PTR: a host name


class DnsProviderError(Exception):
    """`reason`: one readable line (shown on the VPS being provisioned); retryable=False when
    retrying cannot help (bad token, no such zone)."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable

    def __reduce__(self) -> tuple:
        return (_error, (self.reason, self.retryable))


def _error(reason: str, retryable: bool) -> DnsProviderError:
    return DnsProviderError(reason, retryable=retryable)


class DnsProvider(Protocol):
    name: str

    async def apply(self, zone: str, records: list[Record]) -> None: ...

    async def remove(self, zone: str, records: list[Record]) -> None: ...

    async def aclose(self) -> None: ...


def provider(settings: Settings) -> DnsProvider:
    if settings.dns_provider == "cloudflare":
        return CloudflareProvider(settings)
    return ZoneFileProvider(zone_dir(settings))


def zone_dir(settings: Settings) -> Path:
    return settings.dns_zone_dir or settings.data_dir / "zones"


def ptr_host(address: str) -> str:
    """The PTR name of an address: 127.77.0.5 -> 5.0.77.127.in-addr.arpa."""
    return dns.reversename.from_address(address).to_text(omit_final_dot=True)


def reverse_zone(address: str) -> str:
    """The reverse zone holding an address's PTR: its /24 (IPv4) or /64 (IPv6), the blocks a
    hosting provider delegates."""
    labels = ptr_host(address).split(".")
    drop = 1 if ipaddress.ip_address(address).version == 4 else 16
    return ".".join(labels[drop:])


# --- records compared by what they mean -------------------------------------------------------


def normal(record: Record) -> Record:
    """The record in one spelling: lowercase hosts without the final dot, canonical addresses,
    "<preference> <host>" for MX. A record the providers cannot publish is a DnsProviderError."""
    type_ = record.type.upper()
    host = _host(record.host)
    value = record.value
    try:
        if type_ in ("A", "AAAA"):
            address = ipaddress.ip_address(value.strip())
            if (address.version == 4) != (type_ == "A"):
                raise ValueError(f"{value} is not an {type_} address")
            value = str(address)
        elif type_ == "MX":
            preference, exchange = value.split()
            value = f"{int(preference)} {_host(exchange)}"
        elif type_ in ("CNAME", "PTR"):
            value = _host(value)
        elif type_ != "TXT":
            raise ValueError(f"type {record.type} is not one the platform publishes")
    except ValueError as e:
        raise DnsProviderError(
            f"{record.host} {record.type} {value!r}: {e}", retryable=False
        ) from e
    return Record(host, type_, value)


def _host(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _slot(record: Record) -> tuple[str, str, str]:
    if record.type != "TXT":
        return (record.host, record.type, "")
    value = record.value.lower()
    for kind in TXT_KINDS:
        if value == kind or value.startswith((f"{kind} ", f"{kind};")):
            return (record.host, "TXT", kind)
    return (record.host, "TXT", "=" + record.value)


def _zone(zone: str) -> str:
    """The zone's name, normal; one that is no domain name (it names a file) is refused."""
    name = _host(zone)
    try:
        if not name or "/" in name or name.startswith("."):
            raise ValueError("not a domain name")
        dns.name.from_text(name)
    except (ValueError, dns.exception.DNSException) as e:
        raise DnsProviderError(f"zone {zone!r}: {e}", retryable=False) from e
    return name


def _zoned(zone: str, records: list[Record]) -> tuple[str, list[Record]]:
    """The zone's name and the records, normal; one outside the zone is refused."""
    zone, records = _zone(zone), [normal(r) for r in records]
    for record in records:
        _in_zone(zone, record)
    return zone, records


def _in_zone(zone: str, record: Record) -> None:
    if record.host != zone and not record.host.endswith("." + zone):
        raise DnsProviderError(f"{record.host} is not in the zone {zone}", retryable=False)


Handle = TypeVar("Handle")


@dataclass
class Changes(Generic[Handle]):
    """What makes the published records what `apply` was given; a handle is how the provider
    names a published record (a Cloudflare id, a zone file's rdata)."""

    create: list[Record] = field(default_factory=list)
    update: list[tuple[Handle, Record]] = field(default_factory=list)
    delete: list[Handle] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def reconcile(wanted: list[Record], published: list[tuple[Handle, Record]]) -> Changes[Handle]:
    """The changes that leave each slot of `wanted` holding exactly its records, once each
    (both lists normal). A published record of another slot is not touched."""
    slots: dict[tuple[str, str, str], list[Record]] = {}
    for record in wanted:
        if record not in slots.setdefault(_slot(record), []):
            slots[_slot(record)].append(record)
    changes: Changes[Handle] = Changes()
    for slot, records in slots.items():
        kept: set[Record] = set()
        surplus = []
        for handle, record in published:
            if _slot(record) != slot:
                continue
            if record in records and record not in kept:
                kept.add(record)
            else:
                surplus.append(handle)  # another value, or a second copy
        missing = [r for r in records if r not in kept]
        changes.update += list(zip(surplus, missing, strict=False))
        changes.create += missing[len(surplus) :]
        changes.delete += surplus[len(missing) :]
    return changes


def _strings(value: str) -> list[str]:
    """A TXT value as character-strings of at most 255 bytes, never splitting a character."""
    strings, current, size = [], "", 0
    for char in value:
        width = len(char.encode())
        if size + width > MAX_STRING:
            strings.append(current)
            current, size = "", 0
        current += char
        size += width
    return [*strings, current]


# --- zone files -------------------------------------------------------------------------------


class ZoneFileProvider:
    """RFC 1035 master files, `<zone>.zone` in a directory, read and written with dnspython. A
    new zone gets an SOA and an NS record; every change raises the SOA serial. A change holds
    an flock on `.<zone>.lock` (several processes publish at once) and replaces the file with
    a rename, so a reader sees the old file or the new one."""

    name = "zonefile"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, zone: str) -> Path:
        return self.directory / f"{_zone(zone)}.zone"

    async def apply(self, zone: str, records: list[Record]) -> None:
        await asyncio.to_thread(self._change, _zone(zone), [normal(r) for r in records], True)

    async def remove(self, zone: str, records: list[Record]) -> None:
        await asyncio.to_thread(self._change, _zone(zone), [normal(r) for r in records], False)

    async def aclose(self) -> None:
        pass

    def _change(self, zone: str, records: list[Record], apply: bool) -> None:
        for record in records:
            _in_zone(zone, record)
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / f".{zone}.lock"):
            path = self.path(zone)
            if path.exists():
                master = dns.zone.from_file(str(path), origin=zone, relativize=False)
            elif apply:
                master = _new_zone(zone)
            else:
                return
            changed = _apply(master, records) if apply else _remove(master, records)
            if changed or not path.exists():  # a new zone is written even when empty
                _bump_serial(master)
                self._write(master, path)

    @staticmethod
    def _write(master: dns.zone.Zone, path: Path) -> None:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                master.to_file(f, sorted=True, relativize=False, want_origin=True)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on the file, which blocks other processes and threads alike (each
    opens its own); closing the file releases it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _new_zone(zone: str) -> dns.zone.Zone:
    master = dns.zone.Zone(zone, relativize=False)
    origin = master.origin
    assert origin is not None
    soa = f"ns.{zone}. hostmaster.{zone}. 0 3600 600 1209600 {ZONE_TTL}"
    for type_, text in (("SOA", soa), ("NS", f"ns.{zone}.")):
        rdata = dns.rdata.from_text(dns.rdataclass.IN, type_, text)
        master.replace_rdataset(origin, dns.rdataset.from_rdata(ZONE_TTL, rdata))
    return master


def _bump_serial(master: dns.zone.Zone) -> None:
    origin = master.origin
    assert origin is not None
    soa = master.find_rdataset(origin, dns.rdatatype.SOA)
    old = soa[0]
    soa.discard(old)  # in place: the SOA stays the file's first record
    soa.add(old.replace(serial=(old.serial + 1) % 2**32 or 1))


def _published(master: dns.zone.Zone, records: list[Record]) -> list[tuple[Any, Record]]:
    """The zone's records at the hosts and types of `records`, each with its handle (host,
    rdata)."""
    found = []
    for host, type_ in dict.fromkeys((r.host, r.type) for r in records):
        rdataset = master.get_rdataset(f"{host}.", type_)
        for rdata in rdataset or ():
            found.append(((host, rdata), Record(host, type_, _rdata_value(rdata))))
    return found


def _rdata_value(rdata: Any) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdata.rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {_host(rdata.exchange.to_text())}"
    return _host(rdata.to_text())


def _rdata(record: Record) -> Any:
    if record.type == "TXT":
        strings = [s.encode() for s in _strings(record.value)]
        return dns.rdata.from_text(dns.rdataclass.IN, "TXT", " ".join(_quoted(s) for s in strings))
    if record.type in ("MX", "CNAME", "PTR"):
        return dns.rdata.from_text(dns.rdataclass.IN, record.type, record.value + ".")
    return dns.rdata.from_text(dns.rdataclass.IN, record.type, record.value)


def _quoted(string: bytes) -> str:
    """A character-string in master-file syntax: quoted, with quotes, backslashes and bytes
    outside printable ASCII escaped."""
    out = []
    for byte in string:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _apply(master: dns.zone.Zone, records: list[Record]) -> bool:
    changes = reconcile(records, _published(master, records))
    for handle in changes.delete + [h for h, _ in changes.update]:
        _discard(master, handle)
    for record in changes.create + [r for _, r in changes.update]:
        rdataset = master.find_rdataset(f"{record.host}.", record.type, create=True)
        rdataset.add(_rdata(record), ZONE_TTL)
    return bool(changes)


def _remove(master: dns.zone.Zone, records: list[Record]) -> bool:
    gone = [handle for handle, record in _published(master, records) if record in records]
    for handle in gone:
        _discard(master, handle)
    return bool(gone)


def _discard(master: dns.zone.Zone, handle: tuple[str, Any]) -> None:
    host, rdata = handle
    rdataset = master.find_rdataset(f"{host}.", rdata.rdtype)
    rdataset.discard(rdata)
    if not rdataset:
        master.delete_rdataset(f"{host}.", rdata.rdtype)


# --- Cloudflare -------------------------------------------------------------------------------


class CloudflareProvider:
    """Cloudflare's v4 API with an API token (Zone.DNS edit): the zone's id by its name (GET
    /zones?name=, kept), the records at each host and type (GET /zones/{id}/dns_records?type=
    &name=, every page), then POST, PUT and DELETE only for what differs. Every answer's
    `success` is checked; an authentication error, an unknown zone or any other refusal of the
    request is final, a rate limit (429), a 5xx or no answer is worth a retry."""

    name = "cloudflare"

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        self._base = settings.cloudflare_api_base.rstrip("/")
        self._token = settings.cloudflare_api_token
        self._timeout = settings.cloudflare_timeout_seconds
        self._client = client or httpx.AsyncClient(timeout=self._timeout)
        self._owned = client is None
        self._zones: dict[str, str] = {}

    async def apply(self, zone: str, records: list[Record]) -> None:
        zone, records = _zoned(zone, records)
        if not records:
            return
        zone_id = await self._zone_id(zone)
        changes = reconcile(records, await self._published(zone_id, records))
        path = f"/zones/{zone_id}/dns_records"
        for record_id, record in changes.update:
            await self._call("PUT", f"{path}/{record_id}", json=_cloudflare_body(record))
        for record in changes.create:
            await self._call("POST", path, json=_cloudflare_body(record))
        for record_id in changes.delete:
            await self._call("DELETE", f"{path}/{record_id}")

    async def remove(self, zone: str, records: list[Record]) -> None:
        zone, records = _zoned(zone, records)
        if not records:
            return
        zone_id = await self._zone_id(zone)
        for record_id, record in await self._published(zone_id, records):
            if record in records:
                await self._call("DELETE", f"/zones/{zone_id}/dns_records/{record_id}")

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def _zone_id(self, zone: str) -> str:
        if zone not in self._zones:
            body = await self._call("GET", "/zones", params={"name": zone})
            found = [z for z in body["result"] or () if _host(z.get("name", "")) == zone]
            if not found:
                raise DnsProviderError(
                    f"Cloudflare has no zone {zone} this API token can edit", retryable=False
                )
            self._zones[zone] = found[0]["id"]
        return self._zones[zone]

    async def _published(self, zone_id: str, records: list[Record]) -> list[tuple[str, Record]]:
        found = []
        for host, type_ in dict.fromkeys((r.host, r.type) for r in records):
            for item in await self._list(zone_id, {"type": type_, "name": host}):
                found.append((item["id"], _cloudflare_record(item)))
        return found

    async def _list(self, zone_id: str, params: dict[str, str]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            query = {**params, "page": str(page), "per_page": str(CLOUDFLARE_PAGE)}
            body = await self._call("GET", f"/zones/{zone_id}/dns_records", params=query)
            items += body["result"] or []
            info = body.get("result_info") or {}
            if page >= int(info.get("total_pages") or 1):
                return items
            page += 1

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        if self._token is None:
            raise DnsProviderError(
                "no Cloudflare API token (PENGUINMAILS_CLOUDFLARE_API_TOKEN)", retryable=False
            )
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        try:
            response = await self._client.request(
                method, self._base + path, params=params, json=json, headers=headers,
                timeout=self._timeout,
            )  # fmt: skip
        except httpx.TimeoutException as e:
            raise DnsProviderError(f"Cloudflare {method} {path}: no answer in time") from e
        except httpx.HTTPError as e:
            raise DnsProviderError(f"Cloudflare {method} {path}: {e!r}") from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success and isinstance(body, dict) and body.get("success") is True:
            return body
        errors = body.get("errors") if isinstance(body, dict) else None
        errors = [e for e in errors or () if isinstance(e, dict)]
        message = "; ".join(f"{e.get('message')} (code {e.get('code')})" for e in errors)
        status = response.status_code
        retryable = (
            status in (408, 429)
            or status >= 500
            or any(e.get("code") in CLOUDFLARE_RACES for e in errors)
        )
        raise DnsProviderError(
            f"Cloudflare {method} {path}: {status} {message or response.reason_phrase}",
            retryable=retryable,
        )


def _cloudflare_body(record: Record) -> dict[str, Any]:
    """A record as Cloudflare's create and overwrite take it: MX with its `priority`, TXT as
    quoted character-strings of at most 255 bytes, nothing proxied (mail needs the real
    addresses), TTL automatic."""
    body: dict[str, Any] = {
        "type": record.type, "name": record.host, "content": record.value,
        "ttl": CLOUDFLARE_TTL,
    }  # fmt: skip
    if record.type == "MX":
        preference, exchange = record.value.split()
        body.update(content=exchange, priority=int(preference))
    elif record.type == "TXT":
        body["content"] = " ".join(_quoted(s.encode()) for s in _strings(record.value))
    if record.type in ("A", "AAAA", "CNAME"):
        body["proxied"] = False
    return body


def _cloudflare_record(item: dict[str, Any]) -> Record:
    """A record Cloudflare lists, in the normal spelling. TXT content is quoted
    character-strings (what the API asks for) or, as older records and the dashboard have it,
    the bare text."""
    type_, content = item["type"], str(item.get("content", ""))
    if type_ == "MX":
        content = f"{item.get('priority', 0)} {content}"
    elif type_ == "TXT" and content.strip().startswith('"'):
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, "TXT", content)
            content = b"".join(rdata.strings).decode("utf-8", "replace")
        except dns.exception.DNSException:
            pass
    try:
        return normal(Record(item["name"], type_, content))
    except DnsProviderError:
        return Record(_host(item["name"]), type_, content)  # never equal to one of ours
