"""Health of data sources and points, kept in ops.collector_status for the Operations
dashboard.

A poll of 20,000 points every 10 s must not turn into 2,000 status upserts a second, so
outcomes are kept in memory and written in one batch every few seconds: a row is
written when its state changes (a failure, a recovery, a new error) and otherwise at
most every `refresh_s`, so `last_success` is at most that stale. Status is advisory: a
database error here is logged and retried at the next save, never raised to a poller.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import psycopg

log = logging.getLogger("wattline.status")

SOURCE = 0  # point_id of the data source's own row


@dataclass
class _State:
    last_success: dt.datetime | None = None
    last_error: str | None = None
    last_error_at: dt.datetime | None = None
    consecutive_failures: int = 0
    changed: bool = True
    saved_at: float = 0.0


_UPSERT = """
INSERT INTO ops.collector_status AS s
    (data_source_id, point_id, last_success, last_error, last_error_at, consecutive_failures, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (data_source_id, point_id) DO UPDATE SET
    last_success = coalesce(EXCLUDED.last_success, s.last_success),
    last_error = coalesce(EXCLUDED.last_error, s.last_error),
    last_error_at = coalesce(EXCLUDED.last_error_at, s.last_error_at),
    consecutive_failures = EXCLUDED.consecutive_failures,
    updated_at = now()
"""


class StatusRecorder:
    """In-memory outcomes per (data source, point), saved in batches by `save()`."""

    def __init__(self, url: str, refresh_s: float = 60.0) -> None:
        self.url = url
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._states: dict[tuple[int, int], _State] = {}

    def _state(self, source_id: int, point_id: int) -> _State:
        key = (source_id, point_id)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State()
        return state

    def success(self, source_id: int, point_id: int = SOURCE, at: dt.datetime | None = None) -> None:
        at = at or dt.datetime.now(dt.timezone.utc)
        with self._lock:
            s = self._state(source_id, point_id)
            if s.consecutive_failures or s.last_success is None:
                s.changed = True
            s.last_success = at
            s.consecutive_failures = 0

    def failure(self, source_id: int, point_id: int = SOURCE, error: str = "", at: dt.datetime | None = None) -> None:
        at = at or dt.datetime.now(dt.timezone.utc)
        with self._lock:
            s = self._state(source_id, point_id)
            s.consecutive_failures += 1
            s.last_error = error[:1000]
            s.last_error_at = at
            s.changed = True

    def get(self, source_id: int, point_id: int = SOURCE) -> _State | None:
        return self._states.get((source_id, point_id))

    def forget_source(self, source_id: int) -> None:
        with self._lock:
            for key in [k for k in self._states if k[0] == source_id]:
                del self._states[key]

    def save(self) -> int:
        """Write changed (and stale) rows; returns how many. Errors are logged, not raised."""
        now = time.monotonic()
        with self._lock:
            due = [
                (key, s) for key, s in self._states.items()
                if s.changed or now - s.saved_at >= self.refresh_s
            ]
            params = [
                (k[0], k[1], s.last_success, s.last_error, s.last_error_at, s.consecutive_failures)
                for k, s in due
            ]
            for _, s in due:
                s.changed = False
                s.saved_at = now
        if not params:
            return 0
        try:
            with psycopg.connect(self.url, connect_timeout=5) as conn:
                with conn.cursor() as cur:
                    cur.executemany(_UPSERT, params)
        except psycopg.Error as exc:
            log.warning("event=status_save_failed rows=%d error=%r", len(params), str(exc).strip()[:200])
            with self._lock:
                for _, s in due:
                    s.changed = True
            return 0
        return len(params)
