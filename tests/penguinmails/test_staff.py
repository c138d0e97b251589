"""`penguinmails staff add/remove/list` as an operator runs them: the user can then use the
staff-only API (and no longer after remove); an unknown user is one readable line."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from models.sessions import Database
from models.tenancy import AuditLog
from penguinmails.settings import Settings
from tests.cli import run_cli
from tests.graphql_api.conftest import serve, sign_up

PLATFORM_ALERTS = "{ platformAlerts(first: 1) { kind } }"


async def test_staff_add_gives_the_staff_api_and_remove_takes_it_back(
    settings: Settings, db: Database
) -> None:
    async for api in serve(settings):
        user = await sign_up(api, "Operator")
        refused = await api.gql(PLATFORM_ALERTS, token=user.token)

        code, out, err = await run_cli(settings, "staff", "add", user.email.upper())
        assert (code, out, err) == (0, f"{user.email}: platform staff (superadmin)\n", "")
        allowed = await api.gql(PLATFORM_ALERTS, token=user.token)
        code, listed, _ = await run_cli(settings, "staff", "list")
        assert code == 0 and f"{user.email}  superadmin  active" in listed.splitlines()

        code, out, _ = await run_cli(settings, "staff", "remove", user.email)
        assert (code, out) == (0, f"{user.email}: no longer platform staff\n")
        removed = await api.gql(PLATFORM_ALERTS, token=user.token)

    assert refused["data"] is None and "staff" in refused["errors"][0]["message"]
    assert "errors" not in allowed and isinstance(allowed["data"]["platformAlerts"], list)
    assert removed["data"] is None and "staff" in removed["errors"][0]["message"]
    async with db.system_session() as s:
        audited = await s.scalars(
            select(AuditLog.action).where(AuditLog.subject == user.email).order_by(AuditLog.at)
        )
        assert list(audited) == ["staff.added", "staff.removed"]


async def test_staff_add_for_an_unknown_user_is_one_line_and_exit_2(settings: Settings) -> None:
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    code, out, err = await run_cli(settings, "staff", "add", email)
    assert (code, out) == (2, "")
    assert err == f"penguinmails: no user {email}: sign up first\n"
