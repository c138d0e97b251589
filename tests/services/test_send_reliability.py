"""Sending stays exactly-once when the SMTP server is slow, when batches are cut short and when
queues are long: real worker processes and queuers, a real SMTP server the test slows down.

The outcome rule (services/smtp.OUTCOMES) is checked first on its own, then through the lanes
against a real server, then end to end."""

from __future__ import annotations

import asyncio
import time

import aiosmtplib
import pytest
from sqlalchemy import func, select

from models.content import EmailEvent, EmailMessage, EventKind, MessageStatus
from models.queue import JobLog, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from services import smtp
from tests.factories import UNLIMITED_RATES, sending_campaign
from tests.jobs.conftest import QUEUE_SETTINGS
from tests.jobs.helpers import (
    LEASE_EXPIRED,
    LEASE_EXPIRED_WAITING,
    all_sent,
    send_jobs,
    wait_for,
)
from tests.smtp import running_sink

FAST = UNLIMITED_RATES


# --- the outcome rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "error", "outcome"),
    [
        (smtp.Phase.AFTER_DOT, None, smtp.Outcome.SENT),
        (smtp.Phase.AFTER_DOT, aiosmtplib.SMTPReadTimeoutError("no reply"), smtp.Outcome.ASSUMED),
        (smtp.Phase.AFTER_DOT, aiosmtplib.SMTPServerDisconnected("gone"), smtp.Outcome.ASSUMED),
        (smtp.Phase.AFTER_DOT, asyncio.CancelledError(), smtp.Outcome.ASSUMED),
        (smtp.Phase.AFTER_DOT, aiosmtplib.SMTPDataError(554, "spam"), smtp.Outcome.BOUNCED),
        (smtp.Phase.AFTER_DOT, aiosmtplib.SMTPDataError(451, "later"), smtp.Outcome.RETRY),
        (smtp.Phase.DATA, aiosmtplib.SMTPServerDisconnected("gone"), smtp.Outcome.RETRY),
        (smtp.Phase.DATA, aiosmtplib.SMTPReadTimeoutError("no 354"), smtp.Outcome.RETRY),
        (smtp.Phase.DATA, asyncio.CancelledError(), smtp.Outcome.RETRY),
        (smtp.Phase.RCPT, aiosmtplib.SMTPRecipientRefused(550, "no", "a@b"), smtp.Outcome.BOUNCED),
        (smtp.Phase.RCPT, aiosmtplib.SMTPRecipientRefused(450, "busy", "a@b"), smtp.Outcome.RETRY),
        (smtp.Phase.MAIL, aiosmtplib.SMTPSenderRefused(553, "not you", "x@y"), smtp.Outcome.RETRY),
        (smtp.Phase.CONNECTING, ConnectionRefusedError(), smtp.Outcome.RETRY),
    ],
)
def test_only_a_reply_decides_after_the_final_dot_and_nothing_before_it_is_delivered(
    phase, error, outcome
) -> None:
    result = smtp.outcome_of(phase, error, "250 OK")
    assert result.outcome == outcome
    if outcome == smtp.Outcome.ASSUMED:
        assert result.reply.startswith("outcome unknown")


def test_every_phase_and_ending_has_an_outcome() -> None:
    assert {(p, e) for p in smtp.Phase for e in smtp.Ended} - set(smtp.OUTCOMES) == {
        (p, smtp.Ended.ACCEPTED) for p in smtp.Phase if p < smtp.Phase.AFTER_DOT
    }  # a 2xx to the end of DATA is the only acceptance there is


# --- the lane, against a real server ---------------------------------------------------------


async def test_a_reply_later_than_the_data_timeout_is_assumed_sent_while_other_connections_deliver() -> (
    None
):
    """A server that has the message but does not answer the end of DATA in time: unknown
    outcome, assumed sent, recorded once; the lane's other connections deliver meanwhile."""
    with running_sink() as (sink, port):
        sink.slow["stuck@inbox.example"] = 30
        server = smtp.Server(
            "127.0.0.1", port, connections=4, timeouts=smtp.Timeouts(5, 5, data=1.5)
        )
        lane = smtp.Lane(server)
        recorded: list[tuple[str, smtp.Result]] = []

        def delivery(to: str) -> smtp.Delivery:
            async def claim() -> bool:
                return True

            async def record(result: smtp.Result) -> None:
                recorded.append((to, result))

            return smtp.Delivery(
                "bounce@x.example", to, b"Subject: hi\r\n\r\nhello\r\n", claim, record
            )

        stuck = delivery("stuck@inbox.example")
        lane.submit(stuck)
        others = [delivery(f"lead{n}@inbox.example") for n in range(20)]
        for d in others:
            lane.submit(d)
        await asyncio.wait_for(asyncio.gather(*(d.done.wait() for d in others)), 5)
        assert not stuck.done.is_set()  # the others went out while it waited
        await asyncio.wait_for(stuck.done.wait(), 5)

    assert {to: r.outcome for to, r in recorded} == {
        "stuck@inbox.example": smtp.Outcome.ASSUMED,
        **{f"lead{n}@inbox.example": smtp.Outcome.SENT for n in range(20)},
    }
    assert sink.received_by("stuck@inbox.example") == 1
    assert "after the end of DATA" in dict(recorded)["stuck@inbox.example"].reply


async def test_a_delivery_cut_short_before_the_dot_is_released_and_after_it_gets_its_reply() -> (
    None
):
    with running_sink() as (sink, port):
        sink.delay = 0.5
        lane = smtp.Lane(smtp.Server("127.0.0.1", port, connections=1))
        recorded: dict[str, smtp.Result] = {}

        def delivery(to: str) -> smtp.Delivery:
            async def claim() -> bool:
                return True

            async def record(result: smtp.Result) -> None:
                recorded[to] = result

            return smtp.Delivery("b@x.example", to, b"Subject: hi\r\n\r\nhi\r\n", claim, record)

        first, second = delivery("first@inbox.example"), delivery("second@inbox.example")
        lane.submit(first)
        lane.submit(second)  # waits: the lane has one connection
        await wait_for(_at(first, smtp.Phase.AFTER_DOT), within=5, every=0.01)
        first.cut(grace=5)
        second.cut(grace=5)
        await asyncio.wait_for(asyncio.gather(first.done.wait(), second.done.wait()), 5)

    assert recorded["first@inbox.example"].outcome == smtp.Outcome.SENT  # its reply came in time
    assert second.withdrawn and "second@inbox.example" not in recorded  # never claimed
    assert sink.received_by("second@inbox.example") == 0


async def test_a_result_whose_first_write_fails_is_written_again_not_left_sending() -> None:
    with running_sink() as (_, port):
        lane = smtp.Lane(smtp.Server("127.0.0.1", port, connections=1))
        tries: list[smtp.Outcome] = []

        async def claim() -> bool:
            return True

        async def record(result: smtp.Result) -> None:
            tries.append(result.outcome)
            if len(tries) == 1:
                raise ConnectionResetError("the database went away for a moment")

        delivery = smtp.Delivery("b@x.example", "lead@inbox.example", b"hi\r\n", claim, record)
        lane.submit(delivery)
        await asyncio.wait_for(delivery.done.wait(), 10)

    assert tries == [smtp.Outcome.SENT, smtp.Outcome.SENT]
    assert delivery.record_error is None


def _at(delivery: smtp.Delivery, phase: smtp.Phase):
    async def reached() -> bool:
        return delivery.phase == phase

    return reached


# --- end to end: worker processes, queuer, a slow server --------------------------------------


async def _messages(db: Database, tenant) -> dict[str, EmailMessage]:
    async with db.tenant_session(tenant, tier="content") as s:
        return {m.to_address: m for m in await s.scalars(select(EmailMessage))}


@pytest.mark.slow
async def test_a_server_slow_to_answer_the_end_of_data_gets_each_message_once(
    db: Database, settings: Settings, start_worker, run_queuer
) -> None:
    """5 of 100 replies take 35 s (past the 30 s a client may give a command) and one takes
    700 s, past the DATA timeout (shortened to 40 s here to keep the test bounded): nothing
    arrives twice, the one that timed out is assumed sent and not resent, and the connections
    that are not waiting keep delivering."""
    leads = 100
    slow = {f"lead{n}@inbox.example": 35.0 for n in range(0, 100, 20)}
    stuck = "lead7@inbox.example"
    with running_sink() as (sink, port):
        sink.slow = {**slow, stuck: 700.0}
        tenant, campaign_id, _ = await sending_campaign(
            db, settings, lead_count=leads, steps=1, accounts_n=2
        )
        start_worker(
            processes=1, threads=6, smtp_relay_port=port, smtp_data_timeout_seconds=40,
            job_timeout_seconds=120, **FAST,
        )  # fmt: skip
        run_queuer()
        began = time.monotonic()
        await wait_for(all_sent(db, tenant, leads), within=120, every=0.5)
        waited = time.monotonic() - began
        await asyncio.sleep(3)  # nothing more arrives: the timed-out message is not resent

        recipients = [rcpts[0] for _, rcpts, _ in sink.messages]
        prompt = [at for (_, rcpts, _), at in zip(sink.messages, sink.arrived, strict=True)
                  if rcpts[0] not in slow and rcpts[0] != stuck]  # fmt: skip
    assert sorted(recipients) == sorted(f"lead{n}@inbox.example" for n in range(leads))
    # The 94 prompt messages all arrived before the first 35 s reply was due: a slow reply
    # held its own connection only.
    assert max(prompt) - min(sink.arrived) < 30
    messages = await _messages(db, tenant)
    assert messages[stuck].smtp_response.startswith("outcome unknown")
    assert all(messages[to].smtp_response.startswith("250") for to in slow)
    async with db.tenant_session(tenant, tier="content") as s:
        assumed = list(
            await s.scalars(
                select(EmailEvent.message_id).where(
                    EmailEvent.kind == EventKind.SENT, EmailEvent.details["assumed"].as_boolean()
                )
            )
        )
    assert assumed == [messages[stuck].id]
    jobs = await send_jobs(db, tenant, campaign_id)
    assert {(j.status, j.attempts) for j in jobs} == {(JobStatus.SUCCEEDED, 1)}
    print(f"100 messages, 5 at 35 s and one past the 40 s DATA timeout: all SENT in {waited:.1f} s")


@pytest.mark.slow
async def test_a_job_time_limit_that_cuts_a_batch_mid_way_loses_and_repeats_nothing(
    db: Database, settings: Settings, start_worker, run_queuer, monkeypatch
) -> None:
    """Batches of 20 sends that need 2.5 s (4 connections, 0.5 s a message) under a 2 s time
    limit: each is cut mid-way, what went out is recorded, what did not is released and sent by
    the retry; every message arrives once, and a cut uses no attempt."""
    monkeypatch.setitem(QUEUE_SETTINGS, "job_timeout_seconds", 2.0)
    leads = 60
    with running_sink() as (sink, port):
        sink.delay = 0.5
        tenant, campaign_id, _ = await sending_campaign(
            db, settings, lead_count=leads, steps=1, accounts_n=1
        )
        start_worker(processes=1, threads=6, smtp_relay_port=port, smtp_pool_size=4, **FAST)
        run_queuer(queue_jobs_per_message=20)
        await wait_for(all_sent(db, tenant, leads), within=120, every=0.5)
        await asyncio.sleep(1)
        recipients = sorted(rcpts[0] for _, rcpts, _ in sink.messages)

    assert recipients == sorted(f"lead{n}@inbox.example" for n in range(leads))  # each once
    messages = await _messages(db, tenant)
    assert {m.status for m in messages.values()} == {MessageStatus.SENT}
    assert not any(m.smtp_response.startswith("outcome unknown") for m in messages.values())
    jobs = await send_jobs(db, tenant, campaign_id)
    assert {(j.status, j.attempts) for j in jobs} == {(JobStatus.SUCCEEDED, 1)}
    async with db.system_session("queue") as s:
        cuts = await s.scalar(
            select(func.count()).where(
                JobLog.job_id.in_([j.id for j in jobs]), JobLog.message.like("%cut short%")
            )
        )
    assert cuts > 0, "no batch was cut short: nothing tested"
    print(f"{cuts} sends cut short and retried")


@pytest.mark.slow
async def test_a_relay_slower_than_the_queue_gets_every_message_once_without_spent_attempts(
    db: Database, settings: Settings, start_worker, run_queuer
) -> None:
    """A relay accepting 50 messages a second and a 2,500-lead campaign (50 s of sending), with
    small per-tier limits and the tests' 3 s lease: jobs wait in Redis and for connections far
    longer than a lease, yet none expires, none uses a second attempt, and every lead gets its
    message once."""
    leads = 2_500
    with running_sink() as (sink, port):
        sink.per_second = 50
        tenant, campaign_id, _ = await sending_campaign(
            db, settings, lead_count=leads, steps=1, accounts_n=4
        )
        start_worker(processes=2, threads=6, smtp_relay_port=port, **FAST)
        run_queuer(queue_max_messages_per_tier=2)
        began = time.monotonic()
        await wait_for(all_sent(db, tenant, leads), within=240, every=1)
        seconds = time.monotonic() - began
        recipients = [rcpts[0] for _, rcpts, _ in sink.messages]

    assert len(recipients) == len(set(recipients)) == leads
    jobs = await send_jobs(db, tenant, campaign_id)
    assert {(j.status, j.attempts) for j in jobs} == {(JobStatus.SUCCEEDED, 1)}
    async with db.system_session("queue") as s:
        expired = await s.scalar(
            select(func.count()).where(
                JobLog.job_id.in_([j.id for j in jobs]),
                JobLog.message.in_([LEASE_EXPIRED, LEASE_EXPIRED_WAITING]),
            )
        )
    assert expired == 0
    print(f"{leads:,} messages through a 50/s relay in {seconds:.0f} s, no lease expired")


@pytest.mark.slow
async def test_a_worker_shut_down_mid_campaign_stops_in_seconds_leaving_nothing_half_done(
    db: Database, settings: Settings, start_worker, run_queuer
) -> None:
    """SIGTERM while batches wait on a slow server (each reply takes 1 s): the worker cuts its
    batches short and exits within seconds, no message left SENDING and no job left running;
    the next worker sends the rest. Every message arrives once, and the stop used no attempt."""
    leads = 80
    with running_sink() as (sink, port):
        sink.delay = 1.0
        tenant, campaign_id, _ = await sending_campaign(
            db, settings, lead_count=leads, steps=1, accounts_n=1
        )
        worker = start_worker(
            processes=1, threads=6, smtp_relay_port=port, smtp_pool_size=8, **FAST
        )
        run_queuer(queue_jobs_per_message=20)

        async def under_way() -> bool:
            return len(sink.messages) >= 8

        await wait_for(under_way, within=60, every=0.05)
        began = time.monotonic()
        worker.stop()  # SIGTERM to Dramatiq's main process; waits for it to exit
        stopped_in = time.monotonic() - began
        at_stop = len(sink.messages)
        messages = await _messages(db, tenant)
        jobs = await send_jobs(db, tenant, campaign_id)
        assert at_stop < leads, "the campaign ended before the stop: nothing tested"
        assert stopped_in < 10  # cut short: 5 s of grace for replies under way, then recorded
        assert MessageStatus.SENDING not in {m.status for m in messages.values()}
        assert JobStatus.RUNNING not in {j.status for j in jobs}

        start_worker(processes=1, threads=6, smtp_relay_port=port, smtp_pool_size=8, **FAST)
        await wait_for(all_sent(db, tenant, leads), within=120, every=0.5)
        await asyncio.sleep(1.5)
        recipients = sorted(rcpts[0] for _, rcpts, _ in sink.messages)

    assert recipients == sorted(f"lead{n}@inbox.example" for n in range(leads))  # each once
    messages = await _messages(db, tenant)
    assert not any(m.smtp_response.startswith("outcome unknown") for m in messages.values())
    jobs = await send_jobs(db, tenant, campaign_id)
    assert {(j.status, j.attempts) for j in jobs} == {(JobStatus.SUCCEEDED, 1)}
    print(f"stopped in {stopped_in:.1f} s with {at_stop} of {leads} delivered")
