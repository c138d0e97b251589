"""Building blocks for API tests: one tenant's typical objects, created through the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select, update

from graphql_api.ids import parse_id
from models.billing import Plan
from models.sessions import Database
from models.tenancy import Tenant
from tests.graphql_api.conftest import Account, Api

ADD_DOMAIN = """mutation($name: String!) { addDomain(name: $name) {
  domain { id name status dkimSelector records { kind host type value status observed } }
  errors { code field message } } }"""
CREATE_ACCOUNT = """mutation($domainId: ID!, $localPart: String!, $displayName: String, $smtpPassword: String) {
  createEmailAccount(domainId: $domainId, localPart: $localPart, displayName: $displayName, smtpPassword: $smtpPassword) {
    emailAccount { id address displayName status dailyLimit sentToday warmup { enabled day } }
    errors { code field message } } }"""
CREATE_TEMPLATE = """mutation($name: String!, $subject: String!, $html: String, $text: String) {
  createTemplate(name: $name, subject: $subject, html: $html, text: $text) {
    template { id name subject variables } errors { code field message } } }"""
CREATE_CAMPAIGN = """mutation($input: CampaignInput!) { createCampaign(input: $input) {
  campaign { id name status window { timezone days startHour endHour }
             steps { position delayDays subject template { name } } accounts { address } }
  errors { code field message } } }"""
IMPORT = """mutation($campaignId: ID!, $csv: String!) { importLeads(campaignId: $campaignId, csv: $csv) {
  imported duplicates suppressed invalid { row reason } errors { code field message } } }"""
TRANSITION = """mutation($id: ID!) { %s(id: $id) { campaign { id status } errors { code field message } } }"""
REQUEST_VPS = """mutation($region: String) { requestVps(region: $region) { vps { id status region } errors { code field message } } }"""
ACQUIRE_IP = """mutation($vpsId: ID!) { acquireIp(vpsId: $vpsId) { sendingIp { id address status vps { id } } errors { code field message } } }"""
INVITE = """mutation($email: String!, $role: Role!) { inviteMember(email: $email, role: $role) {
  member { role } invitation { id email role tenantName expiresAt } errors { code field message } } }"""
ACCEPT = """mutation($id: ID!) { acceptInvitation(id: $id) {
  tenant { id name } errors { code field message } } }"""


def leads_csv(count: int, domain: str = "example.com") -> str:
    rows = ["Email,First Name,Last Name,Company,Industry"]
    rows += [f"lead{n}@{domain},First{n},Last{n},Company {n % 97},Retail" for n in range(count)]
    return "\n".join(rows) + "\n"


async def put_on_plan(db: Database, account: Account, code: str) -> None:
    async with db.system_session() as s:
        plan_id = await s.scalar(select(Plan.id).where(Plan.code == code))
        await s.execute(
            update(Tenant).where(Tenant.id == parse_id(account.tenant)[1]).values(plan_id=plan_id)
        )


async def call(api: Api, account: Account, query: str, variables: dict, field_name: str) -> dict:
    body = await api.gql(query, variables, token=account.token, tenant=account.tenant)
    assert "errors" not in body, body
    return body["data"][field_name]


async def invite(api: Api, inviter: Account, email: str, role: str = "MEMBER") -> dict:
    """The invitation inviter's tenant sends to `email`."""
    invited = await call(api, inviter, INVITE, {"email": email, "role": role}, "inviteMember")
    assert invited["errors"] == [], invited
    return invited["invitation"]


async def join(api: Api, inviter: Account, invitee: Account, role: str = "MEMBER") -> None:
    """`invitee` becomes a member of inviter's tenant: invited, then accepting."""
    invitation = await invite(api, inviter, invitee.email, role)
    accepted = await api.gql(ACCEPT, {"id": invitation["id"]}, token=invitee.token)
    assert accepted["data"]["acceptInvitation"]["errors"] == [], accepted


@dataclass
class Estate:
    """One tenant's objects, created through the API."""

    domain: dict = field(default_factory=dict)
    email_account: dict = field(default_factory=dict)
    template: dict = field(default_factory=dict)
    campaign: dict = field(default_factory=dict)
    vps: dict = field(default_factory=dict)
    sending_ip: dict = field(default_factory=dict)
    invitation: dict = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [
            obj["id"]
            for obj in (
                self.domain,
                self.email_account,
                self.template,
                self.campaign,
                self.vps,
                self.sending_ip,
                self.invitation,
            )
            if obj
        ]


async def build_estate(api: Api, db: Database, account: Account, prefix: str) -> Estate:
    await put_on_plan(db, account, "growth")
    estate = Estate()
    estate.domain = (
        await call(api, account, ADD_DOMAIN, {"name": f"{prefix}-mail.example"}, "addDomain")
    )["domain"]
    estate.email_account = (
        await call(
            api,
            account,
            CREATE_ACCOUNT,
            {
                "domainId": estate.domain["id"],
                "localPart": "hello",
                "displayName": f"{prefix} Sender",
                "smtpPassword": "s3cret-smtp",
            },
            "createEmailAccount",
        )
    )["emailAccount"]
    estate.template = (
        await call(
            api,
            account,
            CREATE_TEMPLATE,
            {
                "name": f"{prefix} intro",
                "subject": "Hi {{ first_name }}",
                "html": "<p>Hello {{ first_name }} at {{ company }}</p>",
            },
            "createTemplate",
        )
    )["template"]
    estate.campaign = (
        await call(
            api,
            account,
            CREATE_CAMPAIGN,
            {
                "input": {
                    "name": f"{prefix} outreach",
                    "accountIds": [estate.email_account["id"]],
                    "steps": [
                        {
                            "delayDays": 0,
                            "subject": "Hi {{ first_name }}",
                            "templateId": estate.template["id"],
                        },
                        {
                            "delayDays": 3,
                            "subject": "Re: hi",
                            "text": "Just bumping this, {{ first_name }}.",
                        },
                    ],
                    "window": {
                        "timezone": "Europe/Berlin",
                        "days": [1, 2, 3, 4, 5],
                        "startHour": 9,
                        "endHour": 17,
                    },
                }
            },
            "createCampaign",
        )
    )["campaign"]
    imported = await call(
        api,
        account,
        IMPORT,
        {"campaignId": estate.campaign["id"], "csv": leads_csv(20, f"{prefix}.example")},
        "importLeads",
    )
    assert imported["imported"] == 20, imported
    estate.vps = (await call(api, account, REQUEST_VPS, {"region": None}, "requestVps"))["vps"]
    await _provision_instance(db, estate.vps["id"])  # an IP is bought once the server exists
    estate.sending_ip = (
        await call(api, account, ACQUIRE_IP, {"vpsId": estate.vps["id"]}, "acquireIp")
    )["sendingIp"]
    estate.invitation = await invite(api, account, f"{prefix}-invitee@example.com")
    return estate


async def _provision_instance(db: Database, vps_id: str) -> None:
    """The VPS's first step, as a worker runs it: its instance at the (local) provider."""
    from redis.asyncio import Redis

    from graphql_api.ids import decode_id
    from tests.provisioning import run_step

    redis = Redis.from_url(db.settings.redis_url)
    try:
        tenant = await _tenant_of_vps(db, decode_id(vps_id, "VpsInstance", "id"))
        await run_step(db, db.settings, redis, tenant, decode_id(vps_id, "VpsInstance", "id"))
    finally:
        await redis.aclose()


async def _tenant_of_vps(db: Database, vps_id) -> uuid.UUID:
    from models.infrastructure import VpsInstance

    async with db.system_session() as s:
        return (await s.get_one(VpsInstance, vps_id)).tenant_id


async def sending_account(api: Api, db: Database, prefix: str) -> tuple[Account, str, str]:
    """A new owner on the growth plan with a domain `<prefix>.example` and its account hello@:
    (owner, domain id, account id)."""
    from tests.graphql_api.conftest import sign_up

    owner = await sign_up(api, prefix)
    await put_on_plan(db, owner, "growth")
    domain = (
        await call(api, owner, ADD_DOMAIN, {"name": f"{prefix.lower()}.example"}, "addDomain")
    )["domain"]
    created = await call(
        api, owner, CREATE_ACCOUNT, {"domainId": domain["id"], "localPart": "hello"},
        "createEmailAccount",
    )  # fmt: skip
    return owner, domain["id"], created["emailAccount"]["id"]
