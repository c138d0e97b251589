"""A demo tenant (user, domain, account, small campaign with leads) on a plan of the catalogue.

Idempotent: every row is found by its natural key first, so running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan, Subscription, SubscriptionStatus
from models.campaigns import Campaign, CampaignAccount, CampaignSequenceStep, CampaignStatus, Lead
from models.infrastructure import Domain, EmailAccount, WarmupState
from models.tenancy import Role, Tenant, TenantUser, User
from penguinmails.settings import Settings
from services import campaigns, domains, plan_catalogue
from services.passwords import hash_password

# The demo tenant's plan, from the packaged catalogue; with another catalogue that lacks it, the
# cheapest active plan.
DEMO_PLAN = "growth"
DEMO_TENANT_SLUG = "demo"
DEMO_EMAIL = "demo@penguinmails.local"
DEMO_PASSWORD = "penguin-demo-password"
DEMO_DOMAIN = "demo.penguinmails.example"
DEMO_LEADS = [
    ("ada@example.com", "Ada", "Lovelace", "Analytical Engines"),
    ("grace@example.com", "Grace", "Hopper", "COBOL Inc"),
    ("linus@example.org", "Linus", "Torvalds", "Kernel Co"),
    ("margaret@example.org", "Margaret", "Hamilton", "Apollo Software"),
    ("alan@example.net", "Alan", "Turing", "Bletchley Labs"),
]

# The steps: HTML with a link, so the sink's .eml files show the open pixel and a tracked click
# link (the send path adds both to an HTML part), and the same words as text.
FIRST_HTML = """<p>Hi {{ first_name }},</p>
<p>Does {{ company }} send cold email at volume? PenguinMails warms up your domains and sends
from your own IPs.</p>
<p><a href="https://example.com/pricing">See pricing</a></p>
"""
FIRST_TEXT = """Hi {{ first_name }},

Does {{ company }} send cold email at volume? PenguinMails warms up your domains and sends
from your own IPs.

See pricing: https://example.com/pricing
"""
BUMP_HTML = """<p>Hi {{ first_name }}, just bumping this up.</p>
<p><a href="https://example.com/pricing">See pricing</a></p>
"""
BUMP_TEXT = """Hi {{ first_name }}, just bumping this up.

See pricing: https://example.com/pricing
"""


@dataclass
class DemoSeed:
    tenant_id: object
    user_email: str
    password: str
    plans: int
    leads: int


async def seed_demo(session: AsyncSession, settings: Settings) -> DemoSeed:
    """Runs on a system session: it creates a tenant, which no tenant session may do for another."""
    await plan_catalogue.apply(session, plan_catalogue.load(settings.plan_catalogue))
    plan = await session.scalar(
        select(Plan).where(Plan.active).order_by(Plan.code != DEMO_PLAN, Plan.price_cents).limit(1)
    )
    assert plan is not None  # the catalogue has at least one plan

    tenant = await session.scalar(select(Tenant).where(Tenant.slug == DEMO_TENANT_SLUG))
    if tenant is None:
        tenant = Tenant(name="Demo Agency", slug=DEMO_TENANT_SLUG, plan_id=plan.id)
        session.add(tenant)
        await session.flush()
        session.add(
            Subscription(tenant_id=tenant.id, plan_id=plan.id, status=SubscriptionStatus.TRIALING)
        )

    user = await session.scalar(select(User).where(User.email == DEMO_EMAIL))
    if user is None:
        user = User(email=DEMO_EMAIL, password_hash=hash_password(DEMO_PASSWORD), full_name="Demo")
        session.add(user)
    # Verified: nobody reads the demo address's mail, and the demo launches campaigns.
    user.email_verified_at = user.email_verified_at or func.now()
    await session.flush()
    await session.execute(
        insert(TenantUser)
        .values(tenant_id=tenant.id, user_id=user.id, role=Role.OWNER)
        .on_conflict_do_nothing()
    )

    domain = await session.scalar(
        select(Domain).where(Domain.tenant_id == tenant.id, Domain.name == DEMO_DOMAIN)
    )
    if domain is None:  # with its DKIM key, as a tenant's own addDomain makes it
        domain = await domains.add_domain(session, settings, tenant.id, DEMO_DOMAIN)

    address = f"hello@{DEMO_DOMAIN}"
    account = await session.scalar(
        select(EmailAccount).where(
            EmailAccount.tenant_id == tenant.id, EmailAccount.address == address
        )
    )
    if account is None:
        account = EmailAccount(
            tenant_id=tenant.id, domain_id=domain.id, address=address,
            display_name="Demo Sender", daily_limit=200,
        )  # fmt: skip
        session.add(account)
        await session.flush()
        session.add(WarmupState(tenant_id=tenant.id, account_id=account.id))

    campaign = await session.scalar(
        select(Campaign).where(Campaign.tenant_id == tenant.id, Campaign.name == "Demo outreach")
    )
    if campaign is None:
        # Open every day and hour, a send every 2 s: the demo is seen sending at once.
        campaign = Campaign(
            tenant_id=tenant.id,
            name="Demo outreach",
            timezone="Europe/London",
            window_days=[1, 2, 3, 4, 5, 6, 7],
            start_hour=0,
            end_hour=24,
            send_spacing_seconds=2,
        )
        session.add(campaign)
        await session.flush()
        session.add_all(
            [
                CampaignAccount(tenant_id=tenant.id, campaign_id=campaign.id, account_id=account.id),
                CampaignSequenceStep(
                    tenant_id=tenant.id, campaign_id=campaign.id, position=1, delay_days=0,
                    subject="Quick question, {{ first_name }}", html=FIRST_HTML, text=FIRST_TEXT,
                ),
                CampaignSequenceStep(
                    tenant_id=tenant.id, campaign_id=campaign.id, position=2, delay_days=3,
                    subject="Re: Quick question, {{ first_name }}", html=BUMP_HTML, text=BUMP_TEXT,
                ),
            ]
        )  # fmt: skip
    lead_rows = [
        dict(tenant_id=tenant.id, campaign_id=campaign.id, email=email, first_name=first,
             last_name=last, company=company)
        for email, first, last, company in DEMO_LEADS
    ]  # fmt: skip
    await session.execute(
        insert(Lead)
        .values(lead_rows)
        .on_conflict_do_nothing(index_elements=["campaign_id", "email"])
    )
    leads = await session.scalar(
        select(func.count()).select_from(Lead).where(Lead.campaign_id == campaign.id)
    )
    if campaign.status == CampaignStatus.DRAFT:  # it sends to the local sink of `up`
        await campaigns.launch(session, campaign.id)
    plans = await session.scalar(select(func.count()).select_from(Plan).where(Plan.active))
    return DemoSeed(tenant.id, DEMO_EMAIL, DEMO_PASSWORD, plans or 0, leads or 0)
