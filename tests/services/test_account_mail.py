"""Account e-mails through their jobs: payment notices to a tenant's owners, delivery by the SMTP
relay or by Loops (a local server speaking its transactional API), retries on an outage, and
tokens kept only as hashes."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.exc import ProgrammingError

from models.queue import JobStatus
from models.sessions import Database
from models.tenancy import Role, TenantUser, User, UserToken
from penguinmails.settings import Settings
from services import account_mail
from tests.factories import create_tenant
from tests.loops_server import API_KEY, TRANSACTIONAL_IDS, FakeLoops, running_loops
from tests.mailbox import mail_jobs, mails_to, run_mail_jobs, text_of, token_in
from tests.smtp import running_sink


@pytest.fixture
async def loops() -> AsyncIterator[tuple[str, FakeLoops]]:
    async with running_loops() as served:
        yield served


def through_loops(settings: Settings, base: str) -> Settings:
    return settings.model_copy(
        update={
            "loop_api_key": SecretStr(API_KEY),
            "loop_api_base": base,
            "loop_transactional_ids": TRANSACTIONAL_IDS,
        }
    )


async def tenant_with_members(db: Database, roles: list[Role]) -> tuple[uuid.UUID, list[User]]:
    """A tenant and one verified user per role, in that order."""
    async with db.system_session() as s:
        tenant = await create_tenant(s, "Billed Co")
        users = []
        for role in roles:
            user = User(
                email=f"{role.value.lower()}-{uuid.uuid4().hex[:8]}@example.com",
                password_hash="x",
            )
            s.add(user)
            await s.flush()
            await s.execute(insert(TenantUser).values(tenant_id=tenant, user_id=user.id, role=role))
            users.append(user)
    return tenant, users


async def test_a_payment_notice_is_queued_once_per_owner_and_arrives_through_the_relay(
    db: Database, settings: Settings
) -> None:
    tenant, (first, admin, second) = await tenant_with_members(
        db, [Role.OWNER, Role.ADMIN, Role.OWNER]
    )
    async with db.tenant_session(tenant) as s:  # the grace code's session: the tenant's
        queued = await account_mail.notify_owners(s, tenant, "payment_failed", key="in_1")
    async with db.system_session() as s:  # or the system's; the same key queues nothing
        again = await account_mail.notify_owners(
            s, tenant, account_mail.Mail.PAYMENT_FAILED, key="in_1"
        )

    jobs = await mail_jobs(db, tenant_id=str(tenant))
    assert (queued, again) == (2, 2)
    assert sorted(j.payload["user_id"] for j in jobs) == sorted([str(first.id), str(second.id)])
    assert {j.tenant_id for j in jobs} == {None}  # platform jobs: a suspended tenant's go too

    with running_sink() as (sink, port):
        ran = await run_mail_jobs(
            db, settings.model_copy(update={"smtp_relay_port": port}), tenant_id=str(tenant)
        )
    assert len(ran) == 2
    assert {j.status for j in await mail_jobs(db, tenant_id=str(tenant))} == {JobStatus.SUCCEEDED}
    assert mails_to(sink, admin.email) == []
    for owner in (first, second):
        [mail] = mails_to(sink, owner.email)
        assert mail["Subject"] == "Payment failed for Billed Co on PenguinMails"
        assert mail["From"] == settings.account_mail_from
        assert mail["Auto-Submitted"] == "auto-generated"
        assert f"{settings.public_url}/billing" in text_of(mail)
    envelope_senders = {sender for sender, _, _ in sink.messages}
    assert envelope_senders == {"no-reply@penguinmails.test"}


async def test_notify_owners_takes_only_payment_notices(db: Database) -> None:
    tenant, _ = await tenant_with_members(db, [Role.OWNER])
    async with db.system_session() as s:
        with pytest.raises(ValueError):
            await account_mail.notify_owners(s, tenant, "password_reset")
        with pytest.raises(ValueError):
            await account_mail.notify_owners(s, tenant, "overdue")


async def test_loops_gets_the_documented_request_for_each_notice(
    db: Database, settings: Settings, loops
) -> None:
    base, fake = loops
    tenant, [owner] = await tenant_with_members(db, [Role.OWNER])
    async with db.system_session() as s:
        for kind in ("payment_failed", "suspended", "restored"):
            await account_mail.notify_owners(s, tenant, kind)

    ran = await run_mail_jobs(db, through_loops(settings, base), tenant_id=str(tenant))

    assert len(fake.requests) == 3 and set(ran) == {
        uuid.UUID(r.idempotency_key) for r in fake.requests
    }
    assert {r.authorization for r in fake.requests} == {f"Bearer {API_KEY}"}
    by_id = {r.body["transactionalId"]: r.body for r in fake.requests}
    assert set(by_id) == {"tx_payment_failed", "tx_suspended", "tx_restored"}
    for body in by_id.values():
        assert set(body) == {"transactionalId", "email", "dataVariables"}
        assert body["email"] == owner.email
        assert body["dataVariables"] == {
            "link": f"{settings.public_url}/billing",
            "tenantName": "Billed Co",
            "graceUntil": "",
        }
    assert {j.status for j in await mail_jobs(db, tenant_id=str(tenant))} == {JobStatus.SUCCEEDED}


async def test_a_loops_outage_fails_the_job_for_a_later_try_which_sends_it_once(
    db: Database, settings: Settings, loops
) -> None:
    base, fake = loops
    tenant, [owner] = await tenant_with_members(db, [Role.OWNER])
    async with db.system_session() as s:
        await account_mail.notify_owners(s, tenant, "suspended")
    fake.outage = True

    await run_mail_jobs(db, through_loops(settings, base), tenant_id=str(tenant))
    [job] = await mail_jobs(db, tenant_id=str(tenant))
    assert job.status == JobStatus.FAILED and job.attempts == 1
    assert "Loops answered 500" in job.last_error
    assert job.run_at > datetime.now(UTC)  # a backoff, not dead

    fake.outage = False
    await run_mail_jobs(db, through_loops(settings, base), tenant_id=str(tenant))
    [job] = await mail_jobs(db, tenant_id=str(tenant))
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    assert [b["email"] for b in fake.sent] == [owner.email]
    assert len({r.idempotency_key for r in fake.requests}) == 1  # both tries: the job's id


async def test_a_transactional_id_loops_does_not_know_kills_the_job_without_retries(
    db: Database, settings: Settings, loops
) -> None:
    base, fake = loops
    tenant, _ = await tenant_with_members(db, [Role.OWNER])
    async with db.system_session() as s:
        await account_mail.notify_owners(s, tenant, "restored")
    fake.published.discard(TRANSACTIONAL_IDS["restored"])

    await run_mail_jobs(db, through_loops(settings, base), tenant_id=str(tenant))

    [job] = await mail_jobs(db, tenant_id=str(tenant))
    assert job.status == JobStatus.DEAD and "404" in job.last_error
    assert fake.sent == []


async def test_a_kind_without_a_transactional_id_goes_through_the_relay(
    db: Database, settings: Settings, loops
) -> None:
    base, fake = loops
    tenant, [owner] = await tenant_with_members(db, [Role.OWNER])
    async with db.system_session() as s:
        await account_mail.notify_owners(s, tenant, "restored")
    with running_sink() as (sink, port):
        configured = through_loops(settings, base).model_copy(
            update={
                "loop_transactional_ids": {"verify_email": "tx_verify"},
                "smtp_relay_port": port,
            }
        )
        await run_mail_jobs(db, configured, tenant_id=str(tenant))

    assert fake.requests == []
    [mail] = mails_to(sink, owner.email)
    assert mail["Subject"] == "Sending restored for Billed Co on PenguinMails"


async def test_a_relay_refusing_the_address_kills_the_job_and_one_that_is_down_retries(
    db: Database, settings: Settings
) -> None:
    tenant, [owner] = await tenant_with_members(db, [Role.OWNER])
    async with db.system_session() as s:
        await account_mail.notify_owners(s, tenant, "payment_failed")
    with running_sink() as (sink, port):
        relay = settings.model_copy(update={"smtp_relay_port": port})
        sink.unavailable = True  # 451 at RCPT
        await run_mail_jobs(db, relay, tenant_id=str(tenant))
        [job] = await mail_jobs(db, tenant_id=str(tenant))
        assert job.status == JobStatus.FAILED and "451" in job.last_error

        sink.unavailable = False
        sink.refuse.add(owner.email)  # 550 at RCPT: no retry mends it
        await run_mail_jobs(db, relay, tenant_id=str(tenant))
        [job] = await mail_jobs(db, tenant_id=str(tenant))
        assert job.status == JobStatus.DEAD and "550" in job.last_error
    assert sink.messages == []


async def test_a_mailed_token_is_stored_only_as_its_hash_and_the_app_role_reads_none(
    db: Database, settings: Settings
) -> None:
    _, [user] = await tenant_with_members(db, [Role.OWNER])
    await account_mail.request_password_reset(db, f"  {user.email.upper()} ")
    with running_sink() as (sink, port):
        await run_mail_jobs(
            db, settings.model_copy(update={"smtp_relay_port": port}), user_id=str(user.id)
        )
    [mail] = mails_to(sink, user.email)
    secret = token_in(text_of(mail))
    assert "expires in 1 hour" in text_of(mail) and "(link valid 1 hour)" in mail["Subject"]

    async with db.system_session() as s:
        [stored] = list(await s.scalars(select(UserToken).where(UserToken.user_id == user.id)))
        payloads = [j.payload for j in await mail_jobs(db, user_id=str(user.id))]
    assert stored.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(payloads)
    assert (stored.expires_at - stored.created_at).total_seconds() == pytest.approx(3600, abs=5)

    for session in (db.user_session(user.id), db.anonymous_session()):
        with pytest.raises(ProgrammingError, match="permission denied"):
            async with session as s:
                await s.scalar(select(UserToken.token_hash))
