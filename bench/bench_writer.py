"""Writer throughput: N readings from 10,000 points through BatchWriter into
raw.point_value, against a plain COPY of the same rows into the same, fresh table.

Runs in its own database (created, migrated, dropped). Prints readings/s and the ratio.
Targets (issue 3): at least 100,000 readings/s and at least half the plain COPY rate.

    .venv/bin/python bench/bench_writer.py            # 5 million readings
    .venv/bin/python bench/bench_writer.py --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db import database_url  # noqa: E402
from app.readings import PointScaling  # noqa: E402

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def with_db(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def timestamps(rows: int, points: int):
    steps = -(-rows // points)
    return [T0 + dt.timedelta(seconds=10 * i) for i in range(steps)]


def generate(rows: int, points: int):
    """(point_id, ts, value, quality) in arrival order: every point per timestamp."""
    n = 0
    for i, ts in enumerate(timestamps(rows, points)):
        for p in range(1, points + 1):
            if n == rows:
                return
            yield p, ts, float(i * 7 + p), 0
            n += 1


def fresh_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("TRUNCATE raw.point_value")
        c.execute("TRUNCATE ops.dirty_range")
        c.execute("CHECKPOINT")


def count(url: str) -> int:
    with psycopg.connect(url) as c:
        return c.execute("SELECT count(*) FROM raw.point_value").fetchone()[0]


def plain_copy_text(url: str, rows: int, points: int) -> float:
    """COPY of pre-rendered text: the server's own speed (generation not timed)."""
    buf = io.StringIO()
    for p, ts, v, q in generate(rows, points):
        buf.write(f"{p}\t{ts.isoformat()}\t{v!r}\t{q}\n")
    data = buf.getvalue().encode()
    del buf
    fresh_table(url)
    with psycopg.connect(url) as c:
        started = time.perf_counter()
        with c.cursor().copy("COPY raw.point_value (point_id, ts, value, quality) FROM STDIN") as copy:
            for i in range(0, len(data), 1 << 20):
                copy.write(data[i:i + (1 << 20)])
        c.commit()
        return time.perf_counter() - started


def plain_copy_rows(url: str, rows: int, points: int) -> float:
    """COPY fed row by row from Python (the same generator the writer run uses)."""
    fresh_table(url)
    with psycopg.connect(url) as c:
        started = time.perf_counter()
        with c.cursor().copy("COPY raw.point_value (point_id, ts, value, quality) FROM STDIN") as copy:
            for row in generate(rows, points):
                copy.write_row(row)
        c.commit()
        return time.perf_counter() - started


def plain_copy_binary(url: str, rows: int, points: int) -> float:
    """Binary COPY fed row by row from Python: the fastest plain load psycopg offers."""
    fresh_table(url)
    with psycopg.connect(url) as c:
        started = time.perf_counter()
        with c.cursor().copy("COPY raw.point_value (point_id, ts, value, quality) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "timestamptz", "float8", "int2"])
            for row in generate(rows, points):
                copy.write_row(row)
        c.commit()
        return time.perf_counter() - started


def through_writer(url: str, rows: int, points: int, batch_size: int, api: str) -> tuple[float, dict]:
    from collectors.writer import BatchWriter

    fresh_table(url)
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    try:
        scaling = {p: PointScaling(p) for p in range(1, points + 1)}
        w = BatchWriter(url, points=scaling, batch_size=batch_size, spool_dir=spool)
        started = time.perf_counter()
        if api == "add":
            add = w.add
            for p, ts, v, q in generate(rows, points):
                add(p, ts, v, q)
        else:
            pending = []
            for row in generate(rows, points):
                pending.append(row)
                if len(pending) == points:
                    w.add_many(pending)
                    pending = []
            if pending:
                w.add_many(pending)
        w.close()
        return time.perf_counter() - started, w.stats()
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--api", choices=["add", "add_many"], default="add")
    ap.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    args = ap.parse_args()

    main_url = database_url()
    admin = with_db(main_url, "postgres")
    name = f"bench_writer_{os.getpid()}"
    url = with_db(main_url, name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        from app import migrate

        migrate.upgrade(url=url)
        print(f"{args.rows:,} readings from {args.points:,} points, batch size {args.batch_size}, api {args.api}")
        t_text = plain_copy_text(url, args.rows, args.points)
        assert count(url) == args.rows
        print(f"plain COPY, pre-rendered text : {args.rows / t_text:>11,.0f} readings/s ({t_text:.1f} s)")
        t_rows = plain_copy_rows(url, args.rows, args.points)
        assert count(url) == args.rows
        print(f"plain COPY, rows from Python  : {args.rows / t_rows:>11,.0f} readings/s ({t_rows:.1f} s)")
        t_bin = plain_copy_binary(url, args.rows, args.points)
        assert count(url) == args.rows
        print(f"plain COPY, binary from Python: {args.rows / t_bin:>11,.0f} readings/s ({t_bin:.1f} s)")
        t_writer, stats = through_writer(url, args.rows, args.points, args.batch_size, args.api)
        assert count(url) == args.rows and stats["written"] == args.rows, stats
        rate = args.rows / t_writer
        print(f"BatchWriter.{args.api:<9}         : {rate:>11,.0f} readings/s ({t_writer:.1f} s, "
              f"{stats['flushes']} flushes, {stats['spooled']} spooled)")
        print(f"ratio writer / plain COPY (text): {t_text / t_writer:.2f}")
        print(f"ratio writer / plain COPY (rows): {t_rows / t_writer:.2f}")
        print(f"ratio writer / plain COPY (binary): {t_bin / t_writer:.2f}")
        best = min(t_text, t_rows, t_bin)
        ok = rate >= 100_000 and best / t_writer >= 0.5
        print(f"targets (>=100,000/s and >=0.5 of the fastest plain COPY): {'met' if ok else 'NOT met'}")
    finally:
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
