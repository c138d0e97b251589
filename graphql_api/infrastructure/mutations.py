"""addDomain, verifyDomain, requestVps, acquireIp, createEmailAccount, setWarmup."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.errors import user_errors
from graphql_api.ids import decode_id
from graphql_api.infrastructure.types import (
    Domain,
    DomainPayload,
    EmailAccount,
    EmailAccountPayload,
    SendingIp,
    SendingIpPayload,
    VpsInstance,
    VpsPayload,
    WarmupRampInput,
)
from graphql_api.input_limits import (
    DomainName,
    LocalPart,
    OptionalName,
    OptionalPassword,
    OptionalShort,
)
from graphql_api.permissions import IsAdmin, IsMember, allow
from services import accounts, domains, infrastructure, warmup
from services.errors import DomainError


@strawberry.type
class InfrastructureMutation:
    @strawberry.mutation(extensions=allow(IsMember))
    async def add_domain(self, info: Info, name: DomainName) -> DomainPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await domains.add_domain(
                    session, info.context.settings, access.tenant_id, name
                )
        except DomainError as e:
            return DomainPayload(errors=user_errors(e))
        return DomainPayload(domain=Domain.from_row(row))

    @strawberry.mutation(extensions=allow(IsMember))
    async def verify_domain(self, info: Info, id: strawberry.ID) -> DomainPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await domains.verify_domain(
                    session, access.tenant_id, decode_id(id, "Domain")
                )
        except DomainError as e:
            return DomainPayload(errors=user_errors(e))
        return DomainPayload(domain=Domain.from_row(row))

    @strawberry.mutation(
        extensions=allow(IsMember),
        description="A new DKIM key under a new selector: the domain lists both records; "
        "`dkimSelector` switches once the new one verifies, the old stays published for "
        "PENGUINMAILS_DKIM_RETIRE_DAYS.",
    )
    async def rotate_dkim_key(self, info: Info, domain_id: strawberry.ID) -> DomainPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await domains.rotate_dkim_key(
                    session, info.context.settings, access.tenant_id,
                    decode_id(domain_id, "Domain", "domainId"),
                )  # fmt: skip
        except DomainError as e:
            return DomainPayload(errors=user_errors(e))
        return DomainPayload(domain=Domain.from_row(row))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def request_vps(self, info: Info, region: OptionalShort = None) -> VpsPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await infrastructure.request_vps(session, access.tenant_id, region)
        except DomainError as e:
            return VpsPayload(errors=user_errors(e))
        return VpsPayload(vps=VpsInstance.from_row(row))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def acquire_ip(self, info: Info, vps_id: strawberry.ID) -> SendingIpPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await infrastructure.acquire_ip(
                    session, access.tenant_id, decode_id(vps_id, "VpsInstance", "vpsId")
                )
        except DomainError as e:
            return SendingIpPayload(errors=user_errors(e))
        return SendingIpPayload(sending_ip=SendingIp.from_row(row))

    @strawberry.mutation(extensions=allow(IsMember))
    async def create_email_account(
        self,
        info: Info,
        domain_id: strawberry.ID,
        local_part: LocalPart,
        display_name: OptionalName = None,
        smtp_password: OptionalPassword = None,
    ) -> EmailAccountPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await accounts.create_email_account(
                    session,
                    info.context.settings,
                    access.tenant_id,
                    decode_id(domain_id, "Domain", "domainId"),
                    local_part,
                    display_name,
                    smtp_password,
                )
        except DomainError as e:
            return EmailAccountPayload(errors=user_errors(e))
        return EmailAccountPayload(email_account=EmailAccount.from_row(row))

    @strawberry.mutation(
        extensions=allow(IsMember),
        description="Warm-up on or off; `ramp` sets its shape (kept when left out). Switching it "
        "on starts the ramp at day 1.",
    )
    async def set_warmup(
        self,
        info: Info,
        account_id: strawberry.ID,
        enabled: bool,
        ramp: WarmupRampInput | None = None,
    ) -> EmailAccountPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await warmup.set_warmup(
                    session,
                    access.tenant_id,
                    decode_id(account_id, "EmailAccount", "accountId"),
                    enabled,
                    ramp.to_ramp() if ramp else None,
                )
        except DomainError as e:
            return EmailAccountPayload(errors=user_errors(e))
        return EmailAccountPayload(email_account=EmailAccount.from_row(row))
