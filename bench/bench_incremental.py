"""Incremental benchmark: one new hour of 5-minute readings for 10,000 meters (120,000 raw
rows) through one scheduled pipeline cycle (every stage that exists), time per stage.

    .venv/bin/python bench/bench_incremental.py [--meters 10000] [--history-days 365] [--keep]

Builds its own database (bench_processing_incr), primes it with two hours of history
processed once (so watermarks and cursors are in their steady state), then COPYs the new
hour and times one cycle. Prints figures; asserts nothing.

--history-days N: raw.point_value also holds N days before that (one reading a day of a
point no meter uses), so it has the N daily chunks a server has after N days in
service: look-ups whose time bound is only known per row pay per chunk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_backfill import (  # noqa: E402
    START, ServerCpu, copy_readings, create_database, create_meters, drop_database,
)
from jobs.runner import load_pipeline, run_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, default=10000)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--history-days", type=int, default=0,
                    help="days of older raw chunks (one reading a day of an unused point)")
    args = ap.parse_args()
    name = "bench_processing_incr"
    url = create_database(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            points = create_meters(conn, args.meters)
            copy_readings(conn, points, START, 24, seed=1)                    # 00:00..01:55
            if args.history_days:
                (history,) = conn.execute(
                    "INSERT INTO config.point (data_source_id, name, object_type) "
                    "SELECT id, 'history', 'energy' FROM config.data_source WHERE name = 'bench' RETURNING id").fetchone()
                conn.execute("INSERT INTO raw.point_value (point_id, ts, value, quality) "
                             "SELECT %s, %s - d * interval '1 day', 1000 - d, 0 FROM generate_series(1, %s) d",
                             (history, START, args.history_days))
                chunks = conn.execute("SELECT count(*) FROM timescaledb_information.chunks "
                                      "WHERE hypertable_name = 'point_value'").fetchone()[0]
                print(f"history: {args.history_days} days before the start, raw.point_value in {chunks} chunks")
            conn.execute("VACUUM ANALYZE raw.point_value")
            stages = load_pipeline()
            run_pipeline(conn, stages=stages)                                # prime: history processed
            last = {pid: v for pid, v in conn.execute(
                "SELECT DISTINCT ON (point_id) point_id, value FROM raw.point_value ORDER BY point_id, ts DESC")}
            t0 = time.perf_counter()
            rows = copy_readings(conn, points, START + dt.timedelta(hours=2), 12, offsets=last, seed=2)
            load_s = time.perf_counter() - t0
            print(f"{args.meters:,} meters: {rows:,} new raw rows (one hour) loaded by COPY in {load_s:.1f} s")
            print("stages:", " -> ".join(s.NAME for s in stages))
            # The cycle as the scheduler runs it (run_pipeline), stage by stage so the
            # server's CPU time per stage can be read beside the wall-clock time: on a
            # shared machine the latter also measures the neighbours.
            cpu = ServerCpu(name)
            results = []
            t0 = time.perf_counter()
            for stage in stages:
                results += run_pipeline(conn, stages=[stage])
                cpu.progress(stage.NAME, START, START)
            wall = time.perf_counter() - t0
            load = os.getloadavg()
        print(f"  load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores")
        for r in results:
            print(f"  {r.stage:<10} {r.seconds:7.2f} s  {r.rows:>10,} rows  {r.status}"
                  f"  server CPU {cpu.per_stage.get(r.stage, 0.0):5.2f} s")
        print(f"  {'cycle':<10} {wall:7.2f} s  server CPU {sum(cpu.per_stage.values()):5.2f} s")
    finally:
        if not args.keep:
            drop_database(name)


if __name__ == "__main__":
    main()
