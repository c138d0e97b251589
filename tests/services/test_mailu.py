"""MailU per VPS: the rendered configuration (settings, a Postfix transport per sending IP and
the sender map), its deployment over a real SSH server (SFTP, the compose command, the wait for
the submission port of a real SMTP server) and the admin API client against a stand-in that
answers as MailU's does."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import httpx
import pytest

from services import mailu
from services.mailu import AdminClient, MailuError, SendingAddress, Setup
from tests.mailu_server import API_TOKEN, FakeMailu, running_mailu
from tests.smtp import running_sink
from tests.ssh_server import Failure, SshServer, other_key_file, ssh_server

PRIMARY = SendingAddress("203.0.113.10", "mta1.vps-7.mta.penguinmails.test")
SECOND = SendingAddress("203.0.113.11", "mta2.vps-7.mta.penguinmails.test")
THIRD = SendingAddress("2001:db8::12", "mta3.vps-7.mta.penguinmails.test")


def a_setup(**changes: object) -> Setup:
    values: dict[str, object] = {
        "hostname": "vps-7.mta.penguinmails.test",
        "domains": ["acme-mail.com", "acme-outreach.com"],
        "ips": [PRIMARY, SECOND, THIRD],
        "senders": {
            "bob@acme-outreach.com": "203.0.113.11",
            "alice@acme-mail.com": "203.0.113.10",
            "carol@acme-outreach.com": "2001:db8::12",
        },
        "dkim_selector": "pm2024",
        "relay_networks": ["127.0.0.1/32", "203.0.113.10/32"],
        "admin_token": "t0ken-abc",
        "secret_key": "s3cret-key-16byt",
    }
    values.update(changes)
    return Setup(**values)  # type: ignore[arg-type]


def env_of(files: dict[str, str]) -> dict[str, str]:
    lines = [line for line in files["mailu.env"].splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- render ----------------------------------------------------------------------------------


def test_the_settings_name_the_vps_its_token_its_relays_and_its_dkim_selector() -> None:
    env = env_of(mailu.render(a_setup()))

    assert env["DOMAIN"] == "acme-mail.com"
    assert env["HOSTNAMES"].split(",") == [
        "vps-7.mta.penguinmails.test",
        PRIMARY.helo,
        SECOND.helo,
        THIRD.helo,
    ]
    assert env["API"] == "true"
    assert env["API_TOKEN"] == "t0ken-abc"
    assert env["SECRET_KEY"] == "s3cret-key-16byt"
    assert env["RELAYNETS"] == "127.0.0.1/32,203.0.113.10/32"
    assert env["DKIM_SELECTOR"] == "pm2024"
    assert env["TLS_FLAVOR"] == "letsencrypt"
    assert env["MESSAGE_SIZE_LIMIT"] == "50000000"
    assert env["POSTMASTER"] == "postmaster"


def test_each_ip_has_a_transport_bound_to_it_that_greets_with_its_ptr_name() -> None:
    files = mailu.render(a_setup())
    entries = [
        line
        for line in files["overrides/postfix/postfix.master"].splitlines()
        if line and not line.startswith("#")
    ]

    assert entries == [
        "out-203-0-113-10/unix=out-203-0-113-10 unix - - n - - smtp "
        "-o syslog_name=postfix-out-203-0-113-10 -o smtp_bind_address=203.0.113.10 "
        f"-o smtp_helo_name={PRIMARY.helo}",
        "out-203-0-113-11/unix=out-203-0-113-11 unix - - n - - smtp "
        "-o syslog_name=postfix-out-203-0-113-11 -o smtp_bind_address=203.0.113.11 "
        f"-o smtp_helo_name={SECOND.helo}",
        "out-2001-db8--12/unix=out-2001-db8--12 unix - - n - - smtp "
        "-o syslog_name=postfix-out-2001-db8--12 -o smtp_bind_address6=2001:db8::12 "
        f"-o smtp_helo_name={THIRD.helo}",
    ]
    main = files["overrides/postfix/postfix.cf"]
    assert "smtp_bind_address = 203.0.113.10\n" in main
    assert f"smtp_helo_name = {PRIMARY.helo}\n" in main
    assert (
        "sender_dependent_default_transport_maps = lmdb:/etc/postfix/sender_transport.map\n" in main
    )


def test_each_sender_maps_to_the_transport_of_its_ip() -> None:
    files = mailu.render(a_setup())
    entries = [
        line.split()
        for line in files["overrides/postfix/sender_transport.map"].splitlines()
        if line and not line.startswith("#")
    ]

    assert entries == [
        ["alice@acme-mail.com", "out-203-0-113-10:"],
        ["bob@acme-outreach.com", "out-203-0-113-11:"],
        ["carol@acme-outreach.com", "out-2001-db8--12:"],
    ]


def test_the_front_listens_on_every_ip_and_the_smtp_service_on_the_host_network() -> None:
    override = mailu.render(a_setup())["docker-compose.override.yml"]

    for published in ("203.0.113.10", "203.0.113.11", "[2001:db8::12]"):
        for port in (25, 587, 993):
            assert f'"{published}:{port}:{port}"' in override
    assert '"203.0.113.10:443:443"' in override
    assert '"203.0.113.11:443:443"' not in override
    assert "network_mode: host" in override


def test_the_same_setup_renders_the_same_bytes() -> None:
    shuffled = a_setup(senders=dict(reversed(list(a_setup().senders.items()))))

    first = mailu.render(a_setup())
    assert mailu.render(a_setup()) == first
    assert mailu.render(shuffled) == first
    assert sorted(first) == [
        "docker-compose.override.yml",
        "docker-compose.yml",
        "mailu.env",
        "overrides/postfix/postfix.cf",
        "overrides/postfix/postfix.master",
        "overrides/postfix/sender_transport.map",
    ]


def test_a_sender_on_an_ip_the_vps_lacks_or_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="not an IP of the VPS"):
        mailu.render(a_setup(senders={"dan@acme-mail.com": "198.51.100.1"}))
    with pytest.raises(ValueError, match="line break"):
        mailu.render(a_setup(admin_token="abc\nAPI=false"))
    with pytest.raises(ValueError, match="at least one"):
        mailu.render(a_setup(ips=[], senders={}))


# --- deploy ----------------------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SshServer]:
    async with ssh_server(tmp_path) as served:
        yield served


async def test_deploy_uploads_the_files_runs_compose_and_waits_for_the_submission_port(
    server: SshServer,
) -> None:
    files = mailu.render(a_setup())
    with running_sink() as (_, port):
        fingerprint = await mailu.deploy(
            server.target(),
            files,
            submission=("127.0.0.1", port),
            ready_seconds=5,
            timeout=5,
        )

    assert fingerprint == server.fingerprint
    assert server.files == {f"/opt/mailu/{path}": content for path, content in files.items()}
    assert server.mode("/opt/mailu/mailu.env") == 0o600
    assert server.commands == ["cd /opt/mailu && docker compose up -d"]


async def test_a_second_deploy_writes_only_what_changed(server: SshServer) -> None:
    files = mailu.render(a_setup())
    with running_sink() as (_, port):
        deploy = dict(submission=("127.0.0.1", port), ready_seconds=5, timeout=5)
        await mailu.deploy(server.target(), files, directory="/srv/mailu", **deploy)
        server.writes.clear()
        changed = mailu.render(a_setup(dkim_selector="pm2025"))
        await mailu.deploy(server.target(), changed, directory="/srv/mailu", **deploy)

    assert server.writes == ["/srv/mailu/mailu.env"]
    assert "DKIM_SELECTOR=pm2025\n" in server.files["/srv/mailu/mailu.env"]
    assert server.commands == ["cd /srv/mailu && docker compose up -d"] * 2


async def test_a_known_host_key_is_checked(server: SshServer, tmp_path: Path) -> None:
    files = {"mailu.env": "API=true\n"}
    with running_sink() as (_, port):
        deploy = dict(submission=("127.0.0.1", port), ready_seconds=5, timeout=5)
        known = server.known_hosts_file(tmp_path)
        assert await mailu.deploy(server.target(known_hosts=known), files, **deploy) == (
            server.fingerprint
        )

        impostor = server.known_hosts_file(tmp_path, asyncssh.generate_private_key("ssh-ed25519"))
        with pytest.raises(MailuError, match="host key"):
            await mailu.deploy(server.target(known_hosts=impostor), files, **deploy)


async def test_a_failing_compose_command_fails_with_its_status_and_last_error_line(
    server: SshServer,
) -> None:
    server.compose_failure = Failure(1, "pulling smtp\nError: no space left on device\n")

    with pytest.raises(MailuError) as raised:
        await mailu.deploy(
            server.target(),
            {"mailu.env": "API=true\n"},
            submission=("127.0.0.1", free_port()),
            ready_seconds=5,
            timeout=5,
        )

    assert "exited with status 1: Error: no space left on device" in raised.value.reason


async def test_a_submission_port_that_never_answers_fails_after_ready_seconds(
    server: SshServer,
) -> None:
    port = free_port()
    with pytest.raises(MailuError, match=f"port {port} did not answer within 0.3 s"):
        await mailu.deploy(
            server.target(),
            {"mailu.env": "API=true\n"},
            submission=("127.0.0.1", port),
            ready_seconds=0.3,
            timeout=5,
        )
    assert server.commands == ["cd /opt/mailu && docker compose up -d"]


async def test_a_key_the_server_does_not_know_is_refused(server: SshServer, tmp_path: Path) -> None:
    with pytest.raises(MailuError, match="login refused"):
        await mailu.deploy(
            server.target(client_key=other_key_file(tmp_path)),
            {"mailu.env": "API=true\n"},
            submission=("127.0.0.1", free_port()),
            ready_seconds=1,
            timeout=5,
        )
    assert server.writes == [] and server.commands == []


async def test_no_ssh_server_is_a_refused_connection(tmp_path: Path) -> None:
    target = mailu.SshTarget("127.0.0.1", free_port(), "root", None, None)

    with pytest.raises(MailuError, match="connection refused"):
        await mailu.deploy(
            target, {}, submission=("127.0.0.1", free_port()), ready_seconds=1, timeout=2
        )


# --- the admin API ---------------------------------------------------------------------------


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminClient, FakeMailu]]:
    async with running_mailu() as (url, fake), AdminClient(url, API_TOKEN, timeout=5) as client:
        yield client, fake


async def test_a_domain_and_a_user_are_created_with_its_password(
    admin: tuple[AdminClient, FakeMailu],
) -> None:
    client, fake = admin

    await client.ensure_domain("acme-mail.com")
    await client.ensure_domain("acme-mail.com")  # exists already: fine
    await client.ensure_user("alice@acme-mail.com", "correct horse")

    assert fake.domains == {"acme-mail.com"}
    assert fake.can_log_in("alice@acme-mail.com", "correct horse")
    assert [(r.method, r.path, r.authorization, r.body) for r in fake.requests][-1] == (
        "POST",
        "/api/v1/user",
        API_TOKEN,
        {"email": "alice@acme-mail.com", "raw_password": "correct horse"},
    )


async def test_ensuring_a_user_twice_sets_the_latest_password(
    admin: tuple[AdminClient, FakeMailu],
) -> None:
    client, fake = admin
    await client.ensure_domain("acme-mail.com")

    await client.ensure_user("bob@acme-mail.com", "first")
    await client.ensure_user("bob@acme-mail.com", "second")
    await client.ensure_user("bob@acme-mail.com", "second")

    assert fake.passwords == {"bob@acme-mail.com": "second"}
    assert [(r.method, r.path) for r in fake.requests[-2:]] == [
        ("POST", "/api/v1/user"),
        ("PATCH", "/api/v1/user/bob@acme-mail.com"),
    ]


async def test_deleting_a_user_twice_is_fine(admin: tuple[AdminClient, FakeMailu]) -> None:
    client, fake = admin
    await client.ensure_domain("acme-mail.com")
    await client.ensure_user("carol@acme-mail.com", "pw")

    await client.delete_user("carol@acme-mail.com")
    await client.delete_user("carol@acme-mail.com")

    assert fake.passwords == {}


async def test_a_user_of_an_unknown_domain_fails_with_the_apis_message(
    admin: tuple[AdminClient, FakeMailu],
) -> None:
    client, _ = admin

    with pytest.raises(MailuError, match=r"404: Domain nowhere\.test does not exist"):
        await client.ensure_user("dan@nowhere.test", "pw")


async def test_a_wrong_token_fails_with_the_apis_message() -> None:
    async with running_mailu() as (url, _), AdminClient(url, "wrong", timeout=5) as client:
        with pytest.raises(MailuError, match="403: Invalid API token"):
            await client.ensure_domain("acme-mail.com")


async def test_an_admin_api_that_does_not_answer_fails_with_a_reason() -> None:
    async with httpx.AsyncClient() as http:
        client = AdminClient(f"http://127.0.0.1:{free_port()}", API_TOKEN, client=http)
        with pytest.raises(MailuError, match="no answer to POST /domain"):
            await client.ensure_domain("acme-mail.com")
        await client.aclose()
        assert not http.is_closed  # a client passed in stays its owner's
