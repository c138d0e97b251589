"""Reply detection: an account's inbox on a real IMAP server (dovecot), a reply naming a sent
message stops the lead's sequence and is recorded once; unrelated mail, auto-replies and a
second look at the inbox change nothing; a server that cannot be read is a clear error."""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage as Mail
from email.utils import formatdate, make_msgid

import pytest
from redis.asyncio import Redis
from sqlalchemy import insert, select, update

from jobs import scheduler
from jobs.queue import enqueue
from models.campaigns import Lead, LeadStatus, Suppression
from models.content import EmailMessage, EventKind, InboundKind, InboundMessage, MessageStatus
from models.infrastructure import AccountStatus, EmailAccount
from models.queue import Job, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from services import replies, secrets
from services.replies import ImapError
from tests.factories import Sent, create_row, events, sent_message, table
from tests.imap import Dovecot, free_port
from tests.jobs.helpers import quiet_queue

PASSWORD = "correct horse battery staple"


# --- arranging: a sent message, the sending account's inbox, mail in it ---------------------


class Inbox:
    """The account a message was sent from, with its mailbox on the test's dovecot."""

    def __init__(self, dovecot: Dovecot, sent: Sent, account: EmailAccount) -> None:
        self.dovecot, self.sent, self.account = dovecot, sent, account

    def receive(self, raw: bytes) -> int:
        return self.dovecot.append(self.account.address, PASSWORD, raw)


async def inbox(
    db: Database, settings: Settings, dovecot: Dovecot, *, port: int | None = None
) -> Inbox:
    """A message SENT to a lead from an account whose IMAP server is the test's dovecot."""
    sent = await sent_message(db)
    address = f"sender-{uuid.uuid4().hex[:10]}@mail.example.com"
    key_id, encrypted = secrets.encrypt(settings, PASSWORD.encode())
    async with db.system_session() as s:
        domain = await create_row(s, table("app.domains"), sent.tenant)
        account = await s.scalar(
            insert(EmailAccount)
            .values(
                tenant_id=sent.tenant,
                domain_id=domain["id"],
                address=address,
                imap_host=dovecot.host,
                imap_port=port or dovecot.port,
                encryption_key_id=key_id,
                smtp_password_encrypted=encrypted,
            )
            .returning(EmailAccount)
        )
    async with db.system_session("content") as s:
        await s.execute(
            update(EmailMessage)
            .where(EmailMessage.id == sent.message.id)
            .values(
                status=MessageStatus.SENT,
                sent_at=datetime.now(UTC),
                account_id=account.id,
                from_address=address,
            )
        )
    dovecot.add_user(address, PASSWORD)
    return Inbox(dovecot, sent, account)


def reply(
    box: Inbox,
    *,
    in_reply_to: str | None = None,
    references: str | None = None,
    subject: str = "Re: Hello",
    headers: dict[str, str] | None = None,
) -> bytes:
    """Mail from the lead to the account, as a mail client writes a reply."""
    mail = Mail()
    mail["From"] = f"Pat Lead <{box.sent.email}>"
    mail["To"] = box.account.address
    mail["Subject"] = subject
    mail["Date"] = formatdate()
    mail["Message-ID"] = make_msgid(domain="recipient.example")
    if in_reply_to is not None:
        mail["In-Reply-To"] = in_reply_to
    if references is not None:
        mail["References"] = references
    for name, value in (headers or {}).items():
        mail[name] = value
    mail.set_content("Sounds interesting, can we talk on Tuesday?\n\n> Hello from us\n")
    return mail.as_bytes()


# --- reading the outcome --------------------------------------------------------------------


async def poll(db: Database, settings: Settings, redis: Redis, box: Inbox) -> replies.PollResult:
    """A poll as the platform's, except that it may log in to the loopback dovecot without TLS
    (the TLS tests check that it uses STARTTLS when offered)."""
    local = settings.model_copy(update={"imap_allow_plaintext": True})
    return await replies.poll_account(db, local, redis, box.sent.tenant, box.account.id)


async def test_a_server_offering_no_tls_is_refused_before_the_password_is_sent(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))

    with pytest.raises(ImapError, match="offers no STARTTLS"):
        await replies.poll_account(db, settings, redis, box.sent.tenant, box.account.id)

    assert await events(db, box.sent.message.id) == []
    assert await lead_status(db, box) != LeadStatus.REPLIED


async def lead_status(db: Database, box: Inbox) -> LeadStatus:
    async with db.system_session() as s:
        return await s.scalar(select(Lead.status).where(Lead.id == box.sent.lead))


async def suppressed(db: Database, box: Inbox) -> list[str]:
    async with db.system_session() as s:
        query = select(Suppression.email).where(Suppression.tenant_id == box.sent.tenant)
        return list(await s.scalars(query))


async def stored(db: Database, box: Inbox) -> list[InboundMessage]:
    async with db.system_session("content") as s:
        query = select(InboundMessage).where(InboundMessage.tenant_id == box.sent.tenant)
        return list(await s.scalars(query))


async def last_uid(db: Database, box: Inbox) -> int | None:
    async with db.system_session() as s:
        return await s.scalar(
            select(EmailAccount.imap_last_uid).where(EmailAccount.id == box.account.id)
        )


async def pending_sends(db: Database, box: Inbox) -> list[uuid.UUID]:
    async with db.tenant_session(box.sent.tenant) as s:
        return [
            await enqueue(
                s,
                "send_step",
                {"lead_id": str(box.sent.lead), "step": n},
                tenant_id=box.sent.tenant,
            )
            for n in (2, 3)
        ]


async def job_statuses(db: Database, ids: list[uuid.UUID]) -> list[JobStatus]:
    async with db.system_session("queue") as s:
        status = dict((await s.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))).all())
    return [status[i] for i in ids]


# --- replies --------------------------------------------------------------------------------


async def test_a_reply_marks_the_lead_replied_and_cancels_its_sends_without_suppressing(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    jobs = await pending_sends(db, box)
    uid = box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))

    result = await poll(db, settings, redis, box)

    assert (result.read, result.replies) == (1, 1)
    [event] = await events(db, box.sent.message.id)
    assert event.kind == EventKind.REPLY and not event.machine
    assert (event.lead_id, event.details["from"], event.details["subject"]) == (
        box.sent.lead, box.sent.email, "Re: Hello",
    )  # fmt: skip
    assert await lead_status(db, box) == LeadStatus.REPLIED
    assert await job_statuses(db, jobs) == [JobStatus.CANCELLED, JobStatus.CANCELLED]
    assert await suppressed(db, box) == []
    [row] = await stored(db, box)
    assert (row.kind, row.matched_message_id, row.error) == (
        InboundKind.REPLY, box.sent.message.id, None,
    )  # fmt: skip
    assert (row.mail_from, row.rcpt_to) == (box.sent.email, box.account.address)
    assert b"can we talk on Tuesday?" in zlib.decompress(row.raw_compressed)
    assert event.details["inbound_id"] == str(row.id)
    assert await last_uid(db, box) == uid == result.last_uid


async def test_a_reply_naming_the_message_only_in_references_is_matched(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    ours = box.sent.message.message_id_header
    box.receive(
        reply(
            box,
            in_reply_to="<elsewhere@recipient.example>",
            references=f"{ours} <elsewhere@recipient.example>",
        )
    )

    result = await poll(db, settings, redis, box)

    assert result.replies == 1
    assert [e.kind for e in await events(db, box.sent.message.id)] == [EventKind.REPLY]
    assert await lead_status(db, box) == LeadStatus.REPLIED


async def test_mail_naming_none_of_the_tenants_messages_is_ignored_and_not_stored(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    jobs = await pending_sends(db, box)
    other = await inbox(db, settings, dovecot)  # another tenant's message
    box.receive(reply(box, subject="Lunch?"))
    box.receive(reply(box, in_reply_to="<unknown@recipient.example>"))
    uid = box.receive(reply(box, in_reply_to=other.sent.message.message_id_header))

    result = await poll(db, settings, redis, box)

    assert (result.read, result.unmatched, result.replies) == (3, 3, 0)
    assert await events(db, box.sent.message.id) == []
    assert await events(db, other.sent.message.id) == []
    assert await stored(db, box) == [] and await stored(db, other) == []
    assert await lead_status(db, box) == LeadStatus.ACTIVE
    assert await job_statuses(db, jobs) == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert await last_uid(db, box) == uid


async def test_polling_again_or_a_second_reply_to_the_message_changes_nothing(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    ours = box.sent.message.message_id_header
    box.receive(reply(box, in_reply_to=ours))
    await poll(db, settings, redis, box)
    first = await stored(db, box)

    again = await poll(db, settings, redis, box)
    uid = box.receive(reply(box, in_reply_to=ours, subject="Re: Hello (also)"))
    second = await poll(db, settings, redis, box)
    async with db.system_session() as s:  # read the whole inbox again, as after a crash
        await s.execute(
            update(EmailAccount).where(EmailAccount.id == box.account.id).values(imap_last_uid=0)
        )
    from_start = await poll(db, settings, redis, box)

    assert (again.read, again.replies) == (0, 0)
    assert (second.read, second.replies, second.repeated) == (1, 0, 1)
    assert (from_start.read, from_start.replies, from_start.repeated) == (2, 0, 2)
    assert [e.kind for e in await events(db, box.sent.message.id)] == [EventKind.REPLY]
    assert [r.id for r in await stored(db, box)] == [r.id for r in first]
    assert await lead_status(db, box) == LeadStatus.REPLIED
    assert await last_uid(db, box) == uid


async def test_overlapping_polls_of_one_inbox_record_one_reply(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))

    results = await asyncio.gather(*(poll(db, settings, redis, box) for _ in range(4)))

    assert sum(r.replies for r in results) == 1
    assert [e.kind for e in await events(db, box.sent.message.id)] == [EventKind.REPLY]
    assert len(await stored(db, box)) == 1


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("Automatic reply: Hello", {"Auto-Submitted": "auto-replied"}),
        ("Re: Hello", {"X-Autoreply": "yes"}),
        ("Re: Hello", {"Precedence": "auto_reply"}),
        ("Out of Office: Hello", {}),
    ],
)
async def test_an_auto_reply_does_not_count_as_a_reply(
    db: Database,
    settings: Settings,
    redis: Redis,
    dovecot: Dovecot,
    subject: str,
    headers: dict[str, str],
) -> None:
    box = await inbox(db, settings, dovecot)
    jobs = await pending_sends(db, box)
    ours = box.sent.message.message_id_header
    uid = box.receive(reply(box, in_reply_to=ours, subject=subject, headers=headers))

    result = await poll(db, settings, redis, box)

    assert (result.automatic, result.replies) == (1, 0)
    assert await events(db, box.sent.message.id) == []
    assert await stored(db, box) == []
    assert await lead_status(db, box) == LeadStatus.ACTIVE
    assert await job_statuses(db, jobs) == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert await last_uid(db, box) == uid


async def test_warmup_mail_is_never_a_reply_whatever_it_names(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    ours = box.sent.message.message_id_header
    uid = box.receive(reply(box, in_reply_to=ours, headers={"X-PenguinMails-Warmup": "f00d"}))

    result = await poll(db, settings, redis, box)

    assert (result.warmup, result.replies, result.unmatched) == (1, 0, 0)
    assert await events(db, box.sent.message.id) == []
    assert await lead_status(db, box) == LeadStatus.ACTIVE
    assert await last_uid(db, box) == uid


async def test_a_reply_leaves_an_unsubscribed_lead_unsubscribed(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    async with db.system_session() as s:
        await s.execute(
            update(Lead).where(Lead.id == box.sent.lead).values(status=LeadStatus.UNSUBSCRIBED)
        )
    box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))

    await poll(db, settings, redis, box)

    assert [e.kind for e in await events(db, box.sent.message.id)] == [EventKind.REPLY]
    assert await lead_status(db, box) == LeadStatus.UNSUBSCRIBED


async def test_a_renumbered_mailbox_is_read_again_from_the_start(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    uid = box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))
    async with db.system_session() as s:  # a UID from before the server renumbered the inbox
        await s.execute(
            update(EmailAccount).where(EmailAccount.id == box.account.id).values(imap_last_uid=900)
        )

    result = await poll(db, settings, redis, box)

    assert result.renumbered and result.replies == 1
    assert await last_uid(db, box) == uid


async def test_a_new_uidvalidity_means_the_inbox_is_read_again_from_the_start(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    first = box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))
    await poll(db, settings, redis, box)
    async with db.system_session() as s:
        validity = await s.scalar(
            select(EmailAccount.imap_uidvalidity).where(EmailAccount.id == box.account.id)
        )
    assert validity is not None  # stored with the UID
    other = box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))
    async with db.system_session() as s:  # UIDs read under another UIDVALIDITY, below UIDNEXT
        await s.execute(
            update(EmailAccount)
            .where(EmailAccount.id == box.account.id)
            .values(imap_last_uid=first, imap_uidvalidity=validity + 1)
        )

    result = await poll(db, settings, redis, box)

    assert result.renumbered and result.read == 2  # both read again, not only the new one
    assert [e.kind for e in await events(db, box.sent.message.id)] == [EventKind.REPLY]
    assert await last_uid(db, box) == other


async def test_a_server_offering_starttls_is_read_over_tls_with_its_certificate_verified(
    db: Database,
    settings: Settings,
    redis: Redis,
    dovecot_tls: Dovecot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = await inbox(db, settings, dovecot_tls)
    box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))

    with pytest.raises(ImapError, match="CERTIFICATE_VERIFY_FAILED"):
        await poll(db, settings, redis, box)
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot_tls.certificate))  # trusted from now on
    result = await poll(db, settings, redis, box)

    assert result.replies == 1
    logins = [line for line in dovecot_tls.log().splitlines() if "Login: " in line]
    assert [box.account.address in line and "TLS" in line for line in logins][-1:] == [True]


# --- servers that cannot be read ------------------------------------------------------------


async def test_a_wrong_password_is_a_clear_error_and_records_nothing(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    box = await inbox(db, settings, dovecot)
    box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))
    key_id, encrypted = secrets.encrypt(settings, b"not the password")
    async with db.system_session() as s:
        await s.execute(
            update(EmailAccount)
            .where(EmailAccount.id == box.account.id)
            .values(encryption_key_id=key_id, smtp_password_encrypted=encrypted)
        )

    with pytest.raises(ImapError) as failed:
        await poll(db, settings, redis, box)

    assert str(failed.value) == (
        f"IMAP log-in as {box.account.address} to {dovecot.host}:{dovecot.port} failed: "
        "[AUTHENTICATIONFAILED] Authentication failed."
    )
    assert await events(db, box.sent.message.id) == []
    assert await lead_status(db, box) == LeadStatus.ACTIVE
    assert await last_uid(db, box) is None


async def test_a_closed_port_is_a_clear_error_and_records_nothing(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    port = free_port()
    box = await inbox(db, settings, dovecot, port=port)

    with pytest.raises(
        ImapError, match=rf"^IMAP connection to 127\.0\.0\.1:{port} failed: .*refused"
    ):
        await poll(db, settings, redis, box)

    assert await events(db, box.sent.message.id) == []
    assert await last_uid(db, box) is None


# --- scheduling and the job -----------------------------------------------------------------


async def poll_jobs(db: Database, account_id: uuid.UUID) -> list[Job]:
    async with db.system_session("queue") as s:
        query = select(Job).where(
            Job.kind == replies.POLL_KIND, Job.payload["account_id"].astext == str(account_id)
        )
        return list(await s.scalars(query.order_by(Job.created_at)))


async def test_every_account_with_an_imap_server_gets_one_poll_per_interval(
    db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    polled = await inbox(db, settings, dovecot)
    disabled = await inbox(db, settings, dovecot)
    no_imap = await inbox(db, settings, dovecot)
    async with db.system_session() as s:
        for box, values in ((disabled, {"status": AccountStatus.DISABLED}),
                            (no_imap, {"imap_host": None})):  # fmt: skip
            await s.execute(
                update(EmailAccount).where(EmailAccount.id == box.account.id).values(**values)
            )
    now = datetime.now(UTC)

    for at in (now, now, now + timedelta(seconds=settings.reply_poll_seconds)):
        async with db.system_session() as s:
            await replies.queue_polls(s, settings, at)

    jobs = await poll_jobs(db, polled.account.id)
    assert len(jobs) == 2
    assert {(j.tenant_id, j.status, j.max_attempts) for j in jobs} == {
        (polled.sent.tenant, JobStatus.QUEUED, replies.POLL_ATTEMPTS)
    }
    assert await poll_jobs(db, disabled.account.id) == []
    assert await poll_jobs(db, no_imap.account.id) == []
    await quiet_queue(db, settings)  # the jobs are not for a worker of another test


async def test_the_scheduler_queues_the_polls_at_the_configured_interval(
    settings: Settings,
) -> None:
    [item] = [p for p in scheduler.registered() if p.name == "poll_replies"]

    assert item.interval(settings.model_copy(update={"reply_poll_seconds": 300})) == 300
    assert item.interval(settings) == settings.reply_poll_seconds


async def test_the_poll_job_records_replies_and_fails_with_the_reason_when_it_cannot_log_in(
    db: Database, settings: Settings, dovecot: Dovecot, start_worker, run_queuer
) -> None:
    await quiet_queue(db, settings)
    box = await inbox(db, settings, dovecot)
    box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))
    refused = await inbox(db, settings, dovecot, port=free_port())
    async with db.system_session() as s:
        await replies.queue_polls(s, settings)
    start_worker(processes=1, threads=2, imap_allow_plaintext=True)  # the loopback dovecot
    run_queuer()

    deadline = time.monotonic() + 60
    while True:
        [job] = await poll_jobs(db, box.account.id)
        [failing] = await poll_jobs(db, refused.account.id)
        if job.status == JobStatus.SUCCEEDED and failing.status == JobStatus.DEAD:
            break
        assert time.monotonic() < deadline, (job.status, failing.status)
        await asyncio.sleep(0.3)

    assert [e.kind for e in await events(db, box.sent.message.id)] == [EventKind.REPLY]
    assert await lead_status(db, box) == LeadStatus.REPLIED
    assert failing.attempts == replies.POLL_ATTEMPTS  # retried by the queue, then given up
    assert failing.last_error.startswith("ImapError: IMAP connection to 127.0.0.1:")
    await quiet_queue(db, settings)


async def test_inboxes_on_servers_that_never_answer_do_not_delay_the_poll_of_another(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    """Eight accounts whose IMAP servers accept the connection and then say nothing (more than
    the event loop's default thread pool holds on this machine), polled together with one whose
    server answers: its reply is recorded at once, and each silent one fails on its timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets; waits until the client gives up

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    local = settings.model_copy(update={"imap_allow_plaintext": True, "imap_timeout_seconds": 4})
    try:
        stalled = [await inbox(db, settings, dovecot, port=port) for _ in range(8)]
        box = await inbox(db, settings, dovecot)
        box.receive(reply(box, in_reply_to=box.sent.message.message_id_header))

        async def timed(b: Inbox) -> tuple[float, object]:
            began = time.monotonic()
            try:
                outcome = await replies.poll_account(db, local, redis, b.sent.tenant, b.account.id)
            except ImapError as e:
                outcome = e
            return time.monotonic() - began, outcome

        results = await asyncio.gather(*(timed(b) for b in [*stalled, box]))
    finally:
        server.close()

    answered_in, answered = results[-1]
    assert answered.replies == 1 and answered_in < 2, results[-1]
    for seconds, outcome in results[:-1]:
        assert isinstance(outcome, ImapError) and "timed out" in str(outcome), outcome
        assert 3.5 < seconds < 8
    assert await lead_status(db, box) == LeadStatus.REPLIED
