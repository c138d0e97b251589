"""DataLoaders: every nested object of a page is fetched in one query per kind, not per row.

One `Loaders` per request (Context.loaders). Each batch runs in its own short tenant session.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from strawberry.dataloader import DataLoader

from models import billing, campaigns, content, infrastructure, tenancy
from services.analytics import campaign_totals


class Loaders:
    def __init__(self, context) -> None:
        self._context = context
        self.plan = DataLoader(self._plans)
        self.template = DataLoader(self._templates)
        self.vps = DataLoader(self._vps)
        self.steps_by_campaign = DataLoader(self._steps_by_campaign)
        self.accounts_by_campaign = DataLoader(self._accounts_by_campaign)
        self.stats_by_campaign = DataLoader(self._stats_by_campaign)
        self.ips_by_vps = DataLoader(self._ips_by_vps)
        self.sent_today_by_account = DataLoader(self._sent_today_by_account)
        self.warmup_by_account = DataLoader(self._warmup_by_account)
        self.members_by_tenant = DataLoader(self._members_by_tenant)

    async def _rows(self, stmt) -> list[Any]:
        async with self._context.tenant_session() as session:
            return list(await session.scalars(stmt))

    async def _plans(self, keys: Sequence[uuid.UUID]) -> list[Any]:
        from graphql_api.billing.types import Plan

        async with self._context.db.anonymous_session() as session:
            rows = await session.scalars(select(billing.Plan).where(billing.Plan.id.in_(keys)))
            by_id = {r.id: Plan.from_row(r) for r in rows}
        return [by_id.get(k) for k in keys]

    async def _templates(self, keys: Sequence[uuid.UUID]) -> list[Any]:
        from graphql_api.campaigns.types import Template

        rows = await self._rows(select(campaigns.Template).where(campaigns.Template.id.in_(keys)))
        return _one_each(keys, rows, lambda r: r.id, Template.from_row)

    async def _vps(self, keys: Sequence[uuid.UUID]) -> list[Any]:
        from graphql_api.infrastructure.types import VpsInstance

        model = infrastructure.VpsInstance
        rows = await self._rows(select(model).where(model.id.in_(keys)))
        return _one_each(keys, rows, lambda r: r.id, VpsInstance.from_row)

    async def _steps_by_campaign(self, keys: Sequence[uuid.UUID]) -> list[list[Any]]:
        from graphql_api.campaigns.types import SequenceStep

        model = campaigns.CampaignSequenceStep
        rows = await self._rows(
            select(model).where(model.campaign_id.in_(keys)).order_by(model.position)
        )
        return _many_each(keys, rows, lambda r: r.campaign_id, SequenceStep.from_row)

    async def _accounts_by_campaign(self, keys: Sequence[uuid.UUID]) -> list[list[Any]]:
        from graphql_api.infrastructure.types import EmailAccount

        link = campaigns.CampaignAccount
        async with self._context.tenant_session() as session:
            rows = (
                await session.execute(
                    select(link.campaign_id, infrastructure.EmailAccount)
                    .join(
                        infrastructure.EmailAccount,
                        infrastructure.EmailAccount.id == link.account_id,
                    )
                    .where(link.campaign_id.in_(keys))
                    .order_by(link.position)
                )
            ).all()
        grouped: dict[uuid.UUID, list[Any]] = defaultdict(list)
        for campaign_id, account in rows:
            grouped[campaign_id].append(EmailAccount.from_row(account))
        return [grouped.get(k, []) for k in keys]

    async def _stats_by_campaign(self, keys: Sequence[uuid.UUID]) -> list[Any]:
        from graphql_api.campaigns.types import CampaignStats

        async with self._context.tenant_session() as session:
            totals = await campaign_totals(session, keys)
        return [CampaignStats.from_counts(totals[k]) for k in keys]

    async def _ips_by_vps(self, keys: Sequence[uuid.UUID]) -> list[list[Any]]:
        from graphql_api.infrastructure.types import SendingIp

        model = infrastructure.SmtpIpAddress
        rows = await self._rows(select(model).where(model.vps_id.in_(keys)).order_by(model.address))
        return _many_each(keys, rows, lambda r: r.vps_id, SendingIp.from_row)

    async def _sent_today_by_account(self, keys: Sequence[uuid.UUID]) -> list[int]:
        m = content.EmailMessage
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        async with self._context.tenant_session() as session:
            rows = (
                await session.execute(
                    select(m.account_id, func.count())
                    .where(
                        m.account_id.in_(keys),
                        m.status == content.MessageStatus.SENT,
                        m.sent_at >= midnight,
                    )
                    .group_by(m.account_id)
                )
            ).all()
        counts = dict(rows)
        return [counts.get(k, 0) for k in keys]

    async def _warmup_by_account(self, keys: Sequence[uuid.UUID]) -> list[Any]:
        model = infrastructure.WarmupState
        rows = await self._rows(select(model).where(model.account_id.in_(keys)))
        return _one_each(keys, rows, lambda r: r.account_id, lambda r: r)

    async def _members_by_tenant(self, keys: Sequence[uuid.UUID]) -> list[list[Any]]:
        from graphql_api.tenancy.types import Member, User

        result = []
        for tenant_id in keys:  # a page of tenants is a user's own few workspaces
            async with self._context.member_session(tenant_id) as session:
                rows = (
                    await session.execute(
                        select(tenancy.TenantUser, tenancy.User)
                        .join(tenancy.User, tenancy.User.id == tenancy.TenantUser.user_id)
                        .where(tenancy.TenantUser.tenant_id == tenant_id)
                        .order_by(tenancy.TenantUser.created_at)
                    )
                ).all()
            result.append(
                [
                    Member(user=User.from_row(u), role=m.role, joined_at=m.created_at)
                    for m, u in rows
                ]
            )
        return result


def _one_each(keys, rows, key_of: Callable, shape: Callable) -> list[Any]:
    by_key = {key_of(r): shape(r) for r in rows}
    return [by_key.get(k) for k in keys]


def _many_each(keys, rows, key_of: Callable, shape: Callable) -> list[list[Any]]:
    grouped: dict[Any, list[Any]] = defaultdict(list)
    for r in rows:
        grouped[key_of(r)].append(shape(r))
    return [grouped.get(k, []) for k in keys]
