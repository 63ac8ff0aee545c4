"""The carbon stage: explicit ranges, and incremental runs over the dirty-range log — a
corrected factor for a past period is recomputed, and nothing else."""

from __future__ import annotations

from pytest import approx

from carbon_helpers import category, emission_rows, energy_rollups, factors, intensity, intervals, meter, t
from jobs import carbon as stage
from jobs.dirty import log_energy_change

HEADER = "category,region,basis,scope,valid_from,valid_to,kgco2e_per_unit,source\n"


def _run(conn, start=None, end=None):
    with conn.transaction():
        energy_rollups(conn)   # jobs.rollups runs before jobs.carbon
        return stage.run(conn, start, end)


def _setup(conn):
    elec = category(conn, "electricity", "kWh", 0)
    m = meter(conn, "main", elec, "SE3")
    other = meter(conn, "other region", elec, "NO1")
    for mid in (m, other):
        intervals(conn, mid, t("2025-01-10 10:00"), 4, 10.0)   # January
        intervals(conn, mid, t("2025-02-10 10:00"), 4, 10.0)   # February
    factors(conn, HEADER
            + "electricity,SE3,location,2,2025-01-01T00:00Z,2025-02-01T00:00Z,0.05,grid Jan draft\n"
            + "electricity,SE3,location,2,2025-02-01T00:00Z,,0.06,grid Feb\n"
            + "electricity,NO1,location,2,2025-01-01T00:00Z,,0.01,grid NO1\n")
    return m, other


def test_corrected_factor_recomputes_exactly_its_period(conn):
    m, other = _setup(conn)
    assert stage.NAME == "carbon"
    _run(conn, t("2025-01-01"), t("2025-03-01"))
    _run(conn)   # consume the entries logged while setting up
    assert [r[2] for r in emission_rows(conn, m)] == approx([10 * 0.05] * 4 + [10 * 0.06] * 4)

    # Mark rows the correction must not touch: February of this meter, all of the other.
    for table in ("carbon.meter_hourly", "carbon.meter_daily"):
        conn.execute(f"UPDATE {table} SET kgco2e_market = -1 "
                     "WHERE (meter_id = %s AND bucket >= '2025-02-01') OR meter_id = %s", (m, other))
    conn.execute("UPDATE config.emission_factor SET kgco2e_per_unit = 0.07, source = 'grid Jan final' "
                 "WHERE source = 'grid Jan draft'")
    logged = conn.execute(
        "SELECT meter_id, range_start, range_end FROM ops.dirty_range WHERE reason LIKE 'carbon:%%' "
        "ORDER BY id DESC LIMIT 1").fetchone()
    # the factor's validity [Jan 1, Feb 1) cut to where the meter has data (from Jan 10 10:00)
    assert logged == (m, t("2025-01-10 10:00"), t("2025-02-01 00:00"))

    assert _run(conn) == 4
    rows = emission_rows(conn, m)
    assert [r[2] for r in rows] == approx([10 * 0.07] * 4 + [10 * 0.06] * 4)   # January 0.7 each
    hourly = conn.execute("SELECT meter_id, bucket, kgco2e_location::float, kgco2e_market::float "
                          "FROM carbon.meter_hourly ORDER BY 1, 2").fetchall()
    assert [r[2:] for r in hourly if r[0] == m and r[1] < t("2025-02-01")] == [approx((2.8, 2.8))]  # recomputed
    assert [r[3] for r in hourly if r[0] == m and r[1] >= t("2025-02-01")] == [-1]  # February untouched
    assert {r[3] for r in hourly if r[0] == other} == {-1}                           # other region untouched
    assert conn.execute("SELECT count(*) FROM carbon.meter_daily WHERE kgco2e_market = -1").fetchone()[0] == 3
    months = dict(conn.execute(
        "SELECT month, kgco2e_location::float FROM api.carbon_monthly WHERE meter_id = %s ORDER BY month",
        (m,)).fetchall())
    assert list(months.values()) == approx([4 * 10 * 0.07, 4 * 10 * 0.06])    # 2.8, 2.4
    assert _run(conn) == 0   # nothing left to do


def test_new_intensity_series_and_new_intervals_are_picked_up(conn):
    m, other = _setup(conn)
    _run(conn)   # the factors' entries: everything so far
    assert len(emission_rows(conn, m)) == 8
    intensity(conn, "region,category,basis,start,kgco2e_per_kwh\n"
                    "SE3,electricity,market,2025-02-10T10:00Z,0.5\n")
    intervals(conn, m, t("2025-02-11 10:00"), 2, 4.0)
    with conn.transaction():
        log_energy_change(conn, t("2025-02-11 10:00"), t("2025-02-11 10:30"), "normalize: intervals rewritten", [m])
    assert _run(conn) == 4 + 2
    rows = {r[0]: r for r in emission_rows(conn, m)}
    assert rows[t("2025-02-10 10:15")][3] == approx(10 * 0.5)      # market from the series
    assert rows[t("2025-02-10 10:15")][2] == approx(10 * 0.06)     # location still static
    assert rows[t("2025-02-11 10:15")][2] == approx(4 * 0.06)      # the new interval


def test_region_change_recomputes_the_meters_history(conn):
    m, other = _setup(conn)
    _run(conn)
    conn.execute("UPDATE config.meter SET grid_region_id = (SELECT id FROM config.carbon_region WHERE name = 'NO1') "
                 "WHERE id = %s", (m,))
    assert _run(conn) == 8
    assert [r[2] for r in emission_rows(conn, m)] == approx([10 * 0.01] * 8)


def test_parts_by_meter_give_the_rows_of_one_run(conn):
    _setup(conn)
    _run(conn, t("2025-01-01"), t("2025-03-01"))
    whole = conn.execute("SELECT * FROM carbon.meter_hourly ORDER BY 1, 2, 3").fetchall()
    conn.execute("TRUNCATE carbon.meter_hourly, carbon.meter_daily, carbon.meter_monthly")
    with conn.transaction():
        n = sum(stage.run(conn, t("2025-01-01"), t("2025-03-01"), part=(i, 2)) for i in range(2))
    assert n == 16
    assert conn.execute("SELECT * FROM carbon.meter_hourly ORDER BY 1, 2, 3").fetchall() == whole
    assert stage.PARTITIONS
