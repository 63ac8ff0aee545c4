"""The batching writer: batches, scaling, limits, duplicates, late data, outages, spool."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import textwrap
import threading
import time

import psycopg
import pytest

from app.readings import Q_OUT_OF_LIMITS, PointScaling
from collectors.writer import BatchWriter, UnknownPointError

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def make_points(conn, specs: list[dict]) -> list[int]:
    """A modbus data source with one point per spec (ratio, offset, limits)."""
    sid = conn.execute(
        "INSERT INTO config.data_source (name, protocol, connection) "
        "VALUES ('w', 'modbus-tcp', '{\"host\": \"127.0.0.1\"}') RETURNING id"
    ).fetchone()[0]
    ids = []
    for i, spec in enumerate(specs):
        ids.append(conn.execute(
            'INSERT INTO config.point (data_source_id, name, object_type, address, ratio, "offset", '
            "low_limit, high_limit) VALUES (%s, %s, 'energy', '{\"register\": 0}', %s, %s, %s, %s) RETURNING id",
            (sid, f"p{i}", spec.get("ratio", 1), spec.get("offset", 0), spec.get("low"), spec.get("high")),
        ).fetchone()[0])
    return ids


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def rows(url):
    with psycopg.connect(url) as c:
        return c.execute("SELECT point_id, ts, value, quality FROM raw.point_value ORDER BY 1, 2").fetchall()


def closed_port_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def test_scales_flags_and_batches(db_url, conn, tmp_path):
    p1, p2 = make_points(conn, [{"ratio": 0.1, "offset": 5}, {"low": 0, "high": 100}])
    with BatchWriter(db_url, batch_size=3, max_age_s=30, spool_dir=tmp_path) as w:
        w.add(p1, T0, 1000)                       # 1000 * 0.1 + 5
        w.add(p2, T0, 50)
        w.add(p2, T0 + dt.timedelta(minutes=1), 150)   # above the high limit: flagged, kept
        assert wait_for(lambda: len(rows(db_url)) == 3)  # a full batch flushes by itself
        w.add(p2, T0 + dt.timedelta(minutes=2), -1, quality=4)
        w.add_scaled(p1, T0 + dt.timedelta(minutes=1), 7.5)
    got = rows(db_url)
    assert got == [
        (p1, T0, 105.0, 0),
        (p1, T0 + dt.timedelta(minutes=1), 7.5, 0),
        (p2, T0, 50.0, 0),
        (p2, T0 + dt.timedelta(minutes=1), 150.0, Q_OUT_OF_LIMITS),
        (p2, T0 + dt.timedelta(minutes=2), -1.0, 4 | Q_OUT_OF_LIMITS),
    ]
    assert w.counters.received == 5 and w.counters.written == 5 and w.counters.spooled == 0


def test_age_flush(db_url, conn, tmp_path):
    (p,) = make_points(conn, [{}])
    with BatchWriter(db_url, batch_size=10_000, max_age_s=0.2, spool_dir=tmp_path) as w:
        w.add(p, T0, 1)
        assert wait_for(lambda: len(rows(db_url)) == 1)  # written without close()


def test_bad_input_is_refused_with_a_clear_error(db_url, conn, tmp_path):
    (p,) = make_points(conn, [{}])
    with BatchWriter(db_url, spool_dir=tmp_path) as w:
        with pytest.raises(UnknownPointError, match="point 999999"):
            w.add(999_999, T0, 1)
        with pytest.raises(ValueError, match="not a finite number"):
            w.add(p, T0, float("nan"))
        with pytest.raises(ValueError, match="time zone"):
            w.add(p, dt.datetime(2026, 1, 1), 1)
        with pytest.raises(UnknownPointError):   # all or none
            w.add_many([(p, T0, 1, 0), (424242, T0, 1, 0)])
        assert w.counters.rejected == 4 and w.counters.received == 0
    assert rows(db_url) == []


def test_duplicates_dropped_and_late_readings_marked_dirty(db_url, conn, tmp_path):
    p1, p2 = make_points(conn, [{}, {}])
    conn.execute("INSERT INTO ops.point_watermark VALUES (%s, %s)", (p1, T0 + dt.timedelta(hours=1)))
    with BatchWriter(db_url, batch_size=2, max_age_s=30, spool_dir=tmp_path) as w:
        w.add_many([(p1, T0, 1, 0), (p2, T0, 2, 0)])
        w.flush()
        w.add_many([(p1, T0, 9, 0), (p2, T0 + dt.timedelta(hours=2), 3, 0)])  # first is a duplicate
        w.flush()
    assert w.counters.written == 3 and w.counters.duplicates == 1
    assert [r[2] for r in rows(db_url)] == [1.0, 2.0, 3.0]   # the first value is kept
    dirty = conn.execute("SELECT point_id, range_start, reason FROM ops.dirty_range").fetchall()
    assert dirty == [(p1, T0, "late reading")]   # p2's readings are not older than a watermark


def _block_connections(server_url: str, db: str, allow: bool) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))


@pytest.mark.parametrize("sync", [False, True])
def test_outage_every_reading_arrives_exactly_once(db_url, server_url, tmp_path, sync):
    with psycopg.connect(db_url, autocommit=True) as c:
        points = make_points(c, [{} for _ in range(5)])
    db = db_url.rsplit("/", 1)[1].split("?")[0]
    w = BatchWriter(db_url, batch_size=50, max_age_s=0.1, spool_dir=tmp_path, sync=sync,
                    retry_initial_s=0.1, retry_max_s=0.3)
    sent = []
    stop = threading.Event()

    def stream():
        i = 0
        while not stop.is_set() or i < 600:
            ts = T0 + dt.timedelta(seconds=i)
            batch = [(p, ts, float(i), 0) for p in points]
            w.add_many(batch)
            sent.extend(batch)
            i += 1
            time.sleep(0.001)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        assert wait_for(lambda: w.counters.written > 0)
        _block_connections(server_url, db, allow=False)
        assert wait_for(lambda: w.counters.spooled > 0 and w.spooled_files > 0)
        _block_connections(server_url, db, allow=True)
        assert wait_for(lambda: w.counters.replayed > 0)
    finally:
        _block_connections(server_url, db, allow=True)
        stop.set()
        producer.join()
        w.close()
    got = rows(db_url)
    assert len(got) == len(sent)
    assert sorted((p, ts, v) for p, ts, v, _ in got) == sorted((p, ts, v) for p, ts, v, _ in sent)
    assert w.spooled_files == 0
    assert w.counters.written + w.counters.duplicates >= len(sent)


CRASHING_WRITER = textwrap.dedent("""
    import datetime as dt, os, sys
    from app.readings import PointScaling
    from collectors.writer import BatchWriter
    url, spool, sync, n = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
    w = BatchWriter(url, points={7: PointScaling(7, ratio=2.0)}, spool_dir=spool, sync=sync,
                    batch_size=1000 if not sync else 10**9, max_age_s=3600)
    t0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    for i in range(n):
        w.add(7, t0 + dt.timedelta(seconds=i), i)
    if not sync:
        w.flush()              # the database is unreachable: the batch goes to the spool
    print("accepted", flush=True)
    os._exit(0)                # a crash: no close(), no flush of anything still in memory
""")


@pytest.mark.parametrize("sync", [True, False])
def test_spool_left_by_a_crashed_process_is_replayed(db_url, tmp_path, sync):
    # sync: the database is fine but nothing was flushed when the process died;
    # not sync: the database was unreachable, so the flushed batch was spooled.
    target = db_url if sync else closed_port_url(db_url)
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, target, str(tmp_path), "1" if sync else "0", "250"],
        capture_output=True, text=True, timeout=120,
    )
    assert "accepted" in out.stdout, out.stderr
    assert rows(db_url) == []
    assert list(tmp_path.glob("*.spool")) or list(tmp_path.glob("*.journal"))
    with BatchWriter(db_url, points={7: PointScaling(7)}, spool_dir=tmp_path, max_age_s=0.1) as w:
        assert wait_for(lambda: w.counters.replayed == 250)
    got = rows(db_url)
    assert len(got) == 250 and got[-1][2] == 2.0 * 249
    assert not list(tmp_path.glob("*.spool")) and not list(tmp_path.glob("*.journal"))


def test_one_writer_per_spool_directory(db_url, tmp_path):
    from collectors.spool import SpoolBusyError

    with BatchWriter(db_url, points={1: PointScaling(1)}, spool_dir=tmp_path):
        with pytest.raises(SpoolBusyError, match="in use by another writer"):
            BatchWriter(db_url, points={1: PointScaling(1)}, spool_dir=tmp_path)


@pytest.mark.parametrize("sync", [False, True])
def test_a_slow_database_costs_disk_not_memory(db_url, tmp_path, sync):
    """The database is up but every write waits (a lock held elsewhere): intake goes on,
    the in-memory batch never grows past max_pending, and every reading arrives once."""
    with psycopg.connect(db_url, autocommit=True) as c:
        points = make_points(c, [{} for _ in range(10)])
    w = BatchWriter(db_url, batch_size=100, max_age_s=0.05, max_pending=500, spool_dir=tmp_path, sync=sync)
    sent = []
    try:
        with psycopg.connect(db_url) as blocker:
            blocker.execute("LOCK TABLE ops.write_gate IN SHARE MODE")  # writers wait behind it
            peak = 0
            for i in range(400):
                batch = [(p, T0 + dt.timedelta(seconds=i), float(i), 0) for p in points]
                w.add_many(batch)
                sent.extend(batch)
                peak = max(peak, w.pending)
            assert peak <= 500 + len(points)
            assert w.spooled_files > 0 and w.counters.written == 0
            assert w.counters.spooled > 0 or sync  # sync mode: sealed journal segments queue
            blocker.rollback()
        assert wait_for(lambda: w.spooled_files == 0 and w.pending == 0, timeout=60)
    finally:
        w.close()
    got = rows(db_url)
    assert len(got) == len(sent) == 4000
    assert sorted((p, ts, v) for p, ts, v, _ in got) == sorted((p, ts, v) for p, ts, v, _ in sent)


def test_max_pending_below_batch_size_is_refused(db_url, tmp_path):
    with pytest.raises(ValueError, match=r"max_pending \(10\) must be at least batch_size \(100\)"):
        BatchWriter(db_url, points={1: PointScaling(1)}, batch_size=100, max_pending=10, spool_dir=tmp_path)
