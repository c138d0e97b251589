"""A real authoritative DNS server on loopback (dnslib, UDP and TCP) whose zone the tests edit.

The platform resolves through it with `PENGUINMAILS_DNS_NAMESERVERS=127.0.0.1:<port>`: no
patched resolver, no mocked dnspython. Besides records, a name can be made to answer SERVFAIL,
or no answer at all (a resolver that hangs). `zone.serve_files(directory)` also answers from the
master files `<zone>.zone` there (what services/dns_providers.ZoneFileProvider writes), each
read again when it changes."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path

import dns.exception
import dns.zone
from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.dns import RD, RDMAP, DNSError
from dnslib.label import DNSBuffer
from dnslib.server import BaseResolver, DNSServer

from tests.imap import free_port

TTL = 60
_TYPES = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "MX": None, "TXT": None, "PTR": PTR}


class ZoneFile:
    """One master file's records by (name, type), read with dnspython (as the provider wrote
    it), kept until the file's mtime, inode or size changes (a provider replaces it by rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None
        self.records: dict[tuple[str, str], list[RR]] = {}
        self.names: set[str] = set()
        self.error: str | None = None  # why the last read failed: the file is served empty

    def refresh(self, stamp: tuple[int, int, int]) -> None:
        if stamp == self.stamp:
            return
        self.stamp, self.records, self.names, self.error = stamp, {}, set(), None
        try:
            master = dns.zone.from_file(str(self.path), origin=self.path.stem, relativize=False)
        except (OSError, dns.exception.DNSException) as e:
            self.error = str(e)
            return
        for name, rdataset in ((n, r) for n, node in master.nodes.items() for r in node):
            owner = _fqdn(name.to_text())
            type_ = QTYPE[rdataset.rdtype]
            for rdata in rdataset:
                wire = rdata.to_wire()  # names uncompressed: dnslib parses it as it is
                rd = RDMAP.get(type_, RD).parse(DNSBuffer(wire), len(wire))
                self.records.setdefault((owner, type_), []).append(
                    RR(owner, rdataset.rdtype, rdata=rd, ttl=rdataset.ttl)
                )
            self.names.add(owner)


class Zone(BaseResolver):
    """Records by (name, type), set in memory or read from zone files; every name in neither
    is NXDOMAIN."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], list[RR]] = defaultdict(list)
        self._types: dict[str, set[str]] = defaultdict(set)  # the types each name has
        self._lock = threading.Lock()
        self.servfail: set[str] = set()
        self.silent: set[str] = set()  # no answer: the client times out
        self.queries: list[tuple[str, str]] = []
        self._directories: dict[Path, dict[Path, ZoneFile]] = {}

    def serve_files(self, directory: Path) -> None:
        """Answer from the `*.zone` files in the directory too (one per zone, its name the
        file's): each query looks at their mtimes and reads a changed file again."""
        with self._lock:
            self._directories.setdefault(Path(directory), {})

    def stop_serving_files(self, directory: Path) -> None:
        with self._lock:
            self._directories.pop(Path(directory), None)

    def _files(self) -> list[ZoneFile]:
        """The served zone files, each up to date (called holding the lock)."""
        files = []
        for directory, known in self._directories.items():
            seen = set()
            try:
                entries = [e for e in os.scandir(directory) if e.name.endswith(".zone")]
            except FileNotFoundError:
                entries = []
            for entry in entries:
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue  # replaced between the listing and now: the next query reads it
                path = Path(entry.path)
                seen.add(path)
                zone_file = known.setdefault(path, ZoneFile(path))
                zone_file.refresh((stat.st_mtime_ns, stat.st_ino, stat.st_size))
                files.append(zone_file)
            for path in set(known) - seen:
                del known[path]
        return files

    def add(self, name: str, type_: str, value: str | tuple[int, str] | list[str]) -> None:
        """One record. TXT takes a string (split into 255-byte strings as DNS does) or the
        strings themselves; MX takes (preference, host)."""
        name = _fqdn(name)
        if type_ == "TXT":
            strings = value if isinstance(value, list) else _split(str(value))
            rdata = TXT([s.encode() for s in strings])
        elif type_ == "MX":
            preference, host = value  # type: ignore[misc]
            rdata = MX(_fqdn(host), preference)
        elif type_ in ("CNAME", "PTR"):
            rdata = _TYPES[type_](_fqdn(str(value)))
        else:
            rdata = _TYPES[type_](str(value))
        with self._lock:
            self._records[name, type_].append(RR(name, getattr(QTYPE, type_), rdata=rdata, ttl=TTL))
            self._types[name].add(type_)

    def publish(self, records: list[dict]) -> None:
        """Records as the platform lists them for a domain (host, type, value; an MX value is
        "<preference> <host>"), published as a tenant following the instructions would."""
        for record in records:
            value = record["value"]
            if record["type"] == "MX":
                preference, host = value.split()
                value = (int(preference), host)
            self.add(record["host"], record["type"], value)

    def remove(self, name: str, type_: str | None = None) -> None:
        name = _fqdn(name)
        with self._lock:
            for type_name in list(self._types.get(name, ())):
                if type_ in (None, type_name):
                    self._records.pop((name, type_name), None)
                    self._types[name].discard(type_name)

    def replace(self, name: str, type_: str, value) -> None:
        self.remove(name, type_)
        self.add(name, type_, value)

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:
        name = str(request.q.qname).lower()
        type_ = QTYPE[request.q.qtype]
        self.queries.append((name, type_))
        reply = request.reply()
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if name in self.silent:
            raise DNSError(f"{name}: left unanswered")  # dnslib drops the query
        with self._lock:
            answers = list(self._records.get((name, type_), []))
            cname = list(self._records.get((name, "CNAME"), []))
            exists = bool(self._types.get(name))
            for zone_file in self._files():
                answers += zone_file.records.get((name, type_), [])
                cname += zone_file.records.get((name, "CNAME"), [])
                exists = exists or name in zone_file.names
        if not answers and cname and type_ != "CNAME":
            answers = list(cname)  # the alias; a resolver follows it with a new query
        for rr in answers:
            reply.add_answer(rr)
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class DnsServer:
    """The zone served on 127.0.0.1 over UDP and TCP (a long TXT answer goes over TCP)."""

    def __init__(self) -> None:
        self.zone = Zone()
        self.port = free_port()
        self._servers = [
            DNSServer(self.zone, port=self.port, address="127.0.0.1", tcp=tcp, logger=_Quiet())
            for tcp in (False, True)
        ]

    @property
    def nameservers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        for server in self._servers:
            server.start_thread()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop()


class _Quiet:
    """dnslib's logger, silenced."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _split(value: str) -> list[str]:
    return [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
