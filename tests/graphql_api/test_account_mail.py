"""Account e-mails end to end over the API: the sign-up mail whose link verifies the address
(and launching waits for it), password reset by mail, the invitation mail (and accepting waits
for a verified address), and a Loops outage that leaves the mutation successful."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import func, update

from graphql_api.ids import parse_id
from models.queue import JobStatus
from models.sessions import Database
from models.tenancy import UserToken
from penguinmails.settings import Settings
from tests.graphql_api.conftest import SIGN_UP, Account, Api, sign_up
from tests.graphql_api.flows import ACCEPT, TRANSITION, build_estate, invite
from tests.loops_server import API_KEY, TRANSACTIONAL_IDS, running_loops
from tests.mailbox import mail_jobs, mails_to, run_mail_jobs, text_of, token_in
from tests.smtp import Sink, running_sink

VERIFY = """mutation($token: String!) { verifyEmail(token: $token) { ok errors { field code message } } }"""
RESEND = "mutation { resendVerification { ok errors { field code message } } }"
REQUEST_RESET = """mutation($email: String!) { requestPasswordReset(email: $email) {
  ok errors { field code message } } }"""
RESET = """mutation($token: String!, $password: String!) { resetPassword(token: $token, password: $password) {
  token user { email emailVerified } tenant { name } errors { field code message } } }"""
LOG_IN = """mutation($email: String!, $password: String!) { logIn(email: $email, password: $password) {
  token errors { code } } }"""
ME = "{ me { email emailVerified } }"
CREATE_KEY = 'mutation { createApiKey(name: "ci") { apiKey { key } errors { code } } }'
NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def sink() -> Iterator[tuple[Sink, int]]:
    with running_sink() as served:
        yield served


def _user_id(account: Account) -> str:
    return str(parse_id(account.user)[1])


async def _mail(db: Database, settings: Settings, sink, address: str, **match: str):
    """Runs the account mails matching `match` into the sink; the last one to `address`."""
    handler, port = sink
    await run_mail_jobs(db, settings.model_copy(update={"smtp_relay_port": port}), **match)
    mails = mails_to(handler, address)
    assert mails, f"no mail to {address}"
    return mails[-1]


async def _launch(api: Api, account: Account, campaign_id: str, *, key: str | None = None):
    body = await api.gql(
        TRANSITION % "launchCampaign", {"id": campaign_id}, token=key or account.token,
        tenant=None if key else account.tenant,
    )  # fmt: skip
    return body["data"]["launchCampaign"]


async def test_sign_up_mails_a_link_that_verifies_the_address_and_launching_waits_for_it(
    api: Api, db: Database, settings: Settings, sink
) -> None:
    account = await sign_up(api, "Unverified", verified=False)
    estate = await build_estate(api, db, account, f"v{uuid.uuid4().hex[:6]}")
    key = (await api.gql(CREATE_KEY, token=account.token, tenant=account.tenant))["data"]
    key = key["createApiKey"]["apiKey"]["key"]
    assert (await api.gql(ME, token=account.token))["data"]["me"]["emailVerified"] is False

    for refused in (
        await _launch(api, account, estate.campaign["id"]),
        await _launch(api, account, estate.campaign["id"], key=key),  # its owner is unverified
    ):
        assert refused["campaign"] is None
        assert [e["code"] for e in refused["errors"]] == ["EMAIL_NOT_VERIFIED"]

    mail = await _mail(db, settings, sink, account.email, user_id=_user_id(account))
    assert mail["Subject"] == "Confirm your email address for PenguinMails (link valid 7 days)"
    assert f"{settings.public_url}/verify-email?token=" in text_of(mail)
    assert "expires in 7 days" in text_of(mail)
    token = token_in(text_of(mail))

    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    refused = (await api.gql(VERIFY, {"token": tampered}))["data"]["verifyEmail"]
    assert refused["ok"] is False
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [("token", "INVALID_TOKEN")]
    assert (await api.gql(VERIFY, {"token": token}))["data"]["verifyEmail"] == {
        "ok": True,
        "errors": [],
    }
    again = (await api.gql(VERIFY, {"token": token}))["data"]["verifyEmail"]
    assert [e["code"] for e in again["errors"]] == ["TOKEN_USED"]
    assert (await api.gql(ME, token=account.token))["data"]["me"]["emailVerified"] is True
    resent = (await api.gql(RESEND, token=account.token))["data"]["resendVerification"]
    assert [e["code"] for e in resent["errors"]] == ["EMAIL_ALREADY_VERIFIED"]

    launched = await _launch(api, account, estate.campaign["id"])
    assert launched["errors"] == [] and launched["campaign"]["status"] == "RUNNING"


async def test_resend_verification_mails_a_new_link_that_works(
    api: Api, db: Database, settings: Settings, sink
) -> None:
    account = await sign_up(api, "Resender", verified=False)
    first = await _mail(db, settings, sink, account.email, user_id=_user_id(account))
    resent = (await api.gql(RESEND, token=account.token))["data"]["resendVerification"]
    assert resent == {"ok": True, "errors": []}

    second = await _mail(db, settings, sink, account.email, user_id=_user_id(account))
    assert token_in(text_of(second)) != token_in(text_of(first))
    assert (await api.gql(VERIFY, {"token": token_in(text_of(second))}))["data"]["verifyEmail"][
        "ok"
    ]


async def test_a_password_is_reset_through_the_mailed_link_once_and_the_user_logged_in(
    api: Api, db: Database, settings: Settings, sink
) -> None:
    account = await sign_up(api, "Forgetful", verified=False)
    asked = await api.gql(REQUEST_RESET, {"email": account.email.upper()})
    assert asked["data"]["requestPasswordReset"] == {"ok": True, "errors": []}
    mail = await _mail(
        db, settings, sink, account.email, user_id=_user_id(account), mail="password_reset"
    )
    assert mail["Subject"] == "Reset your PenguinMails password (link valid 1 hour)"
    assert f"{settings.public_url}/reset-password?token=" in text_of(mail)
    token = token_in(text_of(mail))

    short = await api.gql(RESET, {"token": token, "password": "short"})
    assert [e["code"] for e in short["data"]["resetPassword"]["errors"]] == ["PASSWORD_TOO_SHORT"]
    tampered = await api.gql(RESET, {"token": token.swapcase(), "password": NEW_PASSWORD})
    assert [(e["field"], e["code"]) for e in tampered["data"]["resetPassword"]["errors"]] == [
        ("token", "INVALID_TOKEN")
    ]

    reset = (await api.gql(RESET, {"token": token, "password": NEW_PASSWORD}))["data"]
    reset = reset["resetPassword"]
    assert reset["errors"] == [] and reset["token"]
    assert reset["user"] == {"email": account.email, "emailVerified": True}  # the mail proves it
    assert reset["tenant"] == {"name": "Forgetful"}
    me = await api.gql(ME, token=reset["token"])
    assert me["data"]["me"]["email"] == account.email

    reused = await api.gql(RESET, {"token": token, "password": "yet another passphrase"})
    assert [e["code"] for e in reused["data"]["resetPassword"]["errors"]] == ["TOKEN_USED"]
    new = await api.gql(LOG_IN, {"email": account.email, "password": NEW_PASSWORD})
    old = await api.gql(LOG_IN, {"email": account.email, "password": "correct horse battery"})
    assert new["data"]["logIn"]["token"] and new["data"]["logIn"]["errors"] == []
    assert [e["code"] for e in old["data"]["logIn"]["errors"]] == ["INVALID_CREDENTIALS"]


async def test_an_expired_reset_link_is_refused_and_changes_nothing(
    api: Api, db: Database, settings: Settings, sink
) -> None:
    account = await sign_up(api, "Late")
    await api.gql(REQUEST_RESET, {"email": account.email})
    mail = await _mail(
        db, settings, sink, account.email, user_id=_user_id(account), mail="password_reset"
    )
    async with db.system_session() as s:  # an hour and a second later
        await s.execute(
            update(UserToken)
            .where(UserToken.user_id == parse_id(account.user)[1])
            .values(expires_at=func.now() - timedelta(seconds=1))
        )

    expired = await api.gql(RESET, {"token": token_in(text_of(mail)), "password": NEW_PASSWORD})
    assert [(e["field"], e["code"]) for e in expired["data"]["resetPassword"]["errors"]] == [
        ("token", "TOKEN_EXPIRED")
    ]
    assert expired["data"]["resetPassword"]["token"] is None
    old = await api.gql(LOG_IN, {"email": account.email, "password": "correct horse battery"})
    assert old["data"]["logIn"]["errors"] == []


async def test_a_reset_for_an_unknown_address_answers_the_same_queues_nothing_and_is_not_slower(
    api: Api, db: Database
) -> None:
    account = await sign_up(api, "Known")
    unknown = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    before = len(await mail_jobs(db, mail="password_reset"))
    answers, timings = {}, {}
    for address in (unknown, account.email):
        spent = []
        for _ in range(5):
            began = time.perf_counter()
            answers[address] = await api.gql(REQUEST_RESET, {"email": address})
            spent.append(time.perf_counter() - began)
        timings[address] = statistics.median(spent)

    assert answers[account.email] == answers[unknown]
    assert answers[unknown] == {"data": {"requestPasswordReset": {"ok": True, "errors": []}}}
    # At most one mail a minute per address however often it is asked; none for the unknown one.
    resets = await mail_jobs(db, user_id=_user_id(account), mail="password_reset")
    assert len(resets) == 1
    assert len(await mail_jobs(db, mail="password_reset")) == before + 1
    assert abs(timings[account.email] - timings[unknown]) < 0.05, timings


async def test_an_invitation_is_mailed_and_accepting_waits_for_a_verified_address(
    api: Api, db: Database, settings: Settings, sink
) -> None:
    owner = await sign_up(api, "Inviter")
    address = f"invitee-{uuid.uuid4().hex[:10]}@example.com"
    invitation = await invite(api, owner, address, "ADMIN")

    mail = await _mail(
        db, settings, sink, address, invitation_id=str(parse_id(invitation["id"])[1])
    )
    assert mail["Subject"] == "You are invited to Inviter on PenguinMails"
    text = text_of(mail)
    assert f"{settings.public_url}/invitations/{invitation['id']}" in text
    assert "as an admin" in text and "expires at" in text

    body = await api.gql(
        SIGN_UP, {"email": address, "password": "correct horse battery", "tenantName": "Mine"}
    )
    invitee = body["data"]["signUp"]
    refused = await api.gql(ACCEPT, {"id": invitation["id"]}, token=invitee["token"])
    assert [e["code"] for e in refused["data"]["acceptInvitation"]["errors"]] == [
        "EMAIL_NOT_VERIFIED"
    ]

    verification = await _mail(
        db, settings, sink, address, user_id=str(parse_id(invitee["user"]["id"])[1])
    )
    await api.gql(VERIFY, {"token": token_in(text_of(verification))})
    accepted = await api.gql(ACCEPT, {"id": invitation["id"]}, token=invitee["token"])
    assert accepted["data"]["acceptInvitation"]["errors"] == []
    assert accepted["data"]["acceptInvitation"]["tenant"]["name"] == "Inviter"


async def test_a_loops_outage_leaves_sign_up_successful_and_the_mail_is_sent_on_a_retry(
    api: Api, db: Database, settings: Settings
) -> None:
    async with running_loops() as (base, fake):
        through_loops = settings.model_copy(
            update={
                "loop_api_key": SecretStr(API_KEY),
                "loop_api_base": base,
                "loop_transactional_ids": TRANSACTIONAL_IDS,
            }
        )
        fake.outage = True
        account = await sign_up(api, "Outage", verified=False)  # succeeds: the mail is queued
        await run_mail_jobs(db, through_loops, user_id=_user_id(account))
        [job] = await mail_jobs(db, user_id=_user_id(account))
        assert job.status == JobStatus.FAILED and "500" in job.last_error

        fake.outage = False
        await run_mail_jobs(db, through_loops, user_id=_user_id(account))
    [job] = await mail_jobs(db, user_id=_user_id(account))
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2
    [sent] = fake.sent
    assert sent["transactionalId"] == "tx_verify" and sent["email"] == account.email
    assert set(sent["dataVariables"]) == {"link", "expiresAt"}
    verified = await api.gql(VERIFY, {"token": token_in(sent["dataVariables"]["link"])})
    assert verified["data"]["verifyEmail"] == {"ok": True, "errors": []}
