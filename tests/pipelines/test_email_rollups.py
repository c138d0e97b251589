"""daily_analytics and campaign_analytics (with campaign_totals) from hand-made events: the
definitions, the tenant's days, late commits, reruns and rebuilds."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from adbc_driver_postgresql import dbapi

import pipelines
from models.analytics import ALL_CAMPAIGNS
from models.sessions import Database
from pipelines.runtime import Busy
from services import retention

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ROLLUPS = ("daily_analytics", "campaign_analytics")  # the pipelines these tests are about


def _daily(olap, tenant, campaign=ALL_CAMPAIGNS):
    return olap.frame(
        "SELECT day, sent, delivered, opened, opens_total, clicked, clicks_total, machine_opens,"
        " machine_clicks, replied, bounced, soft_bounced, complained, unsubscribed, first_opened,"
        " first_clicked FROM analytics.daily_analytics WHERE tenant_id = $1::uuid AND campaign_id = $2::uuid"
        " ORDER BY day",
        str(tenant), str(campaign),
    )  # fmt: skip


def _run_all(settings, **kwargs):
    return {name: pipelines.run(settings, name, **kwargs) for name in ROLLUPS}


def test_counts_follow_the_definitions(scratch) -> None:
    settings, olap = scratch
    tenant, campaign = olap.tenant(), uuid.uuid4()
    a = olap.event(tenant, "SENT", T0, campaign=campaign)
    b = olap.event(tenant, "SENT", T0, campaign=campaign)
    c = olap.event(tenant, "SENT", T0, campaign=campaign, step=2)
    olap.event(tenant, "OPEN", T0 + timedelta(minutes=1), message=a, campaign=campaign)
    olap.event(tenant, "OPEN", T0 + timedelta(minutes=2), message=a, campaign=campaign)
    olap.event(tenant, "OPEN", T0 + timedelta(seconds=5), message=b, campaign=campaign,
               machine=True)  # fmt: skip
    olap.event(tenant, "CLICK", T0 + timedelta(minutes=3), message=b, campaign=campaign)
    olap.event(tenant, "CLICK", T0 + timedelta(minutes=4), message=b, campaign=campaign)
    olap.event(tenant, "CLICK", T0 + timedelta(seconds=9), message=c, campaign=campaign,
               step=2, machine=True)  # fmt: skip
    olap.event(tenant, "REPLY", T0 + timedelta(minutes=5), message=a, campaign=campaign)
    olap.event(tenant, "BOUNCE", T0 + timedelta(minutes=1), message=c, campaign=campaign,
               step=2, details='{"hard": true}')  # fmt: skip
    olap.event(tenant, "BOUNCE", T0 + timedelta(minutes=1), message=b, campaign=campaign,
               details='{"hard": false}')  # fmt: skip
    olap.event(tenant, "COMPLAINT", T0 + timedelta(minutes=6), message=a, campaign=campaign)
    olap.event(tenant, "UNSUBSCRIBE", T0 + timedelta(minutes=7), message=b, campaign=campaign)
    olap.event(tenant, "SENT", T0)  # no campaign: the tenant-wide row only

    _run_all(settings)

    row = _daily(olap, tenant).row(0, named=True)
    assert (row.pop("first_opened"), row.pop("first_clicked")) == (2, 1)
    assert row == {
        "day": date(2026, 3, 10), "sent": 4, "delivered": 3, "opened": 2, "opens_total": 2,
        "clicked": 1, "clicks_total": 2, "machine_opens": 1, "machine_clicks": 1, "replied": 1,
        "bounced": 1, "soft_bounced": 1, "complained": 1, "unsubscribed": 1,
    }  # fmt: skip
    per_campaign = _daily(olap, tenant, campaign).row(0, named=True)
    assert per_campaign["sent"] == 3 and per_campaign["opened"] == 2
    steps = olap.frame(
        "SELECT step, sent, delivered, opened, clicked, bounced, open_rate, bounce_rate"
        " FROM analytics.campaign_analytics WHERE tenant_id = $1::uuid ORDER BY step",
        str(tenant),
    ).rows(named=True)
    assert steps == [
        {"step": 1, "sent": 2, "delivered": 2, "opened": 2, "clicked": 1, "bounced": 0,
         "open_rate": 1.0, "bounce_rate": 0.0},
        {"step": 2, "sent": 1, "delivered": 0, "opened": 0, "clicked": 0, "bounced": 1,
         "open_rate": 0.0, "bounce_rate": 1.0},
    ]  # fmt: skip


def test_days_are_the_tenants_days_across_midnight_and_dst(scratch) -> None:
    settings, olap = scratch
    auckland, los_angeles = olap.tenant("Pacific/Auckland"), olap.tenant("America/Los_Angeles")
    # 2026-04-05 03:00 NZDT → NZST (UTC+13 → +12); 2026-03-08 02:00 PST → PDT (UTC-8 → -7).
    for at in (
        datetime(2026, 4, 4, 10, 59, tzinfo=UTC),  # 23:59 on the 4th, NZDT
        datetime(2026, 4, 4, 11, 0, tzinfo=UTC),  # 00:00 on the 5th, NZDT
        datetime(2026, 4, 5, 11, 30, tzinfo=UTC),  # 23:30 on the 5th, NZST (after the change)
        datetime(2026, 4, 5, 12, 0, tzinfo=UTC),  # 00:00 on the 6th, NZST
    ):
        olap.event(auckland, "SENT", at)
    for at in (
        datetime(2026, 3, 8, 7, 59, tzinfo=UTC),  # 23:59 on the 7th, PST
        datetime(2026, 3, 8, 8, 0, tzinfo=UTC),  # 00:00 on the 8th, PST
        datetime(2026, 3, 9, 6, 59, tzinfo=UTC),  # 23:59 on the 8th, PDT (after the change)
        datetime(2026, 3, 9, 7, 0, tzinfo=UTC),  # 00:00 on the 9th, PDT
    ):
        olap.event(los_angeles, "SENT", at)

    _run_all(settings)

    assert _daily(olap, auckland).select("day", "sent").rows() == [
        (date(2026, 4, 4), 1), (date(2026, 4, 5), 2), (date(2026, 4, 6), 1),
    ]  # fmt: skip
    assert _daily(olap, los_angeles).select("day", "sent").rows() == [
        (date(2026, 3, 7), 1), (date(2026, 3, 8), 2), (date(2026, 3, 9), 1),
    ]  # fmt: skip


def test_a_message_opened_again_counts_once_a_day_across_runs(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant("Europe/London")
    message = olap.event(tenant, "SENT", T0)
    olap.event(tenant, "OPEN", T0 + timedelta(hours=1), message=message)
    _run_all(settings)
    olap.event(tenant, "OPEN", T0 + timedelta(hours=2), message=message)  # same day
    olap.event(tenant, "CLICK", T0 + timedelta(hours=3), message=message)  # opened already
    olap.event(tenant, "OPEN", T0 + timedelta(days=1), message=message)  # the next day
    _run_all(settings)
    olap.event(tenant, "CLICK", T0 + timedelta(hours=4), message=message)  # clicked already
    _run_all(settings)

    rows = _daily(olap, tenant).select("day", "opened", "opens_total", "clicked", "clicks_total")
    assert rows.rows() == [(date(2026, 3, 10), 1, 2, 1, 2), (date(2026, 3, 11), 1, 1, 0, 0)]
    # Over both days the message counts once, on the day of its first open and first click.
    firsts = _daily(olap, tenant).select("day", "first_opened", "first_clicked")
    assert firsts.rows() == [(date(2026, 3, 10), 1, 1), (date(2026, 3, 11), 0, 0)]


def test_a_refusal_during_the_smtp_transaction_is_a_send_that_bounced(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    olap.event(tenant, "SENT", T0)
    olap.event(tenant, "BOUNCE", T0, details='{"hard": true, "refused": true, "status": "550"}')
    olap.event(tenant, "SENT", T0)
    _run_all(settings)
    row = _daily(olap, tenant).select("sent", "delivered", "bounced").row(0)
    assert row == (3, 2, 1)


COUNTS = (
    "sent, delivered, opened, opens_total, clicked, clicks_total, machine_opens, machine_clicks,"
    " replied, bounced, soft_bounced, complained, unsubscribed, first_opened, first_clicked"
)


TOTALS = "sent, delivered, opened, clicked, replied, bounced, complained, unsubscribed"
SUMS = """sum(sent)::bigint AS sent, sum(delivered)::bigint AS delivered,
    sum(first_opened)::bigint AS opened, sum(first_clicked)::bigint AS clicked,
    sum(replied)::bigint AS replied, sum(bounced)::bigint AS bounced,
    sum(complained)::bigint AS complained, sum(unsubscribed)::bigint AS unsubscribed"""


def _tables(olap) -> dict:
    """The tables as they stand, every column but updated_at; campaign_totals checked first to
    be the sums of campaign_analytics' rows per campaign, which is all it may ever hold."""
    totals = olap.frame(
        f"SELECT tenant_id::text, campaign_id::text, {TOTALS} FROM analytics.campaign_totals"
        " ORDER BY 1, 2"
    )
    sums = olap.frame(
        f"SELECT tenant_id::text, campaign_id::text, {SUMS} FROM analytics.campaign_analytics"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert totals.equals(sums), "campaign_totals are not the sums of campaign_analytics"
    return {
        "totals": totals,
        "daily": olap.frame(
            f"SELECT tenant_id::text, day, campaign_id::text, {COUNTS}"
            " FROM analytics.daily_analytics ORDER BY 1, 2, 3"
        ),
        "campaign": olap.frame(
            f"SELECT tenant_id::text, campaign_id::text, step, day, {COUNTS}, open_rate,"
            " click_rate, reply_rate, bounce_rate FROM analytics.campaign_analytics"
            " ORDER BY 1, 2, 3, 4"
        ),
    }


def _same(a: dict, b: dict) -> None:
    for name in a:
        assert a[name].height > 0, name
        assert a[name].equals(b[name]), name


def test_a_transaction_that_commits_after_a_run_is_counted_by_the_next(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    _run_all(settings)
    late = dbapi.connect(olap.url)  # takes its seq now, commits after the next run
    with late.cursor() as cur:
        cur.execute(
            "INSERT INTO content.email_events (tenant_id, kind, message_id, occurred_at)"
            " VALUES ($1::uuid, 'SENT', gen_random_uuid(), $2::timestamptz)",
            parameters=(str(tenant), T0.isoformat()),
        )
    olap.event(tenant, "SENT", T0)  # a later seq, committed first
    _run_all(settings)
    assert _daily(olap, tenant)["sent"].to_list() == [1]
    late.commit()
    late.close()
    _run_all(settings)
    _run_all(settings)  # and once more: nothing counted twice
    assert _daily(olap, tenant)["sent"].to_list() == [2]


def test_a_rolled_back_number_is_given_up_after_the_late_commit_window(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    rolled_back = dbapi.connect(olap.url)
    with rolled_back.cursor() as cur:
        cur.execute(
            "INSERT INTO content.email_events (tenant_id, kind, message_id)"
            " VALUES ($1::uuid, 'SENT', gen_random_uuid())",
            parameters=(str(tenant),),
        )
    olap.event(tenant, "SENT", T0)
    rolled_back.rollback()
    rolled_back.close()
    pipelines.run(settings, "daily_analytics")
    mark = olap.frame(
        "SELECT last_seq, max_seq, holes::text AS holes FROM analytics.pipeline_watermarks"
        " WHERE pipeline = 'daily_analytics'"
    ).row(0, named=True)
    assert mark["last_seq"] < mark["max_seq"] and mark["holes"] != "{}"
    brief = settings.model_copy(update={"pipeline_late_commit_seconds": 0.001})
    pipelines.run(brief, "daily_analytics")
    mark = olap.frame(
        "SELECT last_seq, max_seq, holes::text AS holes FROM analytics.pipeline_watermarks"
        " WHERE pipeline = 'daily_analytics'"
    ).row(0, named=True)
    assert mark["last_seq"] == mark["max_seq"] and mark["holes"] == "{}"


def test_malformed_rows_are_counted_as_skipped_and_the_rest_is_counted(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    _run_all(settings)
    olap.event(tenant, "SENT", T0)
    olap.event(tenant, "DELIVERED", T0)  # a kind no rollup knows
    olap.event(tenant, "BOUNCE", T0, details='{"hard": "perhaps"}')  # hard or soft unknown
    olap.execute(
        "INSERT INTO content.email_events (tenant_id, kind, occurred_at)"
        " VALUES ($1::uuid, 'OPEN', $2::timestamptz)",  # about no message
        str(tenant), T0.isoformat(),
    )  # fmt: skip
    result = pipelines.run(settings, "daily_analytics")
    assert (result.rows_read, result.rows_skipped) == (4, 3)
    assert _daily(olap, tenant)["sent"].to_list() == [1]


def test_incremental_runs_equal_a_full_rebuild_and_a_rebuild_from_a_date(scratch) -> None:
    settings, olap = scratch
    tenants = [olap.tenant(zone) for zone in ("UTC", "Pacific/Auckland", "America/Los_Angeles")]
    for seed in (0.1, 0.2, 0.3):
        olap.bulk(tenants, 4_000, seed=seed)
        _run_all(settings)
    incremental = _tables(olap)
    _run_all(settings)  # a run with nothing new changes nothing
    _same(incremental, _tables(olap))

    _run_all(settings, full=True)
    _same(incremental, _tables(olap))

    since = (datetime.now(UTC) - timedelta(days=5)).date()
    _run_all(settings, since=since)
    _same(incremental, _tables(olap))


def test_concurrent_runs_count_every_event_once(scratch) -> None:
    settings, olap = scratch
    tenants = [olap.tenant("Asia/Kolkata"), olap.tenant("Europe/London")]
    olap.bulk(tenants, 30_000, seed=0.7)
    with ThreadPoolExecutor(4) as pool:
        runs = [
            pool.submit(pipelines.run, settings, name, wait=True)
            for name in ROLLUPS
            for _ in range(2)
        ]
        for r in runs:
            r.result()
    concurrent = _tables(olap)
    _run_all(settings, full=True)
    _same(concurrent, _tables(olap))


def test_a_run_that_finds_the_pipeline_busy_gives_up_and_changes_nothing(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    olap.event(tenant, "SENT", T0)
    holder = dbapi.connect(olap.url)
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended('pipeline:daily_analytics', 0))")
    try:
        with pytest.raises(Busy):
            pipelines.run(settings, "daily_analytics")
        assert _daily(olap, tenant).is_empty()
    finally:
        holder.rollback()
        holder.close()
    pipelines.run(settings, "daily_analytics")
    assert _daily(olap, tenant)["sent"].to_list() == [1]


async def test_dropping_message_bodies_leaves_every_rollup_as_it_was(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant("Europe/Paris")
    olap.bulk([tenant], 3_000, seed=0.4)
    olap.execute(
        "INSERT INTO content.email_messages (tenant_id, idempotency_key, message_id_header,"
        " verp_token, from_address, to_address, subject, body_compressed, status, created_at)"
        " SELECT $1::uuid, 'k' || i, '<m' || i || '@x>', 'v' || i || md5($1::text), 'a@x.example',"
        " 'b@y.example', 's', '\\x00'::bytea, 'SENT', now() - interval '200 days'"
        " FROM generate_series(1, 50) AS i",
        str(tenant),
    )
    _run_all(settings)
    before = _tables(olap)
    db = Database(settings)
    try:
        dropped = await retention.drop_old_bodies(db, 90)
    finally:
        await db.dispose()
    assert dropped.bodies >= 50
    _run_all(settings)
    _same(before, _tables(olap))
    _run_all(settings, full=True)
    _same(before, _tables(olap))


def test_an_earlier_open_that_arrives_late_moves_the_first_open_to_its_day(scratch) -> None:
    settings, olap = scratch
    tenant, campaign = olap.tenant(), uuid.uuid4()
    message = olap.event(tenant, "SENT", T0, campaign=campaign)
    olap.event(tenant, "OPEN", T0 + timedelta(days=2), message=message, campaign=campaign)
    _run_all(settings)
    late = T0 + timedelta(days=1)  # recorded after the open of the day after
    olap.event(tenant, "OPEN", late, message=message, campaign=campaign)
    _run_all(settings)
    firsts = _daily(olap, tenant).select("day", "opened", "first_opened").rows()
    assert firsts == [
        (date(2026, 3, 10), 0, 0), (date(2026, 3, 11), 1, 1), (date(2026, 3, 12), 1, 0),
    ]  # fmt: skip
    incremental = _tables(olap)
    _run_all(settings, full=True)
    _same(incremental, _tables(olap))
