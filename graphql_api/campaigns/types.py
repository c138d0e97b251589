"""Template, Campaign with its steps, window, accounts, leads and stats; lead import results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry
from sqlalchemy import select
from strawberry.scalars import JSON
from strawberry.types import Info

from graphql_api.errors import UserError
from graphql_api.ids import encode_id
from graphql_api.input_limits import (
    BODY,
    NAME,
    SHORT,
    SUBJECT,
    Name,
    OptionalBody,
    Short,
    Subject,
    described,
)
from graphql_api.node import Node
from graphql_api.pagination import Connection, paginate
from models import campaigns

CampaignStatus = strawberry.enum(campaigns.CampaignStatus, name="CampaignStatus")
LeadStatus = strawberry.enum(campaigns.LeadStatus, name="LeadStatus")


@strawberry.type
class Template(Node):
    id: strawberry.ID
    name: str
    subject: str
    html: str | None
    text: str | None
    variables: list[str]

    @classmethod
    def from_row(cls, row: campaigns.Template) -> Template:
        return cls(
            id=encode_id("Template", row.id),
            name=row.name,
            subject=row.subject,
            html=row.html,
            text=row.text,
            variables=list(row.variables),
        )


@strawberry.type
class SequenceStep:
    position: int
    delay_days: int
    subject: str
    html: str | None
    text: str | None
    row: strawberry.Private[campaigns.CampaignSequenceStep]

    @classmethod
    def from_row(cls, row: campaigns.CampaignSequenceStep) -> SequenceStep:
        return cls(
            position=row.position,
            delay_days=row.delay_days,
            subject=row.subject,
            html=row.html,
            text=row.text,
            row=row,
        )

    @strawberry.field
    async def template(self, info: Info) -> Template | None:
        if self.row.template_id is None:
            return None
        return await info.context.loaders.template.load(self.row.template_id)


@strawberry.type
class SendingWindow:
    timezone: str
    days: list[int]
    start_hour: int
    end_hour: int


@strawberry.type
class CampaignStats:
    sent: int
    delivered: int
    opened: int
    clicked: int
    replied: int
    bounced: int
    complained: int
    unsubscribed: int
    open_rate: float
    click_rate: float
    reply_rate: float
    bounce_rate: float

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> CampaignStats:
        """The counts with their rates, worked out here once rather than by resolvers: a page of
        100 campaigns would run 400 of them, each dearer than reading a plain field."""
        return cls(
            **counts,
            open_rate=_rate(counts["opened"], counts["delivered"]),
            click_rate=_rate(counts["clicked"], counts["delivered"]),
            reply_rate=_rate(counts["replied"], counts["delivered"]),
            bounce_rate=_rate(counts["bounced"], counts["sent"]),
        )


def _rate(count: int, out_of: int) -> float:
    return count / out_of if out_of > 0 else 0.0


@strawberry.type
class Lead(Node):
    id: strawberry.ID
    email: str
    first_name: str | None
    last_name: str | None
    company: str | None
    fields: JSON
    status: LeadStatus
    current_step: int

    @classmethod
    def from_row(cls, row: campaigns.Lead) -> Lead:
        return cls(
            id=encode_id("Lead", row.id),
            email=row.email,
            first_name=row.first_name,
            last_name=row.last_name,
            company=row.company,
            fields=row.fields,
            status=row.status,
            current_step=row.current_step,
        )


@strawberry.type
class Campaign(Node):
    id: strawberry.ID
    name: str
    status: CampaignStatus
    created_at: datetime
    window: SendingWindow
    row: strawberry.Private[campaigns.Campaign]
    # Set by a resolver that read the stats of a whole page with the page (`campaigns`).
    page_stats: strawberry.Private[CampaignStats | None] = None

    @classmethod
    def from_row(cls, row: campaigns.Campaign) -> Campaign:
        return cls(
            id=encode_id("Campaign", row.id),
            name=row.name,
            status=row.status,
            created_at=row.created_at,
            window=SendingWindow(
                timezone=row.timezone,
                days=list(row.window_days),
                start_hour=row.start_hour,
                end_hour=row.end_hour,
            ),
            row=row,
        )

    @strawberry.field
    async def steps(self, info: Info) -> list[SequenceStep]:
        return await info.context.loaders.steps_by_campaign.load(self.row.id)

    @strawberry.field
    async def accounts(
        self, info: Info
    ) -> list[Annotated[EmailAccount, strawberry.lazy("graphql_api.infrastructure.types")]]:
        return await info.context.loaders.accounts_by_campaign.load(self.row.id)

    @strawberry.field
    def stats(self, info: Info) -> CampaignStats:
        """Not a coroutine: a page's stats are already here, and 100 coroutines (tasks, each
        awaited by the executor) cost more than the query. Elsewhere, the DataLoader's future,
        which the executor awaits."""
        if self.page_stats is not None:
            return self.page_stats
        return info.context.loaders.stats_by_campaign.load(self.row.id)

    @strawberry.field
    async def leads(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: LeadStatus | None = None,
    ) -> Connection[Lead]:
        stmt = select(campaigns.Lead).where(campaigns.Lead.campaign_id == self.row.id)
        if status is not None:
            stmt = stmt.where(campaigns.Lead.status == status)
        async with info.context.tenant_session() as session:
            return await paginate(
                session,
                stmt,
                keys=(campaigns.Lead.id,),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=Lead.from_row,
                descending=False,
            )


@strawberry.type
class InvalidRow:
    row: int
    reason: str


@strawberry.type
class ImportResult:
    imported: int = 0
    duplicates: int = 0
    suppressed: int = 0
    invalid: list[InvalidRow] = strawberry.field(default_factory=list)
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class TemplatePayload:
    template: Template | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CampaignPayload:
    campaign: Campaign | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class StepInput:
    delay_days: int
    subject: Subject = described(SUBJECT)
    html: OptionalBody = described(BODY, default=None)
    text: OptionalBody = described(BODY, default=None)
    template_id: strawberry.ID | None = None


@strawberry.input
class WindowInput:
    timezone: Short = described(SHORT)
    days: list[int]
    start_hour: int
    end_hour: int


@strawberry.input
class CampaignInput:
    name: Name = described(NAME)
    account_ids: list[strawberry.ID]
    steps: list[StepInput]
    window: WindowInput | None = None
    daily_limit: int | None = None


from graphql_api.infrastructure.types import EmailAccount  # noqa: E402
