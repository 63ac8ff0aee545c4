"""Interval carbon for N meters × M months of 15-minute intervals (default 1,000 × 12).

Creates its own database on the server (embedded cluster, or WATTLINE_TEST_DATABASE_URL's
server), migrates it, writes the intervals, imports factors (yearly static factors with a
mid-year change, and an hourly location-based intensity series for one region), fills
the energy rollups (the rollups stage's work, timed apart: jobs.carbon reads the hourly
one), then times jobs.carbon over the whole range: once on one connection, once split by
half-range across two connections in parallel, once split by meters (two blocks of ids,
the stage's partitions in a backfill) across two connections. Checks the monthly rollup
of a few meters against the per-interval view. Prints the figures; drops the database
unless --keep.

    .venv/bin/python bench/bench_carbon.py [--meters 1000] [--months 12] [--keep]
    .venv/bin/python bench/bench_carbon.py --months 12 --database NAME   # time again
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrate  # noqa: E402
import app.carbon as carbon_app  # noqa: E402
from app.carbon import import_factors, import_intensity, parse_factor_csv  # noqa: E402
from jobs import carbon as stage  # noqa: E402

UTC = dt.timezone.utc
START = dt.datetime(2025, 1, 1, tzinfo=UTC)


def server_url() -> str:
    url = os.environ.get("WATTLINE_TEST_DATABASE_URL")
    if url:
        return make_url(url).set(database="postgres").render_as_string(hide_password=False)
    from app.embedded import get_cluster

    cluster = get_cluster()
    cluster.start()
    return cluster.url("postgres")


def add_months(ts: dt.datetime, months: int) -> dt.datetime:
    y, m = divmod(ts.month - 1 + months, 12)
    return ts.replace(year=ts.year + y, month=m + 1)


def populate(conn: psycopg.Connection, meters: int, end: dt.datetime) -> None:
    conn.execute("INSERT INTO config.energy_category (name, unit, kgce_factor) VALUES "
                 "('electricity', 'kWh', 0.1229), ('natural gas', 'm3', 1.33)")
    conn.execute("INSERT INTO config.carbon_region (name) VALUES ('SE3'), ('DE')")
    conn.execute(
        "INSERT INTO config.meter (name, category_id, grid_region_id) "
        "SELECT 'm' || g, CASE WHEN g %% 10 = 0 THEN 2 ELSE 1 END, CASE WHEN g %% 2 = 0 THEN 1 ELSE 2 END "
        "FROM generate_series(1, %s) g", (meters,))
    t0 = time.perf_counter()
    conn.execute(
        "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
        "SELECT m.id, g, 1 + (m.id %% 7) + extract(hour FROM g)::int %% 5, 1 "
        "FROM config.meter m CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '15 minutes', "
        "interval '15 minutes') g", (START, end))
    conn.commit()
    n = conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone()[0]
    print(f"intervals written: {n:,} in {time.perf_counter() - t0:.1f} s")
    header = "category,region,basis,scope,valid_from,valid_to,kgco2e_per_unit,source\n"
    import_factors(conn, parse_factor_csv(
        header
        + "electricity,SE3,location,2,2025-01-01T00:00Z,2025-07-01T00:00Z,0.045,bench H1\n"
        + "electricity,SE3,location,2,2025-07-01T00:00Z,,0.041,bench H2\n"
        + "electricity,SE3,market,2,2025-01-01T00:00Z,,0.30,bench residual mix\n"
        + "electricity,DE,location,2,2025-01-01T00:00Z,,0.38,bench grid\n"
        + "natural gas,,location,1,2025-01-01T00:00Z,,2.0,bench fuel\n"), "bench factors")
    rows, hour = [], START
    while hour < end:
        rows.append((f"row {len(rows) + 2}", {"region": "DE", "category": "electricity", "basis": "location",
                                             "start": hour.isoformat(), "kgco2e_per_kwh": f"{0.3 + (hour.hour % 12) / 100}"}))
        hour += dt.timedelta(hours=1)
    import_intensity(conn, rows, "bench series")
    conn.execute("DELETE FROM ops.dirty_range")   # the bench times explicit runs
    conn.commit()
    t0 = time.perf_counter()
    for granularity in ("hour", "day", "month"):
        conn.execute("SELECT energy.refresh_meter_rollup(%s, '-infinity', 'infinity')", (granularity,))
    conn.commit()
    print(f"energy rollups (jobs.rollups, before jobs.carbon): {time.perf_counter() - t0:.1f} s")


ROLLUP_SECONDS: list[float] = []
_refresh = carbon_app.refresh_rollups


def _timed_refresh(*args, **kwargs):
    t0 = time.perf_counter()
    try:
        return _refresh(*args, **kwargs)
    finally:
        ROLLUP_SECONDS.append(time.perf_counter() - t0)


carbon_app.refresh_rollups = _timed_refresh   # app.carbon.compute calls it by module name


def timed_run(url: str, spans: list[tuple[dt.datetime, dt.datetime, tuple[int, int] | None]]) -> tuple[float, int]:
    """Run the stage over each span on a connection of its own, in parallel; a span with
    part=(i, n) does the i-th block of meters (as a backfill's workers do)."""
    results: list[int] = []
    ROLLUP_SECONDS.clear()

    def work(s: dt.datetime, e: dt.datetime, part: tuple[int, int] | None) -> None:
        with psycopg.connect(url) as c:
            results.append(stage.run(c, s, e, part=part))

    with psycopg.connect(url, autocommit=True) as c:   # start each run without the last one's dead rows
        c.execute("VACUUM carbon.meter_hourly, carbon.meter_daily, carbon.meter_monthly")
    threads = [threading.Thread(target=work, args=span) for span in spans]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t0, sum(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    ap.add_argument("--database", help="time again on a database an earlier run kept (same --months)")
    args = ap.parse_args()
    server = server_url()
    name = args.database or f"wattline_bench_carbon_{uuid.uuid4().hex[:8]}"
    if not args.database:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        if args.keep:
            print(f"database {name} (kept)")
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        end = add_months(START, args.months)
        if not args.database:
            migrate.upgrade(url=url)
            with psycopg.connect(url) as conn:
                populate(conn, args.meters, end)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("VACUUM ANALYZE energy.meter_interval, energy.meter_hourly, energy.meter_daily")
        seconds, rows = timed_run(url, [(START, end, None)])
        print(f"carbon, one connection:   {rows:,} intervals in {seconds:.1f} s "
              f"({rows / seconds:,.0f} intervals/s; rollup refresh {sum(ROLLUP_SECONDS):.1f} s of it)")
        with psycopg.connect(url) as conn:
            first = conn.execute("SELECT count(*), sum(kgco2e_location), sum(kgco2e_market) "
                                 "FROM carbon.meter_hourly").fetchone()
        if args.months > 1:   # split on a month boundary: the halves share no rollup bucket
            mid = add_months(START, args.months // 2)
            seconds, rows = timed_run(url, [(START, mid, None), (mid, end, None)])
            print(f"carbon, two connections by time:   {rows:,} intervals in {seconds:.1f} s "
                  f"({rows / seconds:,.0f} intervals/s)")
        with psycopg.connect(url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM config.meter ORDER BY id")]
        seconds, rows = timed_run(url, [(START, end, (0, 2)), (START, end, (1, 2))])
        print(f"carbon, two connections by meter:  {rows:,} intervals in {seconds:.1f} s "
              f"({rows / seconds:,.0f} intervals/s)")
        with psycopg.connect(url) as conn:
            again = conn.execute("SELECT count(*), sum(kgco2e_location), sum(kgco2e_market) "
                                 "FROM carbon.meter_hourly").fetchone()
            assert again == first, (first, again)
            monthly = conn.execute("SELECT count(*), sum(kgco2e_location)::float, sum(kgco2e_market)::float "
                                   "FROM carbon.meter_monthly").fetchone()
            sample = ids[:3] + ids[-2:]
            view = conn.execute("SELECT meter_id, sum(kgco2e_location), sum(kgco2e_market) FROM carbon.meter_emission "
                                "WHERE meter_id = ANY (%s) GROUP BY 1 ORDER BY 1", (sample,)).fetchall()
            rolled = conn.execute("SELECT meter_id, sum(kgco2e_location), sum(kgco2e_market) FROM carbon.meter_monthly "
                                  "WHERE meter_id = ANY (%s) GROUP BY 1 ORDER BY 1", (sample,)).fetchall()
            assert view == rolled, (view, rolled)
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('carbon.meter_hourly') "
                                "+ pg_total_relation_size('carbon.meter_daily') "
                                "+ pg_total_relation_size('carbon.meter_monthly'))").fetchone()[0]
        print(f"hourly rows {again[0]:,}; location {monthly[1]:,.0f} kgCO2e, market {monthly[2]:,.0f} kgCO2e; "
              f"monthly rollup rows {monthly[0]:,}; {len(sample)} meters' months equal their intervals' sums; "
              f"rollup tables {size}")
    finally:
        if not args.keep and not args.database:
            with psycopg.connect(server, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
