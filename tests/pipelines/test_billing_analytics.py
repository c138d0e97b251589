"""billing_analytics from hand-made plans, subscriptions and payments: the definitions, whole
days recomputed after changes to the past, reruns and rebuilds."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pipelines
from models.analytics import NO_PLAN

NAME = "billing_analytics"
FIGURES = (
    "active_subscriptions, mrr_cents, new_subscriptions, churned_subscriptions, revenue_cents,"
    " failed_payments"
)


def _today() -> date:
    return datetime.now(UTC).date()


def _at(days_ago: int, hour: int = 12, minute: int = 0) -> datetime:
    """A moment `days_ago` days before today (UTC)."""
    return datetime.combine(_today() - timedelta(days=days_ago), time(hour, minute), UTC)


def _rows(olap, plan) -> list[tuple]:
    """(days ago, figures…) of the plan's rows."""
    frame = olap.frame(
        f"SELECT day, {FIGURES} FROM analytics.billing_analytics WHERE plan_id = $1::uuid"
        " ORDER BY day",
        str(plan),
    )
    return [((_today() - row[0]).days, *row[1:]) for row in frame.rows()]


def _table(olap):
    return olap.frame(
        f"SELECT day, plan_id::text, {FIGURES} FROM analytics.billing_analytics ORDER BY 1, 2"
    )


def _age_everything(olap) -> None:
    """Every billing row last changed an hour ago: a run with a brief overlap no longer sees
    them as changed."""
    for table in ("app.plans", "app.subscriptions", "app.payments"):
        olap.execute(f"UPDATE {table} SET updated_at = now() - interval '1 hour'")


def test_figures_follow_the_definitions(scratch) -> None:
    settings, olap = scratch
    monthly, yearly = olap.plan(1000), olap.plan(10000, "year")  # 833 cents a month
    s1 = olap.subscription(monthly, "ACTIVE", _at(3, 10))
    s2 = olap.subscription(monthly, "PAST_DUE", _at(2))
    s3 = olap.subscription(monthly, "CANCELED", _at(3), canceled_at=_at(1, 15))  # paid: counts
    olap.subscription(monthly, "CANCELED", _at(2), canceled_at=_at(1))  # a trial, never paid
    olap.subscription(monthly, "TRIALING", _at(1))
    s6 = olap.subscription(yearly, "GRACE", _at(2))
    olap.subscription(yearly, "SUSPENDED", _at(3))
    olap.payment(s3, 1000, "SUCCEEDED", _at(3), paid_at=_at(3))
    olap.payment(s1, 1000, "SUCCEEDED", _at(3, 23), paid_at=_at(2, 0, 30))  # on the paid day
    olap.payment(s2, 1000, "FAILED", _at(1))
    olap.payment(None, 500, "SUCCEEDED", _at(1), paid_at=_at(1))  # no subscription
    olap.payment(s6, 10000, "REFUNDED", _at(2), paid_at=_at(2))
    olap.payment(s6, 10000, "PENDING", _at(1))

    pipelines.run(settings, NAME)

    # (days ago, active, mrr, new, churned, revenue, failed)
    assert _rows(olap, monthly) == [
        (3, 2, 2000, 2, 0, 1000, 0),
        (2, 3, 3000, 2, 0, 1000, 0),
        (1, 2, 2000, 1, 2, 0, 1),
        (0, 2, 2000, 0, 0, 0, 0),
    ]
    assert _rows(olap, yearly) == [
        (3, 0, 0, 1, 0, 0, 0),
        (2, 1, 833, 1, 0, 0, 0),
        (1, 1, 833, 0, 0, 0, 0),
        (0, 1, 833, 0, 0, 0, 0),
    ]
    assert _rows(olap, NO_PLAN) == [(1, 0, 0, 0, 0, 500, 0)]


def test_changes_to_the_past_recompute_its_days_and_equal_a_rebuild(scratch) -> None:
    settings, olap = scratch
    brief = settings.model_copy(update={"pipeline_late_commit_seconds": 1.0})
    plan, other = olap.plan(2000), olap.plan(24000, "year")
    old = olap.subscription(plan, "ACTIVE", _at(30))
    kept = olap.subscription(plan, "ACTIVE", _at(40))
    olap.subscription(other, "ACTIVE", _at(25))
    unpaid = olap.subscription(other, "ACTIVE", _at(15))
    refunded = olap.payment(old, 2000, "SUCCEEDED", _at(20), paid_at=_at(20))
    olap.payment(kept, 2000, "SUCCEEDED", _at(10), paid_at=_at(10))
    pipelines.run(brief, NAME)
    _age_everything(olap)  # from here on a run sees only what changes next
    pipelines.run(brief, NAME)
    before = _table(olap)
    pipelines.run(brief, NAME)
    assert _table(olap).equals(before)  # a rerun changes nothing

    # updated_at as the ORM sets it (onupdate): the pipeline finds changes by it.
    for sql, row in (
        ("UPDATE app.subscriptions SET status = 'SUSPENDED'", old),
        ("UPDATE app.payments SET status = 'REFUNDED'", refunded),
        ("UPDATE app.plans SET price_cents = 36000", other),
        ("UPDATE app.subscriptions SET status = 'CANCELED', canceled_at = now()", unpaid),
    ):  # the unpaid one, canceled, leaves every day
        olap.execute(f"{sql}, updated_at = now() WHERE id = $1::uuid", str(row))
    olap.subscription(plan, "ACTIVE", _at(0, 0))
    pipelines.run(brief, NAME)
    incremental = _table(olap)

    days = {row[0]: row[1:3] + row[5:6] for row in _rows(olap, plan)}
    assert days[25] == (1, 2000, 0) and days[20] == (1, 2000, 0)  # the suspended one left
    assert days[0] == (2, 4000, 0)
    yearly = _rows(olap, other)
    assert len(yearly) == 26 and {row[1:3] for row in yearly} == {(1, 3000)}  # the new price
    pipelines.run(brief, NAME, full=True)
    assert _table(olap).equals(incremental)
    pipelines.run(brief, NAME, since=_today() - timedelta(days=35))
    assert _table(olap).equals(incremental)


def test_a_change_that_commits_after_a_run_but_within_the_overlap_is_counted(scratch) -> None:
    settings, olap = scratch
    plan = olap.plan(500)
    subscription = olap.subscription(plan, "ACTIVE", _at(8))
    pipelines.run(settings, NAME)
    # Written (updated_at) before the run's newest change, committed after it read.
    olap.execute(
        "INSERT INTO app.payments (tenant_id, subscription_id, amount_cents, status, created_at,"
        " paid_at, updated_at) SELECT tenant_id, id, 500, 'SUCCEEDED', $2::timestamptz,"
        " $2::timestamptz, now() - interval '1 minute' FROM app.subscriptions"
        " WHERE id = $1::uuid",
        str(subscription), _at(5).isoformat(),
    )  # fmt: skip
    pipelines.run(settings, NAME)
    assert [row[0] for row in _rows(olap, plan) if row[5]] == [5]


def test_a_run_after_quiet_days_writes_the_days_in_between(scratch) -> None:
    settings, olap = scratch
    brief = settings.model_copy(update={"pipeline_late_commit_seconds": 1.0})
    plan = olap.plan(700)
    olap.subscription(plan, "ACTIVE", _at(6))
    pipelines.run(brief, NAME)
    _age_everything(olap)
    # As if the last run had been four days ago, and nothing had changed since.
    olap.execute(
        "DELETE FROM analytics.billing_analytics WHERE day > $1::date",
        _today() - timedelta(days=4),
    )
    pipelines.run(brief, NAME)
    assert [row[:3] for row in _rows(olap, plan)] == [(d, 1, 700) for d in range(6, -1, -1)]


async def test_infrastructure_cost_against_revenue_per_tenant_and_the_alert_above_a_fifth(
    scratch,
) -> None:
    from models.sessions import Database
    from services import alerts

    settings, olap = scratch
    plan = olap.plan(4900)  # 49.00 a month
    costly = olap.subscription(plan, "ACTIVE", _at(3))
    cheap = olap.subscription(olap.plan(49900), "ACTIVE", _at(3))
    tenants = {}
    for name, subscription in (("costly", costly), ("cheap", cheap)):
        tenant = olap.frame(
            "SELECT tenant_id::text FROM app.subscriptions WHERE id = $1::uuid", str(subscription)
        ).item()
        tenants[name] = tenant
        vps = olap.frame(
            "INSERT INTO app.vps_instances (tenant_id, provider, status, monthly_cost_cents)"
            " VALUES ($1::uuid, 'local', 'ACTIVE', 1099) RETURNING id::text",
            tenant,
        ).item()
        for n, (status, cost) in enumerate([("ACTIVE", 0), ("ACTIVE", 400), ("RELEASED", 400)]):
            olap.execute(
                "INSERT INTO app.smtp_ip_addresses (tenant_id, vps_id, address, status,"
                " monthly_cost_cents) VALUES ($1::uuid, $2::uuid, $3::inet, $4, $5::int)",
                tenant, vps, f"198.51.{len(tenants)}.{n + 1}", status, cost,
            )  # fmt: skip
    olap.execute(
        "INSERT INTO app.vps_instances (tenant_id, provider, status, monthly_cost_cents)"
        " VALUES ($1::uuid, 'local', 'DECOMMISSIONED', 5000)",
        tenants["costly"],
    )  # gone: costs nothing any more

    pipelines.run(settings, NAME)

    rows = olap.frame(
        "SELECT tenant_id::text, day, plan_id::text, vps_instances, sending_ips,"
        " infra_cost_cents, mrr_cents FROM analytics.infrastructure_costs"
        " WHERE tenant_id = ANY($1::uuid[]) ORDER BY mrr_cents",
        list(tenants.values()),
    ).rows()
    assert rows == [
        (tenants["costly"], _today(), str(plan), 1, 2, 1499, 4900),
        (tenants["cheap"], _today(), rows[1][2], 1, 2, 1499, 49900),
    ]
    db = Database(settings.model_copy(update={"infra_cost_alert_ratio": 0.2}))
    try:
        found = await alerts.platform_conditions(db, db.settings)
    finally:
        await db.dispose()
    flagged = {c.subject: c for c in found if c.kind == "infra_cost_high"}
    assert set(flagged) & set(tenants.values()) == {tenants["costly"]}  # 31 %, not 3 %
    assert "14.99 a month, 31% of its revenue of 49.00" in flagged[tenants["costly"]].message
