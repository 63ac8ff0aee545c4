"""The dirty-range log: every stage consumes every committed entry exactly once, also
when entries commit out of id order (a writer still open while a stage runs)."""

from __future__ import annotations

import datetime as dt

import psycopg

from jobs.dirty import advance, log_energy_change, pending

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, tzinfo=UTC)
H = dt.timedelta(hours=1)


def consume(conn, stage: str, kind: str = "meter", **kw) -> list:
    """One stage run's consumption, committed."""
    with conn.transaction():
        ranges, seen = pending(conn, stage, kind, **kw)
        advance(conn, stage, seen)
    return ranges


def test_entry_committed_after_a_later_one_is_consumed_not_skipped(db_url, conn):
    conn.autocommit = True
    with psycopg.connect(db_url) as slow:              # a writer whose transaction stays open
        log_energy_change(slow, T0, T0 + H, "late import", [1])        # lower id, not committed
        log_energy_change(conn, T0 + H, T0 + 2 * H, "normalize", [2])  # higher id, committed
        assert [r.meter_id for r in consume(conn, "rollups")] == [2]
        slow.commit()
    later = consume(conn, "rollups")
    assert [(r.meter_id, r.start, r.reason) for r in later] == [(1, T0, "late import")]
    assert consume(conn, "rollups") == []              # and only once


def test_each_stage_sees_each_entry_once_and_a_failed_run_consumes_nothing(conn):
    conn.autocommit = True
    log_energy_change(conn, T0, T0 + H, "config: multiplier", None)
    conn.execute(
        "INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason) VALUES (7, %s, %s, 'late')",
        (T0, T0 + H),
    )
    try:
        with conn.transaction():
            pending(conn, "carbon", "meter")
            raise RuntimeError("stage failed")
    except RuntimeError:
        pass
    assert [r.reason for r in consume(conn, "carbon")] == ["config: multiplier"]
    assert [r.point_id for r in consume(conn, "clean", "point")] == [7]
    assert [r.reason for r in consume(conn, "virtual", reason_not_like="config:%")] == []
    assert consume(conn, "virtual") == []               # filtered out is consumed all the same
    assert consume(conn, "carbon") == [] and consume(conn, "clean", "point") == []


def test_two_kinds_read_as_of_one_snapshot(db_url, conn):
    """A stage reading points then meters advances to the first read's snapshot: an entry
    committed between the two reads is taken next run, never lost."""
    conn.autocommit = True
    with conn.transaction():
        points, seen = pending(conn, "normalize", "point")
        with psycopg.connect(db_url, autocommit=True) as other:
            log_energy_change(other, T0, T0 + H, "config: point", [3])
        meters, _ = pending(conn, "normalize", "meter", snapshot=seen)
        advance(conn, "normalize", seen)
    assert points == [] and meters == []
    assert [r.meter_id for r in consume(conn, "normalize")] == [3]


def test_pending_view_counts_what_a_stage_has_not_consumed(conn):
    conn.autocommit = True
    consume(conn, "rollups")
    log_energy_change(conn, T0, T0 + H, "normalize", [1, 2])
    assert conn.execute(
        "SELECT pending, range_start FROM api.dirty_pending WHERE stage = 'rollups'").fetchone() == (2, T0)
    consume(conn, "rollups")
    assert conn.execute(
        "SELECT pending, cursor IS NOT NULL FROM api.dirty_pending WHERE stage = 'rollups'").fetchone() == (0, True)


def test_prune_drops_only_what_every_stage_consumed_and_old_runs(db_url, conn):
    from jobs.housekeeping import prune

    conn.autocommit = True
    long = psycopg.connect(db_url)                   # a long transaction elsewhere does not hold it back
    long.execute("SELECT pg_current_xact_id()")
    log_energy_change(conn, T0, T0 + H, "normalize", [1, 2])
    conn.execute("UPDATE ops.dirty_range SET created_at = now() - interval '10 days'")
    conn.execute(
        "INSERT INTO ops.job_run (stage, started_at, finished_at, status) VALUES "
        "('clean', now() - interval '100 days', now() - interval '100 days', 'ok'), "
        "('clean', now() - interval '100 days', NULL, 'running'), "
        "('clean', now() - interval '1 day', now() - interval '1 day', 'ok')"
    )
    consume(conn, "rollups")
    # carbon has never run: nothing of the log may go, old runs may
    assert prune(conn, ["rollups", "carbon"], dirty_keep_hours=24 * 7, runs_keep_days=90) == (0, 1)
    consume(conn, "carbon")
    log_energy_change(conn, T0, T0 + H, "normalize", [3])          # new: not consumed, too young
    assert prune(conn, ["rollups", "carbon"], dirty_keep_hours=24 * 30, runs_keep_days=90) == (0, 0)
    assert prune(conn, ["rollups", "carbon"], dirty_keep_hours=24 * 7, runs_keep_days=90) == (2, 0)
    assert [r.meter_id for r in consume(conn, "rollups")] == [3]   # what is left is still owed
    assert conn.execute("SELECT count(*) FROM ops.job_run").fetchone() == (2,)
    long.close()


def test_prune_drops_expired_api_store_entries(conn):
    from jobs.housekeeping import prune

    conn.autocommit = True
    conn.execute("INSERT INTO ops.api_store VALUES ('rl', 'old', 'x', now() - interval '1 s'), "
                 "('rl', 'live', 'x', now() + interval '1 h'), ('rl', 'kept', 'x', NULL)")
    prune(conn, ["rollups"])
    assert [k for (k,) in conn.execute("SELECT key FROM ops.api_store ORDER BY key")] == ["kept", "live"]


def test_jobs_prune_command(db_url):
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "app.cli", "jobs", "prune", "--run-days", "30"],
                         env={**os.environ, "WATTLINE_DATABASE_URL": db_url}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pruned 0 dirty-log entries and 0 job runs" in out.stdout
