"""The API's database connections: one psycopg pool per process, opened at startup
without waiting, so the API starts (and answers health checks) while the database is
still coming up; requests then fail with 503 until it answers.

Handlers that use the database are synchronous and run in the event loop's default
thread pool (Litestar's `sync_to_thread`). Python sizes that pool min(32, CPUs + 4) —
six threads on two cores, fewer than the connections — so at startup it is replaced by
one thread per pooled connection: a handler thread never waits for a connection, and no
connection sits idle while requests queue for a thread.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from litestar.datastructures import State
from psycopg_pool import ConnectionPool


class Database:
    def __init__(self, url: str | None = None, *, max_size: int = 8, timeout_s: float = 5.0):
        self._url = url
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.pool: ConnectionPool | None = None

    def open(self) -> None:
        if self.pool is None:
            from app.db import database_url

            self.pool = ConnectionPool(
                self._url or database_url(), min_size=1, max_size=self.max_size, open=False,
                kwargs={"autocommit": True, "connect_timeout": 5}, timeout=self.timeout_s,
                name="wattline-api",
            )
            self.pool.open(wait=False)

    def size_threads(self) -> None:
        """Startup hook: the running loop's default executor gets one thread per connection."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.set_default_executor(ThreadPoolExecutor(max_workers=self.max_size,
                                                     thread_name_prefix="wattline-api"))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def connection(self, timeout_s: float | None = None):
        """A pooled autocommit connection; callers open transactions explicitly."""
        if self.pool is None:
            self.open()
        return self.pool.connection(timeout=timeout_s)


def provide_database(state: State) -> Database:
    """Dependency: the process's Database (handlers run in threads and borrow a
    connection for exactly as long as they need it)."""
    return state.database
