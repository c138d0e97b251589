"""Email accounts: the addresses a tenant sends from (their warm-up: services/warmup.py)."""

from __future__ import annotations

import unicodedata
import uuid

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.infrastructure import Domain, EmailAccount, WarmupState
from penguinmails.settings import Settings
from services import plans, secrets
from services.errors import DomainError

MAX_DISPLAY_NAME_LENGTH = 200


async def create_email_account(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    domain_id: uuid.UUID,
    local_part: str,
    display_name: str | None = None,
    smtp_password: str | None = None,
) -> EmailAccount:
    """An account `local_part@domain` with warm-up off; the SMTP password is stored encrypted."""
    domain = await session.scalar(
        select(Domain).where(Domain.id == domain_id, Domain.tenant_id == tenant_id)
    )
    if domain is None:
        raise DomainError("NOT_FOUND", "No such domain.", "domainId")
    address = _address(local_part, domain.name)
    display_name = _display_name(display_name)

    await plans.lock_usage(session, tenant_id, "accounts")
    existing = await session.scalar(
        select(EmailAccount.id).where(
            EmailAccount.tenant_id == tenant_id, EmailAccount.address == address
        )
    )
    if existing is not None:
        raise DomainError("ACCOUNT_EXISTS", f"{address} exists already.", "localPart")
    count = await session.scalar(
        select(func.count()).select_from(EmailAccount).where(EmailAccount.tenant_id == tenant_id)
    )
    await plans.check_limit(session, tenant_id, "accounts", count or 0)

    account = EmailAccount(
        tenant_id=tenant_id, domain_id=domain.id, address=address, display_name=display_name
    )
    if smtp_password:
        account.encryption_key_id, account.smtp_password_encrypted = secrets.encrypt(
            settings, smtp_password.encode()
        )
    session.add(account)
    await session.flush()
    session.add(WarmupState(tenant_id=tenant_id, account_id=account.id, enabled=False))
    await session.flush()
    from services import provisioning  # the tenant's configured VPS, when it has one

    await provisioning.queue_placement(session, settings, tenant_id, account.id)
    return account


def smtp_password(settings: Settings, account: EmailAccount) -> str | None:
    """The account's SMTP password in clear, or None when it has none."""
    if account.smtp_password_encrypted is None or account.encryption_key_id is None:
        return None
    return secrets.decrypt(
        settings, account.encryption_key_id, account.smtp_password_encrypted
    ).decode()


def _address(local_part: str, domain_name: str) -> str:
    """The whole address, lowercase, ASCII: SMTPUTF8 senders are refused by too many receivers."""
    if "@" in local_part:
        raise DomainError(
            "ADDRESS_INVALID", "Give only the part before the @, without the domain.", "localPart"
        )
    try:
        # globally_deliverable=False: the domain was accepted when it was added (a .test domain
        # in development); only the local part is in question here.
        valid = validate_email(
            f"{local_part.strip()}@{domain_name}",
            check_deliverability=False,
            allow_smtputf8=False,
            globally_deliverable=False,
            strict=True,
        )
    except EmailNotValidError as e:
        raise DomainError("ADDRESS_INVALID", str(e), "localPart") from e
    return f"{valid.local_part}@{valid.ascii_domain}".lower()


def _display_name(raw: str | None) -> str | None:
    """Stripped; None when blank. No control characters: the name goes into the From header."""
    name = (raw or "").strip()
    if not name:
        return None
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise DomainError(
            "DISPLAY_NAME_INVALID",
            f"The display name is longer than {MAX_DISPLAY_NAME_LENGTH} characters.",
            "displayName",
        )
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise DomainError(
            "DISPLAY_NAME_INVALID", "The display name contains control characters.", "displayName"
        )
    return name
