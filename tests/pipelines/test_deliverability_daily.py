"""deliverability_daily from hand-made messages and events: per IP, From domain and recipient
provider, on the tenant's days, reruns and rebuilds."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pipelines

NAME = "deliverability_daily"
T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _rows(olap, tenant) -> list[tuple]:
    return olap.frame(
        "SELECT day, subject_kind, subject, sent, bounced, complained"
        " FROM analytics.deliverability_daily WHERE tenant_id = $1::uuid ORDER BY 1, 2, 3",
        str(tenant),
    ).rows()


def _table(olap, tenants):
    """The tenants' rows, every column but updated_at (a rebuild files the other tests' moved
    accounts under their IPs of now)."""
    return olap.frame(
        "SELECT tenant_id::text, day, subject_kind, subject, sent, bounced, complained,"
        " bounce_rate, complaint_rate FROM analytics.deliverability_daily"
        " WHERE tenant_id = ANY(string_to_array($1, ',')::uuid[]) ORDER BY 1, 2, 3, 4",
        ",".join(map(str, tenants)),
    )


def test_each_event_counts_under_its_ip_its_from_domain_and_its_recipients_provider(
    scratch,
) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    ann = olap.account(tenant, "ann@acme.test", ip="192.0.2.1")
    bob = olap.account(tenant, "bob@acme.test", ip="192.0.2.2")
    cid = olap.account(tenant, "cid@beta.test")  # no IP: no IP row
    to_gmail = olap.message(tenant, "x@gmail.com", account=ann)
    to_googlemail = olap.message(tenant, "y@GoogleMail.com", account=ann)
    to_live = olap.message(tenant, "t@live.com", account=ann)
    to_hotmail_uk = olap.message(tenant, "z@hotmail.co.uk", account=bob)
    to_yahoo_jp = olap.message(tenant, "w@yahoo.co.jp", account=bob)
    to_aol = olap.message(tenant, "v@aol.com", account=cid)
    to_other = olap.message(tenant, "u@example.org", account=cid)
    for message in (to_gmail, to_googlemail, to_live, to_hotmail_uk, to_yahoo_jp, to_aol,
                    to_other):  # fmt: skip
        olap.event(tenant, "SENT", T0, message=message)
    olap.event(tenant, "BOUNCE", T0, message=to_hotmail_uk, details='{"hard": true}')
    olap.event(tenant, "BOUNCE", T0, message=to_other, details='{"hard": false}')  # soft
    olap.event(tenant, "COMPLAINT", T0, message=to_gmail)
    olap.event(tenant, "COMPLAINT", T0, message=to_aol)
    olap.event(tenant, "OPEN", T0, message=to_googlemail)  # not this rollup's
    olap.event(tenant, "BOUNCE", T0, message=to_yahoo_jp, details='{"hard": "perhaps"}')
    olap.event(tenant, "SENT", T0, message=uuid.uuid4())  # its message is not found

    result = pipelines.run(settings, NAME)

    assert (result.rows_read, result.rows_skipped) == (14, 2)
    day = date(2026, 3, 10)
    assert _rows(olap, tenant) == [
        (day, "domain", "acme.test", 5, 1, 1),
        (day, "domain", "beta.test", 2, 0, 1),
        (day, "ip", "192.0.2.1", 3, 0, 1),
        (day, "ip", "192.0.2.2", 2, 1, 0),
        (day, "provider", "gmail", 2, 0, 1),
        (day, "provider", "other", 1, 0, 0),
        (day, "provider", "outlook", 2, 1, 0),
        (day, "provider", "yahoo", 2, 0, 1),
    ]
    rates = olap.frame(
        "SELECT bounce_rate, complaint_rate FROM analytics.deliverability_daily"
        " WHERE tenant_id = $1::uuid AND subject_kind = 'ip' ORDER BY subject",
        str(tenant),
    ).rows()
    assert rates == [(0.0, 1 / 3), (0.5, 0.0)]


def test_an_event_counts_on_the_tenants_day_it_happened(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant("America/Los_Angeles")  # PDT (UTC-7) from 2026-03-08
    account = olap.account(tenant, "ann@acme.test", ip="192.0.2.3")
    message = olap.message(tenant, "x@gmail.com", account=account)
    sent, bounced = datetime(2026, 3, 10, 6, 59, tzinfo=UTC), datetime(2026, 3, 10, 7, tzinfo=UTC)
    olap.event(tenant, "SENT", sent, message=message)  # 23:59 on the 9th
    olap.event(tenant, "BOUNCE", bounced, message=message, details='{"hard": true}')  # the 10th

    pipelines.run(settings, NAME)

    assert [r for r in _rows(olap, tenant) if r[1] == "ip"] == [
        (date(2026, 3, 9), "ip", "192.0.2.3", 1, 0, 0),
        (date(2026, 3, 10), "ip", "192.0.2.3", 0, 1, 0),
    ]


def test_a_complaint_after_the_account_moved_counts_against_its_new_ip(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    account = olap.account(tenant, "ann@acme.test", ip="192.0.2.4")
    message = olap.message(tenant, "x@gmail.com", account=account)
    olap.event(tenant, "SENT", T0, message=message)
    pipelines.run(settings, NAME)
    olap.move(account, "192.0.2.5")
    olap.event(tenant, "COMPLAINT", T0 + timedelta(hours=1), message=message)
    pipelines.run(settings, NAME)
    olap.move(account, None)
    olap.event(tenant, "COMPLAINT", T0 + timedelta(hours=2), message=message)
    pipelines.run(settings, NAME)

    assert [r for r in _rows(olap, tenant) if r[1] != "provider"] == [
        (T0.date(), "domain", "acme.test", 1, 0, 2),
        (T0.date(), "ip", "192.0.2.4", 1, 0, 0),
        (T0.date(), "ip", "192.0.2.5", 0, 0, 1),
    ]


def test_reruns_change_nothing_and_incremental_runs_equal_the_rebuilds(scratch) -> None:
    settings, olap = scratch
    tenants = [olap.tenant(zone) for zone in ("UTC", "Pacific/Auckland", "America/Los_Angeles")]
    for n, tenant in enumerate(tenants):
        olap.account(tenant, f"a@t{n}.test", ip=f"198.51.100.{n + 1}")
        olap.account(tenant, f"b@t{n}.test", ip=f"198.51.100.{n + 11}")
        olap.account(tenant, f"c@t{n}-other.test")
    olap.bulk_messages(tenants)
    for seed in (0.1, 0.2, 0.3):
        olap.bulk(tenants, 3_000, seed=seed)
        pipelines.run(settings, NAME)
    incremental = _table(olap, tenants)
    assert set(incremental["subject_kind"]) == {"ip", "domain", "provider"}
    assert set(incremental.filter(subject_kind="provider")["subject"]) == {
        "gmail", "outlook", "yahoo", "other",
    }  # fmt: skip

    pipelines.run(settings, NAME)  # nothing new
    assert _table(olap, tenants).equals(incremental)
    pipelines.run(settings, NAME, full=True)
    assert _table(olap, tenants).equals(incremental)
    pipelines.run(settings, NAME, since=(datetime.now(UTC) - timedelta(days=5)).date())
    assert _table(olap, tenants).equals(incremental)
