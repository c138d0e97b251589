"""Account e-mails: the mails the platform sends its users (address verification, password
reset, invitations, payment notices), the single-use tokens two of them carry, and what those
tokens unlock (verifyEmail, resetPassword).

Every mail is a platform job (kind `account_mail`, no tenant) written in the transaction of its
cause by queue.enqueue_account_mail() (sql/account_mail.sql), so a mail exists if and only if
its cause committed, and an outage of the mail provider delays it, never fails the request.
The job composes the mail when it runs: a token is made then, committed, and mailed, so its
secret is never stored anywhere (app.user_tokens keeps its SHA-256, as API keys are kept).
It goes through Loops' transactional API (services/loops.py) when a key and the kind's
transactional id are configured, otherwise as plain text through the platform SMTP relay.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from typing import Any

from sqlalchemy import exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from graphql_api.ids import encode_id  # the invitation's id as the dashboard passes it back
from jobs.registry import PermanentJobError
from models.billing import Subscription
from models.sessions import Database
from models.tenancy import (
    Invitation,
    InvitationStatus,
    Role,
    Tenant,
    TenantUser,
    TokenPurpose,
    User,
    UserToken,
)
from penguinmails.settings import Settings
from services import auth, loops, sending, smtp
from services.errors import DomainError
from services.passwords import hash_password

log = logging.getLogger("penguinmails.account_mail")

KIND = "account_mail"
VERIFY_TTL = timedelta(days=7)
RESET_TTL = timedelta(hours=1)
# A user asking again and again gets at most one mail of a kind per this many seconds.
REQUEST_WINDOW_SECONDS = 60


class Mail(enum.StrEnum):
    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"
    INVITATION = "invitation"
    PAYMENT_FAILED = "payment_failed"
    SUSPENDED = "suspended"
    RESTORED = "restored"


PAYMENT_NOTICES = (Mail.PAYMENT_FAILED, Mail.SUSPENDED, Mail.RESTORED)


def _not_verified() -> DomainError:
    return DomainError(
        "EMAIL_NOT_VERIFIED",
        "Confirm your email address first: open the link in the mail we sent you "
        "(or have it sent again).",
    )


# --- queuing -----------------------------------------------------------------------------------


async def _queue(session: AsyncSession, payload: dict[str, Any], key: str | None = None) -> None:
    """The mail's job, in the session's transaction, whatever its role and binding."""
    await session.execute(
        text("SELECT queue.enqueue_account_mail(CAST(:mail AS jsonb), :key)"),
        {"mail": json.dumps(payload), "key": key},
    )


def _window() -> int:
    return int(datetime.now(UTC).timestamp()) // REQUEST_WINDOW_SECONDS


async def queue_verification(session: AsyncSession, user_id: uuid.UUID) -> None:
    """The verification mail of a new user (sign-up)."""
    await _queue(
        session, {"mail": Mail.VERIFY_EMAIL, "user_id": str(user_id)}, f"verify_email:{user_id}"
    )


async def queue_invitation(session: AsyncSession, invitation: Invitation) -> None:
    """The invitation's mail to its address (each invite, and each refresh of it, sends one)."""
    await _queue(session, {"mail": Mail.INVITATION, "invitation_id": str(invitation.id)})


async def notify_owners(
    session: AsyncSession, tenant_id: uuid.UUID, kind: Mail | str, *, key: str | None = None
) -> int:
    """A payment notice (payment_failed, suspended, restored) to each OWNER of the tenant, in
    the session's transaction (a tenant's or the system's); how many were queued. With `key`
    (e.g. the invoice or the grace period), a second call with the same key queues nothing."""
    kind = Mail(kind)
    if kind not in PAYMENT_NOTICES:
        raise ValueError(f"{kind} is not a payment notice")
    owners = list(
        await session.scalars(
            select(TenantUser.user_id).where(
                TenantUser.tenant_id == tenant_id, TenantUser.role == Role.OWNER
            )
        )
    )
    for user_id in owners:
        await _queue(
            session,
            {"mail": kind, "tenant_id": str(tenant_id), "user_id": str(user_id)},
            f"{kind}:{tenant_id}:{user_id}:{key}" if key else None,
        )
    return len(owners)


# --- what the tokens unlock --------------------------------------------------------------------


async def verify_email(db: Database, token: str, now: datetime | None = None) -> None:
    """Marks the address of the token's user verified. System path: the token is found by its
    hash before any user is known."""
    now = now or datetime.now(UTC)
    async with db.system_session() as session:
        spent = await _spend(session, token, TokenPurpose.VERIFY_EMAIL, now)
        await session.execute(
            update(User)
            .where(User.id == spent.user_id, User.email_verified_at.is_(None))
            .values(email_verified_at=now)
        )


async def resend_verification(db: Database, user_id: uuid.UUID) -> None:
    """Another verification mail for a signed-in user whose address is not verified yet."""
    async with db.user_session(user_id) as session:
        user = await session.get(User, user_id)
        if user is None:
            raise DomainError("NOT_FOUND", "no such user")
        if user.email_verified_at is not None:
            raise DomainError("EMAIL_ALREADY_VERIFIED", "your email address is verified already")
        await _queue(
            session,
            {"mail": Mail.VERIFY_EMAIL, "user_id": str(user_id)},
            f"verify_email:{user_id}:{_window()}",
        )


async def request_password_reset(db: Database, email: str) -> None:
    """Queues a reset mail when an account has this address; nothing else either way, so the
    caller answers the same for an unknown address (and about as fast: nothing is sent here)."""
    email = email.strip().lower()
    async with db.system_session() as session:  # by email, before any user is bound
        user_id = await session.scalar(select(User.id).where(User.email == email))
        if user_id is not None:
            await _queue(
                session,
                {"mail": Mail.PASSWORD_RESET, "user_id": str(user_id)},
                f"password_reset:{user_id}:{_window()}",
            )


async def reset_password(
    db: Database, token: str, password: str, now: datetime | None = None
) -> tuple[User, Tenant | None]:
    """Sets the password of the token's user and spends the token (and any other reset token
    of theirs); the user and their first tenant, to be logged in. Having the mail proves the
    address, so it counts as verified too. A refused token or password changes nothing."""
    now = now or datetime.now(UTC)
    auth.check_password(password)
    async with db.system_session() as session:
        spent = await _spend(session, token, TokenPurpose.RESET_PASSWORD, now)
        await session.execute(
            update(UserToken)
            .where(
                UserToken.user_id == spent.user_id,
                UserToken.purpose == TokenPurpose.RESET_PASSWORD,
                UserToken.used_at.is_(None),
            )
            .values(used_at=now)
        )
        user = await session.get(User, spent.user_id, with_for_update=True)
        assert user is not None  # tokens go with their user (ON DELETE CASCADE)
        user.password_hash = hash_password(password)
        user.email_verified_at = user.email_verified_at or now
        user.last_login_at = now
        tenant = await auth.first_tenant(session, user.id)
    return user, tenant


async def check_verified(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID | None
) -> None:
    """EMAIL_NOT_VERIFIED unless the acting user's address is verified; for an API key (no
    user), unless an owner's is, so that a key made by an unverified sign-up sends nothing."""
    if user_id is not None:
        verified = await session.scalar(select(User.email_verified_at).where(User.id == user_id))
        if verified is None:
            raise _not_verified()
        return
    owner_verified = await session.scalar(
        select(
            exists().where(
                TenantUser.tenant_id == tenant_id,
                TenantUser.role == Role.OWNER,
                User.id == TenantUser.user_id,
                User.email_verified_at.is_not(None),
            )
        )
    )
    if not owner_verified:
        raise _not_verified()


def require_verified(user: User) -> None:
    if user.email_verified_at is None:
        raise _not_verified()


# --- tokens ------------------------------------------------------------------------------------


def _digest(secret: str) -> str:
    # 32 random bytes: a fast hash is enough, there is nothing to brute-force (as for API keys).
    return hashlib.sha256(secret.encode()).hexdigest()


async def _issue(
    db: Database, user_id: uuid.UUID, purpose: TokenPurpose, ttl: timedelta
) -> tuple[str, datetime]:
    """A new token, committed before it is mailed; (its secret, when it expires)."""
    secret = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + ttl
    async with db.system_session() as session:
        session.add(
            UserToken(
                user_id=user_id, purpose=purpose, token_hash=_digest(secret), expires_at=expires_at
            )
        )
    return secret, expires_at


async def _spend(
    session: AsyncSession, secret: str, purpose: TokenPurpose, now: datetime
) -> UserToken:
    """The token, marked used; refused when unknown (mistyped, tampered, another purpose's),
    used already or expired."""
    token = await session.scalar(
        select(UserToken).where(UserToken.token_hash == _digest(secret)).with_for_update()
    )
    if token is None or token.purpose != purpose:
        raise DomainError("INVALID_TOKEN", "this link is not valid; ask for a new one", "token")
    if token.used_at is not None:
        raise DomainError("TOKEN_USED", "this link was used already; ask for a new one", "token")
    if token.expires_at <= now:
        raise DomainError("TOKEN_EXPIRED", "this link has expired; ask for a new one", "token")
    token.used_at = now
    await session.flush()
    return token


# --- the job: compose and deliver --------------------------------------------------------------


@dataclass(frozen=True)
class Composed:
    """One mail: its address, the plain-text mail, and the variables a Loops template gets."""

    to: str
    subject: str
    text: str
    variables: dict[str, str]


async def send(db: Database, settings: Settings, payload: dict[str, Any], key: str) -> str:
    """Composes and delivers one account mail; what happened ("sent", "skipped: why"). Raises
    for the queue to try again (the provider is down) or PermanentJobError (misconfigured)."""
    try:
        mail = Mail(payload["mail"])
    except (KeyError, ValueError) as e:
        raise PermanentJobError(f"not an account mail: {payload!r}") from e
    composed = await _compose(db, settings, mail, payload)
    if isinstance(composed, str):
        return f"skipped: {composed}"
    transactional_id = settings.loop_transactional_ids.get(mail.value)
    if settings.loop_api_key is not None and transactional_id:
        await loops.send_transactional(
            settings, transactional_id, composed.to, composed.variables, key
        )
    else:
        await _send_by_smtp(settings, composed, key)
    return "sent"


async def _compose(
    db: Database, settings: Settings, mail: Mail, payload: dict[str, Any]
) -> Composed | str:
    """The mail, or why there is none to send any more."""
    if mail == Mail.INVITATION:
        return await _invitation(db, settings, uuid.UUID(payload["invitation_id"]))
    async with db.system_session() as session:
        user = await session.get(User, uuid.UUID(payload["user_id"]))
    if user is None:
        return "the user is gone"
    if mail == Mail.VERIFY_EMAIL:
        if user.email_verified_at is not None:
            return "verified already"
        return await _verification(db, settings, user)
    if mail == Mail.PASSWORD_RESET:
        return await _password_reset(db, settings, user)
    return await _payment_notice(db, settings, mail, user, uuid.UUID(payload["tenant_id"]))


def _link(settings: Settings, path: str) -> str:
    return (settings.dashboard_url or settings.public_url).rstrip("/") + path


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _verification(db: Database, settings: Settings, user: User) -> Composed:
    secret, expires_at = await _issue(db, user.id, TokenPurpose.VERIFY_EMAIL, VERIFY_TTL)
    link = _link(settings, f"/verify-email?token={secret}")
    body = (
        f"Confirm that {user.email} is your address on PenguinMails by opening this link:\n\n"
        f"{link}\n\n"
        f"The link confirms your address; it works once and expires in 7 days, at "
        f"{_when(expires_at)}. Until your address is confirmed you can set up your workspace "
        "but not launch campaigns.\n\n"
        "If you did not sign up for PenguinMails, ignore this mail.\n"
    )
    return Composed(
        user.email, "Confirm your email address for PenguinMails (link valid 7 days)", body,
        {"link": link, "expiresAt": _when(expires_at)},
    )  # fmt: skip


async def _password_reset(db: Database, settings: Settings, user: User) -> Composed:
    secret, expires_at = await _issue(db, user.id, TokenPurpose.RESET_PASSWORD, RESET_TTL)
    link = _link(settings, f"/reset-password?token={secret}")
    body = (
        "Someone (we hope you) asked to reset the password of your PenguinMails account, "
        f"{user.email}. To choose a new password, open this link:\n\n"
        f"{link}\n\n"
        f"The link sets a new password and signs you in; it works once and expires in 1 hour, "
        f"at {_when(expires_at)}.\n\n"
        "If you did not ask for this, ignore this mail: your password stays as it is.\n"
    )
    return Composed(
        user.email, "Reset your PenguinMails password (link valid 1 hour)", body,
        {"link": link, "expiresAt": _when(expires_at)},
    )  # fmt: skip


async def _invitation(db: Database, settings: Settings, invitation_id: uuid.UUID) -> Composed | str:
    async with db.system_session() as session:
        found = (
            await session.execute(
                select(Invitation, Tenant.name)
                .join(Tenant, Tenant.id == Invitation.tenant_id)
                .where(Invitation.id == invitation_id)
            )
        ).first()
    if found is None:
        return "the invitation is gone"
    invitation, tenant_name = found
    if invitation.status != InvitationStatus.PENDING or invitation.expires_at <= datetime.now(UTC):
        return f"the invitation is {invitation.status.value.lower()} or expired"
    link = _link(settings, f"/invitations/{encode_id('Invitation', invitation.id)}")
    role = invitation.role.value.lower()
    article = "an" if role in ("owner", "admin") else "a"
    body = (
        f"You are invited to join the workspace {tenant_name} on PenguinMails as {article} "
        f"{role}.\n\n"
        f"To accept or decline, open this link and sign in (or sign up) as {invitation.email}, "
        "with your address confirmed:\n\n"
        f"{link}\n\n"
        f"The invitation expires at {_when(invitation.expires_at)}. If you do not know "
        f"{tenant_name}, ignore this mail.\n"
    )
    return Composed(
        invitation.email, f"You are invited to {tenant_name} on PenguinMails", body,
        {"link": link, "tenantName": tenant_name, "role": role,
         "expiresAt": _when(invitation.expires_at)},
    )  # fmt: skip


async def _payment_notice(
    db: Database, settings: Settings, mail: Mail, user: User, tenant_id: uuid.UUID
) -> Composed | str:
    async with db.system_session() as session:
        tenant = await session.get(Tenant, tenant_id)
        grace_until = await session.scalar(
            select(Subscription.grace_until)
            .where(Subscription.tenant_id == tenant_id)
            .order_by(Subscription.created_at.desc())
            .limit(1)
        )
    if tenant is None:
        return "the workspace is gone"
    link = _link(settings, "/billing")
    name = tenant.name
    until = f"until {_when(grace_until)}" if grace_until else "for a few days"
    subject, opening = {
        Mail.PAYMENT_FAILED: (
            f"Payment failed for {name} on PenguinMails",
            f"We could not take the payment for the workspace {name}. Sending continues {until}; "
            "after that it is suspended until a payment succeeds. To update the payment "
            "method or pay the open invoice, open billing:",
        ),
        Mail.SUSPENDED: (
            f"Sending suspended for {name} on PenguinMails",
            f"The payment for the workspace {name} is still missing, so its sending is suspended. "
            "Nothing is deleted: campaigns, leads and settings wait. To pay and resume, open "
            "billing:",
        ),
        Mail.RESTORED: (
            f"Sending restored for {name} on PenguinMails",
            f"Thank you: the payment for the workspace {name} arrived, and its sending is back "
            "on. Billing and invoices:",
        ),
    }[mail]
    body = f"{opening}\n\n{link}\n\nYou get this mail as an owner of {name}.\n"
    return Composed(
        user.email, subject, body,
        {"link": link, "tenantName": name, "graceUntil": _when(grace_until) if grace_until else ""},
    )  # fmt: skip


async def _send_by_smtp(settings: Settings, composed: Composed, key: str) -> None:
    """Through the platform relay with the SMTP client of the sending path (its outcome rule:
    a mail that may have arrived is not sent again)."""
    server = sending.relay_server(settings)
    sender = parseaddr(settings.account_mail_from)[1]
    data = _message(settings, composed, sender, key)
    connection = await smtp.connect(server)  # no connection: nothing sent, the job retries
    phase = smtp.Phase.CONNECTING

    def at(reached: smtp.Phase) -> None:
        nonlocal phase
        phase = reached

    try:
        await smtp.transact(connection, server.timeouts, sender, composed.to, data, at)
        return
    except Exception as e:
        result = smtp.outcome_of(phase, e)
    finally:
        connection.close()
    if result.outcome == smtp.Outcome.ASSUMED:
        log.warning("account mail to %s: %s", composed.to, result.reply)
        return
    if result.outcome == smtp.Outcome.BOUNCED:
        raise PermanentJobError(f"the relay refused the mail to {composed.to}: {result.reply}")
    raise result.error or RuntimeError(result.reply)


def _message(settings: Settings, composed: Composed, sender: str, key: str) -> bytes:
    message = EmailMessage()
    message["From"] = settings.account_mail_from
    message["To"] = composed.to
    message["Subject"] = composed.subject
    message["Date"] = formatdate(usegmt=True)
    # One per job: a retry's copy is the same message to a receiver that drops duplicates.
    message["Message-ID"] = f"<{key}@{sender.rpartition('@')[2] or 'localhost'}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message.set_content(composed.text)
    return message.as_bytes(policy=SMTP)
