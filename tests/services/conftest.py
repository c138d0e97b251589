"""The services' end-to-end tests borrow the queue's real worker and queuer fixtures; the reply
tests read mail from a real IMAP server (dovecot), the deliverability tests resolve through a
real DNS server on loopback, each started once for the session. `redis` is a client of the
session's Redis."""

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from penguinmails.settings import Settings
from tests.dns_server import DnsServer
from tests.imap import Dovecot, start_dovecot
from tests.jobs.conftest import effects, queue_settings, run_queuer, start_worker  # noqa: F401


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dovecot_tls() -> Iterator[Dovecot]:
    server = start_dovecot(tls=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def resolving(settings: Settings, dns_server: DnsServer) -> Settings:
    """Settings that resolve through the loopback DNS server, a lookup given up after 1 s."""
    return settings.model_copy(
        update={"dns_nameservers": dns_server.nameservers, "dns_timeout_seconds": 1.0}
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()
