"""Email accounts: creating one (address, encrypted SMTP password, warm-up row) and warm-up."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from models.billing import Plan
from models.infrastructure import AccountStatus, Domain, EmailAccount, WarmupState
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services.accounts import create_email_account, smtp_password
from services.errors import DomainError
from services.warmup import set_warmup
from tests.factories import create_tenant


async def _tenant_with_domain(
    db: Database, name: str = "example.com", *, accounts: int = 10
) -> tuple[uuid.UUID, uuid.UUID]:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        plan = Plan(
            code=f"test-{tenant.hex[:12]}", name="Test", price_cents=0, emails_per_month=1000,
            max_domains=10, max_ips=0, max_email_accounts=accounts, max_seats=1,
        )  # fmt: skip
        s.add(plan)
        await s.flush()
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan.id))
        domain = Domain(tenant_id=tenant, name=name)
        s.add(domain)
        await s.flush()
    return tenant, domain.id


async def _create(
    db: Database,
    settings: Settings,
    tenant: uuid.UUID,
    domain_id: uuid.UUID,
    local_part: str,
    **kwargs,
) -> EmailAccount:
    async with db.tenant_session(tenant) as s:
        return await create_email_account(
            s, settings, tenant_id=tenant, domain_id=domain_id, local_part=local_part, **kwargs
        )


async def _refused(db: Database, settings: Settings, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as raised:
        await _create(db, settings, *args, **kwargs)
    return raised.value


async def _stored(db: Database, tenant: uuid.UUID, account_id: uuid.UUID):
    async with db.tenant_session(tenant) as s:
        account = await s.get_one(EmailAccount, account_id)
        warmup = await s.get_one(WarmupState, account_id)
    return account, warmup


async def _warmup(db: Database, tenant: uuid.UUID, account_id: uuid.UUID, enabled: bool):
    async with db.tenant_session(tenant) as s:
        await set_warmup(s, tenant_id=tenant, account_id=account_id, enabled=enabled)
    return await _stored(db, tenant, account_id)


async def test_an_account_is_created_lowercase_ascii_with_its_warmup_off(
    db: Database, settings: Settings
):
    tenant, domain_id = await _tenant_with_domain(db, "xn--bcher-kva.example")

    created = await _create(
        db, settings, tenant, domain_id, " Sales.Team ", display_name="  Sales Team "
    )

    account, warmup = await _stored(db, tenant, created.id)
    assert account.address == "sales.team@xn--bcher-kva.example"
    assert account.display_name == "Sales Team"
    assert account.domain_id == domain_id
    assert account.status == AccountStatus.ACTIVE
    assert (warmup.enabled, warmup.day, warmup.started_on) == (False, 0, None)


async def test_the_smtp_password_is_stored_encrypted_and_decrypts_back(
    db: Database, settings: Settings
):
    tenant, domain_id = await _tenant_with_domain(db)

    created = await _create(db, settings, tenant, domain_id, "ada", smtp_password="s3cret-päss")

    account, _ = await _stored(db, tenant, created.id)
    assert account.smtp_password_encrypted is not None
    assert "s3cret-päss".encode() not in account.smtp_password_encrypted
    assert account.encryption_key_id == settings.encryption_key_id
    assert smtp_password(settings, account) == "s3cret-päss"


async def test_an_smtp_password_stays_readable_after_the_encryption_key_rotates(
    db: Database, settings: Settings
):
    k1 = SecretStr(base64.b64encode(os.urandom(32)).decode())
    k2 = SecretStr(base64.b64encode(os.urandom(32)).decode())
    before = settings.model_copy(update={"encryption_keys": {"k1": k1}, "encryption_key_id": "k1"})
    after = settings.model_copy(
        update={"encryption_keys": {"k2": k2, "k1": k1}, "encryption_key_id": "k2"}
    )
    tenant, domain_id = await _tenant_with_domain(db)

    old = await _create(db, before, tenant, domain_id, "old", smtp_password="old-password")
    new = await _create(db, after, tenant, domain_id, "new", smtp_password="new-password")

    old_row, _ = await _stored(db, tenant, old.id)
    new_row, _ = await _stored(db, tenant, new.id)
    assert (old_row.encryption_key_id, new_row.encryption_key_id) == ("k1", "k2")
    assert smtp_password(after, old_row) == "old-password"
    assert smtp_password(after, new_row) == "new-password"


async def test_an_account_without_a_password_has_none(db: Database, settings: Settings):
    tenant, domain_id = await _tenant_with_domain(db)

    created = await _create(db, settings, tenant, domain_id, "nopass", smtp_password="")

    account, _ = await _stored(db, tenant, created.id)
    assert (account.smtp_password_encrypted, account.encryption_key_id) == (None, None)
    assert smtp_password(settings, account) is None


@pytest.mark.parametrize(
    "local_part",
    ["", "  ", "two words", "jürgen", "john..doe", ".lead", '"quoted"', "x@example.com", "a" * 65],
)
async def test_an_invalid_local_part_is_refused(db: Database, settings: Settings, local_part: str):
    tenant, domain_id = await _tenant_with_domain(db)

    error = await _refused(db, settings, tenant, domain_id, local_part)

    assert (error.code, error.field) == ("ADDRESS_INVALID", "localPart")


@pytest.mark.parametrize("display_name", ["Sales\r\nBcc: victim@example.org", "x" * 201])
async def test_a_display_name_that_cannot_go_into_a_from_header_is_refused(
    db: Database, settings: Settings, display_name: str
):
    tenant, domain_id = await _tenant_with_domain(db)

    error = await _refused(db, settings, tenant, domain_id, "sales", display_name=display_name)

    assert (error.code, error.field) == ("DISPLAY_NAME_INVALID", "displayName")


async def test_an_address_that_exists_in_any_case_is_refused(db: Database, settings: Settings):
    tenant, domain_id = await _tenant_with_domain(db)
    await _create(db, settings, tenant, domain_id, "hello")

    error = await _refused(db, settings, tenant, domain_id, "HELLO")

    assert (error.code, error.field) == ("ACCOUNT_EXISTS", "localPart")


async def test_a_tenant_cannot_create_more_accounts_than_its_plan_allows(
    db: Database, settings: Settings
):
    tenant, domain_id = await _tenant_with_domain(db, accounts=1)
    await _create(db, settings, tenant, domain_id, "first")

    error = await _refused(db, settings, tenant, domain_id, "second")

    assert error.code == "PLAN_LIMIT_ACCOUNTS"
    assert "Test plan allows 1 email accounts" in error.message


async def test_an_account_on_another_tenants_domain_is_refused_as_not_found(
    db: Database, settings: Settings
):
    _, their_domain = await _tenant_with_domain(db)
    tenant, _ = await _tenant_with_domain(db)

    error = await _refused(db, settings, tenant, their_domain, "hello")

    assert (error.code, error.field) == ("NOT_FOUND", "domainId")


async def test_enabling_warmup_starts_the_ramp_today_at_day_one(db: Database, settings: Settings):
    tenant, domain_id = await _tenant_with_domain(db)
    created = await _create(db, settings, tenant, domain_id, "warm")

    account, warmup = await _warmup(db, tenant, created.id, True)

    assert account.status == AccountStatus.WARMING_UP
    assert (warmup.enabled, warmup.day) == (True, 1)
    assert warmup.started_on == datetime.now(UTC).date()


async def test_disabling_warmup_makes_a_warming_account_active_again(
    db: Database, settings: Settings
):
    tenant, domain_id = await _tenant_with_domain(db)
    created = await _create(db, settings, tenant, domain_id, "warm")
    await _warmup(db, tenant, created.id, True)

    account, warmup = await _warmup(db, tenant, created.id, False)

    assert account.status == AccountStatus.ACTIVE
    assert warmup.enabled is False


async def test_enabling_warmup_again_keeps_the_ramp_and_re_enabling_restarts_it(
    db: Database, settings: Settings
):
    tenant, domain_id = await _tenant_with_domain(db)
    created = await _create(db, settings, tenant, domain_id, "warm")
    await _warmup(db, tenant, created.id, True)
    async with db.tenant_session(tenant) as s:  # five days of ticks later
        await s.execute(
            update(WarmupState).where(WarmupState.account_id == created.id).values(day=5)
        )

    _, still_on = await _warmup(db, tenant, created.id, True)
    await _warmup(db, tenant, created.id, False)
    _, restarted = await _warmup(db, tenant, created.id, True)

    assert still_on.day == 5
    assert restarted.day == 1


@pytest.mark.parametrize("status", [AccountStatus.PAUSED, AccountStatus.DISABLED])
async def test_warmup_does_not_change_a_paused_or_disabled_accounts_status(
    db: Database, settings: Settings, status: AccountStatus
):
    tenant, domain_id = await _tenant_with_domain(db)
    created = await _create(db, settings, tenant, domain_id, "held")
    async with db.tenant_session(tenant) as s:
        await s.execute(
            update(EmailAccount).where(EmailAccount.id == created.id).values(status=status)
        )

    enabled, warmup = await _warmup(db, tenant, created.id, True)
    disabled, _ = await _warmup(db, tenant, created.id, False)

    assert warmup.enabled is True
    assert enabled.status == disabled.status == status


async def test_setting_warmup_on_another_tenants_account_is_refused_as_not_found(
    db: Database, settings: Settings
):
    owner, domain_id = await _tenant_with_domain(db)
    created = await _create(db, settings, owner, domain_id, "theirs")
    other, _ = await _tenant_with_domain(db)

    with pytest.raises(DomainError) as raised:
        async with db.tenant_session(other) as s:
            await set_warmup(s, tenant_id=other, account_id=created.id, enabled=True)

    assert (raised.value.code, raised.value.field) == ("NOT_FOUND", "accountId")
    async with db.tenant_session(owner) as s:
        warmup = await s.scalar(select(WarmupState).where(WarmupState.account_id == created.id))
    assert warmup is not None and warmup.enabled is False
