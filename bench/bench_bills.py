"""Benchmark: monthly bills and interval cost for N meters × 12 months of 15-minute energy
on a TOU + tiers + demand tariff (tests/fixtures/urdb_tou_tiered_demand.json, in UTC).

Creates its own database on the embedded cluster, migrates it, fills it, prints figures
and drops it. Targets (issue 5): bills < 30 s, interval cost < 60 s for 1,000 × 12.

    .venv/bin/python bench/bench_bills.py [--meters 1000] [--months 12] [--no-stage]

Bills and interval cost are priced and written as a backfill's parts do: in two shares
of time on two connections at once (billing.time_share), the interval-cost chunks
created first (billing.prepare). Last, unless --no-stage: the whole stage as
`wattline backfill` runs it (bills, interval cost, rollups, entity bills) from empty
billing tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from app import migrate
from app.billing import Segment, price_period
from app.embedded import get_cluster
from app.tariffs import import_tariff, load_tariffs
from jobs import billing

ROOT = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--months", type=int, default=12)
    ap.add_argument("--no-stage", action="store_true",
                    help="skip the last step (the whole stage as a backfill)")
    args = ap.parse_args()
    server = get_cluster().url("postgres")
    name = f"wattline_bench_bills_{uuid.uuid4().hex[:8]}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(url=url)
        run(url, args.meters, args.months, stage=not args.no_stage)
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(url: str, meters: int, months: int, stage: bool = True) -> None:
    start = dt.datetime(2025, 1, 1, tzinfo=UTC)
    end = dt.datetime(2025 + months // 12, months % 12 + 1, 1, tzinfo=UTC)
    data = json.loads((ROOT / "tests" / "fixtures" / "urdb_tou_tiered_demand.json").read_text())
    data["items"][0]["wattline"]["timezone"] = "UTC"
    data["items"][0]["wattline"].pop("power_factor")
    with psycopg.connect(url) as conn:
        cat = conn.execute("INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
                           "RETURNING id").fetchone()[0]
        centers = [conn.execute("INSERT INTO config.cost_center (name) VALUES (%s) RETURNING id",
                                (f"cc{i}",)).fetchone()[0] for i in range(10)]
        conn.execute("INSERT INTO config.meter (name, category_id, cost_center_id) "
                     "SELECT 'm' || i, %s, (%s::int[])[1 + i %% 10] FROM generate_series(1, %s) i",
                     (cat, centers, meters))
        tid = import_tariff(conn, data)
        for cc in centers:
            conn.execute("INSERT INTO config.tariff_assignment (tariff_id, category_id, cost_center_id) "
                         "VALUES (%s, %s, %s)", (tid, cat, cc))
        conn.commit()
        t0 = time.perf_counter()
        month = start
        while month < end:
            nxt = (month + dt.timedelta(days=32)).replace(day=1)
            # Load-shaped energy: a daily curve plus a per-meter, per-interval spread (0.3–1.8 kWh).
            conn.execute(
                """INSERT INTO energy.meter_interval (meter_id, ts, energy, quality)
                   SELECT m.id, ts,
                          0.6 + 0.4 * sin(pi() * extract(hour FROM ts) / 24)
                              + ((m.id * 7919 + extract(epoch FROM ts)::bigint / 900) %% 101) / 100.0, 1
                   FROM config.meter m, generate_series(%s::timestamptz, %s::timestamptz - interval '15 minutes',
                                                        interval '15 minutes') ts""", (month, nxt))
            conn.commit()
            month = nxt
        rows = conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone()[0]
        print(f"setup: {rows:,} intervals written in {time.perf_counter() - t0:.1f} s")
        # The cost rollups exist once the stage has run; build them (empty) as it would.
        conn.execute("SELECT billing.build_cost_rollups(%s)", (billing._reporting_zone(conn),))
        conn.execute("ANALYZE")
        conn.commit()

        # Bills: plan, load 15-minute energy, price, write meter and entity bills - as the
        # stage's backfill parts do: the periods in two shares of time (billing.time_share),
        # each priced on its own connection at once, its matrices read one batch ahead on a
        # second connection (billing.Loader) while the current batch is priced; "load" is
        # the time waited, "load", "price" and "write" summed over both shares.
        tariffs = load_tariffs(conn)
        t_bills = time.perf_counter()
        work = billing.plan(conn, tariffs, None, start, end)
        conn.commit()
        timings = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]    # load, price, write per share
        share_results: list[list] = [[], []]

        def price_share(i: int) -> None:
            share = billing.time_share(work, (i, 2))
            jobs = [(ids[k:k + billing.BATCH], ps, pe, segs)
                    for (ps, pe, segs), ids in sorted(share.items(), key=lambda kv: kv[0][0])
                    for k in range(0, len(ids), billing.BATCH)]
            with psycopg.connect(url) as c:
                loader = billing.Loader(c, [(batch, ps, pe) for batch, ps, pe, _ in jobs])
                for ((batch, ps, pe), (energy, present)), (_, _, _, segs) in zip(loader, jobs):
                    segments = [Segment(t, tariffs[t], a, b) for t, a, b in segs]
                    t1 = time.perf_counter()
                    res = price_period(segments, (ps, pe), energy, present, None)
                    t2 = time.perf_counter()
                    billing.write_bills(c, [
                        dict(entity_kind="meter", entity_id=m, category_id=cat, period_start=ps, period_end=pe,
                             currency="USD", energy=float(res.energy[j]), lines=billing._line_tuples(res.lines[j]))
                        for j, m in enumerate(batch)])
                    timings[i][1] += t2 - t1
                    timings[i][2] += time.perf_counter() - t2
                    share_results[i].append((batch, (ps, pe), res))
                timings[i][0] = loader.waited

        with ThreadPoolExecutor(max_workers=2) as pool:
            for f in [pool.submit(price_share, i) for i in range(2)]:
                f.result()
        results = share_results[0] + share_results[1]
        entity_keys = {("cost_center", cc, cat, ps) for ps, _, _ in work for cc in centers}
        billing.write_bills(conn, billing.entity_bills(conn, entity_keys))
        t_bills = time.perf_counter() - t_bills
        t_load, t_price, t_write = (sum(t[k] for t in timings) for k in range(3))
        n_bills, n_lines = conn.execute("SELECT (SELECT count(*) FROM billing.bill), "
                                        "(SELECT count(*) FROM billing.bill_line)").fetchone()
        print(f"bills: {n_bills:,} bills, {n_lines:,} lines in {t_bills:.1f} s, two shares of time at once "
              f"(summed over both: load waited {t_load:.1f} s, price {t_price:.1f} s, write {t_write:.1f} s)")

        conn.commit()

        # Interval cost, written as the stage's backfill parts write it: the chunks of
        # billing.meter_cost created first (billing.prepare, committed), then the interval
        # cost and the whole days of the daily cost rollup from the priced arrays in two
        # shares of time on two connections at once, then the rest of the rollups (edge
        # days, months, entities), as billing.finish does.
        t_cost = time.perf_counter()
        billing.prepare(conn, start, end)
        conn.commit()
        shares = [{ps for ps, _, _ in billing.time_share(work, (i, 2))} for i in range(2)]
        written = [0, 0]

        def write_share(i: int) -> None:
            with psycopg.connect(url) as c:
                share_daily = billing.DailyCost(c)
                for batch, period, res in results:
                    if period[0] in shares[i]:
                        written[i] += billing.write_meter_cost(c, batch, period, res)
                        share_daily.add(batch, period, res)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for f in [pool.submit(write_share, i) for i in range(2)]:
                f.result()
        t_write_cost = time.perf_counter() - t_cost
        daily = billing.DailyCost(conn)
        for (ps, pe, _), ids in work.items():
            daily.note(ids, (ps, pe))
        billing.refresh_cost_rollups(conn, start, end, None, daily)
        conn.commit()
        t_cost = time.perf_counter() - t_cost
        print(f"interval cost: {sum(written):,} rows in {t_cost:.1f} s (interval cost and whole days of the "
              f"daily rollup, two shares of time at once, {t_write_cost:.1f} s; other rollups "
              f"{t_cost - t_write_cost:.1f} s)")

        # Check: interval cost sums to the bills.
        diff = conn.execute(
            "SELECT count(*) FROM (SELECT b.id FROM billing.bill b JOIN billing.meter_cost c ON c.meter_id = b.entity_id "
            "AND c.ts >= b.period_start AND c.ts < b.period_end WHERE b.entity_kind = 'meter' "
            "GROUP BY b.id HAVING sum(c.total) <> b.total) x").fetchone()[0]
        print(f"bills whose interval cost differs from the total: {diff}")

    # The stage end to end as a backfill runs it, from empty billing tables.
    if not stage:
        return
    from jobs import runner

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE billing.meter_cost, billing.bill_line, billing.bill, billing.cost_daily, "
                     "billing.cost_monthly, billing.entity_cost_daily, billing.entity_cost_monthly, "
                     "billing.meter_watermark")
        t_stage = time.perf_counter()
        totals = runner.backfill(conn, start, end, stages=[billing])
        print(f"stage as a backfill (chunks, then bills + interval cost in shares of time on "
              f"{runner.default_workers()} connections, then rollups + entity bills): "
              f"{time.perf_counter() - t_stage:.1f} s, {totals['billing'].rows:,} rows")

if __name__ == "__main__":
    main()
