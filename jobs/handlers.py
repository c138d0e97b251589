"""The platform's job handlers: each decodes its job and calls one service. Later capabilities
add theirs here or in modules of their own listed in settings.job_modules."""

from __future__ import annotations

import uuid

from jobs.registry import JobContext, batch_handler, handler
from services import (
    account_mail,
    alerts,
    deliverability_events,
    dns,
    domains,
    guards,
    planning,
    provisioning,
    replies,
    sending,
    statistics,
    warmup,
)


@handler("noop")
async def noop(job: JobContext) -> None:
    """Does nothing: health probes and benchmarks of the queue itself."""


@handler("plan_campaign")
async def plan_campaign(job: JobContext) -> None:
    async with job.db.tenant_session(job.tenant_id) as session:
        await planning.plan_campaign(session, uuid.UUID(job.payload["campaign_id"]))


@batch_handler(planning.SEND_KIND)
async def send_steps(jobs: list[JobContext]) -> list[BaseException | None]:
    """A batch's sends together: one read, one rate-limit call and one write each for all."""
    first = jobs[0]
    results = await sending.send_batch(
        first.db,
        first.settings,
        first.redis,
        [(job.tenant_id, job.payload, not job.ran_before) for job in jobs],
    )
    return [result if isinstance(result, BaseException) else None for result in results]


@handler(statistics.REFRESH_KIND)
async def refresh_statistics(job: JobContext) -> None:
    await statistics.refresh(job.db, job.payload["table"])


@handler(replies.POLL_KIND)
async def poll_replies(job: JobContext) -> None:
    """Reads one email account's inbox for replies."""
    await replies.poll_account(
        job.db, job.settings, job.redis, job.tenant_id, uuid.UUID(job.payload["account_id"])
    )


@handler(domains.VERIFY_KIND)
async def verify_domain(job: JobContext) -> None:
    """Checks a domain's DNS records; a change of its status is published once committed."""
    async with job.db.tenant_session(job.tenant_id) as session:
        done = await dns.verify(session, job.settings, uuid.UUID(job.payload["domain_id"]))
    if done is not None and done.event is not None:
        await deliverability_events.publish(job.redis, [done.event])


@handler(guards.EVALUATE_KIND)
async def evaluate_guards(job: JobContext) -> None:
    """The tenant's reputation scores and sending guards; changes published once committed."""
    events = await guards.evaluate(job.db, job.settings, job.tenant_id)
    await deliverability_events.publish(job.redis, events)


@handler(warmup.TICK_KIND)
async def warmup_tick(job: JobContext) -> None:
    """Moves the tenant's warm-up ramps on to today and plans today's warm-up mail; a ramp
    stepped back is published once committed."""
    done = await warmup.tick(job.db, job.settings, job.tenant_id)
    await deliverability_events.publish(job.redis, done.events)


@handler(warmup.SEND_KIND)
async def warmup_send(job: JobContext) -> None:
    """Sends one warm-up message or reply (never twice: its row is claimed first)."""
    await warmup.send(
        job.db, job.settings, job.redis, job.tenant_id, uuid.UUID(job.payload["message_id"])
    )


@handler(account_mail.KIND)
async def send_account_mail(job: JobContext) -> None:
    """Composes and sends one account e-mail (verification, reset, invitation, notice); the
    job's id is its idempotency key at Loops and its Message-ID."""
    await account_mail.send(job.db, job.settings, job.payload, str(job.id))


@handler(alerts.WEBHOOK_KIND)
async def post_alert_webhook(job: JobContext) -> None:
    """One alert raised or resolved, POSTed (signed) to the alert webhook when one is set."""
    await alerts.post_webhook(
        job.db, job.settings, uuid.UUID(job.payload["alert_id"]), job.payload["event"]
    )


@handler(provisioning.KIND)
async def provision_vps(job: JobContext) -> None:
    """One step of a VPS's provisioning (services/provisioning.py)."""
    await provisioning.run_step(job)


@handler(provisioning.IP_KIND)
async def configure_ip(job: JobContext) -> None:
    """A new IP's MailU binding, DNS records and PTR."""
    await provisioning.configure_ip(job)


@handler(provisioning.RELEASE_KIND)
async def release_ip(job: JobContext) -> None:
    """A released IP given back to its provider and taken out of DNS and MailU."""
    await provisioning.release(job)


@handler(provisioning.PLACE_KIND)
async def place_accounts(job: JobContext) -> None:
    """Accounts added after their tenant's VPS was configured, placed on it."""
    await provisioning.place_accounts(job)


@handler(provisioning.DECOMMISSION_KIND)
async def decommission_vps(job: JobContext) -> None:
    """A decommissioned VPS's instance deleted and its records removed."""
    await provisioning.decommission(job)
