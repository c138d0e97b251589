"""Account e-mails in tests: their jobs run through the job runner (jobs/runner.py) as a worker
runs them, and the mail is read back from the SMTP sink (tests/smtp.py)."""

from __future__ import annotations

import email
import re
import uuid
from email import policy
from email.message import EmailMessage

from sqlalchemy import func, select, update

import jobs.handlers  # noqa: F401  (registers the account_mail handler)
from jobs.runner import Runner
from models.queue import Job, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from services import account_mail
from tests.smtp import Sink

WAITING = (JobStatus.QUEUED, JobStatus.FAILED)


async def mail_jobs(db: Database, **match: str) -> list[Job]:
    """The account-mail jobs whose payload has every `match` item, oldest first."""
    async with db.system_session("queue") as s:
        return list(
            await s.scalars(
                select(Job)
                .where(Job.kind == account_mail.KIND, Job.payload.contains(match))
                .order_by(Job.created_at)
            )
        )


async def run_mail_jobs(db: Database, settings: Settings, **match: str) -> list[uuid.UUID]:
    """Runs the waiting account-mail jobs whose payload has `match` now, as a worker would once
    the queuer dispatched them (a failed one's backoff is taken as over); their ids."""
    async with db.system_session("queue") as s:
        claimed = (
            await s.execute(
                update(Job)
                .where(
                    Job.kind == account_mail.KIND,
                    Job.status.in_(WAITING),
                    Job.payload.contains(match),
                )
                .values(
                    status=JobStatus.DISPATCHED,
                    attempts=Job.attempts + 1,
                    lease_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, 60),
                )
                .returning(Job.id, Job.attempts)
            )
        ).all()
    if claimed:
        runner = Runner(settings)
        try:
            await runner.run([[str(job_id), attempt] for job_id, attempt in claimed])
        finally:
            await (await runner.pool()).close()
            await runner.db.dispose()
            if runner.redis is not None:
                await runner.redis.aclose()
    return [job_id for job_id, _ in claimed]


def mails_to(sink: Sink, address: str) -> list[EmailMessage]:
    """What the sink received for `address`, parsed, in order."""
    return [
        email.message_from_bytes(data, policy=policy.default)
        for _, recipients, data in sink.messages
        if address in recipients
    ]


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def token_in(text: str) -> str:
    """The token of the link in a mail's text (or a Loops data variable)."""
    found = re.search(r"[?&]token=([A-Za-z0-9_-]+)", text)
    assert found, text
    return found.group(1)
