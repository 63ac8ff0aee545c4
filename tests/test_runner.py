"""The job runner: stage order, ops.job_run records, advisory locks between runners,
errors recorded, the scheduler and the CLI."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import types

import psycopg
import pytest

from jobs import runner
from pipeline_setup import every, meter, readings, t

WATTLINE = [sys.executable, "-m", "app.cli"]


def stage(name, fn):
    return types.SimpleNamespace(NAME=name, run=fn)


def job_runs(conn, stage_name=None):
    return conn.execute(
        "SELECT stage, status, rows_touched, error, range_start, range_end, finished_at IS NOT NULL "
        "FROM ops.job_run WHERE %s::text IS NULL OR stage = %s ORDER BY id",
        (stage_name, stage_name),
    ).fetchall()


def steady(conn, name="m", n=13):
    m, p = meter(conn, name)
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [float(i) for i in range(n)]))
    return m


def test_pipeline_order_is_one_list_and_missing_stages_are_skipped(caplog):
    assert runner.PIPELINE[:2] == ("clean", "normalize")
    with caplog.at_level(logging.WARNING, logger="wattline.jobs"):
        stages = runner.load_pipeline(["clean", "no_such_stage", "normalize"])
    assert [s.NAME for s in stages] == ["clean", "normalize"]
    assert "no_such_stage" in caplog.text
    with pytest.raises(runner.UnknownStage):
        runner.load_stage("no_such_stage")


def test_each_run_is_recorded(conn):
    steady(conn)
    results = runner.run_pipeline(conn, stages=runner.load_pipeline(["clean", "normalize"]))
    assert [(r.stage, r.status) for r in results] == [("clean", "ok"), ("normalize", "ok")]
    assert job_runs(conn) == [
        ("clean", "ok", 0, None, None, None, True),
        ("normalize", "ok", 4, None, None, None, True),
    ]
    start, end = t("2026-01-05 00:00"), t("2026-01-06 00:00")
    runner.run_pipeline(conn, start, end, stages=runner.load_pipeline(["normalize"]))
    assert job_runs(conn, "normalize")[-1] == ("normalize", "ok", 0, None, start, end, True)


def test_a_failing_stage_is_recorded_and_stops_the_cycle(conn):
    def boom(c, start, end):
        c.execute("INSERT INTO ops.dead_letter (payload, reason) VALUES ('x', 'rolled back')")
        raise RuntimeError("formula references unknown meter")

    ran = []
    results = runner.run_pipeline(
        conn, stages=[stage("first", boom), stage("second", lambda c, s, e: ran.append(1) or 1)]
    )
    assert [(r.stage, r.status) for r in results] == [("first", "error")]
    assert ran == []
    (row,) = job_runs(conn)
    assert row[:2] == ("first", "error") and "unknown meter" in row[3] and row[6]
    # the failed stage's own writes were rolled back with its transaction
    assert conn.execute("SELECT count(*) FROM ops.dead_letter").fetchone() == (0,)


def test_a_second_runner_skips_a_stage_the_first_holds(db_url, conn):
    entered, release = threading.Event(), threading.Event()

    def slow(c, start, end):
        entered.set()
        assert release.wait(20)
        return 7

    results = {}

    def first():
        with psycopg.connect(db_url, autocommit=True) as c:
            results["first"] = runner.run_stage(c, stage("slow", slow))

    thread = threading.Thread(target=first)
    thread.start()
    assert entered.wait(20)
    second = runner.run_stage(conn, stage("slow", lambda c, s, e: 99))
    release.set()
    thread.join(20)
    assert second.status == "skipped" and second.rows == 0
    assert results["first"].status == "ok" and results["first"].rows == 7
    assert sorted(r[1] for r in job_runs(conn, "slow")) == ["ok", "skipped"]


def test_two_runners_at_once_do_not_double_process(db_url, conn):
    meters = [steady(conn, f"m{i}", n=25) for i in range(20)]
    barrier = threading.Barrier(2)
    results = []

    def run():
        with psycopg.connect(db_url, autocommit=True) as c:
            barrier.wait(10)
            results.extend(runner.run_pipeline(c, stages=runner.load_pipeline(["clean", "normalize"])))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    normalized = sum(r.rows for r in results if r.stage == "normalize")
    assert normalized == 20 * 8                      # every interval written exactly once
    assert conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone() == (160,)
    (logged,) = conn.execute(
        "SELECT count(*) FROM ops.dirty_range WHERE reason LIKE 'normalize:%%'"
    ).fetchone()
    assert logged == len(meters)                     # one downstream entry per meter, not two


def test_backfill_runs_stage_by_stage_in_chunks(conn):
    steady(conn, n=73)                               # 6 hours
    seen = []
    totals = runner.backfill(
        conn, t("2026-01-05 00:00"), t("2026-01-05 06:00"), chunk=dt.timedelta(hours=2),
        stages=runner.load_pipeline(["clean", "normalize", "virtual"]),
        progress=lambda name, lo, hi: seen.append((name, lo.hour, hi.hour)),
    )
    # clean and normalize take the range in pieces of at least their BACKFILL_CHUNK
    # (days); a stage without one takes the chunk asked for
    assert seen == [("clean", 0, 6), ("normalize", 0, 6), ("virtual", 0, 2), ("virtual", 2, 4), ("virtual", 4, 6)]
    assert totals["normalize"].rows == 24
    with pytest.raises(ValueError):
        list(runner.chunks(t("2026-01-05 06:00"), t("2026-01-05 00:00"), dt.timedelta(hours=1)))


def _processed(conn):
    return (
        conn.execute("SELECT meter_id, ts, energy, quality FROM energy.meter_interval ORDER BY 1, 2").fetchall(),
        conn.execute("SELECT point_id, ts, quality FROM raw.point_value WHERE quality <> 0 ORDER BY 1, 2").fetchall(),
        conn.execute("SELECT point_id, normalized_until, cleaned_until FROM ops.point_watermark ORDER BY 1").fetchall(),
        conn.execute("SELECT meter_id, bucket, energy FROM energy.meter_hourly ORDER BY 1, 2").fetchall(),
    )


def test_parallel_backfill_gives_what_one_connection_gives(conn):
    """Parts on two connections (meters and points split by id) write exactly the rows a
    single connection computes: a serial recompute afterwards changes nothing."""
    for i in range(5):
        m, p = meter(conn, f"m{i}")
        values = [float(10 * i + k) for k in range(2 * 288 + 40)]
        values[100 + i] += 500.0                      # a spike
        values[300:] = [v - values[299] for v in values[300:]] if i == 3 else values[300:]  # a reset
        stamps = every(t("2026-01-05 00:00"), 5, values)
        readings(conn, p, stamps[:200] + stamps[230:])  # a gap of 2.5 hours
    start, end = t("2026-01-05 00:00"), t("2026-01-07 04:00")
    stages = runner.load_pipeline(["clean", "normalize", "rollups"])
    first = runner.backfill(conn, start, end, chunk=dt.timedelta(hours=5), stages=stages, workers=2)
    assert first["normalize"].rows > 0 and first["clean"].rows > 0
    parallel = _processed(conn)
    again = runner.backfill(conn, start, end, chunk=dt.timedelta(hours=5), stages=stages, workers=1)
    assert again["clean"].rows == 0 and again["normalize"].rows == 0
    assert _processed(conn) == parallel
    parts = conn.execute(
        "SELECT count(*) FROM ops.job_run WHERE stage = 'normalize' AND status = 'ok'").fetchone()[0]
    assert parts == 2 + 1                            # one run per part, then the serial one


def test_a_scheduled_stage_survives_an_unreachable_database(caplog):
    with caplog.at_level(logging.WARNING, logger="wattline.jobs"):
        assert runner.tick("normalize", "postgresql://nobody:x@127.0.0.1:1/none?connect_timeout=2") is None
    assert "retrying next cycle" in caplog.text


def test_scheduler_has_one_job_per_stage_on_one_clock_in_pipeline_order(db_url):
    scheduler = runner.make_scheduler(600, db_url)
    scheduler.start(paused=True)   # next run times are computed on start
    try:
        jobs = [j for j in scheduler.get_jobs() if j.id != "housekeeping"]  # ordered by next run time
        assert [j.id for j in jobs] == [f"stage:{s}" for s in runner.PIPELINE]
        assert scheduler.get_job("housekeeping").trigger.interval == dt.timedelta(hours=1)
        assert all(j.coalesce is True and j.max_instances == 1 for j in jobs)
        times = [j.next_run_time for j in jobs]
        assert times == sorted(times) and times[-1] - times[0] < dt.timedelta(seconds=1)
        assert {j.trigger.interval for j in jobs} == {dt.timedelta(seconds=600)}
    finally:
        scheduler.shutdown(wait=False)


def test_scheduled_stages_run_in_order_one_at_a_time(db_url, conn):
    steady(conn)
    stop = threading.Event()
    thread = threading.Thread(target=runner.serve, args=(3600, db_url, stop))
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and conn.execute(
        "SELECT count(*) FROM ops.job_run WHERE stage = 'carbon' AND status <> 'running'"
    ).fetchone()[0] == 0:
        time.sleep(0.1)
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    runs = conn.execute(
        "SELECT stage, started_at, finished_at FROM ops.job_run ORDER BY started_at").fetchall()
    assert [r[0] for r in runs] == list(runner.PIPELINE)
    assert all(a[2] <= b[1] for a, b in zip(runs, runs[1:]))   # never overlapping
    assert conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone() == (4,)


def test_a_stage_queued_at_shutdown_does_not_start(db_url, conn, caplog):
    stop = threading.Event()
    stop.set()
    with caplog.at_level(logging.INFO, logger="wattline.jobs"):
        assert runner.tick("clean", db_url, stop) is None
    assert "not started: shutting down" in caplog.text
    assert conn.execute("SELECT count(*) FROM ops.job_run").fetchone() == (0,)


def test_jobs_command_stops_gracefully_on_sigterm(db_url, conn):
    steady(conn)
    proc = subprocess.Popen(
        WATTLINE + ["jobs", "--interval", "3600"], env=os.environ.copy(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and conn.execute(
            "SELECT count(*) FROM ops.job_run WHERE stage = 'normalize' AND status <> 'running'"
        ).fetchone()[0] == 0:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "shutting down" in out


def test_cli_runs_one_stage_over_a_range_and_rejects_bad_input(db_url, conn):
    steady(conn)
    env = {**os.environ, "WATTLINE_REPORTING_TIMEZONE": "UTC"}
    ok = subprocess.run(WATTLINE + ["jobs", "run", "normalize", "--from", "2026-01-05", "--to", "2026-01-06"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "normalize: ok, 4 rows" in ok.stdout
    bad = subprocess.run(WATTLINE + ["jobs", "run", "normalize", "--from", "yesterday", "--to", "2026-01-06"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not an ISO 8601 time" in bad.stderr
    unknown = subprocess.run(WATTLINE + ["jobs", "run", "nonsense"], env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no module jobs/nonsense.py" in unknown.stderr
    backfill = subprocess.run(
        WATTLINE + ["backfill", "--from", "2026-01-05", "--to", "2026-01-06", "--chunk", "6h"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert backfill.returncode == 0, backfill.stderr
    assert "normalize: 0 rows" in backfill.stdout      # already there: nothing rewritten
    assert "backfill" in backfill.stderr                # the tqdm progress bar


def test_scheduled_runs_keep_their_session_and_replace_a_lost_one(db_url, conn):
    """Plans live as long as a session: the scheduler keeps one per job, and replaces
    it when the server ends it."""
    steady(conn)
    backends = ("SELECT pid, backend_start FROM pg_stat_activity "
                "WHERE application_name = 'wattline stage normalize' AND datname = current_database()")
    sessions = runner.Sessions()
    try:
        assert runner.tick("normalize", db_url, sessions=sessions).status == "ok"
        first = conn.execute(backends).fetchall()
        assert len(first) == 1
        assert runner.tick("normalize", db_url, sessions=sessions).status == "ok"
        assert conn.execute(backends).fetchall() == first              # the same session
        conn.execute("SELECT pg_terminate_backend(%s, 10000)", (first[0][0],))  # waits for it to end
        assert runner.tick("normalize", db_url, sessions=sessions).status == "ok"
        second = conn.execute(backends).fetchall()
        assert len(second) == 1 and second != first                    # replaced, run not lost
    finally:
        sessions.close()
    deadline = time.monotonic() + 10
    while conn.execute(backends).fetchall() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert conn.execute(backends).fetchall() == []
    assert conn.execute(
        "SELECT count(*) FROM ops.job_run WHERE stage = 'normalize' AND status = 'ok'").fetchone() == (3,)
