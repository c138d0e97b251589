"""Lead import: a CSV of leads into a campaign, each address validated (on request, its domain
too: does it accept mail?), deduplicated against the file and the campaign, checked against the
tenant's suppression list, and inserted in batches."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from asyncpg import Connection
from email_validator import EmailNotValidError, validate_email
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from models.campaigns import Campaign, CampaignStatus
from models.sessions import driver_connection
from models.sqlfiles import statement
from penguinmails.settings import Settings
from services import recipients, statistics
from services.dns import Resolver
from services.errors import DomainError

BATCH_ROWS = 5_000
NAME_MAX_CHARS = 200  # first_name, last_name and company are varchar(200)
CLOSED = (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)

# The lead's own columns by header name, written as `_header_key` writes it.
KNOWN_HEADERS = {
    "email": "email",
    "emailaddress": "email",
    "firstname": "first_name",
    "givenname": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "company": "company",
    "companyname": "company",
    "organization": "company",
    "organisation": "company",
}


@dataclass(frozen=True)
class InvalidRow:
    row: int  # 1-based number of the data row: the header is not counted
    reason: str


@dataclass
class ImportReport:
    """What became of each data row: exactly one of imported, duplicate, suppressed or invalid
    (rows whose cells are all empty, blank lines included, are skipped without a mention)."""

    imported: int = 0
    duplicates: int = 0  # seen earlier in the file, or already a lead of the campaign
    suppressed: int = 0
    invalid: list[InvalidRow] = field(default_factory=list)
    # With the domain check: domains the resolver could not answer for (SERVFAIL, timeout). Their
    # rows are imported: a failed lookup says nothing about the domain.
    unchecked_domains: int = 0


async def import_leads(
    session: AsyncSession,
    settings: Settings,
    campaign_id: uuid.UUID,
    csv_text: str,
    *,
    check_domains: bool = False,
    redis: Redis | None = None,
) -> ImportReport:
    """Import the leads of `csv_text` into a campaign of the session's tenant.

    The first record is the header. Rows are numbered from 1 for the record after it, counting
    records rather than lines (a quoted value spanning lines is one row) and counting blank
    lines, so row n is what a spreadsheet shows on line n + 1.

    With `check_domains`, a row whose domain accepts no mail (no MX and no address, or a null
    MX) is invalid. The file's distinct domains are looked up once, all together, before its
    rows are read (services/recipients.py, their answers kept in `redis`, which it needs).

    A broken rule for the whole file raises DomainError (IMPORT_TOO_LARGE, NOT_FOUND,
    CAMPAIGN_CLOSED, IMPORT_TOO_MANY_ROWS, CSV_NO_EMAIL_COLUMN, CSV_MALFORMED) and leaves nothing
    written. All but CSV_MALFORMED are raised before any insert; a malformed record is found
    while streaming, possibly after batches went in, which the savepoint around the inserts
    then takes back, so that holds even for a caller that catches the error and commits.
    """
    _check_text(csv_text, settings.lead_import_max_bytes)
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        raise DomainError("NOT_FOUND", "campaign not found", field="campaignId")
    if campaign.status in CLOSED:
        raise DomainError(
            "CAMPAIGN_CLOSED",
            f"the campaign is {campaign.status.value.lower()}: it takes no more leads",
            field="campaignId",
        )
    await asyncio.to_thread(_check_row_count, csv_text, settings.lead_import_max_rows)
    records = _records(csv_text)
    columns = _columns(next(records, None))
    report = ImportReport()
    no_mail: set[str] = set()
    if check_domains:
        no_mail, report.unchecked_domains = await _domains_without_mail(
            settings, redis, csv_text, columns.email
        )
    leads = LeadFile(records, columns, no_mail)

    conn = await session.connection()
    raw = await driver_connection(session)
    # The connection's own savepoint, begun at once (the session's would wait for an ORM query).
    async with conn.begin_nested():
        await _insert_batches(raw, campaign, leads.batches(), report)
    report.duplicates += leads.repeated
    report.invalid = leads.invalid
    if report.imported >= statistics.BULK_ROWS:
        await statistics.refresh_later(session, campaign.tenant_id, "app.leads")
    return report


def _check_text(csv_text: str, max_bytes: int) -> None:
    # A character is at least one byte: only text near the limit and not ASCII is encoded.
    size = len(csv_text)
    if size <= max_bytes and not csv_text.isascii():
        try:
            size = len(csv_text.encode())
        except UnicodeEncodeError as e:  # a lone surrogate, e.g. from a JSON "\ud800"
            raise _malformed(csv_text, e.start, "not valid Unicode text") from e
    if size > max_bytes:
        raise DomainError(
            "IMPORT_TOO_LARGE",
            f"the CSV is over the {max_bytes:,}-byte limit for one import",
            field="csv",
        )
    if (nul := csv_text.find("\x00")) >= 0:  # PostgreSQL text cannot hold one
        raise _malformed(csv_text, nul, "a NUL character")


def _malformed(csv_text: str, index: int, what: str) -> DomainError:
    line = csv_text.count("\n", 0, index) + 1
    return DomainError("CSV_MALFORMED", f"line {line}: {what}", field="csv")


def _check_row_count(csv_text: str, max_rows: int) -> None:
    # Every data row takes at least one line after the header's, so counting line breaks (at C
    # speed) settles most files; only one that may be over the limit is parsed to count.
    line_breaks = csv_text.count("\n") + csv_text.count("\r") - csv_text.count("\r\n")
    if line_breaks <= max_rows:
        return
    data_rows = sum(1 for _ in _records(csv_text)) - 1
    if data_rows > max_rows:
        raise DomainError(
            "IMPORT_TOO_MANY_ROWS",
            f"the CSV has {data_rows:,} rows; one import takes at most {max_rows:,}",
            field="csv",
        )


def _records(csv_text: str) -> Iterator[list[str]]:
    """The CSV's records, read as they are needed. Strict: an unclosed quote is an error rather
    than a value swallowing the rest of the file."""
    reader = csv.reader(io.StringIO(csv_text, newline=""), strict=True)
    try:
        yield from reader
    except csv.Error as e:
        raise DomainError("CSV_MALFORMED", f"line {reader.line_num}: {e}", field="csv") from e


@dataclass(frozen=True)
class Columns:
    """Where a lead's values are in a record (None: the file has no such column)."""

    width: int
    email: int
    first_name: int | None
    last_name: int | None
    company: int | None
    custom: tuple[tuple[int, str], ...]  # (position, header) of every other named column


def _columns(header: list[str] | None) -> Columns:
    if not header:
        raise DomainError(
            "CSV_NO_EMAIL_COLUMN",
            "the CSV is empty: its first line must be a header naming an email column",
            field="csv",
        )
    known: dict[str, int] = {}
    custom: list[tuple[int, str]] = []
    for position, cell in enumerate(header):
        name = cell.removeprefix("\ufeff").strip()  # spreadsheets start UTF-8 files with a BOM
        column = KNOWN_HEADERS.get(_header_key(name))
        if column and column not in known:
            known[column] = position
        elif name:
            custom.append((position, name))
    if "email" not in known:
        raise DomainError(
            "CSV_NO_EMAIL_COLUMN",
            "the header has no email column (e.g. 'email', 'e-mail' or 'email address')",
            field="csv",
        )
    return Columns(
        width=len(header),
        email=known["email"],
        first_name=known.get("first_name"),
        last_name=known.get("last_name"),
        company=known.get("company"),
        custom=tuple(custom),
    )


def _header_key(name: str) -> str:
    return "".join(name.split()).replace("_", "").replace("-", "").lower()


async def _domains_without_mail(
    settings: Settings, redis: Redis | None, csv_text: str, email_at: int
) -> tuple[set[str], int]:
    """The file's domains that accept no mail, and how many the resolver could not answer for
    (SERVFAIL, timeout): those are not held against their rows."""
    if redis is None:
        raise TypeError("the domain check keeps what DNS answered in Redis: pass redis")
    domains = await asyncio.to_thread(_domains, csv_text, email_at)
    found = await recipients.mail_hosts(
        Resolver(settings), redis, domains, settings.recipient_domain_cache_seconds
    )
    no_mail = {domain for domain, mail_domain in found.items() if mail_domain.accepts_no_mail}
    return no_mail, sum(mail_domain.error is not None for mail_domain in found.values())


def _domains(csv_text: str, email_at: int) -> set[str]:
    """The distinct domains of the file's addresses, those that are valid, as validation
    writes them in the address it keeps."""
    written: set[str] = set()
    for record in islice(_records(csv_text), 1, None):
        if len(record) > email_at:
            _, at, domain = record[email_at].rpartition("@")
            if at:
                written.add(domain.strip())
    domains: set[str] = set()
    for name in written:
        with contextlib.suppress(EmailNotValidError):  # its rows are invalid anyway
            valid = validate_email(f"postmaster@{name}", check_deliverability=False)
            domains.add(valid.domain.lower())
    return domains


@dataclass
class Batch:
    """Valid leads whose addresses are new to the file, column by column as insert_leads takes
    them."""

    emails: list[str] = field(default_factory=list)
    first_names: list[str | None] = field(default_factory=list)
    last_names: list[str | None] = field(default_factory=list)
    companies: list[str | None] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)  # JSON objects

    def columns(self) -> tuple[list, ...]:
        return (self.emails, self.first_names, self.last_names, self.companies, self.fields)

    def without(self, emails: set[str]) -> Batch:
        kept = [i for i, email in enumerate(self.emails) if email not in emails]
        return Batch(*([column[i] for i in kept] for column in self.columns()))


class LeadFile:
    """The data rows of a CSV, turned into batches of leads as they are read; rows that are
    invalid (an address at one of the `no_mail` domains too) or repeat an earlier address are
    noted here instead."""

    def __init__(self, records: Iterator[list[str]], columns: Columns, no_mail: set[str]) -> None:
        self.records = records
        self.columns = columns
        self.no_mail = no_mail
        self.invalid: list[InvalidRow] = []
        self.repeated = 0

    def batches(self) -> Iterator[Batch]:
        # The import's cost is here, per record: keep every step one that each record needs.
        c = self.columns
        width, email_at, custom = c.width, c.email, c.custom
        names_at = (c.first_name, c.last_name, c.company)
        no_mail = self.no_mail
        seen: set[str] = set()
        batch = Batch()
        for row, record in enumerate(self.records, start=1):
            if len(record) != width and (record := self._fit(row, record)) is None:
                continue
            address = record[email_at].strip()
            if not address:
                if any(cell.strip() for cell in record):
                    self.invalid.append(InvalidRow(row, "missing email"))
                continue
            try:
                email = validate_email(address, check_deliverability=False).normalized.lower()
            except EmailNotValidError as e:
                self.invalid.append(InvalidRow(row, str(e)))
                continue
            if no_mail and (domain := email.rpartition("@")[2]) in no_mail:
                self.invalid.append(InvalidRow(row, _accepts_no_mail(domain)))
                continue
            if email in seen:
                self.repeated += 1
                continue
            first, last, company = ("" if i is None else record[i].strip() for i in names_at)
            if max(len(first), len(last), len(company)) > NAME_MAX_CHARS:
                self.invalid.append(InvalidRow(row, _too_long(first, last, company)))
                continue
            values = {name: value for i, name in custom if (value := record[i].strip())}
            seen.add(email)
            batch.emails.append(email)
            batch.first_names.append(first or None)
            batch.last_names.append(last or None)
            batch.companies.append(company or None)
            batch.fields.append(json.dumps(values) if values else "{}")
            if len(batch.emails) == BATCH_ROWS:
                yield batch
                batch = Batch()
        if batch.emails:
            yield batch

    def _fit(self, row: int, record: list[str]) -> list[str] | None:
        """A short record gets empty cells. A long one loses its extra cells only if they are
        empty (a trailing comma): values past the header usually mean an unquoted comma shifted
        the row, so it is invalid."""
        width = self.columns.width
        if len(record) < width:
            return record + [""] * (width - len(record))
        if any(cell.strip() for cell in record[width:]):
            self.invalid.append(
                InvalidRow(row, f"{len(record)} values but the header has {width} columns")
            )
            return None
        return record[:width]


def _accepts_no_mail(domain: str) -> str:
    return f"the domain {domain} accepts no mail (no MX or address record, or a null MX)"


def _too_long(first: str, last: str, company: str) -> str:
    label = next(
        label
        for label, value in (("first name", first), ("last name", last), ("company", company))
        if len(value) > NAME_MAX_CHARS
    )
    return f"{label} is longer than {NAME_MAX_CHARS} characters"


async def _insert_batches(
    conn: Connection, campaign: Campaign, batches: Iterator[Batch], report: ImportReport
) -> None:
    """Insert each batch while a worker thread reads the next: reading is CPU work that would
    stall the event loop, and this way it overlaps the database's work on the batch before."""
    reading = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    try:
        while (batch := await reading) is not None:
            reading = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            await _insert(conn, campaign, batch, report)
    finally:
        # A failed insert leaves a read in flight: let it finish rather than orphan it.
        await asyncio.gather(reading, return_exceptions=True)


async def _insert(conn: Connection, campaign: Campaign, batch: Batch, report: ImportReport) -> None:
    suppressed = {
        r["email"]
        for r in await conn.fetch(statement("leads.sql", "suppressed_emails"), batch.emails)
    }
    if suppressed:
        report.suppressed += len(suppressed)
        batch = batch.without(suppressed)
        if not batch.emails:
            return
    inserted = await conn.fetch(
        statement("leads.sql", "insert_leads"),
        campaign.tenant_id,
        campaign.id,
        *batch.columns(),
    )
    report.imported += len(inserted)
    report.duplicates += len(batch.emails) - len(inserted)
