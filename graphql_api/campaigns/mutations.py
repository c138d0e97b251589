"""createTemplate, createCampaign, importLeads, launchCampaign, pauseCampaign, resumeCampaign."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.campaigns.types import (
    Campaign,
    CampaignInput,
    CampaignPayload,
    ImportResult,
    InvalidRow,
    Template,
    TemplatePayload,
)
from graphql_api.errors import user_errors
from graphql_api.ids import decode_id
from graphql_api.input_limits import Name, OptionalBody, Subject
from graphql_api.permissions import IsMember, allow
from services import campaigns, leads, live, saved_templates
from services.errors import DomainError

# A file of bad rows would otherwise make a response of millions of entries; the first thousand
# say what is wrong with the file.
MAX_INVALID_ROWS = 1000


@strawberry.type
class CampaignsMutation:
    @strawberry.mutation(extensions=allow(IsMember))
    async def create_template(
        self,
        info: Info,
        name: Name,
        subject: Subject,
        html: OptionalBody = None,
        text: OptionalBody = None,
    ) -> TemplatePayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await saved_templates.create_template(
                    session, access.tenant_id, name, subject, html, text
                )
        except DomainError as e:
            return TemplatePayload(errors=user_errors(e))
        return TemplatePayload(template=Template.from_row(row))

    @strawberry.mutation(extensions=allow(IsMember))
    async def create_campaign(self, info: Info, input: CampaignInput) -> CampaignPayload:
        access = await info.context.require_access()
        try:
            spec = _campaign_spec(input)
            async with info.context.tenant_session() as session:
                row = await campaigns.create_campaign(session, access.tenant_id, spec)
        except DomainError as e:
            return CampaignPayload(errors=user_errors(e))
        return CampaignPayload(campaign=Campaign.from_row(row))

    @strawberry.mutation(extensions=allow(IsMember))
    async def import_leads(
        self,
        info: Info,
        campaign_id: strawberry.ID,
        csv: str,
        check_domains: bool | None = False,
    ) -> ImportResult:
        try:
            async with info.context.tenant_session() as session:
                report = await leads.import_leads(
                    session,
                    info.context.settings,
                    decode_id(campaign_id, "Campaign", "campaignId"),
                    csv,
                    check_domains=bool(check_domains),
                    redis=info.context.redis,
                )
        except DomainError as e:
            return ImportResult(errors=user_errors(e))
        return ImportResult(
            imported=report.imported,
            duplicates=report.duplicates,
            suppressed=report.suppressed,
            invalid=[
                InvalidRow(row=i.row, reason=i.reason) for i in report.invalid[:MAX_INVALID_ROWS]
            ],
        )

    @strawberry.mutation(extensions=allow(IsMember))
    async def launch_campaign(self, info: Info, id: strawberry.ID) -> CampaignPayload:
        return await _transition(info, id, campaigns.launch, await _launcher(info))

    @strawberry.mutation(extensions=allow(IsMember))
    async def pause_campaign(self, info: Info, id: strawberry.ID) -> CampaignPayload:
        return await _transition(info, id, campaigns.pause)

    @strawberry.mutation(extensions=allow(IsMember))
    async def resume_campaign(self, info: Info, id: strawberry.ID) -> CampaignPayload:
        return await _transition(info, id, campaigns.resume, await _launcher(info))


async def _launcher(info: Info) -> campaigns.Launcher:
    access = await info.context.require_access()
    return campaigns.Launcher(access.user_id, info.context.settings.require_verified_email)


async def _transition(info: Info, id: strawberry.ID, action, *args) -> CampaignPayload:
    try:
        async with info.context.tenant_session() as session:
            row = await action(session, decode_id(id, "Campaign"), *args)
    except DomainError as e:
        return CampaignPayload(errors=user_errors(e))
    await live.publish(info.context.redis, [live.Change(row.tenant_id, row.id)])  # committed
    return CampaignPayload(campaign=Campaign.from_row(row))


def _campaign_spec(input: CampaignInput) -> campaigns.CampaignSpec:
    window = input.window
    return campaigns.CampaignSpec(
        name=input.name,
        account_ids=[decode_id(a, "EmailAccount", "input.accountIds") for a in input.account_ids],
        steps=[
            campaigns.StepSpec(
                delay_days=s.delay_days,
                subject=s.subject,
                html=s.html,
                text=s.text,
                template_id=decode_id(s.template_id, "Template", f"input.steps.{i}.templateId")
                if s.template_id
                else None,
            )
            for i, s in enumerate(input.steps)
        ],
        window=campaigns.WindowSpec(
            timezone=window.timezone,
            days=list(window.days),
            start_hour=window.start_hour,
            end_hour=window.end_hour,
        )
        if window
        else None,
        daily_limit=input.daily_limit,
    )
