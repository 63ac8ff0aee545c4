"""Runs the pipeline stages in order, records every run, and keeps two runners from doing
the same work.

PIPELINE is the one list of stages; later issues append theirs (billing, carbon). A stage
module that does not exist yet is skipped with a warning, so the pipeline runs with
whatever is installed.

Each stage run is two things in the database: an ops.job_run row, committed on its own
before the stage starts and updated after it ends (so a failed stage is still recorded,
as 'error'), and the stage's own transaction, which first takes a transaction-level
advisory lock for the stage. A second runner that finds the lock taken records the run
as 'skipped' and moves on; the lock is released with the transaction, also on a crash.

The scheduler runs one job per stage ("stage:<name>"), so each can be inspected, paused
or timed on its own. All of them fire on one clock, each a millisecond after the stage
before it, and a single worker thread executes them: within a cycle the stages run in
pipeline order (normalize sees what clean flagged, rollups what normalize wrote) and
never overlap in one runner. Each job has coalesce=True and max_instances=1, so a slow
stage delays the ones after it, and a stage still busy at the next tick skips that tick
instead of stacking. A stage does not depend on the previous one having run in the same
cycle: each works from what is committed (watermarks and the dirty log), so a failed
stage holds nothing back and its work is retried next cycle. A stage that cannot reach
the database logs the fault and retries on its next tick. An hourly job beside them
prunes what the stages have consumed (jobs.housekeeping).

Each scheduled job keeps its database session from one run to the next (`Sessions`): a
stage's SQL functions are planned once per session, and with a long history that
planning costs more than the work of a quiet cycle (TimescaleDB plans a statement over
every chunk: 0.7 s for normalization with a year of daily chunks). A session that is
gone (server restart, terminated backend) is replaced before the run; one whose run
raised is closed, so the next run starts on a new one.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import psycopg

from jobs import housekeeping
from jobs.base import StageBusy, StageModule

log = logging.getLogger("wattline.jobs")
T = TypeVar("T")

# Stage order: one list, appended to as the pipeline grows.
PIPELINE: tuple[str, ...] = ("clean", "normalize", "offline", "virtual", "rollups", "billing", "carbon")

# Advisory lock key space for stages: (class, hashtext(stage name)).
_LOCK_CLASS = 0x5761_7474  # "Watt"


class UnknownStage(ValueError):
    """A stage name that is not in the pipeline or whose module cannot be found."""


@dataclass
class StageResult:
    stage: str
    status: str                 # ok | error | skipped
    rows: int = 0
    error: str | None = None
    seconds: float = 0.0
    job_run_id: int | None = None


def load_stage(name: str) -> StageModule:
    """The module jobs.<name>; UnknownStage if it does not exist."""
    try:
        module = importlib.import_module(f"jobs.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"jobs.{name}":
            raise UnknownStage(f"stage {name!r} has no module jobs/{name}.py") from None
        raise
    if not callable(getattr(module, "run", None)) or getattr(module, "NAME", None) != name:
        raise UnknownStage(f"jobs/{name}.py does not follow the stage contract (NAME, run)")
    return module  # type: ignore[return-value]


_warned: set[str] = set()


def load_pipeline(names: Iterable[str] = PIPELINE) -> list[StageModule]:
    """The stages that exist, in order; missing ones are skipped (with a warning, once)."""
    stages = []
    for name in names:
        try:
            stages.append(load_stage(name))
        except UnknownStage as exc:
            if name not in _warned:
                _warned.add(name)
                log.warning("skipping stage %s: %s", name, exc)
    return stages


def run_stage(
    conn: psycopg.Connection,
    stage: StageModule,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    wait: bool = False,
    part: tuple[int, int] | None = None,
    locked_by_caller: bool = False,
) -> StageResult:
    """Run one stage once in its own transaction and record it in ops.job_run.

    conn must be in autocommit mode (the job_run row commits on its own). With wait=False
    a stage another runner holds is recorded as 'skipped'; with wait=True (backfill) the
    run waits for the lock. locked_by_caller: a backfill coordinator already holds the
    stage's lock for this run and its siblings (parts of the same chunk on other
    connections). part=(i, n) asks a partitionable stage for its i-th of n disjoint
    shares of the work; part=(n, n) runs the stage's `finish` after all n of them, and
    part=(-1, n) its `prepare` before them. Stage errors are recorded and returned, not raised; a lost
    database connection is raised (nothing can be recorded then).
    """
    if not conn.autocommit:
        raise ValueError("run_stage needs an autocommit connection")
    (job_id,) = conn.execute(
        "INSERT INTO ops.job_run (stage, range_start, range_end, host) VALUES (%s, %s, %s, %s) RETURNING id",
        (stage.NAME, start, end, socket.gethostname()),
    ).fetchone()
    began = dt.datetime.now(dt.timezone.utc)
    result = StageResult(stage.NAME, "ok", job_run_id=job_id)
    try:
        with conn.transaction():
            if locked_by_caller:
                locked = True
            elif wait:
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, stage.NAME))
                locked = True
            else:
                (locked,) = conn.execute(
                    "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, stage.NAME)
                ).fetchone()
            if locked:
                if part is None:
                    rows = stage.run(conn, start, end)
                elif part[0] < 0:  # before the n parts of a chunk
                    rows = stage.prepare(conn, start, end)
                elif part[0] < part[1]:
                    rows = stage.run(conn, start, end, part=part)
                else:  # (n, n): what follows the n parts of a chunk
                    rows = stage.finish(conn, start, end)
                result.rows = int(rows or 0)
            else:
                result.status = "skipped"
    except psycopg.OperationalError:
        raise
    except StageBusy as exc:
        result.status, result.error = "skipped", str(exc)
        log.info("stage %s skipped: %s", stage.NAME, exc)
    except Exception as exc:  # the stage failed: record it, keep the runner alive
        result.status, result.error = "error", f"{type(exc).__name__}: {exc}"
        log.error("stage %s failed: %s", stage.NAME, result.error)
    result.seconds = (dt.datetime.now(dt.timezone.utc) - began).total_seconds()
    conn.execute(
        "UPDATE ops.job_run SET finished_at = now(), rows_touched = %s, status = %s, error = %s WHERE id = %s",
        (result.rows, result.status, result.error, job_id),
    )
    return result


def run_pipeline(
    conn: psycopg.Connection,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    *,
    stages: list[StageModule] | None = None,
    wait: bool = False,
) -> list[StageResult]:
    """Every stage once, in order; stops at the first error (the next cycle retries)."""
    results = []
    for stage in stages if stages is not None else load_pipeline():
        result = run_stage(conn, stage, start, end, wait=wait)
        results.append(result)
        if result.status == "error":
            break
    return results


def chunks(start: dt.datetime, end: dt.datetime, size: dt.timedelta) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """[start, end) cut into consecutive pieces of at most `size`."""
    if start >= end:
        raise ValueError(f"empty range: {start} >= {end}")
    if size <= dt.timedelta(0):
        raise ValueError("chunk size must be positive")
    while start < end:
        yield start, min(start + size, end)
        start += size


def stage_chunk(stage: StageModule, chunk: dt.timedelta) -> dt.timedelta:
    """The piece size a backfill uses for a stage: the chunk asked for, or the stage's
    BACKFILL_CHUNK when that is larger."""
    return max(chunk, getattr(stage, "BACKFILL_CHUNK", chunk))


def default_workers() -> int:
    """Backfill connections: one per core, at most 4 (the server needs the cores too)."""
    return max(1, min(4, os.cpu_count() or 1))


def backfill(
    conn: psycopg.Connection,
    start: dt.datetime,
    end: dt.datetime,
    *,
    chunk: dt.timedelta = dt.timedelta(days=1),
    stages: list[StageModule] | None = None,
    progress: Callable[[str, dt.datetime, dt.datetime], None] | None = None,
    workers: int | None = None,
) -> dict[str, StageResult]:
    """Recompute [start, end) through every stage, stage by stage, chunk by chunk.

    Stage-major order means every chunk of a stage sees the previous stage complete over
    the whole range (cleaning at a chunk edge looks at the next chunk's readings). Stages
    that declare PARTITIONS (clean, normalize: disjoint points or meters, each in time
    order; billing: disjoint shares of time) run every chunk as `workers` parts on as many connections at once; this
    connection holds the stage's lock for them meanwhile, so a scheduled runner skips
    the stage instead of interleaving. Stages that declare BACKFILL_CHUNK (rollups,
    whose buckets are wider than a chunk) take the range in pieces of that size instead.
    Raises RuntimeError on a stage error. Returns per stage the summed rows and the
    wall-clock seconds.
    """
    workers = default_workers() if workers is None else max(1, workers)
    totals: dict[str, StageResult] = {}
    pool: list[psycopg.Connection] = []
    try:
        for stage in stages if stages is not None else load_pipeline():
            total = totals.setdefault(stage.NAME, StageResult(stage.NAME, "ok"))
            size = stage_chunk(stage, chunk)
            parts = workers if getattr(stage, "PARTITIONS", False) else 1
            while len(pool) < parts - 1:
                pool.append(psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True))
            began = time.perf_counter()
            if parts == 1:
                for lo, hi in chunks(start, end, size):
                    _record(total, [run_stage(conn, stage, lo, hi, wait=True)], lo, hi)
                    if progress:
                        progress(stage.NAME, lo, hi)
            else:
                _backfill_parts(conn, pool[: parts - 1], stage, chunks(start, end, size), total, progress)
            total.seconds = time.perf_counter() - began
    finally:
        for c in pool:
            c.close()
    return totals


def _record(total: StageResult, results: list[StageResult], lo: dt.datetime, hi: dt.datetime) -> None:
    for result in results:
        if result.status == "error":
            raise RuntimeError(f"stage {result.stage} failed over [{lo}, {hi}): {result.error}")
        total.rows += result.rows


def _backfill_parts(
    conn: psycopg.Connection,
    others: list[psycopg.Connection],
    stage: StageModule,
    pieces: Iterable[tuple[dt.datetime, dt.datetime]],
    total: StageResult,
    progress: Callable[[str, dt.datetime, dt.datetime], None] | None,
) -> None:
    """len(others) + 1 parts at once, under one session-level stage lock.

    Each part goes through the pieces in time order on its own connection, without
    waiting for the others (parts are disjoint); a piece is reported done when every part
    has done it. A stage with finish() needs all parts of a piece done before it, so
    there the parts meet after every piece (and its prepare(), if any, runs and commits
    before them).
    """
    from concurrent.futures import ThreadPoolExecutor

    conns = [conn, *others]
    n = len(conns)
    pieces = list(pieces)
    done = [0] * len(pieces)
    lock = threading.Lock()

    def one_part(i: int, c: psycopg.Connection, todo: list[int]) -> None:
        for k in todo:
            lo, hi = pieces[k]
            result = run_stage(c, stage, lo, hi, part=(i, n), locked_by_caller=True)
            with lock:
                _record(total, [result], lo, hi)
                done[k] += 1
                if done[k] == n and progress:
                    progress(stage.NAME, lo, hi)

    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, stage.NAME))
    try:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"backfill-{stage.NAME}") as ex:
            if not callable(getattr(stage, "finish", None)):
                for f in [ex.submit(one_part, i, c, list(range(len(pieces)))) for i, c in enumerate(conns)]:
                    f.result()
                return
            for k, (lo, hi) in enumerate(pieces):
                if callable(getattr(stage, "prepare", None)):
                    _record(total, [run_stage(conn, stage, lo, hi, part=(-1, n), locked_by_caller=True)], lo, hi)
                futures = [ex.submit(run_stage, c, stage, lo, hi, part=(i, n), locked_by_caller=True)
                           for i, c in enumerate(conns)]
                _record(total, [f.result() for f in futures], lo, hi)
                _record(total, [run_stage(conn, stage, lo, hi, part=(n, n), locked_by_caller=True)], lo, hi)
                if progress:
                    progress(stage.NAME, lo, hi)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_CLASS, stage.NAME))


class Sessions:
    """The scheduler's database sessions, one per job, kept between its runs."""

    def __init__(self) -> None:
        self._conns: dict[str, psycopg.Connection] = {}
        self._lock = threading.Lock()

    def get(self, job: str, url: str) -> psycopg.Connection:
        """The job's session, checked with a round trip; a new one if it is gone."""
        with self._lock:
            conn = self._conns.pop(job, None)
        if conn is not None:
            try:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    raise psycopg.OperationalError("session left inside a transaction")
                conn.execute("SELECT 1")
            except psycopg.Error:
                conn.close()
                conn = None
        if conn is None:
            conn = psycopg.connect(url, autocommit=True, application_name=f"wattline {job}"[:63])
        with self._lock:
            self._conns[job] = conn
        return conn

    def discard(self, job: str) -> None:
        with self._lock:
            conn = self._conns.pop(job, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


def tick(stage: str, url: str | None = None, stop: threading.Event | None = None,
         sessions: Sessions | None = None) -> StageResult | None:
    """One scheduled run of one stage, on the job's kept session (a fresh connection
    without `sessions`); faults are logged, not raised."""
    result = _scheduled(f"stage {stage}", lambda conn: run_stage(conn, load_stage(stage)), url, stop, sessions)
    if result is not None:
        log.info("stage %s %s: %d rows in %.2fs", result.stage, result.status, result.rows, result.seconds)
    return result


def housekeeping_tick(url: str | None = None, stop: threading.Event | None = None,
                      sessions: Sessions | None = None) -> tuple[int, int] | None:
    """Scheduled pruning of the dirty log and run history (jobs.housekeeping)."""
    stages = [s.NAME for s in load_pipeline()]
    return _scheduled("housekeeping", lambda conn: housekeeping.prune(conn, stages), url, stop, sessions)


def _scheduled(what: str, work: Callable[[psycopg.Connection], T], url: str | None,
               stop: threading.Event | None, sessions: Sessions | None = None) -> T | None:
    """`work` on the job's kept autocommit session (or a fresh connection), unless the
    runner is stopping (then a job still queued behind another does not start). Faults
    are logged, never raised: the scheduler must outlive a database outage and the job
    retries at its next tick."""
    from app.db import database_url

    if stop is not None and stop.is_set():
        log.info("%s not started: shutting down", what)
        return None
    try:
        if sessions is None:
            with psycopg.connect(url or database_url(), autocommit=True) as conn:
                return work(conn)
        conn = sessions.get(what, url or database_url())
        try:
            return work(conn)
        except BaseException:
            sessions.discard(what)   # the next run starts on a new session
            raise
    except psycopg.OperationalError as exc:
        log.warning("%s could not reach the database (retrying next cycle): %s", what, exc)
    except Exception:  # never let one bad run kill the scheduler
        log.exception("%s failed", what)
    return None


def make_scheduler(
    interval_s: float, url: str | None = None, *, run_now: bool = True, stop: threading.Event | None = None,
    sessions: Sessions | None = None,
):
    """A BackgroundScheduler with one job per stage on one clock, in pipeline order (not
    started). With `sessions` the jobs keep their database sessions there."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    if interval_s <= 0:
        raise ValueError("interval must be positive")
    scheduler = BackgroundScheduler(
        timezone=dt.timezone.utc, executors={"default": ThreadPoolExecutor(max_workers=1)}
    )
    first = dt.datetime.now(dt.timezone.utc)
    if not run_now:
        first += dt.timedelta(seconds=interval_s)
    for i, stage in enumerate(load_pipeline()):
        at = first + dt.timedelta(milliseconds=i)  # the order within a tick
        scheduler.add_job(
            tick,
            "interval",
            seconds=interval_s,
            start_date=at,
            next_run_time=at,
            args=[stage.NAME, url, stop, sessions],
            id=f"stage:{stage.NAME}",
            name=f"wattline {stage.NAME}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,  # a stage queued behind a slow one still runs
        )
    scheduler.add_job(
        housekeeping_tick, "interval", seconds=housekeeping.INTERVAL_S, args=[url, stop, sessions],
        id="housekeeping", name="wattline housekeeping", coalesce=True, max_instances=1,
        misfire_grace_time=None,
    )
    return scheduler


def serve(interval_s: float, url: str | None = None, stop: threading.Event | None = None) -> None:
    """Run the scheduler until SIGTERM/SIGINT (or `stop` is set); a running stage finishes first."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
    sessions = Sessions()
    scheduler = make_scheduler(interval_s, url, stop=stop, sessions=sessions)
    scheduler.start()
    log.info("stages every %ss, in order: %s", interval_s, " → ".join(s.NAME for s in load_pipeline()))
    try:
        stop.wait()
    finally:
        log.info("shutting down: waiting for the running stage")
        scheduler.shutdown(wait=True)
        sessions.close()
