"""The carbon of an interval is the rule of docs/carbon.md; the stage materialises only
the rollups, by a faster route (hourly energy times a factor timeline, intervals only
where the timeline changes inside an hour, days from hours). These tests hold both to
the per-interval rule written here as the plain query (one lookup per basis, region and
series per interval): the view carbon.meter_emission row by row, factor ids and flags
included, and the hourly, daily and monthly rollups as exact numeric sums of it, across
factor changes inside the span and inside an hour, holes in the regional factors filled
by the factor without region, partial intensity series of 15, 30 and 60 minutes, missing
energy, meters without region, a category without factors, partial recomputation, and
reporting zones whose hours start at :30 or whose days are not whole hours.
"""

from __future__ import annotations

import datetime as dt

from app import rollups
from app.carbon import compute
from carbon_helpers import category, energy_rollups, factors, intensity, intervals, meter, t
from jobs import carbon as stage

HEADER = "category,region,basis,scope,valid_from,valid_to,kgco2e_per_unit,source\n"

# The rule, interval by interval, in numeric (energy::numeric × factor).
REFERENCE = """
WITH m AS (
    SELECT mt.id AS meter_id, mt.category_id, r.region_id, cs.scope, c.kgce_factor
    FROM config.meter mt
    JOIN config.energy_category c ON c.id = mt.category_id
    JOIN carbon.category_scope cs ON cs.category_id = mt.category_id
    JOIN carbon.meter_region r ON r.meter_id = mt.id
),
f AS (SELECT id, category_id, region_id, basis, kgco2e_per_unit AS k, valid_from, valid_to
      FROM config.emission_factor),
g AS (SELECT gi.region_id, gi.category_id, gi.basis, q.ts, gi.kgco2e_per_kwh AS k
      FROM carbon.grid_intensity gi
      CROSS JOIN LATERAL generate_series(gi.ts, gi.ts_end - INTERVAL '15 minutes', INTERVAL '15 minutes') q(ts)),
x AS (
    SELECT i.meter_id, i.ts, i.energy, m.scope, m.kgce_factor, m.region_id, gl.k AS gl_k, gm.k AS gm_k,
           coalesce(lr.id, ld.id) AS lf_id, coalesce(lr.k, ld.k) AS lf_k, (lr.id IS NULL AND ld.id IS NOT NULL) AS l_default,
           coalesce(mr.id, md.id) AS mf_id, coalesce(mr.k, md.k) AS mf_k, (mr.id IS NULL AND md.id IS NOT NULL) AS m_default
    FROM energy.meter_interval i
    JOIN m ON m.meter_id = i.meter_id
    LEFT JOIN g gl ON gl.basis = 'location' AND gl.region_id = m.region_id AND gl.category_id = m.category_id AND gl.ts = i.ts
    LEFT JOIN g gm ON gm.basis = 'market' AND gm.region_id = m.region_id AND gm.category_id = m.category_id AND gm.ts = i.ts
    LEFT JOIN f lr ON lr.basis = 'location' AND lr.category_id = m.category_id AND lr.region_id = m.region_id
                  AND i.ts >= lr.valid_from AND i.ts < lr.valid_to
    LEFT JOIN f ld ON ld.basis = 'location' AND ld.category_id = m.category_id AND ld.region_id IS NULL
                  AND i.ts >= ld.valid_from AND i.ts < ld.valid_to
    LEFT JOIN f mr ON mr.basis = 'market' AND mr.category_id = m.category_id AND mr.region_id = m.region_id
                  AND i.ts >= mr.valid_from AND i.ts < mr.valid_to
    LEFT JOIN f md ON md.basis = 'market' AND md.category_id = m.category_id AND md.region_id IS NULL
                  AND i.ts >= md.valid_from AND i.ts < md.valid_to
    WHERE i.ts >= %(s)s AND i.ts < %(e)s
)
SELECT meter_id, ts, scope, energy::numeric * coalesce(gl_k, lf_k), energy::numeric * coalesce(gm_k, mf_k, gl_k, lf_k),
       energy::numeric * kgce_factor, CASE WHEN gl_k IS NULL THEN lf_id END, CASE WHEN gm_k IS NULL THEN mf_id END,
       (CASE WHEN gl_k IS NOT NULL THEN 1 ELSE 0 END) | (CASE WHEN gm_k IS NOT NULL THEN 2 ELSE 0 END)
       | (CASE WHEN gm_k IS NULL AND mf_k IS NULL THEN 4 ELSE 0 END)
       | (CASE WHEN (gl_k IS NULL AND l_default) OR (gm_k IS NULL AND m_default) THEN 8 ELSE 0 END)
       | (CASE WHEN gl_k IS NULL AND lf_k IS NULL THEN 16 ELSE 0 END)
       | (CASE WHEN energy IS NULL THEN 32 ELSE 0 END) | (CASE WHEN region_id IS NULL THEN 64 ELSE 0 END)
FROM x ORDER BY meter_id, ts
"""

STORED = ("SELECT meter_id, ts, scope, kgco2e_location, kgco2e_market, kgce, location_factor_id, market_factor_id, "
          "flags FROM carbon.meter_emission WHERE ts >= %(s)s AND ts < %(e)s ORDER BY meter_id, ts")


def _site(conn):
    elec = category(conn, "electricity", "kWh", 0.1229)
    gas = category(conn, "natural gas", "m3", 1.33)
    category(conn, "water", "m3", 0)                      # not in the inventory: no rows
    ids = [meter(conn, "se3", elec, "SE3"), meter(conn, "se3 via site", elec, "SE3", via_space=True),
           meter(conn, "no1", elec, "NO1"), meter(conn, "de", elec, "DE"), meter(conn, "bare", elec),
           meter(conn, "gas se3", gas, "SE3"), meter(conn, "gas bare", gas)]
    water = conn.execute("INSERT INTO config.meter (name, category_id) SELECT 'tap', id FROM config.energy_category "
                         "WHERE name = 'water' RETURNING id").fetchone()[0]
    for i, m in enumerate(ids + [water]):
        # 20 days of quarter hours from 2025-03-05 with a per-meter shape, a few NULLs
        intervals(conn, m, t("2025-03-05 00:00"), 96 * 20, 1.0 + i / 4)
        conn.execute("UPDATE energy.meter_interval SET energy = energy * (1 + extract(hour FROM ts) / 7) "
                     "WHERE meter_id = %s", (m,))
    conn.execute("UPDATE energy.meter_interval SET energy = NULL WHERE ts >= '2025-03-12 03:00Z' "
                 "AND ts < '2025-03-12 04:00Z' AND meter_id = %s", (ids[0],))
    factors(conn, HEADER
            # SE3 location changes on the 10th at 13:15 and has a hole from the 20th (default fills it)
            + "electricity,SE3,location,2,2025-01-01T00:00Z,2025-03-10T13:15Z,0.045,SE3 draft\n"
            + "electricity,SE3,location,2,2025-03-10T13:15Z,2025-03-20T00:00Z,0.041,SE3 revised\n"
            + "electricity,SE3,market,2,2025-03-08T00:00Z,,0.30,residual mix\n"
            + "electricity,NO1,location,2,2025-01-01T00:00Z,2025-03-15T00:00Z,0.01,NO1\n"
            + "electricity,,location,2,2025-01-01T00:00Z,2025-03-18T06:00Z,0.40,national A\n"
            + "electricity,,location,2,2025-03-18T06:00Z,,0.38,national B\n"
            + "electricity,,market,2,2025-03-14T00:00Z,2025-03-16T00:00Z,0.50,national market\n"
            + "natural gas,,location,1,,,2.0,fuel table\n"
            + "natural gas,SE3,location,1,2025-03-11T00:00Z,2025-03-13T00:00Z,2.1,fuel table SE3\n")
    intensity(conn, "region,category,basis,start,minutes,kgco2e_per_kwh\n"
              + "".join(f"DE,electricity,location,2025-03-{d:02d}T{h:02d}:00Z,60,{0.3 + h / 100}\n"
                        for d in range(6, 9) for h in range(24))
              + "SE3,electricity,market,2025-03-09T10:00Z,30,0.7\n"
              + "SE3,electricity,market,2025-03-09T10:30Z,15,0.8\n"
              + "SE3,electricity,location,2025-03-19T23:45Z,15,0.05\n")


RULE_ROLLUP = """
SELECT meter_id, scope, {bucket} AS bucket, sum(kl), sum(km), sum(kce), count(*), bit_or(fl)
FROM ({reference}) r(meter_id, ts, scope, kl, km, kce, lf, mf, fl)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ROLLUP = ("SELECT meter_id, scope, bucket, kgco2e_location, kgco2e_market, kgce, intervals, flags "
          "FROM carbon.{table} ORDER BY 1, 2, 3")
ALL = {"s": t("2000-01-01"), "e": t("2100-01-01")}


def _run(conn, start, end, meter_ids=None):
    with conn.transaction():
        return compute(conn, t(start), t(end), meter_ids)


def _rule_rollups(conn) -> dict[str, list[tuple]]:
    """The rollup definitions evaluated over the per-interval rule, whole history."""
    zone, origin = conn.execute("SELECT reporting_timezone, hour_origin FROM carbon.rollup_setting").fetchone()
    params = {**ALL, "zone": zone, "origin": origin}
    hours = conn.execute(RULE_ROLLUP.format(bucket="time_bucket('1 hour', ts, origin => %(origin)s)",
                                            reference=REFERENCE.replace("ORDER BY meter_id, ts", "")), params)
    days = conn.execute(RULE_ROLLUP.format(bucket="time_bucket('1 day', ts, %(zone)s)",
                                           reference=REFERENCE.replace("ORDER BY meter_id, ts", "")), params)
    daily = days.fetchall()
    months: dict[tuple, list] = {}
    for meter_id, scope, day, kl, km, kce, n, fl in daily:
        key = (meter_id, scope, conn.execute("SELECT time_bucket('1 month', %s::timestamptz, %s)",
                                             (day, zone)).fetchone()[0])
        acc = months.setdefault(key, [None, None, None, 0, 0])
        for j, v in enumerate((kl, km, kce)):
            if v is not None:
                acc[j] = v if acc[j] is None else acc[j] + v
        acc[3] += n
        acc[4] |= fl
    return {"meter_hourly": hours.fetchall(), "meter_daily": daily,
            "meter_monthly": [(*k, *v) for k, v in sorted(months.items())]}


def _stored_rollups(conn) -> dict[str, list[tuple]]:
    return {table: conn.execute(ROLLUP.format(table=table)).fetchall()
            for table in ("meter_hourly", "meter_daily", "meter_monthly")}


def test_view_gives_the_rows_of_the_interval_rule(conn):
    _site(conn)
    for s, e in [("2025-03-01", "2025-04-01"), ("2025-03-10 13:00", "2025-03-19 23:30"),
                 ("2025-03-20", "2025-03-21")]:
        span = {"s": t(s), "e": t(e)}
        expected = conn.execute(REFERENCE, span).fetchall()
        assert len(expected) > 0
        assert conn.execute(STORED, span).fetchall() == expected


def test_rollups_are_the_sums_of_the_interval_rule(conn):
    _site(conn)
    energy_rollups(conn)
    assert _run(conn, "2025-03-01", "2025-04-01") == len(conn.execute(REFERENCE, ALL).fetchall())
    expected = _rule_rollups(conn)
    assert all(expected.values())
    assert _stored_rollups(conn) == expected
    hourly = expected["meter_hourly"]
    assert {r[7] & 32 for r in hourly} == {0, 32} and {r[7] & 1 for r in hourly} == {0, 1}
    # Recomputed piecewise over spans cut inside hours and days: the same rows.
    conn.execute("TRUNCATE carbon.meter_hourly, carbon.meter_daily, carbon.meter_monthly")
    for s, e in [("2025-03-01", "2025-03-10 13:00"), ("2025-03-10 13:00", "2025-03-19 23:30"),
                 ("2025-03-19 23:30", "2025-04-01")]:
        _run(conn, s, e)
    assert _stored_rollups(conn) == expected


def test_rollups_in_a_zone_whose_hours_start_at_half_past(conn):
    _site(conn)
    with conn.transaction():
        rollups.rebuild(conn, "Asia/Kolkata")   # hourly series on UTC hours split every local hour
        stage.run(conn, t("2025-03-01"), t("2025-04-01"))   # rebuilds the carbon rollups in the new zone
    assert conn.execute("SELECT reporting_timezone FROM carbon.rollup_setting").fetchone()[0] == "Asia/Kolkata"
    assert _stored_rollups(conn) == _rule_rollups(conn)


def test_rollups_where_local_days_are_not_whole_hours(conn):
    # Lord Howe Island: +11 in summer, +10:30 in winter. Hours keep the summer origin, so
    # from 6 April 2025 local midnight falls in the middle of an hour bucket.
    elec = category(conn, "electricity", "kWh", 0.1229)
    m = meter(conn, "lhi", elec, "LHI")
    bare = meter(conn, "bare", elec)
    for i, mid in enumerate((m, bare)):
        intervals(conn, mid, t("2025-04-03 00:00"), 96 * 7, 2.0 + i)
    factors(conn, HEADER
            + "electricity,LHI,location,2,2025-01-01T00:00Z,2025-04-07T05:15Z,0.6,LHI A\n"
            + "electricity,LHI,location,2,2025-04-07T05:15Z,,0.65,LHI B\n"
            + "electricity,,location,2,2025-01-01T00:00Z,,0.5,national\n")
    intensity(conn, "region,category,basis,start,minutes,kgco2e_per_kwh\n"
              + "".join(f"LHI,electricity,market,2025-04-08T{h:02d}:30Z,30,{0.2 + h / 100}\n" for h in range(24)))
    with conn.transaction():
        rollups.rebuild(conn, "Australia/Lord_Howe")
        stage.run(conn, t("2025-04-01"), t("2025-04-12"))
    expected = _rule_rollups(conn)
    days = [r[2] for r in expected["meter_daily"]]
    assert any(d.minute == 30 for d in days) and any(d.minute == 0 for d in days)
    assert _stored_rollups(conn) == expected


def test_meter_subset_leaves_the_others_alone(conn):
    _site(conn)
    energy_rollups(conn)
    _run(conn, "2025-03-01", "2025-04-01")
    expected = _stored_rollups(conn)
    conn.execute("UPDATE carbon.meter_hourly SET kgco2e_market = -1")
    conn.execute("UPDATE carbon.meter_daily SET kgco2e_market = -1")
    se3 = conn.execute("SELECT id FROM config.meter WHERE name = 'se3'").fetchone()[0]
    assert _run(conn, "2025-03-01", "2025-04-01", [se3]) == 96 * 20
    stored = _stored_rollups(conn)
    for table in ("meter_hourly", "meter_daily"):
        assert [r for r in stored[table] if r[0] == se3] == [r for r in expected[table] if r[0] == se3]
        assert {r[4] for r in stored[table] if r[0] != se3} == {-1}
