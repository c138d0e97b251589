"""A real authoritative DNS server on loopback (dnslib, UDP and TCP) whose zone the tests edit.

The platform resolves through it with `PENGUINMAILS_DNS_NAMESERVERS=127.0.0.1:<port>`: no
patched resolver, no mocked dnspython. Besides records, a name can be made to answer SERVFAIL,
or no answer at all (a resolver that hangs)."""

from __future__ import annotations

import threading
from collections import defaultdict

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord
from dnslib.dns import DNSError
from dnslib.server import BaseResolver, DNSServer

from tests.imap import free_port

TTL = 60
_TYPES = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "MX": None, "TXT": None, "PTR": PTR}


class Zone(BaseResolver):
    """Records by (name, type); every name not in it is NXDOMAIN."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], list[RR]] = defaultdict(list)
        self._types: dict[str, set[str]] = defaultdict(set)  # the types each name has
        self._lock = threading.Lock()
        self.servfail: set[str] = set()
        self.silent: set[str] = set()  # no answer: the client times out
        self.queries: list[tuple[str, str]] = []

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
            cname = self._records.get((name, "CNAME"), [])
            exists = bool(self._types.get(name))
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
