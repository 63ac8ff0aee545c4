"""Data completeness per meter and entity per day, and gap-filled series for readers
(missing buckets present with energy NULL)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest

from app import rollups
from jobs import rollups as rollups_job
from jobs.dirty import log_energy_change

UTC = dt.timezone.utc
DAY = dt.datetime(2025, 1, 6, tzinfo=UTC)
Q = dt.timedelta(minutes=15)


def use_zone(monkeypatch, conn, zone: str) -> None:
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", zone)
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, zone)


def one(conn, sql: str, *args):
    return conn.execute(sql, args).fetchone()[0]


def put(conn, meter_id: int, start: dt.datetime, n: int, energy: float | None, quality: int) -> None:
    conn.execute(
        "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
        "SELECT %s, %s::timestamptz + i * interval '15 minutes', %s, %s FROM generate_series(0, %s - 1) i",
        (meter_id, start, energy, quality, n),
    )
    log_energy_change(conn, start, start + n * Q, "test: intervals written", [meter_id])


@pytest.fixture
def site(conn, monkeypatch):
    use_zone(monkeypatch, conn, "UTC")
    cat = one(conn, "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') RETURNING id")
    ids = {"cat": cat}
    for name, kind, formula in (("A", "physical", None), ("B", "physical", None),
                                ("V", "virtual", "A"), ("O", "offline", None)):
        ids[name] = one(conn, "INSERT INTO config.meter (name, kind, category_id, formula) "
                              "VALUES (%s, %s, %s, %s) RETURNING id", name, kind, cat, formula)
    ids["S"] = one(conn, "INSERT INTO config.space (name) VALUES ('S') RETURNING id")
    conn.execute("INSERT INTO config.space_meter VALUES (%s, %s), (%s, %s)", (ids["S"], ids["A"], ids["S"], ids["B"]))
    # A: 80 measured, 8 estimated, then 8 absent. V: 92 valued, 4 missing inputs. O: 96 manual.
    put(conn, ids["A"], DAY, 80, 1.0, 1)
    put(conn, ids["A"], DAY + 80 * Q, 8, 1.0, 1 | 4)
    put(conn, ids["V"], DAY, 92, 1.0, 16)
    put(conn, ids["V"], DAY + 92 * Q, 4, None, 16 | 256)
    put(conn, ids["O"], DAY, 96, 0.5, 8)
    # A again two days later, half a day.
    put(conn, ids["A"], DAY + dt.timedelta(days=2), 48, 2.0, 1)
    with conn.transaction():
        rollups_job.run(conn, None, None)
    return ids


def test_meter_completeness_per_day(conn, site):
    rows = conn.execute(
        "SELECT meter, expected, present, measured, estimated, manual, missing, "
        "measured_share, estimated_share, manual_share, missing_share "
        "FROM api.meter_completeness_daily WHERE day = '2025-01-06' ORDER BY meter").fetchall()
    assert rows == [
        ("A", 96, 88, 80, 8, 0, 8, Decimal("0.833333"), Decimal("0.083333"), 0, Decimal("0.083333")),
        ("O", 96, 96, 0, 0, 96, 0, 0, 0, 1, 0),
        ("V", 96, 92, 92, 0, 0, 4, Decimal("0.958333"), 0, 0, Decimal("0.041667")),
    ]


def test_entity_completeness_counts_a_meter_without_data_as_missing(conn, site):
    row = conn.execute(
        "SELECT entity, category, meters, expected, present, measured, estimated, missing, missing_share "
        "FROM api.entity_completeness_daily WHERE entity_kind = 'space' AND day = '2025-01-06'").fetchone()
    assert row == ("S", "electricity", 2, 192, 88, 80, 8, 104, Decimal("0.541667"))


def test_meter_series_by_day_has_null_buckets(conn, site):
    rows = conn.execute("SELECT * FROM api.meter_series(%s, 'day', '2025-01-05', '2025-01-10')",
                        (site["A"],)).fetchall()
    d = lambda n: dt.datetime(2025, 1, n, tzinfo=UTC)  # noqa: E731
    assert rows == [
        (d(5), None, 96, 0, 96),
        (d(6), Decimal(88), 96, 88, 8),
        (d(7), None, 96, 0, 96),
        (d(8), Decimal(96), 96, 48, 48),
        (d(9), None, 96, 0, 96),
    ]


def test_meter_series_quarter_hour_hour_week_month_year(conn, site):
    quarters = conn.execute(
        "SELECT bucket, energy FROM api.meter_series(%s, '15min', %s, %s)",
        (site["A"], DAY + 87 * Q, DAY + 90 * Q)).fetchall()
    assert quarters == [(DAY + 87 * Q, Decimal(1)), (DAY + 88 * Q, None), (DAY + 89 * Q, None)]
    hours = conn.execute(
        "SELECT bucket, energy, present, missing FROM api.meter_series(%s, 'hour', %s, %s)",
        (site["A"], DAY + dt.timedelta(hours=21), DAY + dt.timedelta(hours=23))).fetchall()
    assert hours == [(DAY + dt.timedelta(hours=21), Decimal(4), 4, 0),
                     (DAY + dt.timedelta(hours=22), None, 0, 4)]
    week = conn.execute("SELECT bucket, energy, expected, present FROM api.meter_series(%s, 'week', %s, %s)",
                        (site["A"], DAY, DAY + dt.timedelta(days=14))).fetchall()
    assert week == [(DAY, Decimal(184), 672, 136), (DAY + dt.timedelta(days=7), None, 672, 0)]
    month = conn.execute("SELECT bucket, energy, expected FROM api.meter_series(%s, 'month', '2024-12-15', '2025-02-01')",
                         (site["A"],)).fetchall()
    assert month == [(dt.datetime(2024, 12, 1, tzinfo=UTC), None, 31 * 96),
                     (dt.datetime(2025, 1, 1, tzinfo=UTC), Decimal(184), 31 * 96)]
    year = conn.execute("SELECT bucket, energy, expected FROM api.meter_series(%s, 'year', '2025-01-01', '2026-01-01')",
                        (site["A"],)).fetchall()
    assert year == [(dt.datetime(2025, 1, 1, tzinfo=UTC), Decimal(184), 365 * 96)]


def test_entity_series_counts_every_member_meter(conn, site):
    days = conn.execute(
        "SELECT bucket, energy, meters, expected, present, missing "
        "FROM api.entity_series('space', %s, %s, 'day', '2025-01-06', '2025-01-08')",
        (site["S"], site["cat"])).fetchall()
    assert days == [(DAY, Decimal(88), 2, 192, 88, 104), (DAY + dt.timedelta(days=1), None, 2, 192, 0, 192)]
    hours = conn.execute(
        "SELECT bucket, energy, present FROM api.entity_series('space', %s, %s, 'hour', %s, %s)",
        (site["S"], site["cat"], DAY + dt.timedelta(hours=21), DAY + dt.timedelta(hours=23))).fetchall()
    assert hours == [(DAY + dt.timedelta(hours=21), Decimal(4), 4), (DAY + dt.timedelta(hours=22), None, 0)]


def test_series_in_stockholm_follow_local_days(conn, monkeypatch):
    use_zone(monkeypatch, conn, "Europe/Stockholm")
    cat = one(conn, "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') RETURNING id")
    m = one(conn, "INSERT INTO config.meter (name, category_id) VALUES ('M', %s) RETURNING id", cat)
    rows = conn.execute("SELECT bucket, energy, expected FROM api.meter_series(%s, 'day', %s, %s)", (
        m, dt.datetime(2025, 3, 28, 23, tzinfo=UTC), dt.datetime(2025, 3, 31, 22, tzinfo=UTC))).fetchall()
    assert rows == [
        (dt.datetime(2025, 3, 28, 23, tzinfo=UTC), None, 96),
        (dt.datetime(2025, 3, 29, 23, tzinfo=UTC), None, 92),
        (dt.datetime(2025, 3, 30, 22, tzinfo=UTC), None, 96),
    ]


@pytest.mark.parametrize("call, message", [
    ("api.meter_series(%s, 'fortnight', '2025-01-01', '2025-02-01')", "unknown granularity 'fortnight'"),
    ("api.meter_series(%s, 'day', '2025-02-01', '2025-01-01')", "is empty or unbounded"),
    ("api.meter_series(-1, 'day', '2025-01-01', '2025-02-01')", "no meter with id -1"),
    ("api.entity_series('planet', %s, 1, 'day', '2025-01-01', '2025-02-01')", "unknown entity kind 'planet'"),
])
def test_series_reject_bad_arguments(conn, site, call, message):
    args = (site["A"],) if "%s" in call else ()
    with pytest.raises(psycopg.Error, match=message):
        conn.execute(f"SELECT * FROM {call}", args)
