"""Offline meters stage: daily and monthly values spread over the local days of the
reporting zone (DST months included), along a load profile, flagged manual, and
replaced or removed by a newer import."""

from __future__ import annotations

import datetime as dt

import pytest

from app import rollups
from jobs import offline
from jobs import rollups as rollups_job

UTC = dt.timezone.utc


@pytest.fixture
def stockholm(conn, monkeypatch):
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", "Europe/Stockholm")
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, "Europe/Stockholm")
    return conn


def add_offline_meter(conn, name: str, profile: list[float] | None = None) -> int:
    cat = conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
        "ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit RETURNING id"
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO config.meter (name, kind, category_id, load_profile) VALUES (%s, 'offline', %s, %s) RETURNING id",
        (name, cat, profile),
    ).fetchone()[0]


def import_value(conn, meter_id: int, day: dt.date, period: str, value: float) -> None:
    """What the offline importer does: a newer value replaces the same period."""
    conn.execute(
        "INSERT INTO energy.offline_value (meter_id, period_start, period, value, imported_at) "
        "VALUES (%s, %s, %s, %s, clock_timestamp()) ON CONFLICT (meter_id, period_start, period) "
        "DO UPDATE SET value = EXCLUDED.value, imported_at = EXCLUDED.imported_at",
        (meter_id, day, period, value),
    )


def run(conn, start=None, end=None) -> int:
    with conn.transaction():
        return offline.run(conn, start, end)


def stats(conn, meter_id: int, lo=None, hi=None):
    return conn.execute(
        "SELECT count(*), round(sum(energy)::numeric, 6), min(energy), max(energy), min(ts), max(ts), "
        "bit_or(quality) FROM energy.meter_interval WHERE meter_id = %s "
        "AND (%s::timestamptz IS NULL OR ts >= %s) AND (%s::timestamptz IS NULL OR ts < %s)",
        (meter_id, lo, lo, hi, hi),
    ).fetchone()


def test_monthly_value_over_a_31_day_month(stockholm):
    conn = stockholm
    m = add_offline_meter(conn, "gas")
    import_value(conn, m, dt.date(2025, 1, 1), "month", 2976.0)
    run(conn)
    # 31 days × 96 intervals = 2976, local midnight Jan 1 (+01:00) to local midnight Feb 1.
    assert stats(conn, m) == (
        2976, 2976, 1.0, 1.0,
        dt.datetime(2024, 12, 31, 23, tzinfo=UTC), dt.datetime(2025, 1, 31, 22, 45, tzinfo=UTC), 8,
    )
    logged = conn.execute("SELECT meter_id, range_start, range_end FROM ops.dirty_range "
                          "WHERE reason = 'offline: values spread'").fetchall()
    assert logged == [(m, dt.datetime(2024, 12, 31, 23, tzinfo=UTC), dt.datetime(2025, 1, 31, 23, tzinfo=UTC))]
    assert run(conn) == 0   # nothing changed since


def test_monthly_value_over_a_dst_month(stockholm):
    conn = stockholm
    m = add_offline_meter(conn, "gas")
    import_value(conn, m, dt.date(2025, 3, 1), "month", 2972.0)   # March 2025: 31 × 96 − 4
    import_value(conn, m, dt.date(2025, 10, 1), "month", 5960.0)  # October 2025: 31 × 96 + 4, 2.0 each
    run(conn)
    assert stats(conn, m, dt.datetime(2025, 2, 28, 23, tzinfo=UTC), dt.datetime(2025, 3, 31, 22, tzinfo=UTC))[:4] == (
        2972, 2972, 1.0, 1.0)
    assert stats(conn, m, dt.datetime(2025, 9, 30, 22, tzinfo=UTC), dt.datetime(2025, 10, 31, 23, tzinfo=UTC))[:4] == (
        2980, 5960, 2.0, 2.0)
    with conn.transaction():
        rollups_job.run(conn, None, None)
    days = dict(conn.execute(
        "SELECT day, energy FROM api.meter_energy_daily WHERE meter_id = %s AND day IN "
        "('2025-03-29', '2025-03-30', '2025-10-26')", (m,)).fetchall())
    assert days == {dt.date(2025, 3, 29): 96, dt.date(2025, 3, 30): 92, dt.date(2025, 10, 26): 200}
    manual = conn.execute("SELECT manual, measured, missing FROM api.meter_completeness_daily "
                          "WHERE meter_id = %s AND day = '2025-03-30'", (m,)).fetchone()
    assert manual == (92, 0, 0)


def test_day_value_along_a_load_profile_on_a_dst_day(stockholm):
    conn = stockholm
    profile = [0.0] * 8 + [1.0] * 10 + [0.0] * 6          # local 08:00-18:00 only
    m = add_offline_meter(conn, "water", profile)
    import_value(conn, m, dt.date(2025, 3, 30), "day", 100.0)
    run(conn)
    day = (dt.datetime(2025, 3, 29, 23, tzinfo=UTC), dt.datetime(2025, 3, 30, 22, tzinfo=UTC))
    assert stats(conn, m, *day)[:4] == (92, 100, 0.0, 2.5)
    # The 40 weighted quarters are local 08:00-18:00 = 06:00-16:00 UTC (+02:00 after the change).
    busy = conn.execute("SELECT min(ts), max(ts), count(*) FROM energy.meter_interval "
                        "WHERE meter_id = %s AND energy > 0", (m,)).fetchone()
    assert busy == (dt.datetime(2025, 3, 30, 6, tzinfo=UTC), dt.datetime(2025, 3, 30, 15, 45, tzinfo=UTC), 40)
    # A new profile respreads the values it applies to.
    conn.execute("UPDATE config.meter SET load_profile = NULL WHERE id = %s", (m,))
    run(conn)
    assert stats(conn, m)[:4] == (92, 100, 100 / 92, 100 / 92)


def test_day_values_win_and_month_remainder_fills_the_other_days(stockholm):
    conn = stockholm
    m = add_offline_meter(conn, "gas")
    import_value(conn, m, dt.date(2025, 2, 1), "month", 2800.0)
    import_value(conn, m, dt.date(2025, 2, 1), "day", 96.0)
    run(conn)
    feb1 = (dt.datetime(2025, 1, 31, 23, tzinfo=UTC), dt.datetime(2025, 2, 1, 23, tzinfo=UTC))
    assert stats(conn, m, *feb1)[:4] == (96, 96, 1.0, 1.0)
    rest = stats(conn, m, feb1[1], dt.datetime(2025, 2, 28, 23, tzinfo=UTC))
    assert rest[:2] == (27 * 96, 2704)
    assert rest[2] == pytest.approx(2704 / 2592) and rest[3] == pytest.approx(2704 / 2592)


def test_newer_import_replaces_days_and_removed_days_disappear(stockholm):
    conn = stockholm
    m = add_offline_meter(conn, "gas")
    for d in (1, 2, 3):
        import_value(conn, m, dt.date(2025, 1, d), "day", 96.0)
    run(conn)
    assert stats(conn, m)[:2] == (288, 288)
    import_value(conn, m, dt.date(2025, 1, 2), "day", 192.0)               # replaced
    conn.execute("DELETE FROM energy.offline_value WHERE meter_id = %s AND period_start = '2025-01-03'", (m,))
    run(conn)
    by_day = conn.execute(
        "SELECT (ts AT TIME ZONE 'Europe/Stockholm')::date, count(*), sum(energy) FROM energy.meter_interval "
        "WHERE meter_id = %s GROUP BY 1 ORDER BY 1", (m,)).fetchall()
    assert by_day == [(dt.date(2025, 1, 1), 96, 96.0), (dt.date(2025, 1, 2), 96, 192.0)]


def test_explicit_range_recomputes_the_months_it_touches(stockholm):
    conn = stockholm
    m = add_offline_meter(conn, "gas")
    import_value(conn, m, dt.date(2025, 1, 1), "month", 2976.0)
    run(conn)
    conn.execute("UPDATE energy.meter_interval SET energy = 7 WHERE meter_id = %s", (m,))
    assert run(conn, dt.datetime(2025, 1, 10, tzinfo=UTC), dt.datetime(2025, 1, 11, tzinfo=UTC)) == 2 * 2976
    assert stats(conn, m)[:4] == (2976, 2976, 1.0, 1.0)



def test_a_backfill_spreads_each_month_once(stockholm):
    """`wattline backfill` takes the stage in pieces of a year: one run spreads January
    and February (day-long pieces, the default chunk, would spread the month touching
    each day again)."""
    from jobs import runner

    conn = stockholm
    m = add_offline_meter(conn, "gas")
    import_value(conn, m, dt.date(2025, 1, 1), "month", 2976.0)
    import_value(conn, m, dt.date(2025, 2, 1), "month", 2688.0)
    totals = runner.backfill(conn, dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2025, 3, 1, tzinfo=UTC),
                             stages=runner.load_pipeline(["offline"]))
    assert totals["offline"].rows == 2976 + 2688
    assert conn.execute("SELECT count(*) FROM ops.job_run WHERE stage = 'offline'").fetchone()[0] == 1
    assert stats(conn, m)[:4] == (2976 + 2688, 2976 + 2688, 1.0, 1.0)

def test_invalid_profile_is_rejected(stockholm):
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation, match="meter_load_profile_valid"):
        add_offline_meter(stockholm, "bad", [1.0] * 23)
