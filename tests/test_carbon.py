"""Carbon rules with hand-computed numbers: which factor applies to an interval, both
bases, scopes, kgce, and factor files refused whole with precise messages."""

from __future__ import annotations

import datetime as dt

import pytest
from pytest import approx

from app.carbon import CarbonFileError, compute, import_factors, import_intensity, parse_factor_csv, parse_factor_yaml, _read_csv, INTENSITY_FIELDS
from carbon_helpers import category, emission_rows, energy_rollups, factors, intensity, intervals, meter, t

HEADER = "category,region,basis,scope,valid_from,valid_to,kgco2e_per_unit,source\n"


def _run(conn, start="2025-01-01", end="2026-01-01"):
    with conn.transaction():
        energy_rollups(conn)   # jobs.rollups runs before jobs.carbon
        return compute(conn, t(start), t(end))


def test_location_and_market_basis_with_fallback_and_default_region(conn):
    elec = category(conn, "electricity", "kWh", 0.1229)
    se3 = meter(conn, "main SE3", elec, "SE3", via_space=True)   # region from its site
    no1 = meter(conn, "main NO1", elec, "NO1")                    # region on the meter
    bare = meter(conn, "no region", elec)
    factors(conn, HEADER
            + "electricity,SE3,location,2,2025-01-01,,0.05,grid mix SE3 2025\n"
            + "electricity,SE3,market,2,2025-01-01,,0.30,supplier residual mix 2025\n"
            + "electricity,NO1,location,2,2025-01-01,,0.02,grid mix NO1 2025\n"
            + "electricity,,location,2,2025-01-01,,0.40,national average 2025\n")
    for m in (se3, no1, bare):
        intervals(conn, m, t("2025-03-10 10:00"), 4, 10.0)
    assert _run(conn) == 12

    rows = emission_rows(conn, se3)
    assert [r[1] for r in rows] == [2, 2, 2, 2]
    assert sum(r[2] for r in rows) == approx(4 * 10 * 0.05)      # 2.0 location-based
    assert sum(r[3] for r in rows) == approx(4 * 10 * 0.30)      # 12.0 market-based
    assert sum(r[4] for r in rows) == approx(4 * 10 * 0.1229)    # 4.916 kgce
    assert rows[0][5] == []

    rows = emission_rows(conn, no1)   # no market factor for NO1: market = location, flagged
    assert sum(r[2] for r in rows) == approx(4 * 10 * 0.02)      # 0.8
    assert sum(r[3] for r in rows) == approx(4 * 10 * 0.02)      # 0.8
    assert rows[0][5] == ["market_fallback"]

    rows = emission_rows(conn, bare)  # no region: the factor without region
    assert sum(r[2] for r in rows) == approx(4 * 10 * 0.40)      # 16.0
    assert rows[0][5] == ["market_fallback", "default_region", "no_region"]


def test_factor_change_mid_month_prices_each_side_with_its_factor(conn):
    elec = category(conn, "electricity", "kWh", 0)
    m = meter(conn, "main", elec, "SE3")
    factors(conn, HEADER
            + "electricity,SE3,location,2,2025-01-01T00:00Z,2025-03-16T00:00Z,0.05,grid 2025 H1 draft\n"
            + "electricity,SE3,location,2,2025-03-16T00:00Z,,0.08,grid 2025 revised\n")
    intervals(conn, m, t("2025-03-15 10:00"), 4, 10.0)
    intervals(conn, m, t("2025-03-16 10:00"), 4, 10.0)
    _run(conn)
    rows = emission_rows(conn, m)
    assert [r[2] for r in rows] == approx([10 * 0.05] * 4 + [10 * 0.08] * 4)
    month = conn.execute(
        "SELECT sum(kgco2e_location), sum(kgco2e_market) FROM api.carbon_monthly WHERE meter_id = %s", (m,)
    ).fetchone()
    assert float(month[0]) == approx(4 * 10 * 0.05 + 4 * 10 * 0.08)   # 2.0 + 3.2 = 5.2
    assert float(month[1]) == approx(5.2)                              # market falls back


def test_hourly_intensity_takes_precedence_and_static_factor_fills_its_hole(conn):
    elec = category(conn, "electricity", "kWh", 0)
    m = meter(conn, "main", elec, "SE3")
    factors(conn, HEADER + "electricity,SE3,location,2,2025-01-01,,0.05,grid mix 2025\n")
    intensity(conn, "region,category,basis,start,kgco2e_per_kwh,source\n"
                    "SE3,electricity,location,2025-03-10T10:00Z,0.02,hourly grid data\n"
                    # 11:00 missing: a hole in the series
                    "SE3,electricity,location,2025-03-10T12:00Z,0.04,hourly grid data\n")
    intervals(conn, m, t("2025-03-10 10:00"), 12, 10.0)
    _run(conn)
    rows = emission_rows(conn, m)
    assert [r[2] for r in rows] == approx([10 * 0.02] * 4 + [10 * 0.05] * 4 + [10 * 0.04] * 4)
    assert sum(r[2] for r in rows) == approx(0.8 + 2.0 + 1.6)   # 4.4
    assert rows[0][5] == ["location_series", "market_fallback"]
    assert rows[4][5] == ["market_fallback"]
    factor_ids = conn.execute(
        "SELECT location_factor_id IS NULL FROM carbon.meter_emission WHERE meter_id = %s ORDER BY ts", (m,)
    ).fetchall()
    assert [r[0] for r in factor_ids] == [True] * 4 + [False] * 4 + [True] * 4   # provenance


def test_scope_totals_and_kgce(conn):
    elec = category(conn, "electricity", "kWh", 0.1229)
    gas = category(conn, "natural gas", "m3", 1.33)
    leased = category(conn, "tenant electricity", "kWh", 0.1229)
    water = category(conn, "water", "m3", 0)   # not in the carbon inventory
    e, g, l, w = (meter(conn, "e", elec, "SE3"), meter(conn, "g", gas), meter(conn, "l", leased, "SE3"),
                  meter(conn, "w", water))
    factors(conn, HEADER
            + "electricity,SE3,location,2,2025-01-01,,0.05,grid 2025\n"
            + "natural gas,,location,1,2025-01-01,,2.0,fuel table 2025\n"
            + "tenant electricity,SE3,location,3,2025-01-01,,0.05,grid 2025\n")
    for mid, kwh in ((e, 100.0), (g, 5.0), (l, 20.0), (w, 7.0)):
        intervals(conn, mid, t("2025-05-05 10:00"), 4, kwh)
    _run(conn)
    totals = dict(conn.execute(
        "SELECT scope, sum(kgco2e_location)::float FROM api.carbon_monthly GROUP BY scope").fetchall())
    assert totals == approx({1: 4 * 5.0 * 2.0,       # 40.0  gas burned on site
                             2: 4 * 100.0 * 0.05,    # 20.0  purchased electricity
                             3: 4 * 20.0 * 0.05})    # 4.0   assigned to scope 3
    kgce = dict(conn.execute("SELECT meter_id, sum(kgce)::float FROM api.carbon_daily GROUP BY 1").fetchall())
    assert kgce == approx({e: 4 * 100.0 * 0.1229,    # 49.16
                           g: 4 * 5.0 * 1.33,        # 26.6
                           l: 4 * 20.0 * 0.1229})    # 9.832
    assert conn.execute("SELECT count(*) FROM carbon.meter_emission WHERE meter_id = %s", (w,)).fetchone()[0] == 0


def test_rerun_gives_the_same_rows(conn):
    elec = category(conn, "electricity", "kWh", 0.1229)
    m = meter(conn, "main", elec, "SE3")
    factors(conn, HEADER + "electricity,SE3,location,2,2025-01-01,,0.05,grid 2025\n")
    intervals(conn, m, t("2025-03-10 10:00"), 8, 3.0)
    _run(conn)
    first = emission_rows(conn, m)
    _run(conn)
    assert emission_rows(conn, m) == first
    assert conn.execute("SELECT count(*) FROM carbon.meter_hourly").fetchone()[0] == 2


def test_invalid_factor_file_is_rejected_whole_with_precise_messages(conn):
    category(conn, "electricity", "kWh", 0)
    text = (HEADER
            + "electricity,SE3,location,2,2025-01-01,,0.05,grid 2025\n"          # row 2 fine
            + "electrcity,SE3,location,2,2025-01-01,,0.05,grid 2025\n"           # row 3 typo
            + "electricity,SE3,residual,2,2025-01-01,,0.05,grid 2025\n"          # row 4 basis
            + "electricity,SE3,market,4,2025-01-01,,0.05,grid 2025\n"            # row 5 scope
            + "electricity,SE3,market,2,2025-01-01,,-0.1,grid 2025\n"            # row 6 negative
            + "electricity,SE3,market,2,2025-06-01,2025-01-01,0.1,grid 2025\n"   # row 7 reversed
            + "electricity,SE3,market,2,2025-01-01,,0.1,\n"                      # row 8 no source
            + "electricity,SE3,location,2,2025-06-01,,0.06,grid 2025 b\n")       # row 9 overlaps row 2
    with pytest.raises(CarbonFileError) as exc:
        import_factors(conn, parse_factor_csv(text, "f.csv"), "f.csv")
    msg = str(exc.value)
    assert "row 3, field category: 'electrcity' is not a known energy category" in msg
    assert "row 4, field basis: 'residual' must be location or market" in msg
    assert "row 5, field scope: '4' must be 1" in msg
    assert "row 6, field kgco2e_per_unit: '-0.1' is negative" in msg
    assert "row 7, field valid_to: '2025-01-01' is not after valid_from '2025-06-01'" in msg
    assert "row 8, field source: '' is empty" in msg
    assert conn.execute("SELECT count(*) FROM config.emission_factor").fetchone()[0] == 0

    # Fix the field errors: the overlap with row 2 is what remains.
    with pytest.raises(CarbonFileError) as exc:
        import_factors(conn, parse_factor_csv(HEADER
                       + "electricity,SE3,location,2,2025-01-01,,0.05,grid 2025\n"
                       + "electricity,SE3,location,2,2025-06-01,,0.06,grid 2025 b\n", "f.csv"), "f.csv")
    assert ("row 3: electricity/SE3/location [2025-06-01T00:00:00+00:00, infinity) overlaps row 2 "
            "[2025-01-01T00:00:00+00:00, infinity)") in str(exc.value)
    assert conn.execute("SELECT count(*) FROM config.carbon_region").fetchone()[0] == 0


def test_scope_must_agree_with_stored_factors_and_yaml_reads_the_same(conn):
    category(conn, "electricity", "kWh", 0)
    factors(conn, HEADER + "electricity,SE3,location,2,2025-01-01,,0.05,grid 2025\n")
    rows = parse_factor_yaml("""
factors:
  - {category: electricity, region: SE3, basis: market, scope: 3, valid_from: 2025-01-01,
     kgco2e_per_unit: 0.3, source: supplier 2025}
""", "f.yaml")
    with pytest.raises(CarbonFileError) as exc:
        import_factors(conn, rows, "f.yaml")
    assert "factors[0], field scope: 3 differs from scope 2 of stored factor #" in str(exc.value)
    rows[0][1]["scope"] = 2
    report = import_factors(conn, rows, "f.yaml")
    assert (report.inserted, report.updated) == (1, 0)
    assert import_factors(conn, rows, "f.yaml").unchanged == 1   # same file again: nothing changes


def test_invalid_intensity_file_is_rejected_whole(conn):
    category(conn, "electricity", "kWh", 0)
    category(conn, "heat", "MWh", 0)
    text = ("region,category,basis,start,minutes,kgco2e_per_kwh\n"
            "SE3,electricity,location,2025-03-10T10:00Z,60,0.02\n"
            "SE3,electricity,location,2025-03-10 11:00,60,0.02\n"     # row 3 no offset
            "SE3,electricity,location,2025-03-10T12:05Z,60,0.02\n"    # row 4 not on a quarter hour
            "SE3,heat,location,2025-03-10T10:00Z,60,0.02\n"           # row 5 not kWh
            "SE3,electricity,location,2025-03-10T10:30Z,30,0.02\n"    # row 6 overlaps row 2
            "SE3,electricity,location,2025-03-10T14:00Z,45,0.02\n")   # row 7 minutes
    with pytest.raises(CarbonFileError) as exc:
        import_intensity(conn, _read_csv(text, "s.csv", INTENSITY_FIELDS, ()), "s.csv")
    msg = str(exc.value)
    assert "row 3, field start: '2025-03-10 11:00' has no UTC offset" in msg
    assert "row 4, field start: '2025-03-10T12:05Z' is not on a 15-minute boundary" in msg
    assert "row 5, field category: 'heat' is measured in 'MWh'" in msg
    assert "row 6, field start: 2025-03-10T10:30:00+00:00 overlaps row 2" in msg
    assert "row 7, field minutes: '45' must be 15, 30 or 60" in msg
    assert conn.execute("SELECT count(*) FROM carbon.grid_intensity").fetchone()[0] == 0
