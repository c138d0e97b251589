"""Lead import: CSV text into a campaign's leads, through import_leads in a tenant session."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError

from models.campaigns import Campaign, CampaignStatus, Lead, Suppression, SuppressionReason
from models.queue import Job
from models.sessions import Database
from penguinmails.settings import Settings
from services import statistics
from services.errors import DomainError
from services.leads import ImportReport, InvalidRow, import_leads
from tests.dns_server import DnsServer
from tests.factories import create_row, create_tenant, table


async def _tenant_with_campaign(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        campaign = await create_row(s, table("app.campaigns"), tenant)
    return tenant, campaign["id"]


async def _import(
    db: Database,
    settings: Settings,
    tenant: uuid.UUID,
    campaign: uuid.UUID,
    csv_text: str,
    **options,
) -> ImportReport:
    async with db.tenant_session(tenant) as s:
        return await import_leads(s, settings, campaign, csv_text, **options)


async def _refused(
    db: Database, settings: Settings, tenant: uuid.UUID, campaign: uuid.UUID, csv_text: str
) -> DomainError:
    """The error import_leads raises, caught the way a mutation does: inside the session, which
    then commits whatever was left written."""
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as raised:
            await import_leads(s, settings, campaign, csv_text)
    return raised.value


async def _leads(db: Database, tenant: uuid.UUID, campaign: uuid.UUID) -> dict[str, Lead]:
    async with db.tenant_session(tenant) as s:
        leads = await s.scalars(select(Lead).where(Lead.campaign_id == campaign))
        return {lead.email: lead for lead in leads}


async def test_valid_rows_are_imported_with_known_columns_mapped_and_the_rest_in_fields(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    csv_text = (
        "\ufeffE-Mail, First Name ,surname,Organisation,Phone,LinkedIn URL\r\n"
        " Ada@Example.COM ,Ada,Lovelace,Analytical Engines,+44 20 7946 0000,\r\n"
        'grace@example.com,Grace,Hopper,"COBOL, Inc",,https://linkedin.example/grace\r\n'
        "linus@example.org,,,,,\r\n"
    )

    report = await _import(db, settings, tenant, campaign, csv_text)

    assert report == ImportReport(imported=3, duplicates=0, suppressed=0, invalid=[])
    leads = await _leads(db, tenant, campaign)
    assert {
        email: (lead.tenant_id, lead.first_name, lead.last_name, lead.company, lead.fields)
        for email, lead in leads.items()
    } == {
        "ada@example.com": (
            tenant, "Ada", "Lovelace", "Analytical Engines", {"Phone": "+44 20 7946 0000"}
        ),
        "grace@example.com": (
            tenant, "Grace", "Hopper", "COBOL, Inc",
            {"LinkedIn URL": "https://linkedin.example/grace"},
        ),
        "linus@example.org": (tenant, None, None, None, {}),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("email", "first_name", "last_name", "company"),
    [
        ("email", "first name", "last name", "company"),
        ("EMAIL_ADDRESS", "FirstName", "LastName", "Company Name"),
        ("Email Address", "first_name", "Family Name", "organization"),
        ("e-mail", "Given Name", "last-name", "Organisation"),
    ],
)
async def test_header_names_are_recognised_whatever_their_case_spaces_underscores_or_hyphens(
    db: Database, settings: Settings, email: str, first_name: str, last_name: str, company: str
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    csv_text = f"{email},{first_name},{last_name},{company}\nada@example.com,Ada,Lovelace,AE\n"

    await _import(db, settings, tenant, campaign, csv_text)

    lead = (await _leads(db, tenant, campaign))["ada@example.com"]
    assert (lead.first_name, lead.last_name, lead.company, lead.fields) == (
        "Ada", "Lovelace", "AE", {}
    )  # fmt: skip


async def test_invalid_rows_are_reported_with_their_row_numbers_and_reasons(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    csv_text = "\n".join(
        [
            "email,first name,company,notes",
            "not-an-address,A,,",  # row 1
            "ok1@example.com,B,,",
            ',C,,"spans',  # row 3, one record over two lines
            'two lines"',
            "",  # row 4: blank, skipped
            ",,,",  # row 5: no values at all, skipped
            "ok2@example.com,D,,",
            "someone@localhost,E,,",  # row 7
            f"long@example.com,{'x' * 201},,",  # row 8
            "shifted@example.com,F,Acme, Inc,note",  # row 9
            "ok3@example.com,G,,,",  # row 10: an empty extra cell is only a trailing comma
        ]
    )

    report = await _import(db, settings, tenant, campaign, csv_text)

    assert report.invalid == [
        InvalidRow(1, "An email address must have an @-sign."),
        InvalidRow(3, "missing email"),
        InvalidRow(7, "The part after the @-sign is not valid. It should have a period."),
        InvalidRow(8, "first name is longer than 200 characters"),
        InvalidRow(9, "5 values but the header has 4 columns"),
    ]
    assert report.imported == 3
    assert set(await _leads(db, tenant, campaign)) == {
        "ok1@example.com", "ok2@example.com", "ok3@example.com"
    }  # fmt: skip


async def test_duplicates_within_the_file_and_against_the_campaign_are_counted_not_inserted(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    await _import(db, settings, tenant, campaign, "email,first name\nada@example.com,Ada\n")
    csv_text = (
        "email,first name\n"
        "ADA@example.com,Second Ada\n"  # already a lead of the campaign
        "grace@example.com,Grace\n"
        "Grace@Example.com,Grace again\n"  # earlier in the file
        "grace@example.com,Grace thrice\n"
    )

    report = await _import(db, settings, tenant, campaign, csv_text)

    assert report == ImportReport(imported=1, duplicates=3, suppressed=0, invalid=[])
    leads = await _leads(db, tenant, campaign)
    assert {email: lead.first_name for email, lead in leads.items()} == {
        "ada@example.com": "Ada", "grace@example.com": "Grace"
    }  # fmt: skip


async def test_the_same_address_in_another_campaign_is_not_a_duplicate(
    db: Database, settings: Settings
) -> None:
    tenant, first = await _tenant_with_campaign(db)
    async with db.system_session() as s:
        second = (await create_row(s, table("app.campaigns"), tenant))["id"]
    await _import(db, settings, tenant, first, "email\nada@example.com\n")

    report = await _import(db, settings, tenant, second, "email\nada@example.com\n")

    assert (report.imported, report.duplicates) == (1, 0)
    assert set(await _leads(db, tenant, second)) == {"ada@example.com"}


async def test_addresses_suppressed_for_the_tenant_are_skipped(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    async with db.system_session() as s:
        other_tenant = await create_tenant(s)
        await s.execute(
            insert(Suppression),
            [
                {"tenant_id": tenant, "email": "bounced@example.com",
                 "reason": SuppressionReason.HARD_BOUNCE},
                {"tenant_id": tenant, "email": "left@example.com",
                 "reason": SuppressionReason.UNSUBSCRIBE},
                {"tenant_id": other_tenant, "email": "ada@example.com",
                 "reason": SuppressionReason.COMPLAINT},
            ],
        )  # fmt: skip
    csv_text = "email\nBounced@Example.com\nada@example.com\nleft@example.com\n"

    report = await _import(db, settings, tenant, campaign, csv_text)

    assert report == ImportReport(imported=1, duplicates=0, suppressed=2, invalid=[])
    assert set(await _leads(db, tenant, campaign)) == {"ada@example.com"}


async def test_with_the_domain_check_rows_at_domains_that_accept_no_mail_are_invalid(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    zone = dns_server.zone
    mx, address_only, null_mx, missing, failing = (
        f"l{uuid.uuid4().hex[:10]}.example" for _ in range(5)
    )
    zone.add(mx, "MX", (10, f"mx.{mx}"))
    zone.add(address_only, "A", "192.0.2.1")
    zone.add(null_mx, "MX", (0, "."))
    zone.servfail.add(f"{failing}.")
    csv_text = "\n".join(
        [
            "email",
            f"ada@{mx}",
            f"bob@{missing}",  # row 2
            f"cy@{address_only}",
            f"dee@{null_mx}",  # row 4
            f"eve@{failing}",  # unknown: taken
            f"fay@{mx.upper()}",
            f"Gus@{missing.upper()}",  # row 7
            "ivy@under_score.example",  # row 8: invalid as written, never looked up
        ]
    )
    redis = Redis.from_url(resolving.redis_url)
    try:
        report = await _import(
            db, resolving, tenant, campaign, csv_text, check_domains=True, redis=redis
        )
    finally:
        zone.servfail.discard(f"{failing}.")
        await redis.aclose()

    no_mail = "the domain {} accepts no mail (no MX or address record, or a null MX)"
    assert report.invalid[:3] == [
        InvalidRow(2, no_mail.format(missing)),
        InvalidRow(4, no_mail.format(null_mx)),
        InvalidRow(7, no_mail.format(missing)),
    ]
    assert [row.row for row in report.invalid[3:]] == [8]
    assert (report.imported, report.unchecked_domains) == (4, 1)
    assert set(await _leads(db, tenant, campaign)) == {
        f"ada@{mx}", f"cy@{address_only}", f"eve@{failing}", f"fay@{mx}"
    }  # fmt: skip
    asked = [(name, type_) for name, type_ in zone.queries if name == f"{missing}."]
    assert sorted(asked) == [(f"{missing}.", t) for t in ("A", "AAAA", "MX")]  # once per domain
    assert not any("under_score" in name for name, _ in zone.queries)


async def test_without_the_domain_check_no_domain_is_looked_up(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    missing = f"l{uuid.uuid4().hex[:10]}.example"

    report = await _import(db, resolving, tenant, campaign, f"email\nada@{missing}\n")

    assert report == ImportReport(imported=1, duplicates=0, suppressed=0, invalid=[])
    assert not any(missing in name for name, _ in dns_server.zone.queries)


async def test_a_csv_over_the_size_limit_is_refused_and_nothing_is_written(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    csv_text = "email,company\nada@example.com,Zürich AG\n"  # 40 characters, 41 bytes
    small = settings.model_copy(update={"lead_import_max_bytes": 40})

    error = await _refused(db, small, tenant, campaign, csv_text)

    assert (error.code, error.field) == ("IMPORT_TOO_LARGE", "csv")
    assert "40-byte limit" in error.message
    assert await _leads(db, tenant, campaign) == {}


async def test_a_csv_over_the_row_limit_is_refused_and_nothing_is_written(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    three_rows = settings.model_copy(update={"lead_import_max_rows": 3})
    csv_text = "email\n" + "".join(f"lead{i}@example.com\n" for i in range(4))

    error = await _refused(db, three_rows, tenant, campaign, csv_text)

    assert (error.code, error.field) == ("IMPORT_TOO_MANY_ROWS", "csv")
    assert await _leads(db, tenant, campaign) == {}


async def test_rows_are_counted_as_records_so_values_spanning_lines_stay_within_the_row_limit(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    three_rows = settings.model_copy(update={"lead_import_max_rows": 3})
    csv_text = "email,notes\r\n" + "".join(
        f'lead{i}@example.com,"one\r\ntwo"\r\n' for i in range(3)
    )

    report = await _import(db, three_rows, tenant, campaign, csv_text)

    assert report.imported == 3
    assert (await _leads(db, tenant, campaign))["lead0@example.com"].fields == {
        "notes": "one\r\ntwo"
    }


@pytest.mark.parametrize(
    "csv_text",
    ["", "name,company\nAda,Analytical Engines\n", "\nemail\nada@example.com\n"],
    ids=["empty", "no-email-header", "blank-first-line"],
)
async def test_a_csv_without_an_email_column_is_refused_and_nothing_is_written(
    db: Database, settings: Settings, csv_text: str
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)

    error = await _refused(db, settings, tenant, campaign, csv_text)

    assert (error.code, error.field) == ("CSV_NO_EMAIL_COLUMN", "csv")
    assert await _leads(db, tenant, campaign) == {}


async def test_a_malformed_csv_is_refused_with_its_line_and_nothing_is_written_even_past_a_batch(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    good = "".join(f"lead{i}@example.com,ok\n" for i in range(12_000))  # two batches and more
    csv_text = "email,notes\n" + good + 'late@example.com,"never closed\n'

    error = await _refused(db, settings, tenant, campaign, csv_text)

    assert (error.code, error.field) == ("CSV_MALFORMED", "csv")
    assert error.message.startswith("line 12002: ")
    assert await _leads(db, tenant, campaign) == {}


async def test_a_nul_character_is_refused_as_malformed(db: Database, settings: Settings) -> None:
    tenant, campaign = await _tenant_with_campaign(db)

    error = await _refused(db, settings, tenant, campaign, "email,notes\nada@example.com,a\x00b\n")

    assert (error.code, error.message) == ("CSV_MALFORMED", "line 2: a NUL character")


async def test_another_tenants_campaign_is_not_found(db: Database, settings: Settings) -> None:
    _, campaign = await _tenant_with_campaign(db)
    intruder, _ = await _tenant_with_campaign(db)

    error = await _refused(db, settings, intruder, campaign, "email\nada@example.com\n")

    assert (error.code, error.field) == ("NOT_FOUND", "campaignId")
    async with db.system_session() as s:
        assert (await s.scalars(select(Lead).where(Lead.campaign_id == campaign))).all() == []


@pytest.mark.parametrize("status", [CampaignStatus.COMPLETED, CampaignStatus.CANCELLED])
async def test_a_completed_or_cancelled_campaign_takes_no_more_leads(
    db: Database, settings: Settings, status: CampaignStatus
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    async with db.system_session() as s:
        await s.execute(update(Campaign).where(Campaign.id == campaign).values(status=status))

    error = await _refused(db, settings, tenant, campaign, "email\nada@example.com\n")

    assert (error.code, error.field) == ("CAMPAIGN_CLOSED", "campaignId")
    assert await _leads(db, tenant, campaign) == {}


async def test_ten_thousand_rows_are_all_imported(db: Database, settings: Settings) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    csv_text = "email,first name,last name,company,city\n" + "".join(
        f"lead{i}@example.com,First{i},Last{i},Company {i % 97},City {i % 13}\n"
        for i in range(10_000)
    )

    report = await _import(db, settings, tenant, campaign, csv_text)

    assert report == ImportReport(imported=10_000, duplicates=0, suppressed=0, invalid=[])
    leads = await _leads(db, tenant, campaign)
    assert len(leads) == 10_000
    assert leads["lead9999@example.com"].fields == {"city": "City 2"}


async def test_a_bulk_import_asks_for_fresh_planner_statistics_and_a_small_one_does_not(
    db: Database, settings: Settings
) -> None:
    tenant, campaign = await _tenant_with_campaign(db)
    small = "email\n" + "".join(f"few{i}@example.com\n" for i in range(10))
    bulk = "email\n" + "".join(f"bulk{i}@example.com\n" for i in range(statistics.BULK_ROWS))

    await _import(db, settings, tenant, campaign, small)
    assert await _refresh_jobs(db, tenant) == []
    await _import(db, settings, tenant, campaign, bulk)
    assert await _refresh_jobs(db, tenant) == [{"table": "app.leads"}]

    await statistics.refresh(db, "app.leads")  # what the job does
    rows, estimate = await _rows_and_estimate(db)
    assert abs(estimate - rows) <= rows * 0.1, (rows, estimate)


async def test_statistics_are_refreshed_on_request_only_for_the_tables_named_in_the_function(
    db: Database,
) -> None:
    async with db.system_session() as s:
        with pytest.raises(DBAPIError, match="not refreshed on request"):
            await s.execute(text("SELECT app.refresh_statistics('app.users')"))


async def _refresh_jobs(db: Database, tenant: uuid.UUID) -> list[dict]:
    async with db.tenant_session(tenant, tier="queue") as s:
        return list(await s.scalars(select(Job.payload).where(Job.kind == statistics.REFRESH_KIND)))


async def _rows_and_estimate(db: Database) -> tuple[int, float]:
    """The rows of app.leads, and the planner's estimate of them (pg_class.reltuples)."""
    async with db.system_session() as s:
        rows = await s.scalar(text("SELECT count(*) FROM app.leads"))
        estimate = await s.scalar(
            text("SELECT reltuples FROM pg_class WHERE oid = 'app.leads'::regclass")
        )
    return rows, estimate


async def test_the_application_role_cannot_run_analyze_on_request(db: Database) -> None:
    tenant, _ = await _tenant_with_campaign(db)
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DBAPIError, match="permission denied"):
            await s.execute(text("SELECT app.refresh_statistics('app.leads')"))
