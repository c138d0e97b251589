"""The services' end-to-end tests borrow the queue's real worker and queuer fixtures; the reply
tests read mail from a real IMAP server (dovecot) started once for the session."""

from collections.abc import Iterator

import pytest

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
