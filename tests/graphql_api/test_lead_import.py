"""importLeads over HTTP with its domain check: `checkDomains: true` reports the rows whose
domain accepts no mail as invalid rows; without it (the default) no domain is looked up. The API
resolves through a real authoritative DNS server on loopback (tests/dns_server.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from graphql_api.ids import encode_id, parse_id
from models.sessions import Database
from penguinmails.settings import Settings
from tests.dns_server import DnsServer
from tests.factories import create_row, table
from tests.graphql_api.conftest import Account, Api, serve, sign_up
from tests.graphql_api.flows import IMPORT, call

IMPORT_CHECKED = """mutation($campaignId: ID!, $csv: String!, $checkDomains: Boolean) {
  importLeads(campaignId: $campaignId, csv: $csv, checkDomains: $checkDomains) {
    imported duplicates suppressed invalid { row reason } errors { code field message } } }"""


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def resolving_api(settings: Settings, dns_server: DnsServer) -> AsyncIterator[Api]:
    resolving = settings.model_copy(
        update={"dns_nameservers": dns_server.nameservers, "dns_timeout_seconds": 1.0}
    )
    async for api in serve(resolving):
        yield api


async def _campaign(db: Database, account: Account) -> str:
    async with db.system_session() as s:
        campaign = await create_row(s, table("app.campaigns"), parse_id(account.tenant)[1])
    return encode_id("Campaign", campaign["id"])


def _domain() -> str:
    return f"g{uuid.uuid4().hex[:10]}.example"


async def test_checking_domains_reports_the_rows_whose_domain_accepts_no_mail_as_invalid(
    resolving_api: Api, dns_server: DnsServer, db: Database
) -> None:
    account = await sign_up(resolving_api)
    mx, missing = _domain(), _domain()
    dns_server.zone.add(mx, "MX", (10, f"mx.{mx}"))
    csv = f"email\nada@{mx}\nbob@{missing}\n"

    imported = await call(
        resolving_api,
        account,
        IMPORT_CHECKED,
        {"campaignId": await _campaign(db, account), "csv": csv, "checkDomains": True},
        "importLeads",
    )

    assert imported == {
        "imported": 1,
        "duplicates": 0,
        "suppressed": 0,
        "invalid": [
            {
                "row": 2,
                "reason": f"the domain {missing} accepts no mail "
                "(no MX or address record, or a null MX)",
            }
        ],
        "errors": [],
    }


async def test_without_check_domains_no_domain_is_looked_up(
    resolving_api: Api, dns_server: DnsServer, db: Database
) -> None:
    account = await sign_up(resolving_api)
    missing = _domain()
    csv = f"email\nada@{missing}\n"

    imported = await call(
        resolving_api, account, IMPORT, {"campaignId": await _campaign(db, account), "csv": csv},
        "importLeads",
    )  # fmt: skip

    assert (imported["imported"], imported["invalid"]) == (1, [])
    assert not any(missing in name for name, _ in dns_server.zone.queries)
