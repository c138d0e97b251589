"""MailU on each VPS: its configuration rendered from services/mailu_templates/, deployed over
SSH (SFTP, then `docker compose up -d`, then a wait for the submission port), and its admin REST
API, where the platform creates a VPS's mail domains and accounts.

Every sending IP of a VPS sends its own accounts' mail from its own address with its own HELO
(PTR) name: a Postfix transport per IP, and a map from each sender to its IP's transport. The
smtp container runs on the host's network so that it can bind those addresses (Docker's NAT
would send everything from the primary one); the other services keep fixed addresses on
MailU's bridge, where it finds them.

Everything here fails with MailuError, one readable line for the VPS's status; all of it is
worth retrying (a VPS still booting, Docker still pulling images, the admin API not up yet).
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncssh
import httpx
from jinja2 import Environment, FileSystemLoader, StrictUndefined

VERSION = "2024.06"  # the MailU release deployed (its images' tag)
MESSAGE_SIZE_LIMIT = 50_000_000  # bytes; MailU's default
MAIL_PORTS = (25, 587, 993)  # on every IP of the VPS
WEB_PORTS = (80, 443)  # the admin API, on the primary IP (80: the ACME challenge)
TEMPLATES = Path(__file__).parent / "mailu_templates"
SECRET_FILES = {"mailu.env"}  # written readable by the SSH user only
POLL_SECONDS = 1.0  # between two looks at the submission port


class MailuError(Exception):
    """reason: one readable line (shown on the VPS); retryable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class SendingAddress:
    address: str  # an IP of the VPS
    helo: str  # its HELO name = its PTR name


@dataclass(frozen=True)
class Setup:
    hostname: str  # the VPS's name (vps-<id>.<vps_hostname_domain>)
    domains: list[str]  # mail domains it serves
    ips: list[SendingAddress]  # primary first
    senders: dict[str, str]  # account address -> the IP address it sends from
    dkim_selector: str
    relay_networks: list[str]  # who may relay without auth (127.0.0.1/32, the VPS's own, ...)
    admin_token: str  # MailU API_TOKEN
    secret_key: str  # MailU SECRET_KEY


@dataclass(frozen=True)
class _Network:
    """MailU's bridge: the gateway is the host (where the smtp service listens), the other
    services have fixed addresses, since the smtp service cannot resolve their names."""

    subnet: str = "192.168.203.0/24"  # MailU's default SUBNET
    gateway: str = "192.168.203.1"

    @property
    def addresses(self) -> dict[str, str]:
        return {
            "SMTP": self.gateway,
            "FRONT": "192.168.203.10",
            "ADMIN": "192.168.203.11",
            "IMAP": "192.168.203.12",
            "ANTISPAM": "192.168.203.13",
            "REDIS": "192.168.203.14",
        }


@dataclass(frozen=True)
class _Ip:
    """A sending address as the templates use it."""

    address: str
    helo: str
    version: int

    @property
    def transport(self) -> str:
        """Its Postfix transport's name, from the address (stable when IPs are added)."""
        return "out-" + self.address.replace(".", "-").replace(":", "-")

    @property
    def bind_setting(self) -> str:
        return "smtp_bind_address6" if self.version == 6 else "smtp_bind_address"

    @property
    def published(self) -> str:
        """The address as a compose port binding writes it."""
        return f"[{self.address}]" if self.version == 6 else self.address


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=False,  # configuration files, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(setup: Setup) -> dict[str, str]:
    """Relative path on the VPS -> content: MailU's settings (mailu.env), its compose files
    and the Postfix overrides. The same Setup renders the same bytes. ValueError for a Setup
    that cannot be written (no IPs, a sender on an IP the VPS lacks, a line break in a value)."""
    ips = [_ip(a) for a in setup.ips]
    if not ips:
        raise ValueError("a VPS needs at least one sending IP")
    by_address = {ip.address: ip for ip in ips}
    if len(by_address) != len(ips):
        raise ValueError("the same IP is listed twice")
    senders = []
    for sender, address in sorted(setup.senders.items()):
        ip = by_address.get(_normal_ip(address))
        if ip is None:
            raise ValueError(f"{sender} sends from {address}, which is not an IP of the VPS")
        senders.append((_one_line(sender.lower(), "sender"), ip.transport))
    for value, what in [
        (setup.hostname, "hostname"),
        (setup.dkim_selector, "DKIM selector"),
        (setup.admin_token, "API token"),
        (setup.secret_key, "secret key"),
        *((d, "domain") for d in setup.domains),
        *((n, "relay network") for n in setup.relay_networks),
    ]:
        _one_line(value, what)
    if any(ch in value for value in setup.relay_networks for ch in ", "):
        raise ValueError("a relay network is one CIDR, with no comma or space")
    hostnames = list(dict.fromkeys([setup.hostname, *(ip.helo for ip in ips)]))
    context: dict[str, Any] = {
        "version": VERSION,
        "hostname": setup.hostname,
        "main_domain": setup.domains[0] if setup.domains else setup.hostname,
        "hostnames": hostnames,
        "ips": ips,
        "primary": ips[0],
        "senders": senders,
        "dkim_selector": setup.dkim_selector,
        "relay_networks": setup.relay_networks,
        "admin_token": setup.admin_token,
        "secret_key": setup.secret_key,
        "message_size_limit": MESSAGE_SIZE_LIMIT,
        "mail_ports": MAIL_PORTS,
        "web_ports": WEB_PORTS,
        "network": _Network(),
    }
    env = _environment()
    return {
        name.removesuffix(".j2"): env.get_template(name).render(context)
        for name in sorted(env.list_templates(filter_func=lambda n: n.endswith(".j2")))
    }


def _normal_ip(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError as e:
        raise ValueError(f"{address!r} is not an IP address") from e


def _ip(sending: SendingAddress) -> _Ip:
    address = _normal_ip(sending.address)
    helo = _one_line(sending.helo.strip().rstrip(".").lower(), "HELO name")
    if not helo or " " in helo:
        raise ValueError(f"{sending.address} needs a HELO name (its PTR name)")
    return _Ip(address, helo, ipaddress.ip_address(address).version)


def _one_line(value: str, what: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"the {what} {value!r} has a line break")
    return value


# --- deploying over SSH ----------------------------------------------------------------------


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    username: str
    client_key: Path | None  # None: the SSH user's default keys and agent
    # None: accept the key the server shows (trust on first use); deploy returns the key seen,
    # for the caller to store. A file in OpenSSH's format ("[host]:port key" off port 22).
    known_hosts: Path | None


async def deploy(
    target: SshTarget,
    files: dict[str, str],
    *,
    directory: str = "/opt/mailu",
    submission: tuple[str, int],
    ready_seconds: float,
    timeout: float,  # noqa: ASYNC109 - it bounds the connection and each file, not the call
) -> str:
    """Uploads `files` (relative path -> content) under `directory`, runs
    `docker compose up -d` there, and waits until `submission` (host, port) greets with 220.
    Idempotent: files already as rendered are not written again, and compose leaves running
    containers whose configuration did not change. The server's host key fingerprint
    (SHA256:...). `timeout` bounds the connection and each file; the compose command and the
    wait for the port get `ready_seconds` each (the first deploy pulls MailU's images)."""
    where = f"{target.username}@{target.host}:{target.port}"
    try:
        async with asyncio.timeout(timeout):
            connection = await asyncssh.connect(
                target.host,
                target.port,
                username=target.username,
                client_keys=[str(target.client_key)] if target.client_key else (),
                known_hosts=str(target.known_hosts) if target.known_hosts else None,
                connect_timeout=timeout,
            )
    except asyncssh.HostKeyNotVerifiable as e:
        raise MailuError(
            f"SSH to {where}: the server's host key is not the one known for it ({e.reason})"
        ) from e
    except asyncssh.PermissionDenied as e:
        raise MailuError(f"SSH to {where}: login refused (the key is not authorized)") from e
    except asyncssh.Error as e:
        raise MailuError(f"SSH to {where} failed: {e.reason}") from e
    except ConnectionRefusedError as e:
        raise MailuError(f"SSH to {where}: connection refused") from e
    except TimeoutError as e:
        raise MailuError(f"SSH to {where}: no answer within {timeout:g} s") from e
    except OSError as e:
        raise MailuError(f"SSH to {where}: {e.strerror or e}") from e
    async with connection:
        key = connection.get_server_host_key()
        fingerprint = key.get_fingerprint() if key is not None else ""
        await _upload(connection, files, directory, where, timeout)
        await _compose_up(connection, directory, where, ready_seconds)
    await wait_for_greeting(*submission, ready_seconds=ready_seconds)
    return fingerprint


async def _upload(
    connection: asyncssh.SSHClientConnection,
    files: dict[str, str],
    directory: str,
    where: str,
    seconds: float,
) -> None:
    try:
        async with connection.start_sftp_client() as sftp:
            for relative, content in sorted(files.items()):
                path = posixpath.join(directory, relative)
                async with asyncio.timeout(seconds):
                    await _put(sftp, path, content.encode(), relative in SECRET_FILES)
    except asyncssh.SFTPError as e:
        raise MailuError(f"SFTP to {where}: {e.reason}") from e
    except asyncssh.Error as e:
        raise MailuError(f"SFTP to {where} failed: {e.reason}") from e
    except TimeoutError as e:
        raise MailuError(f"SFTP to {where}: no answer within {seconds:g} s") from e


async def _put(sftp: asyncssh.SFTPClient, path: str, data: bytes, secret: bool) -> None:
    """Writes the file unless it holds `data` already."""
    await sftp.makedirs(posixpath.dirname(path), exist_ok=True)
    try:
        async with sftp.open(path, "rb") as current:
            if await current.read() == data:
                return
    except asyncssh.SFTPNoSuchFile:
        pass
    async with sftp.open(path, "wb") as remote:
        await remote.write(data)
    if secret:
        await sftp.chmod(path, 0o600)


async def _compose_up(
    connection: asyncssh.SSHClientConnection, directory: str, where: str, seconds: float
) -> None:
    command = f"cd {shlex.quote(directory)} && docker compose up -d"
    try:
        result = await connection.run(command, check=False, timeout=seconds)
    except asyncssh.TimeoutError as e:
        raise MailuError(
            f"{where}: `docker compose up -d` still running after {seconds:g} s"
        ) from e
    except asyncssh.Error as e:
        raise MailuError(f"{where}: `docker compose up -d` failed: {e.reason}") from e
    if result.exit_status != 0:
        stderr = str(result.stderr or "").strip().splitlines()
        last = stderr[-1].strip() if stderr else "no error output"
        status = result.exit_status if result.exit_status is not None else result.exit_signal
        raise MailuError(f"{where}: `docker compose up -d` exited with status {status}: {last}")


async def wait_for_greeting(host: str, port: int, *, ready_seconds: float) -> None:
    """Returns once host:port greets with 220 (SMTP), looking every POLL_SECONDS; MailuError
    after ready_seconds."""
    deadline = time.monotonic() + ready_seconds
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MailuError(
                f"port {port} did not answer within {ready_seconds:g} s ({host}:{port}: {last})"
            )
        try:
            async with asyncio.timeout(min(remaining, 10.0)):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    greeting = (await reader.readline()).decode(errors="replace").strip()
                    if greeting.startswith("220"):
                        writer.write(b"QUIT\r\n")
                        await writer.drain()
                        return
                    last = f"greeted with {greeting[:80]!r}" if greeting else "closed at once"
                finally:
                    writer.close()
        except TimeoutError:
            last = "no greeting"
        except OSError as e:
            last = e.strerror or type(e).__name__
        await asyncio.sleep(max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))


# --- the admin API ---------------------------------------------------------------------------


class AdminClient:
    """MailU's REST API (2.x, /api/v1): domains and users, created idempotently. `base_url` is
    the MailU web root (https://<hostname>); a URL ending in /api/v1 is taken as it is."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self._base = base if base.endswith("/api/v1") else base + "/api/v1"
        self._headers = {"Authorization": token}  # MailU takes the token bare (or "Bearer …")
        self._timeout = timeout
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def ensure_domain(self, name: str) -> None:
        """Creates the domain; one that exists already is fine."""
        response = await self._request("POST", "/domain", {"name": name})
        if response.status_code != 409:
            self._check(response, "POST /domain")

    async def ensure_user(self, address: str, password: str) -> None:
        """Creates the user with this password, or sets the password of the existing one."""
        created = await self._request("POST", "/user", {"email": address, "raw_password": password})
        if created.status_code != 409:
            self._check(created, "POST /user")
            return
        path = f"/user/{quote(address, safe='@')}"
        updated = await self._request("PATCH", path, {"raw_password": password})
        if updated.status_code == 404:  # the 409 was not "exists" (e.g. the domain is full)
            self._check(created, "POST /user")
        self._check(updated, f"PATCH {path}")

    async def delete_user(self, address: str) -> None:
        """Deletes the user; one that is gone already is fine."""
        path = f"/user/{quote(address, safe='@')}"
        response = await self._request("DELETE", path)
        if response.status_code != 404:
            self._check(response, f"DELETE {path}")

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            return await self._client.request(
                method, self._base + path, json=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.HTTPError as e:
            raise MailuError(
                f"MailU admin API at {self._base}: no answer to {method} {path} ({e!r})"
            ) from e

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        raise MailuError(
            f"MailU admin API: {what} answered {response.status_code}: {_message(response)}"
        )


def _message(response: httpx.Response) -> str:
    """The error's `message` (MailU answers {"code": …, "message": …}), or the body."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.text or response.reason_phrase)[:300].replace("\n", " ")
