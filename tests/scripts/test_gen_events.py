"""scripts/gen_events.py: realistic e-mail events for the analytics pipelines' tests and
benchmarks, written straight into the database."""

from __future__ import annotations

import subprocess
import sys
import uuid
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from models.sessions import Database
from penguinmails.settings import PROJECT_ROOT, Settings
from scripts import gen_events
from scripts.gen_events import Summary, generate
from services.tracking import is_machine

# A Monday, the day after Europe's clocks went forward: local days of unequal length.
END = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
REQUIRED_ZONES = {
    "UTC", "Europe/London", "America/New_York", "America/Los_Angeles", "Pacific/Auckland",
    "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney",
}  # fmt: skip


@pytest.fixture(scope="module")
async def small(settings: Settings) -> Summary:
    return await generate(settings, 5_000, tenants=20, days=10, seed=7, end=END)


async def rows(db: Database, sql: str, tier: str = "content", **params) -> list:
    async with db.system_session(tier) as s:
        return list(await s.execute(text(sql), params))


async def value(db: Database, sql: str, tier: str = "content", **params):
    return (await rows(db, sql, tier, **params))[0][0]


async def test_a_small_run_writes_the_events_it_was_asked_for(db: Database, small: Summary) -> None:
    tenants = small.tenant_ids
    stored = await value(
        db, "SELECT count(*) FROM content.email_events WHERE tenant_id = ANY(:t)", t=tenants
    )
    messages = await value(
        db, "SELECT count(*) FROM content.email_messages WHERE tenant_id = ANY(:t)", t=tenants
    )
    kinds = dict(await rows(
        db, "SELECT kind, count(*) FROM content.email_events WHERE tenant_id = ANY(:t) GROUP BY kind",
        t=tenants,
    ))  # fmt: skip
    campaigns = await rows(
        db,
        "SELECT tenant_id, count(*), bool_and(status = 'RUNNING') FROM app.campaigns "
        "WHERE tenant_id = ANY(:t) GROUP BY tenant_id",
        "oltp",
        t=tenants,
    )
    assert abs(small.events - 5_000) <= 50
    assert stored == small.events == sum(small.kinds.values())
    assert kinds == small.kinds
    assert messages == small.messages == kinds["SENT"]
    assert set(kinds) == {"SENT", "OPEN", "CLICK", "REPLY", "BOUNCE", "UNSUBSCRIBE"} | (
        {"COMPLAINT"} & set(kinds)
    )
    assert (small.tenants, small.campaigns, len(tenants)) == (20, 60, 20)
    assert sorted(n for _, n, _ in campaigns) == [3] * 20
    assert all(running for _, _, running in campaigns)


async def test_every_event_names_a_message_of_its_tenant_sent_no_later(
    db: Database, small: Summary
) -> None:
    orphans, mismatched, early = (
        await rows(
            db,
            """SELECT count(*) FILTER (WHERE m.id IS NULL),
                count(*) FILTER (WHERE (e.campaign_id, e.lead_id, e.account_id, e.step_position)
                    IS DISTINCT FROM (m.campaign_id, m.lead_id, m.account_id, m.step_position)),
                count(*) FILTER (WHERE e.occurred_at < m.sent_at)
            FROM content.email_events e
            LEFT JOIN content.email_messages m ON m.id = e.message_id AND m.tenant_id = e.tenant_id
            WHERE e.tenant_id = ANY(:t)""",
            t=small.tenant_ids,
        )
    )[0]
    assert (orphans, mismatched, early) == (0, 0, 0)


async def test_each_message_is_sent_once_and_hard_bounces_are_bounced(
    db: Database, small: Summary
) -> None:
    (wrong_sends, wrong_status), *_ = await rows(
        db,
        """SELECT count(*) FILTER (WHERE s.sends <> 1 OR s.first_send <> m.sent_at),
            count(*) FILTER (WHERE m.status <> CASE WHEN s.hard THEN 'BOUNCED' ELSE 'SENT' END)
        FROM content.email_messages m
        JOIN LATERAL (
            SELECT count(*) FILTER (WHERE kind = 'SENT') AS sends,
                min(occurred_at) FILTER (WHERE kind = 'SENT') AS first_send,
                coalesce(bool_or(kind = 'BOUNCE' AND (details->>'hard')::boolean), false) AS hard
            FROM content.email_events e WHERE e.message_id = m.id AND e.tenant_id = m.tenant_id
        ) s ON true
        WHERE m.tenant_id = ANY(:t)""",
        t=small.tenant_ids,
    )
    bounces = dict(await rows(
        db,
        "SELECT details->>'hard', count(*) FROM content.email_events "
        "WHERE kind = 'BOUNCE' AND tenant_id = ANY(:t) GROUP BY 1",
        t=small.tenant_ids,
    ))  # fmt: skip
    assert (wrong_sends, wrong_status) == (0, 0)
    assert set(bounces) == {"true", "false"}


async def test_machine_opens_come_seconds_after_the_send_and_are_flagged(
    db: Database, small: Summary
) -> None:
    lags = dict(
        (machine, (count, median))
        for machine, count, median in await rows(
            db,
            """SELECT e.machine, count(*), percentile_cont(0.5) WITHIN GROUP
                (ORDER BY extract(epoch FROM e.occurred_at - m.sent_at))
            FROM content.email_events e JOIN content.email_messages m ON m.id = e.message_id
            WHERE e.kind = 'OPEN' AND e.tenant_id = ANY(:t) GROUP BY e.machine""",
            t=small.tenant_ids,
        )
    )
    agents = await rows(
        db,
        "SELECT DISTINCT details->>'user_agent', machine FROM content.email_events "
        "WHERE kind IN ('OPEN', 'CLICK') AND tenant_id = ANY(:t)",
        t=small.tenant_ids,
    )
    machine_opens, machine_lag = lags[True]
    human_opens, human_lag = lags[False]
    assert 0.05 * small.messages < machine_opens < 0.3 * small.messages
    assert machine_lag < 60 < 600 < human_lag
    assert human_opens > machine_opens
    assert {machine for _, machine in agents} == {True, False}
    assert all(is_machine(agent) == machine for agent, machine in agents), agents


async def test_every_tenant_has_an_iana_time_zone_the_awkward_ones_among_them(
    db: Database, small: Summary
) -> None:
    zones = [
        zone
        for (zone,) in await rows(
            db, "SELECT timezone FROM app.tenants WHERE id = ANY(:t)", "oltp", t=small.tenant_ids
        )
    ]
    known = {name for (name,) in await rows(db, "SELECT name FROM pg_timezone_names", "oltp")}
    assert len(zones) == 20
    assert set(zones) <= known & zoneinfo.available_timezones() | {"UTC"}
    assert REQUIRED_ZONES <= set(zones)


async def test_seq_follows_occurred_at_within_the_days_before_end(
    db: Database, small: Summary
) -> None:
    (backwards, first, last), *_ = await rows(
        db,
        """SELECT count(*) FILTER (WHERE occurred_at < previous), min(occurred_at), max(occurred_at)
        FROM (SELECT occurred_at, lag(occurred_at) OVER (ORDER BY seq) AS previous
              FROM content.email_events WHERE tenant_id = ANY(:t)) e""",
        t=small.tenant_ids,
    )
    assert backwards == 0
    assert END - timedelta(days=10) <= first < last <= END


async def test_a_recent_batch_on_top_stays_in_the_last_30_seconds_on_existing_tenants(
    db: Database, settings: Settings, small: Summary
) -> None:
    tenants_before = await value(db, "SELECT count(*) FROM app.tenants", "oltp")
    seq_before = await value(db, "SELECT coalesce(max(seq), 0) FROM content.email_events")
    end = datetime.now(UTC)

    recent = await generate(settings, 2_000, recent_seconds=30, reuse_tenants=True, seed=3, end=end)

    (count, first, last, orphans, early, known_tenants), *_ = await rows(
        db,
        """SELECT count(*), min(e.occurred_at), max(e.occurred_at),
            count(*) FILTER (WHERE m.id IS NULL), count(*) FILTER (WHERE e.occurred_at < m.sent_at),
            count(*) FILTER (WHERE e.tenant_id = ANY(:t))
        FROM content.email_events e
        LEFT JOIN content.email_messages m ON m.id = e.message_id AND m.tenant_id = e.tenant_id
        WHERE e.seq > :seq""",
        seq=seq_before,
        t=small.tenant_ids,
    )
    assert abs(count - 2_000) <= 20
    assert count == recent.events
    assert end - timedelta(seconds=30) < first <= last <= end
    assert (orphans, early) == (0, 0)
    assert known_tenants > 0  # the small run's tenants are among those reused
    assert recent.tenants == recent.campaigns == 0
    assert await value(db, "SELECT count(*) FROM app.tenants", "oltp") == tenants_before
    assert recent.kinds["SENT"] == recent.messages
    assert len(recent.kinds) >= 4  # opens, clicks and the like, not only sends


async def test_the_same_seed_gives_the_same_counts(settings: Settings) -> None:
    def run(seed: int):
        return generate(settings, 1_000, tenants=3, days=3, seed=seed, end=END)

    first, again, other = await run(11), await run(11), await run(12)
    assert (first.kinds, first.machine, first.messages) == (
        again.kinds, again.machine, again.messages,
    )  # fmt: skip
    assert set(first.tenant_ids).isdisjoint(again.tenant_ids)  # fresh ids: runs add up
    assert first.kinds != other.kinds


async def test_the_first_tenant_gets_the_big_tenants_campaigns(
    db: Database, settings: Settings
) -> None:
    run = await generate(
        settings, 300, tenants=3, campaigns_per_tenant=2, big_tenant_campaigns=100, end=END
    )
    counts = dict(
        await rows(
            db,
            "SELECT tenant_id, count(*) FROM app.campaigns WHERE tenant_id = ANY(:t) "
            "GROUP BY tenant_id",
            "oltp",
            t=run.tenant_ids,
        )
    )
    assert [counts[t] for t in run.tenant_ids] == [100, 2, 2]
    assert run.campaigns == 104


async def test_a_bulk_load_builds_the_indexes_and_keys_again_as_they_were(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bulk(db: Database, table: str, rows: int) -> bool:
        return True

    monkeypatch.setattr(gen_events, "_is_bulk", bulk)
    shape = """SELECT c.relname, i.indexrelid, pg_get_indexdef(i.indexrelid),
            (SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k
             WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        WHERE i.indrelid IN ('content.email_events'::regclass, 'content.email_messages'::regclass)
        ORDER BY 3"""
    security = """SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
        WHERE oid IN ('content.email_events'::regclass, 'content.email_messages'::regclass)"""
    before, security_before = await rows(db, shape), await rows(db, security)

    run = await generate(settings, 3_000, tenants=5, days=2, end=END)

    after = await rows(db, shape)
    assert [(t, ddl, key) for t, _, ddl, key in after] == [
        (t, ddl, key) for t, _, ddl, key in before
    ]
    assert {oid for _, oid, _, _ in after}.isdisjoint({oid for _, oid, _, _ in before})
    assert await rows(db, security) == security_before
    assert await value(
        db, "SELECT count(*) FROM content.email_events WHERE tenant_id = ANY(:t)", t=run.tenant_ids
    ) == run.events  # fmt: skip


@pytest.mark.parametrize("argv", [["abc"], ["10", "--days", "0"], ["10", "--end", "soon"]])
def test_the_command_refuses_a_bad_argument_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        gen_events.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and argv[-1] in err, err


def test_the_command_exits_2_with_one_line_for_a_negative_count() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/gen_events.py", "-5"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "'-5'" in done.stderr, done.stderr
    assert done.stdout == ""


def test_ids_are_version_4_uuids() -> None:
    assert {uuid.UUID(h).version for h in gen_events.random_hex(1_000)} == {4}
