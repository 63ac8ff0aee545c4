"""Backfill benchmark: N meters x D days of 5-minute cumulative readings through the
whole pipeline (clean, normalize and whichever later stages exist), time per stage.

    .venv/bin/python bench/bench_backfill.py                   # 1,000 meters x 30 days
    .venv/bin/python bench/bench_backfill.py --meters 100 --meters 1000 --meters 3000

Creates its own database (bench_processing_<meters>), loads the raw rows with COPY, and
drops it afterwards (--keep to leave it). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrate  # noqa: E402
from app.embedded import get_cluster  # noqa: E402
from jobs.runner import backfill, default_workers, load_pipeline  # noqa: E402

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
STEP = dt.timedelta(minutes=5)


def server_url() -> str:
    import os

    url = os.environ.get("WATTLINE_BENCH_SERVER_URL")
    if url:
        return url
    cluster = get_cluster()
    cluster.start()
    return cluster.url("postgres")


def create_database(name: str) -> str:
    base = server_url()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    migrate.upgrade(url=url)
    return url


def drop_database(name: str) -> None:
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_meters(conn: psycopg.Connection, n: int, first: int = 1) -> list[int]:
    """n physical meters, each fed by its own energy point; returns the point ids."""
    conn.execute("INSERT INTO config.data_source (name, protocol) VALUES ('bench', 'http') ON CONFLICT DO NOTHING")
    conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') ON CONFLICT DO NOTHING"
    )
    conn.execute(
        """
        INSERT INTO config.point (data_source_id, name, object_type)
        SELECT (SELECT id FROM config.data_source WHERE name = 'bench'), 'p' || i, 'energy'
        FROM generate_series(%s::int, %s::int) i
        """,
        (first, first + n - 1),
    )
    conn.execute(
        """
        INSERT INTO config.meter (name, category_id, register_max)
        SELECT 'm' || i, (SELECT id FROM config.energy_category WHERE name = 'electricity'), 99999999
        FROM generate_series(%s::int, %s::int) i
        """,
        (first, first + n - 1),
    )
    conn.execute(
        """
        INSERT INTO config.meter_point (meter_id, point_id)
        SELECT m.id, p.id FROM config.meter m JOIN config.point p ON p.name = 'p' || substr(m.name, 2)
        WHERE substr(m.name, 2)::int BETWEEN %s AND %s
        """,
        (first, first + n - 1),
    )
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM config.point WHERE substr(name, 2)::int BETWEEN %s AND %s ORDER BY id",
            (first, first + n - 1),
        )
    ]


def copy_readings(
    conn: psycopg.Connection,
    points: list[int],
    start: dt.datetime,
    steps: int,
    *,
    offsets: dict[int, float] | None = None,
    seed: int = 1,
    time_major: bool = False,
) -> int:
    """COPY `steps` 5-minute cumulative readings per point, starting at `start`: point by
    point (each point's readings together on disk, as an import of a file per meter
    leaves them), or with time_major instant by instant, as live collection stores them
    (a point's consecutive readings then lie on different pages)."""
    rng = np.random.default_rng(seed)
    stamps = [(start + i * STEP).strftime("%Y-%m-%d %H:%M:%S+00") for i in range(steps)]
    bases = np.array([(offsets or {}).get(pid, 1000.0 + pid) for pid in points])
    values = bases[:, None] + np.cumsum(rng.uniform(0.0, 2.0, (len(points), steps)), axis=1).round(3)
    prefixes = [f"{pid}\t" for pid in points]
    with conn.cursor().copy("COPY raw.point_value (point_id, ts, value, quality) FROM STDIN") as copy:
        if time_major:
            for i, stamp in enumerate(stamps):
                copy.write("".join(f"{prefix}{stamp}\t{v:.3f}\t0\n" for prefix, v in zip(prefixes, values[:, i])))
        else:
            for prefix, row in zip(prefixes, values):
                copy.write("".join(f"{prefix}{stamp}\t{v:.3f}\t0\n" for stamp, v in zip(stamps, row)))
    return len(points) * steps


class ServerCpu:
    """CPU seconds used by the server processes serving one database, per pipeline stage.

    The machine may be shared: wall-clock time then measures the neighbours too, the
    server's own CPU time does not. Backend processes are found by their process title
    (`postgres: USER DATABASE ...`); each progress callback attributes what they used
    since the last one to the stage that reported."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.last = self._sample()
        self.per_stage: dict[str, float] = {}

    def _sample(self) -> dict[int, float]:
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                title = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if not title.startswith("postgres: ") or f" {self.database} " not in title:
                    continue
                fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(pid_dir.name)] = (int(fields[11]) + int(fields[12])) / tick
        return out

    def progress(self, stage: str, lo: dt.datetime, hi: dt.datetime) -> None:
        now = self._sample()
        used = sum(cpu - self.last.get(pid, 0.0) for pid, cpu in now.items())
        self.per_stage[stage] = self.per_stage.get(stage, 0.0) + used
        self.last = now


def run(meters: int, days: int, chunk: dt.timedelta, keep: bool, workers: int | None = None,
        time_major: bool = False) -> dict[str, float]:
    name = f"bench_processing_{meters}"
    url = create_database(name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            points = create_meters(conn, meters)
            t0 = time.perf_counter()
            rows = copy_readings(conn, points, START, days * 288, time_major=time_major)
            load_s = time.perf_counter() - t0
            conn.execute("VACUUM ANALYZE raw.point_value")
            order = "instant by instant" if time_major else "point by point"
            print(f"\n{meters} meters x {days} days: {rows:,} raw rows ({order}) loaded by COPY in {load_s:.1f} s")
            stages = load_pipeline()
            print("stages:", " -> ".join(s.NAME for s in stages))
            cpu = ServerCpu(name)
            t0 = time.perf_counter()
            totals = backfill(conn, START, START + dt.timedelta(days=days), chunk=chunk, stages=stages,
                              progress=cpu.progress, workers=workers)
            wall = time.perf_counter() - t0
            load = os.getloadavg()
            (intervals,) = conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone()
        figures = {name: r.seconds for name, r in totals.items()}
        print(f"  workers: {workers or default_workers()}; load average at the end "
              f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores")
        for stage, r in totals.items():
            print(f"  {stage:<10} {r.seconds:7.2f} s  {r.rows:>12,} rows  ({rows / max(r.seconds, 1e-9):,.0f} raw rows/s)"
                  f"  server CPU {cpu.per_stage.get(stage, 0.0):6.2f} s")
        print(f"  {'pipeline':<10} {wall:7.2f} s  ({intervals:,} intervals; {rows / wall:,.0f} raw rows/s)"
              f"  server CPU {sum(cpu.per_stage.values()):6.2f} s")
        figures["pipeline"] = wall
        return figures
    finally:
        if not keep:
            drop_database(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--meters", type=int, action="append", help="meter count (repeat for a scaling series)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--chunk-days", type=float, default=1.0, help="backfill chunk size in days")
    ap.add_argument("--keep", action="store_true", help="keep the benchmark database")
    ap.add_argument("--workers", type=int, help="backfill connections (default: one per core, at most 4)")
    ap.add_argument("--time-major", action="store_true",
                    help="store the readings instant by instant, as live collection does (default: point by point)")
    args = ap.parse_args()
    series = args.meters or [1000]
    results = {m: run(m, args.days, dt.timedelta(days=args.chunk_days), args.keep, args.workers, args.time_major)
               for m in series}
    if len(series) > 1:
        print("\nscaling (seconds per 1,000 meters):")
        for m, fig in results.items():
            print(f"  {m:>6} meters: pipeline {fig['pipeline']:.2f} s = {fig['pipeline'] * 1000 / m:.2f} s/1000 meters; "
                  f"normalize {fig.get('normalize', 0):.2f} s")


if __name__ == "__main__":
    main()
