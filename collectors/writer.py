"""The batching writer every collector hands its readings to.

Collectors must never wait on the database, and the database must never see one INSERT
per reading, so `add` only scales, checks and appends to an in-memory batch, and one
background thread writes batches through app.readings.write_readings (COPY + ON CONFLICT
DO NOTHING) when a batch is full or old enough. When the database cannot be reached the
batch goes to a durable spool (collectors.spool) and is replayed, oldest first, once the
database answers again. Memory is capped: when the database is up but slower than the
readings arrive (a long lock, an overloaded server), the batch past `max_pending` goes to
the spool from the caller's thread, so a slow database costs disk, not memory, and the
rows follow in order once it catches up. A crash loses at most the unflushed in-memory batch; with
`sync=True` every reading is fsync'd to a journal before `add` returns, so not even
that. Thread-safe: asyncio pollers and paho-mqtt's network thread call it alike.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import psycopg

from app.readings import PointScaling, Reading, load_point_scaling, write_readings
from collectors.spool import Journal, Spool

log = logging.getLogger("wattline.writer")

# Errors that mean "the database is not there right now": spool and retry.
_OUTAGE = (psycopg.OperationalError, psycopg.InterfaceError)
_MAX_QUALITY = 32767
DEFAULT_MAX_PENDING = 200_000  # readings in memory (~30 MB) before a slow database spills to disk


class UnknownPointError(ValueError):
    """A reading names a point id the configuration does not have."""


@dataclass
class WriterCounters:
    received: int = 0    # readings accepted by add()
    rejected: int = 0    # readings refused by add() (unknown point, bad value or time)
    written: int = 0     # new rows in raw.point_value
    duplicates: int = 0  # rows the table already had (dropped)
    spooled: int = 0     # rows queued on disk: database unreachable, or slower than intake
    replayed: int = 0    # spooled rows later written (or found present) in the database
    late_ranges: int = 0  # dirty ranges logged for readings older than normalized data
    flushes: int = 0
    by_source: dict[int, Counter] = field(default_factory=dict)

    def snapshot(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "by_source"}
        out["by_source"] = {sid: dict(c) for sid, c in self.by_source.items()}
        return out


class BatchWriter:
    """Batches readings into raw.point_value; spools on outage; `close()` flushes.

    points: the scaling of every acceptable point (default: loaded from config.point at
    start). source_of: point id -> data source id, for per-source counters (optional).
    max_pending: readings held in memory at most (default DEFAULT_MAX_PENDING, or
    batch_size if larger); past it a batch goes to the spool instead.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        points: Mapping[int, PointScaling] | None = None,
        source_of: Mapping[int, int] | None = None,
        batch_size: int = 5000,
        max_age_s: float = 1.0,
        max_pending: int | None = None,
        spool_dir: Path | str | None = None,
        sync: bool = False,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 15.0,
        connect_timeout_s: int = 5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        if max_pending is None:
            max_pending = max(DEFAULT_MAX_PENDING, batch_size)
        if max_pending < batch_size:
            raise ValueError(f"max_pending ({max_pending}) must be at least batch_size ({batch_size})")
        from app.db import database_url
        from app.settings import get_settings

        self.url = url or database_url()
        self.batch_size = batch_size
        self.max_age_s = max_age_s
        self.max_pending = max_pending
        self.sync = sync
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.connect_timeout_s = connect_timeout_s
        self.spool = Spool(Path(spool_dir) if spool_dir else get_settings().data_dir / "spool" / "collect")
        self.counters = WriterCounters()
        self.last_error: str | None = None

        self._lock = threading.Lock()          # buffer, journal, counters of add()
        self._write_lock = threading.Lock()    # the database connection and spool replay
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._buffer: list[Reading] = []
        self._oldest = 0.0                      # monotonic time the buffer became non-empty
        self._journal: Journal | None = self.spool.journal() if sync else None
        self._fresh: set[Path] = set()          # sealed journal segments not yet tried
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0
        self._retry_delay = retry_initial_s
        self._failed_replays: Counter = Counter()
        self._scaling: dict[int, PointScaling] = {}
        self._source_of: dict[int, int] = {}
        if points is None:
            with psycopg.connect(self.url, connect_timeout=connect_timeout_s) as conn:
                points = load_point_scaling(conn)
        self.update_points(points, source_of)
        self._thread = threading.Thread(target=self._run, name="wattline-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ intake
    def update_points(
        self, points: Mapping[int, PointScaling], source_of: Mapping[int, int] | None = None
    ) -> None:
        """Replace the known points (after a configuration change)."""
        self._scaling = dict(points)
        if source_of is not None:
            self._source_of = dict(source_of)

    def add(self, point_id: int, ts: dt.datetime, device_value: float, quality: int = 0) -> None:
        """Accept one device value: scaled by the point's ratio and offset, flagged when
        outside its limits. Raises ValueError (UnknownPointError) for a reading it refuses."""
        scaling = self._scaling.get(point_id)
        if scaling is None:
            self._refuse()
            raise UnknownPointError(f"point {point_id!r}: no such point in the configuration")
        value, flag = scaling.apply(device_value)
        self._accept([self._checked(point_id, ts, value, quality | flag)])

    def add_scaled(self, point_id: int, ts: dt.datetime, value: float, quality: int = 0) -> None:
        """Accept a value that is already in engineering units (no ratio/offset/limits)."""
        if point_id not in self._scaling:
            self._refuse()
            raise UnknownPointError(f"point {point_id!r}: no such point in the configuration")
        self._accept([self._checked(point_id, ts, value, quality)])

    def add_many(self, readings: Iterable[tuple[int, dt.datetime, float, int]], *, scaled: bool = False) -> None:
        """Accept several readings at once (one journal fsync in sync mode). All or none:
        the first bad reading raises before any is accepted."""
        rows = []
        for point_id, ts, value, quality in readings:
            scaling = self._scaling.get(point_id)
            if scaling is None:
                self._refuse()
                raise UnknownPointError(f"point {point_id!r}: no such point in the configuration")
            if not scaled:
                value, flag = scaling.apply(value)
                quality |= flag
            rows.append(self._checked(point_id, ts, value, quality))
        if rows:
            self._accept(rows)

    def _refuse(self) -> None:
        with self._lock:
            self.counters.rejected += 1

    def _checked(self, point_id: int, ts: dt.datetime, value: float, quality: int) -> Reading:
        if not isinstance(ts, dt.datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            self._refuse()
            raise ValueError(f"point {point_id}: timestamp {ts!r} must be a datetime with a time zone")
        try:
            finite = math.isfinite(value)
        except TypeError:
            finite = False
        if not finite:
            self._refuse()
            raise ValueError(f"point {point_id} at {ts.isoformat()}: value {value!r} is not a finite number")
        if not 0 <= quality <= _MAX_QUALITY:
            self._refuse()
            raise ValueError(f"point {point_id} at {ts.isoformat()}: quality {quality!r} out of range 0..{_MAX_QUALITY}")
        return (point_id, ts, float(value), quality)

    def _accept(self, rows: list[Reading]) -> None:
        if self._stop.is_set():
            raise RuntimeError("the writer is closed")
        with self._lock:
            if self._journal is not None:
                self._journal.append(rows)   # durable before add() returns
            if not self._buffer:
                self._oldest = time.monotonic()
            self._buffer.extend(rows)
            self.counters.received += len(rows)
            full = len(self._buffer) >= self.batch_size
            over = len(self._buffer) >= self.max_pending
        if over:
            self._shed()
        elif full:
            self._wake.set()

    def _shed(self) -> None:
        """The background thread is stuck on a slow database: queue the batch on disk."""
        rows = self._take(force=True)
        if rows and not self.sync:  # in sync mode the sealed journal segment is the queued file
            self._spool(rows)
        self._wake.set()

    # ------------------------------------------------------------------ output
    def flush(self) -> None:
        """Write everything accepted so far (or spool it) before returning."""
        self._flush_once(force=True)

    def close(self) -> None:
        """Stop the background thread after writing (or spooling) every accepted reading."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._flush_once(force=True)
        if self._journal is not None:
            with self._lock:
                path = self._journal.seal()
                self._journal = None
            if path is not None:
                self._replay()
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.spool.close()

    def __enter__(self) -> "BatchWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Readings in memory, not yet written nor spooled."""
        return len(self._buffer)

    @property
    def spooled_files(self) -> int:
        return len(self.spool.pending())

    @property
    def database_up(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def stats(self) -> dict:
        with self._lock:
            snap = self.counters.snapshot()
        snap.update(pending=self.pending, spool_files=self.spooled_files,
                    database_up=self.database_up, last_error=self.last_error)
        return snap

    # --------------------------------------------------------- background thread
    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                age = time.monotonic() - self._oldest if self._buffer else 0.0
            timeout = max(0.01, self.max_age_s - age) if self._buffer else self.max_age_s
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._flush_once(force=False)
            except Exception:  # never let the thread die: readings keep arriving
                log.exception("event=writer_error")

    def _take(self, force: bool) -> list[Reading]:
        """The buffered batch if due (sync mode: its journal segment sealed for replay)."""
        with self._lock:
            if not self._buffer:
                return []
            due = force or len(self._buffer) >= self.batch_size or (
                time.monotonic() - self._oldest >= self.max_age_s
            )
            if not due:
                return []
            rows, self._buffer = self._buffer, []
            self._count_by_source(rows, "received")
            if self._journal is not None:
                segment = self._journal.seal()
                self._journal = self.spool.journal()
                if segment is not None:
                    self._fresh.add(segment)
            return rows

    def _flush_once(self, force: bool) -> None:
        with self._write_lock:
            rows = self._take(force)
            if self.sync:
                # The batch is already a spool file: writing it is a replay in order.
                self._replay_locked()
                return
            if self.spool.pending() and not self._replay_locked():
                if rows:
                    self._spool(rows)
                return
            if rows and not self._write(rows):
                self._spool(rows)

    def _replay(self) -> bool:
        with self._write_lock:
            return self._replay_locked()

    def _replay_locked(self) -> bool:
        """Write queued files oldest first; False if the database is still unreachable."""
        for path in self.spool.pending():
            if time.monotonic() < self._retry_at:
                self._fresh_now_spooled()
                return False
            try:
                rows = self.spool.read(path)
            except (OSError, ValueError) as exc:
                log.error("event=spool_unreadable file=%s error=%s", path.name, exc)
                self.spool.reject(path)
                continue
            fresh = path in self._fresh
            outcome = self._write(rows, replay=not fresh)
            if outcome is None:  # refused for a reason other than an outage
                self._failed_replays[path] += 1
                if self._failed_replays[path] >= 3:
                    target = self.spool.reject(path)
                    log.error("event=spool_rejected file=%s rows=%d", target, len(rows))
                    self._fresh.discard(path)
                    del self._failed_replays[path]
                    continue
                self._fresh_now_spooled()
                return False
            if not outcome:
                self._fresh_now_spooled()
                return False
            self._fresh.discard(path)
            self._failed_replays.pop(path, None)
            self.spool.remove(path)
        return True

    def _fresh_now_spooled(self) -> None:
        """Sync-mode segments that could not be written on their first try count as spooled."""
        for path in list(self._fresh):
            self._fresh.discard(path)
            try:
                rows = self.spool.read(path)
            except (OSError, ValueError):
                continue
            with self._lock:
                self.counters.spooled += len(rows)
                self._count_by_source(rows, "spooled")

    def _spool(self, rows: list[Reading]) -> None:
        path = self.spool.append(rows)
        with self._lock:
            self.counters.spooled += len(rows)
            self._count_by_source(rows, "spooled")
        log.warning("event=spooled rows=%d file=%s error=%r", len(rows), path.name, self.last_error)

    def _connection(self) -> psycopg.Connection | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        if time.monotonic() < self._retry_at:
            return None
        try:
            self._conn = psycopg.connect(self.url, connect_timeout=self.connect_timeout_s)
        except psycopg.Error as exc:
            self._outage(exc)
            return None
        log.info("event=database_connected pending_spool_files=%d", len(self.spool.pending()))
        return self._conn

    def _outage(self, exc: Exception) -> None:
        first = self._retry_delay == self.retry_initial_s
        self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        self._retry_at = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.retry_max_s)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
        (log.warning if first else log.info)(
            "event=database_unreachable retry_in_s=%.1f error=%r", self._retry_at - time.monotonic(), self.last_error
        )

    def _write(self, rows: list[Reading], replay: bool = False) -> bool | None:
        """True: committed. False: database unreachable. None: refused (not an outage)."""
        conn = self._connection()
        if conn is None:
            return False
        try:
            with conn.transaction():
                result = write_readings(conn, rows)
        except _OUTAGE as exc:
            self._outage(exc)
            return False
        except psycopg.Error as exc:
            self.last_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            log.error("event=write_refused rows=%d error=%r", len(rows), self.last_error)
            if conn.closed:
                self._conn = None
            return None
        self._retry_delay = self.retry_initial_s
        self._retry_at = 0.0
        with self._lock:
            c = self.counters
            c.written += result.accepted
            c.duplicates += result.duplicates
            c.late_ranges += result.late_ranges
            c.flushes += 1
            if replay:
                c.replayed += len(rows)
            self._count_by_source(rows, "replayed" if replay else "written")
        return True

    def _count_by_source(self, rows: list[Reading], what: str) -> None:
        if not self._source_of:
            return
        get = self._source_of.get
        for sid, n in Counter(get(r[0], 0) for r in rows).items():
            self.counters.by_source.setdefault(sid, Counter())[what] += n
