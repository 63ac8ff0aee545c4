"""carbon.compute_emissions resolves the static factors into a timeline and joins the
intervals to it once. These tests hold it to the per-interval rule of docs/carbon.md,
written here as the plain query (one lookup per basis, region and series per interval):
every row, factor id and flag must be identical, across factor changes inside the span,
holes in the regional factors filled by the factor without region, partial intensity
series of 15, 30 and 60 minutes, meters without region and a category without factors."""

from __future__ import annotations

import datetime as dt

from app.carbon import compute
from carbon_helpers import category, factors, intensity, intervals, meter, t

HEADER = "category,region,basis,scope,valid_from,valid_to,kgco2e_per_unit,source\n"

# The rule, interval by interval (the first implementation of carbon.compute_emissions).
REFERENCE = """
WITH m AS (
    SELECT mt.id AS meter_id, mt.category_id, r.region_id, cs.scope, c.kgce_factor::double precision AS kgce_factor
    FROM config.meter mt
    JOIN config.energy_category c ON c.id = mt.category_id
    JOIN carbon.category_scope cs ON cs.category_id = mt.category_id
    JOIN carbon.meter_region r ON r.meter_id = mt.id
),
f AS (SELECT id, category_id, region_id, basis, kgco2e_per_unit::double precision AS k, valid_from, valid_to
      FROM config.emission_factor),
g AS (SELECT gi.region_id, gi.category_id, gi.basis, q.ts, gi.kgco2e_per_kwh::double precision AS k
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
SELECT meter_id, ts, scope, energy * coalesce(gl_k, lf_k), energy * coalesce(gm_k, mf_k, gl_k, lf_k),
       energy * kgce_factor, CASE WHEN gl_k IS NULL THEN lf_id END, CASE WHEN gm_k IS NULL THEN mf_id END,
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


def test_timeline_join_gives_the_rows_of_the_interval_rule(conn):
    _site(conn)
    for s, e in [("2025-03-01", "2025-04-01"), ("2025-03-10 13:00", "2025-03-19 23:30"),
                 ("2025-03-20", "2025-03-21")]:
        span = {"s": t(s), "e": t(e)}
        with conn.transaction():
            written = compute(conn, span["s"], span["e"])
        expected = conn.execute(REFERENCE, span).fetchall()
        assert written == len(expected) > 0
        assert conn.execute(STORED, span).fetchall() == expected


def test_span_without_series_or_factor_changes(conn):
    _site(conn)
    span = {"s": t("2025-03-21"), "e": t("2025-03-24")}
    with conn.transaction():
        compute(conn, span["s"], span["e"])
    expected = conn.execute(REFERENCE, span).fetchall()
    assert conn.execute(STORED, span).fetchall() == expected
    assert {r[8] & 1 for r in expected} == {0}   # no series in the span


def test_meter_subset_leaves_the_others_alone(conn):
    _site(conn)
    span = {"s": t("2025-03-01"), "e": t("2025-04-01")}
    with conn.transaction():
        compute(conn, span["s"], span["e"])
    conn.execute("UPDATE carbon.meter_emission SET kgco2e_market = -1")
    se3 = conn.execute("SELECT id FROM config.meter WHERE name = 'se3'").fetchone()[0]
    with conn.transaction():
        n = compute(conn, span["s"], span["e"], [se3])
    assert n == 96 * 20
    assert conn.execute("SELECT count(*) FROM carbon.meter_emission WHERE kgco2e_market = -1").fetchone()[0] \
        == conn.execute("SELECT count(*) FROM carbon.meter_emission WHERE meter_id <> %s", (se3,)).fetchone()[0]
    ref = [r for r in conn.execute(REFERENCE, span).fetchall() if r[0] == se3]
    assert [r for r in conn.execute(STORED, span).fetchall() if r[0] == se3] == ref
