"""Readings written while clean or normalize runs are never lost: a reading older than a
watermark the stage is about to commit is either seen by the stage or logged as late.

The scenario: a meter normalized up to 00:30, readings to 01:00 committed (none at
00:45), then an out-of-order reading for 00:44 (a spool replay, a second source) written
while the pipeline runs; it moves the 00:45 boundary value. Without the gate the stage's snapshot misses it, the writer's check sees
the old watermark, and the reading is never normalized."""

from __future__ import annotations

import threading
import time

import psycopg

from app.readings import write_readings
from jobs import base, runner
from pipeline_setup import every, intervals, meter, readings, t

REPLAYED = (t("2026-01-05 00:44"), 11.8)   # off the straight line from 00:40 (10) to 00:50 (12)


def prepared(conn):
    """Normalized to 00:30, then 00:40, 00:50–01:00 committed but not normalized."""
    conn.autocommit = True
    m, p = meter(conn, "m")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [0.0, 1, 2, 3, 4, 5, 6]))
    run(conn, "clean", "normalize")
    readings(conn, p, [(t("2026-01-05 00:40"), 10.0)] + every(t("2026-01-05 00:50"), 5, [12.0, 13, 14]))
    return m, p


def run(conn, *names):
    return [runner.run_stage(conn, runner.load_stage(n)) for n in names]


def recomputed(conn, m):
    """What a full recompute gives (the reference)."""
    runner.run_pipeline(conn, t("2026-01-05 00:00"), t("2026-01-05 02:00"),
                        stages=runner.load_pipeline(["clean", "normalize"]))
    return intervals(conn, m)


def test_a_stage_waits_for_a_write_in_flight_and_sees_it(db_url, conn):
    m, p = prepared(conn)
    writer = psycopg.connect(db_url)
    write_readings(writer, [(p, *REPLAYED, 0)])          # checked, not yet committed
    commit = threading.Timer(0.5, writer.commit)          # clean waits for this commit
    commit.start()
    results = run(conn, "clean", "normalize")
    assert [r.status for r in results] == ["ok", "ok"]
    incremental = intervals(conn, m)
    commit.join()
    writer.close()
    assert incremental == recomputed(conn, m)


def test_a_write_during_a_stage_waits_and_is_logged_late(db_url, conn):
    m, p = prepared(conn)
    stage = psycopg.connect(db_url, autocommit=True)
    late = {}

    def write():
        with psycopg.connect(db_url) as w:
            with w.transaction():
                late["ranges"] = write_readings(w, [(p, *REPLAYED, 0)]).late_ranges

    with stage.transaction():                             # normalize holds its lock until commit
        runner.load_stage("normalize").run(stage, None, None)
        thread = threading.Thread(target=write)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()                          # the writer waits for the commit
    thread.join(10)
    stage.close()
    assert late["ranges"] == 1                            # and then sees the new watermark
    run(conn, "clean", "normalize")
    incremental = intervals(conn, m)
    assert incremental == recomputed(conn, m)


def test_an_incremental_stage_gives_way_to_a_long_write(db_url, conn, monkeypatch):
    monkeypatch.setattr(base, "WRITE_GATE_TIMEOUT_S", 0.2)
    m, p = prepared(conn)
    with psycopg.connect(db_url) as writer:
        write_readings(writer, [(p, *REPLAYED, 0)])      # a long import, still open
        (result,) = run(conn, "normalize")
        assert result.status == "skipped" and "being written" in result.error
        writer.commit()
    assert [r.status for r in run(conn, "clean", "normalize")] == ["ok", "ok"]
    assert intervals(conn, m) == recomputed(conn, m)


def test_a_reading_behind_the_clean_watermark_is_late_even_ahead_of_normalize(conn):
    """Clean has run, normalize not yet: a reading in between must be cleaned too (a
    spike here would otherwise reach the intervals unflagged)."""
    m, p = prepared(conn)
    run(conn, "clean")                                    # cleaned to 01:00, normalized to 00:30
    with conn.transaction():
        assert write_readings(conn, [(p, t("2026-01-05 00:44"), 500.0, 0)]).late_ranges == 1
    run(conn, "clean", "normalize")
    assert conn.execute("SELECT count(*) FROM raw.clean_flag WHERE point_id = %s", (p,)).fetchone()[0] == 1
    assert intervals(conn, m) == recomputed(conn, m)


def test_a_backfill_clean_waits_for_a_write_in_flight_and_flags_it(db_url, conn):
    m, p = prepared(conn)
    writer = psycopg.connect(db_url)
    write_readings(writer, [(p, t("2026-01-05 00:44"), 500.0, 0)])   # a spike, not yet committed
    commit = threading.Timer(0.5, writer.commit)
    commit.start()
    (result,) = [runner.run_stage(conn, runner.load_stage("clean"), t("2026-01-05 00:00"), t("2026-01-05 02:00"))]
    commit.join()
    writer.close()
    assert result.status == "ok"
    assert conn.execute("SELECT count(*) FROM raw.clean_flag WHERE point_id = %s", (p,)).fetchone() == (1,)
