"""domains, vpsInstances, sendingIps, emailAccounts."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.infrastructure.types import Domain, EmailAccount, SendingIp, VpsInstance
from graphql_api.node import register_node
from graphql_api.pagination import Connection, paginate
from graphql_api.permissions import IsMember
from models import infrastructure as infra


@strawberry.type
class InfrastructureQuery:
    @strawberry.field(permission_classes=[IsMember])
    async def domains(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Domain]:
        async with info.context.tenant_session() as session:
            return await paginate(
                session,
                select(infra.Domain),
                keys=(infra.Domain.created_at, infra.Domain.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=Domain.from_row,
            )

    @strawberry.field(permission_classes=[IsMember])
    async def vps_instances(self, info: Info) -> list[VpsInstance]:
        async with info.context.tenant_session() as session:
            rows = await session.scalars(
                select(infra.VpsInstance).order_by(infra.VpsInstance.created_at.desc())
            )
            return [VpsInstance.from_row(r) for r in rows]

    @strawberry.field(permission_classes=[IsMember])
    async def sending_ips(self, info: Info) -> list[SendingIp]:
        async with info.context.tenant_session() as session:
            rows = await session.scalars(
                select(infra.SmtpIpAddress).order_by(infra.SmtpIpAddress.created_at.desc())
            )
            return [SendingIp.from_row(r) for r in rows]

    @strawberry.field(permission_classes=[IsMember])
    async def email_accounts(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[EmailAccount]:
        async with info.context.tenant_session() as session:
            return await paginate(
                session,
                select(infra.EmailAccount),
                keys=(infra.EmailAccount.created_at, infra.EmailAccount.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=EmailAccount.from_row,
            )


register_node("Domain", infra.Domain, Domain.from_row)
register_node("VpsInstance", infra.VpsInstance, VpsInstance.from_row)
register_node("SendingIp", infra.SmtpIpAddress, SendingIp.from_row)
register_node("EmailAccount", infra.EmailAccount, EmailAccount.from_row)
