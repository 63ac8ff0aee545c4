"""Per-meter rollups: DST-correct local days, half-hour zones, completeness counts,
incremental refresh equal to a full one, and the cagg path equal to the table path."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from app import rollups
from jobs import rollups as rollups_job
from jobs.dirty import log_energy_change

UTC = dt.timezone.utc
Q = dt.timedelta(minutes=15)


def use_zone(monkeypatch, conn, zone: str) -> None:
    """Reporting zone for this test: settings and the rollups built in it."""
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", zone)
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, zone)


def add_meter(conn, name: str) -> int:
    cat = conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
        "ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit RETURNING id"
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO config.meter (name, category_id) VALUES (%s, %s) RETURNING id", (name, cat)
    ).fetchone()[0]


def write_intervals(conn, meter_id: int, start: dt.datetime, end: dt.datetime, energy=1.0, quality=1) -> None:
    """Constant energy per interval over [start, end), logged for the downstream stages."""
    conn.execute(
        "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
        "SELECT %s, g, %s, %s FROM generate_series(%s::timestamptz, %s::timestamptz - interval '15 minutes', "
        "interval '15 minutes') g "
        "ON CONFLICT (meter_id, ts) DO UPDATE SET energy = EXCLUDED.energy, quality = EXCLUDED.quality",
        (meter_id, energy, quality, start, end),
    )
    log_energy_change(conn, start, end, "test: intervals written", [meter_id])


def run_job(conn, start=None, end=None) -> int:
    with conn.transaction():
        return rollups_job.run(conn, start, end)


def daily(conn, meter_id: int) -> list[tuple]:
    return conn.execute(
        "SELECT day, energy, expected, present, missing FROM api.meter_energy_daily "
        "WHERE meter_id = %s ORDER BY bucket",
        (meter_id,),
    ).fetchall()


def test_stockholm_days_across_both_dst_changes(conn, monkeypatch):
    use_zone(monkeypatch, conn, "Europe/Stockholm")
    m = add_meter(conn, "main")
    # Local 2025-03-29 00:00 (+01) to 2025-04-01 00:00 (+02); 2025-10-25 (+02) to 10-28 (+01).
    write_intervals(conn, m, dt.datetime(2025, 3, 28, 23, tzinfo=UTC), dt.datetime(2025, 3, 31, 22, tzinfo=UTC))
    write_intervals(conn, m, dt.datetime(2025, 10, 24, 22, tzinfo=UTC), dt.datetime(2025, 10, 27, 23, tzinfo=UTC))
    run_job(conn)
    assert daily(conn, m) == [
        (dt.date(2025, 3, 29), Decimal(96), 96, 96, 0),
        (dt.date(2025, 3, 30), Decimal(92), 92, 92, 0),    # 23-hour day
        (dt.date(2025, 3, 31), Decimal(96), 96, 96, 0),
        (dt.date(2025, 10, 25), Decimal(96), 96, 96, 0),
        (dt.date(2025, 10, 26), Decimal(100), 100, 100, 0),  # 25-hour day
        (dt.date(2025, 10, 27), Decimal(96), 96, 96, 0),
    ]
    # Day buckets start at local midnight.
    buckets = [r[0] for r in conn.execute(
        "SELECT bucket FROM energy.meter_daily WHERE meter_id = %s ORDER BY bucket", (m,))]
    assert buckets[1] == dt.datetime(2025, 3, 29, 23, tzinfo=UTC)
    assert buckets[2] == dt.datetime(2025, 3, 30, 22, tzinfo=UTC)
    assert buckets[4] == dt.datetime(2025, 10, 25, 22, tzinfo=UTC)
    assert buckets[5] == dt.datetime(2025, 10, 26, 23, tzinfo=UTC)
    # Hours: the repeated hour of the autumn change is two buckets, each of 4 intervals.
    hours = conn.execute(
        "SELECT count(*), sum(energy), min(energy), max(energy) FROM energy.meter_hourly "
        "WHERE meter_id = %s AND bucket >= %s AND bucket < %s",
        (m, dt.datetime(2025, 10, 25, 22, tzinfo=UTC), dt.datetime(2025, 10, 26, 23, tzinfo=UTC)),
    ).fetchone()
    assert hours == (25, Decimal(100), Decimal(4), Decimal(4))
    # Months: March ends with the 23-hour day, October holds the 25-hour day.
    months = conn.execute(
        "SELECT month, energy, expected, present FROM api.meter_energy_monthly WHERE meter_id = %s ORDER BY bucket",
        (m,),
    ).fetchall()
    assert months == [
        (dt.date(2025, 3, 1), Decimal(96 + 92 + 96), 31 * 96 - 4, 284),
        (dt.date(2025, 10, 1), Decimal(96 + 100 + 96), 31 * 96 + 4, 292),
    ]


def test_kolkata_half_hour_offset_days_and_hours(conn, monkeypatch):
    use_zone(monkeypatch, conn, "Asia/Kolkata")
    m = add_meter(conn, "main")
    start = dt.datetime(2024, 12, 31, 18, 30, tzinfo=UTC)   # 2025-01-01 00:00 +05:30
    write_intervals(conn, m, start, start + dt.timedelta(days=2), energy=0.5)
    # One more quarter at local 00:00-00:15 on Jan 3, and one at 10:15 on Jan 3.
    write_intervals(conn, m, start + dt.timedelta(days=2), start + dt.timedelta(days=2) + Q, energy=2.0)
    write_intervals(conn, m, start + dt.timedelta(days=2, hours=10, minutes=15),
                    start + dt.timedelta(days=2, hours=10, minutes=30), energy=3.0)
    run_job(conn)
    assert daily(conn, m) == [
        (dt.date(2025, 1, 1), Decimal(48), 96, 96, 0),
        (dt.date(2025, 1, 2), Decimal(48), 96, 96, 0),
        (dt.date(2025, 1, 3), Decimal(5), 96, 2, 94),
    ]
    hourly = conn.execute(
        "SELECT bucket, energy, present, missing FROM api.meter_energy_hourly "
        "WHERE meter_id = %s AND bucket >= %s ORDER BY bucket",
        (m, start + dt.timedelta(days=2)),
    ).fetchall()
    assert hourly == [
        (dt.datetime(2025, 1, 2, 18, 30, tzinfo=UTC), Decimal(2), 1, 3),   # local 00:00
        (dt.datetime(2025, 1, 3, 4, 30, tzinfo=UTC), Decimal(3), 1, 3),    # local 10:00
    ]
    first = conn.execute(
        "SELECT min(bucket), count(*) FROM energy.meter_hourly WHERE meter_id = %s AND bucket < %s",
        (m, start + dt.timedelta(days=2)),
    ).fetchone()
    assert first == (start, 48)


def test_rollups_refuse_another_zone_until_rebuilt(conn, monkeypatch):
    use_zone(monkeypatch, conn, "Europe/Stockholm")
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", "Asia/Kolkata")
    from app.settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(rollups.RollupZoneError, match="built in 'Europe/Stockholm'.*rebuild-rollups"):
        run_job(conn)
    m = add_meter(conn, "main")
    write_intervals(conn, m, dt.datetime(2025, 1, 1, 18, 30, tzinfo=UTC), dt.datetime(2025, 1, 2, 18, 30, tzinfo=UTC))
    result = rollups.rebuild(conn)
    assert result["zone"] == "Asia/Kolkata"
    assert daily(conn, m) == [(dt.date(2025, 1, 2), Decimal(96), 96, 96, 0)]
    assert run_job(conn) >= 0


def test_incremental_refresh_equals_full_refresh(conn, monkeypatch):
    use_zone(monkeypatch, conn, "Europe/Stockholm")
    a, b = add_meter(conn, "a"), add_meter(conn, "b")
    t0 = dt.datetime(2025, 3, 28, 23, tzinfo=UTC)
    write_intervals(conn, a, t0, t0 + dt.timedelta(days=3), energy=1.25)
    run_job(conn)
    write_intervals(conn, b, t0 + dt.timedelta(hours=5), t0 + dt.timedelta(days=2), energy=0.75, quality=4)
    run_job(conn)
    # Late correction in the middle of a day, and a new month's first hour.
    write_intervals(conn, a, t0 + dt.timedelta(days=1, hours=3), t0 + dt.timedelta(days=1, hours=4), energy=9)
    write_intervals(conn, a, dt.datetime(2025, 3, 31, 22, tzinfo=UTC), dt.datetime(2025, 3, 31, 23, tzinfo=UTC))
    run_job(conn)
    assert run_job(conn) == 0   # nothing dirty left

    snapshot = {
        name: conn.execute(f"SELECT * FROM energy.{name} ORDER BY 1, 2").fetchall()
        for name in ("meter_hourly", "meter_daily", "meter_monthly")
    }
    assert len(snapshot["meter_monthly"]) == 3   # a: March and April, b: March
    conn.execute("TRUNCATE energy.meter_hourly, energy.meter_daily, energy.meter_monthly")
    run_job(conn, dt.datetime(2025, 3, 1, tzinfo=UTC), dt.datetime(2025, 5, 1, tzinfo=UTC))
    for name, rows in snapshot.items():
        assert conn.execute(f"SELECT * FROM energy.{name} ORDER BY 1, 2").fetchall() == rows, name


def test_table_window_shrinks_inward_to_whole_buckets(conn, monkeypatch):
    use_zone(monkeypatch, conn, "Europe/Stockholm")
    m = add_meter(conn, "main")
    write_intervals(conn, m, dt.datetime(2025, 1, 1, 23, tzinfo=UTC), dt.datetime(2025, 1, 3, 23, tzinfo=UTC))
    conn.execute("DELETE FROM energy.meter_daily")
    # 2025-01-02 12:00 local to 2025-01-03 23:00 local: only Jan 3 is a whole day inside.
    n = conn.execute(
        "SELECT energy.refresh_meter_rollup('day', '2025-01-02 11:00+00', '2025-01-03 22:00+00')"
    ).fetchone()[0]
    assert n == 0
    n = conn.execute(
        "SELECT energy.refresh_meter_rollup('day', '2025-01-02 11:00+00', '2025-01-03 23:00+00')"
    ).fetchone()[0]
    assert n == 1
    assert daily(conn, m) == [(dt.date(2025, 1, 3), Decimal(96), 96, 96, 0)]


def test_cagg_and_table_paths_give_identical_rows(conn, monkeypatch):
    """On a server with continuous aggregates, the caggs' rows equal what the table
    refresh writes: the same definition evaluated by energy.refresh_meter_rollup."""
    if rollups.materialisation(conn) != "cagg":
        pytest.skip(
            "this TimescaleDB edition (Apache) has no continuous aggregates: the cagg vs table "
            "comparison runs only on the Community edition"
        )
    conn.autocommit = True
    use_zone(monkeypatch, conn, "Europe/Stockholm")
    a, b = add_meter(conn, "a"), add_meter(conn, "b")
    t0 = dt.datetime(2025, 3, 20, 23, tzinfo=UTC)
    write_intervals(conn, a, t0, t0 + dt.timedelta(days=20), energy=1.1)
    write_intervals(conn, b, t0 + dt.timedelta(hours=7), t0 + dt.timedelta(days=12), energy=0.3, quality=4)
    rollups.refresh_meter_rollups(conn, None, None)
    zone, origin = conn.execute("SELECT reporting_timezone, hour_origin FROM energy.rollup_setting").fetchone()
    for granularity, name in rollups.METER_ROLLUPS.items():
        definition = conn.execute(
            "SELECT energy.rollup_definition(%s, %s, %s)", (granularity, zone, origin)
        ).fetchone()[0]
        table_rows = conn.execute(f"SELECT * FROM ({definition}) d ORDER BY 1, 2").fetchall()
        cagg_rows = conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2").fetchall()
        assert cagg_rows == table_rows, name
