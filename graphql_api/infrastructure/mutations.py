"""addDomain, verifyDomain, requestVps, acquireIp, releaseIp, decommissionVps,
retryProvisioning, createEmailAccount, setWarmup."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import strawberry
from strawberry.types import Info

from graphql_api.errors import UserError, user_errors
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
from models.infrastructure import VpsInstance as VpsRow
from services import accounts, deliverability_events, domains, provisioning, warmup
from services.deliverability_events import Event
from services.errors import DomainError

T = TypeVar("T")


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

    @strawberry.mutation(
        extensions=allow(IsAdmin),
        description="Starts provisioning a VPS; an unknown region is a REGION_UNKNOWN error.",
    )
    async def request_vps(self, info: Info, region: OptionalShort = None) -> VpsPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row = await provisioning.request_vps(
                    session, info.context.settings, access.tenant_id, region,
                    actor_user_id=access.user_id,
                )  # fmt: skip
        except DomainError as e:
            return VpsPayload(errors=user_errors(e))
        events = session.info.pop(provisioning.EVENTS, [])  # committed: published now
        await deliverability_events.publish(info.context.redis, events)
        return VpsPayload(vps=VpsInstance.from_row(row))

    @strawberry.mutation(
        extensions=allow(IsAdmin),
        description="Buys one more IP for a VPS whose server exists (configuring or active).",
    )
    async def acquire_ip(self, info: Info, vps_id: strawberry.ID) -> SendingIpPayload:
        row, errors = await _on(info, provisioning.acquire_ip, vps_id, "VpsInstance", "vpsId")
        return SendingIpPayload(sending_ip=row and SendingIp.from_row(row), errors=errors)

    @strawberry.mutation(
        extensions=allow(IsAdmin),
        description="Stops sending from the IP (its accounts move to the VPS's own address) "
        "and gives it back to the provider.",
    )
    async def release_ip(self, info: Info, id: strawberry.ID) -> SendingIpPayload:
        row, errors = await _on(info, provisioning.release_ip, id, "SendingIp", "id")
        return SendingIpPayload(sending_ip=row and SendingIp.from_row(row), errors=errors)

    @strawberry.mutation(
        extensions=allow(IsAdmin),
        description="Stops sending from the VPS at once, then deletes its server, gives back "
        "its IPs and takes its records out of DNS.",
    )
    async def decommission_vps(self, info: Info, id: strawberry.ID) -> VpsPayload:
        done, errors = await _on(info, provisioning.decommission_vps, id, "VpsInstance", "id")
        return await _vps_payload(info, done, errors)

    @strawberry.mutation(
        extensions=allow(IsAdmin), description="Resumes a FAILED VPS from the step that failed."
    )
    async def retry_provisioning(self, info: Info, id: strawberry.ID) -> VpsPayload:
        done, errors = await _on(info, provisioning.retry, id, "VpsInstance", "id")
        return await _vps_payload(info, done, errors)

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


async def _on(
    info: Info, operation: Callable[..., Awaitable[T]], node_id: strawberry.ID, node_type: str,
    field_name: str,
) -> tuple[T | None, list[UserError]]:  # fmt: skip
    """A provisioning operation on one VPS or IP of the caller's tenant, in its transaction:
    (what it returned, no errors), or (None, its user errors)."""
    access = await info.context.require_access()
    try:
        async with info.context.tenant_session() as session:
            return await operation(
                session, info.context.settings, access.tenant_id,
                decode_id(node_id, node_type, field_name), actor_user_id=access.user_id,
            ), []  # fmt: skip
    except DomainError as e:
        return None, user_errors(e)


async def _vps_payload(
    info: Info, done: tuple[VpsRow, Event | None] | None, errors: list[UserError]
) -> VpsPayload:
    """The VPS after a transition, its event published once committed."""
    if done is None:
        return VpsPayload(errors=errors)
    row, event = done
    await deliverability_events.publish(info.context.redis, [event] if event else [])
    return VpsPayload(vps=VpsInstance.from_row(row))
