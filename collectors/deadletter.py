"""Messages a collector could not accept, kept in ops.dead_letter with the reason.

A bad payload must cost the collector nothing: `add` only appends to memory (it is
called from paho's network thread) and a background thread writes batches. While the
database is away the thread keeps the batch and retries with backoff, so an outage
delays dead letters but does not lose them; beyond `max_pending` the oldest are dropped
and counted, so a flood of garbage cannot exhaust memory.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time

import psycopg

log = logging.getLogger("wattline.deadletter")

MAX_PAYLOAD_CHARS = 65_536


def payload_text(payload: bytes | str) -> str:
    """Payload as storable text: invalid UTF-8 replaced, NULs escaped, huge ones cut."""
    text = payload.decode("utf-8", errors="replace") if isinstance(payload, (bytes, bytearray)) else payload
    text = text.replace("\x00", "\\x00")
    if len(text) > MAX_PAYLOAD_CHARS:
        text = text[:MAX_PAYLOAD_CHARS] + f"… [{len(text) - MAX_PAYLOAD_CHARS} more characters cut]"
    return text


class DeadLetters:
    """Batched, thread-safe writer of ops.dead_letter rows."""

    def __init__(
        self,
        url: str | None = None,
        *,
        max_batch: int = 500,
        max_age_s: float = 0.5,
        max_pending: int = 100_000,
        retry_max_s: float = 10.0,
    ):
        if url is None:
            from app.db import database_url

            url = database_url()
        self.url = url
        self.max_batch = max_batch
        self.max_age_s = max_age_s
        self.max_pending = max_pending
        self.retry_max_s = retry_max_s
        self._pending: collections.deque[tuple] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self.added = 0
        self.written = 0
        self.dropped = 0
        self.failures = 0

    # ----------------------------------------------------------------- producer side
    def add(self, data_source_id: int | None, topic: str | None, payload: bytes | str, reason: str) -> None:
        row = (dt.datetime.now(dt.timezone.utc), data_source_id, topic, payload_text(payload), reason)
        with self._lock:
            self._pending.append(row)
            self.added += 1
            while len(self._pending) > self.max_pending:
                self._pending.popleft()
                self.dropped += 1
            full = len(self._pending) >= self.max_batch
        if full:
            self._wake.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # ------------------------------------------------------------------- lifecycle
    def start(self) -> "DeadLetters":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dead-letters", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread after a last flush attempt (bounded by `timeout_s`)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.pending:
            log.warning("dead letters: %d not written at shutdown (database unreachable)", self.pending)

    def __enter__(self) -> "DeadLetters":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the writer
    def flush(self) -> int:
        """Write everything pending now (in the caller's thread); returns rows written.
        Raises psycopg.OperationalError when the database is unreachable."""
        total = 0
        while True:
            with self._lock:
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            if not batch:
                return total
            try:
                self._write(batch)
            except Exception:
                with self._lock:  # put them back in order, ahead of newer ones
                    self._pending.extendleft(reversed(batch))
                raise
            total += len(batch)

    def _write(self, batch: list[tuple]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, connect_timeout=5)
        try:
            with self._conn.transaction():
                with self._conn.cursor().copy(
                    "COPY ops.dead_letter (received_at, data_source_id, topic, payload, reason) FROM STDIN"
                ) as copy:
                    for row in batch:
                        copy.write_row(row)
        except Exception:
            try:
                self._conn.close()
            finally:
                self._conn = None
            raise
        self.written += len(batch)

    def _run(self) -> None:
        backoff = 0.2
        while True:
            self._wake.wait(self.max_age_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self.flush()
                backoff = 0.2
            except Exception as exc:
                self.failures += 1
                log.warning("dead letters: write failed (%s); %d pending, retry in %.1fs",
                            exc.__class__.__name__, self.pending, backoff)
                if stopping:
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            if stopping:
                return
