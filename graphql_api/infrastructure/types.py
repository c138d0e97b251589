"""Domain and its DNS records, VPS, sending IP, email account and its warm-up state."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from strawberry.types import Info

from graphql_api.errors import UserError
from graphql_api.ids import encode_id
from graphql_api.node import Node
from models import infrastructure as infra
from services.warmup import Ramp

DomainStatus = strawberry.enum(infra.DomainStatus, name="DomainStatus")
VpsStatus = strawberry.enum(infra.VpsStatus, name="VpsStatus")
IpStatus = strawberry.enum(infra.IpStatus, name="IpStatus")
AccountStatus = strawberry.enum(infra.AccountStatus, name="AccountStatus")
SendingGuard = strawberry.enum(
    infra.Guard,
    name="SendingGuard",
    description="What a domain's or IP's 7-day complaint and hard-bounce rates put it under: "
    "NONE, THROTTLED (half rate) or PAUSED.",
)


@strawberry.enum
class DnsRecordStatus(Enum):
    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    MISMATCH = "MISMATCH"
    MISSING = "MISSING"


@strawberry.type
class DnsRecord:
    kind: str
    host: str
    type: str
    value: str
    status: DnsRecordStatus
    observed: list[str]
    error: str | None = strawberry.field(
        default=None, description="SERVFAIL or TIMEOUT while the status stays PENDING."
    )
    reason: str | None = strawberry.field(
        default=None, description="Why the record is a MISMATCH (a parse error, what is off)."
    )


@strawberry.type
class Domain(Node):
    id: strawberry.ID
    name: str
    status: DomainStatus
    dkim_selector: str
    records: list[DnsRecord]
    last_checked_at: datetime | None
    created_at: datetime
    reputation_score: int = strawberry.field(description="0–100, from the last 7 days.")
    blacklisted_on: list[str]
    guard: SendingGuard
    guard_reason: str | None

    @classmethod
    def from_row(cls, row: infra.Domain) -> Domain:
        return cls(
            id=encode_id("Domain", row.id),
            name=row.name,
            status=row.status,
            dkim_selector=row.dkim_selector,
            records=[
                DnsRecord(
                    kind=r["kind"],
                    host=r["host"],
                    type=r["type"],
                    value=r["value"],
                    status=DnsRecordStatus(r.get("status", "PENDING")),
                    observed=list(r.get("observed", [])),
                    error=r.get("error"),
                    reason=r.get("reason"),
                )
                for r in row.dns_records
            ],
            last_checked_at=row.last_checked_at,
            created_at=row.created_at,
            reputation_score=row.reputation_score,
            blacklisted_on=list(row.blacklisted_on),
            guard=infra.Guard(row.guard),
            guard_reason=row.guard_reason,
        )


@strawberry.type
class SendingIp(Node):
    id: strawberry.ID
    address: str
    status: IpStatus
    reputation_score: int
    blacklisted_on: list[str]
    row: strawberry.Private[infra.SmtpIpAddress]

    @classmethod
    def from_row(cls, row: infra.SmtpIpAddress) -> SendingIp:
        return cls(
            id=encode_id("SendingIp", row.id),
            address=str(row.address),
            status=row.status,
            reputation_score=row.reputation_score,
            blacklisted_on=list(row.blacklisted_on),
            row=row,
        )

    @strawberry.field(description="The PTR name seen at the last check.")
    def ptr(self) -> str | None:
        return self.row.ptr

    @strawberry.field(
        description="VERIFIED when the PTR name resolves back to the address and is the "
        "HELO name of the IP's server."
    )
    def ptr_status(self) -> DnsRecordStatus:
        return DnsRecordStatus(self.row.ptr_status)

    @strawberry.field(
        description="What the IP costs a month (0: the VPS's own address, in its price)."
    )
    def monthly_cost_cents(self) -> int | None:
        return self.row.monthly_cost_cents

    @strawberry.field
    def guard(self) -> SendingGuard:
        return infra.Guard(self.row.guard)

    @strawberry.field
    def guard_reason(self) -> str | None:
        return self.row.guard_reason

    @strawberry.field
    async def vps(self, info: Info) -> VpsInstance | None:
        if self.row.vps_id is None:
            return None
        return await info.context.loaders.vps.load(self.row.vps_id)


@strawberry.type
class VpsInstance(Node):
    id: strawberry.ID
    provider_id: str | None
    region: str | None
    status: VpsStatus
    primary_ip: str | None
    created_at: datetime
    row: strawberry.Private[infra.VpsInstance]

    @classmethod
    def from_row(cls, row: infra.VpsInstance) -> VpsInstance:
        return cls(
            id=encode_id("VpsInstance", row.id),
            provider_id=row.provider_id,
            region=row.region,
            status=row.status,
            primary_ip=str(row.primary_ip) if row.primary_ip else None,
            created_at=row.created_at,
            row=row,
        )

    @strawberry.field
    async def ips(self, info: Info) -> list[SendingIp]:
        return await info.context.loaders.ips_by_vps.load(self.row.id)

    @strawberry.field(description="The provisioning step that failed (a VpsStatus name).")
    def failed_step(self) -> str | None:
        return self.row.failed_step

    @strawberry.field(
        description="Why the VPS failed, or what its current step is waiting for or failed "
        "with last (it is retried)."
    )
    def failure_reason(self) -> str | None:
        return self.row.failure_reason

    @strawberry.field(description="What the server costs a month, from the provider's plan.")
    def monthly_cost_cents(self) -> int | None:
        return self.row.monthly_cost_cents


@strawberry.type
class WarmupState:
    enabled: bool
    day: int
    today_target: int = strawberry.field(
        description="The most campaign mail the account sends today, and about as much "
        "warm-up mail to the tenant's other warm-up accounts."
    )
    reputation: int = strawberry.field(description="The account's reputation score, 0–100.")
    start: int
    daily_increase: int
    max: int
    reply_rate: float = strawberry.field(
        description="The share of the account's warm-up mail its partners answer."
    )

    @classmethod
    def from_row(cls, row: infra.WarmupState | None, account: infra.EmailAccount) -> WarmupState:
        ramp = Ramp.of(row) if row is not None else Ramp()
        return cls(
            enabled=row.enabled if row else False,
            day=row.day if row else 0,
            today_target=row.today_target if row else 0,
            reputation=account.reputation_score,
            start=ramp.start,
            daily_increase=ramp.daily_increase,
            max=ramp.max,
            reply_rate=ramp.reply_rate,
        )


@strawberry.input(
    description="A warm-up ramp: day d's target is min(max, start + (d - 1) × dailyIncrease)."
)
class WarmupRampInput:
    start: int
    daily_increase: int
    max: int
    reply_rate: float

    def to_ramp(self) -> Ramp:
        return Ramp(self.start, self.daily_increase, self.max, self.reply_rate)


@strawberry.type
class EmailAccount(Node):
    id: strawberry.ID
    address: str
    display_name: str | None
    status: AccountStatus
    daily_limit: int
    row: strawberry.Private[infra.EmailAccount]

    @classmethod
    def from_row(cls, row: infra.EmailAccount) -> EmailAccount:
        return cls(
            id=encode_id("EmailAccount", row.id),
            address=row.address,
            display_name=row.display_name,
            status=row.status,
            daily_limit=row.daily_limit,
            row=row,
        )

    @strawberry.field(description="0–100, from its last 7 days and its domain's and IP's listings.")
    def reputation_score(self) -> int:
        return self.row.reputation_score

    @strawberry.field(description="Why its sends wait: paused, or its domain stopped verifying.")
    def paused_reason(self) -> str | None:
        return self.row.status_reason

    @strawberry.field
    async def sent_today(self, info: Info) -> int:
        return await info.context.loaders.sent_today_by_account.load(self.row.id)

    @strawberry.field
    async def warmup(self, info: Info) -> WarmupState:
        state = await info.context.loaders.warmup_by_account.load(self.row.id)
        return WarmupState.from_row(state, self.row)


@strawberry.type
class DomainPayload:
    domain: Domain | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class VpsPayload:
    vps: VpsInstance | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class SendingIpPayload:
    sending_ip: SendingIp | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class EmailAccountPayload:
    email_account: EmailAccount | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
