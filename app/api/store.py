"""A Litestar store in PostgreSQL (ops.api_store), for the rate limits on login and ingest.

Litestar's default store is each process's memory: with `wattline api --workers N` a
client would get N times its limit, and a restart would forget it. In the database the
counters are shared by every process and host. Each limited request costs two short
statements on the process's pool; the store runs them in a worker thread so the event
loop never blocks. Litestar's rate limiter reads, then writes, a client's history, so
requests from one client arriving at the same instant in different processes may each
see the count before the other's: a burst can overshoot a limit by the requests in
flight at once, never by a factor of the process count.
"""

from __future__ import annotations

import datetime as dt

import anyio
from litestar.stores.base import Store

from app.api.database import Database


_LIVE = "namespace = %(ns)s AND key = %(key)s AND (expires_at IS NULL OR expires_at > now())"


def _seconds(value: int | dt.timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class PostgresStore(Store):
    """Key/value entries of one namespace in ops.api_store, with optional expiry."""

    __slots__ = ("database", "namespace")

    def __init__(self, database: Database, namespace: str) -> None:
        self.database = database
        self.namespace = namespace

    async def _run(self, sql: str, **params: object) -> list[tuple]:
        """`sql` (named parameters; %(ns)s is the namespace) on a pooled connection, in a thread."""
        params["ns"] = self.namespace

        def run() -> list[tuple]:
            with self.database.connection() as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []

        return await anyio.to_thread.run_sync(run)

    async def set(self, key: str, value: str | bytes, expires_in: int | dt.timedelta | None = None) -> None:
        await self._run(
            "INSERT INTO ops.api_store (namespace, key, value, expires_at) "
            "VALUES (%(ns)s, %(key)s, %(value)s, now() + make_interval(secs => %(ttl)s)) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
            key=key, value=value.encode() if isinstance(value, str) else value, ttl=_seconds(expires_in),
        )

    async def get(self, key: str, renew_for: int | dt.timedelta | None = None) -> bytes | None:
        renew = _seconds(renew_for)
        if renew is None:
            rows = await self._run(f"SELECT value FROM ops.api_store WHERE {_LIVE}", key=key)
        else:  # renewing applies only to entries that expire
            rows = await self._run(
                "UPDATE ops.api_store SET expires_at = CASE WHEN expires_at IS NULL THEN NULL "
                f"ELSE now() + make_interval(secs => %(ttl)s) END WHERE {_LIVE} RETURNING value",
                key=key, ttl=renew,
            )
        return bytes(rows[0][0]) if rows else None

    async def delete(self, key: str) -> None:
        await self._run("DELETE FROM ops.api_store WHERE namespace = %(ns)s AND key = %(key)s", key=key)

    async def delete_all(self) -> None:
        await self._run("DELETE FROM ops.api_store WHERE namespace = %(ns)s")

    async def exists(self, key: str) -> bool:
        return bool(await self._run(f"SELECT 1 FROM ops.api_store WHERE {_LIVE}", key=key))

    async def expires_in(self, key: str) -> int | None:
        rows = await self._run(
            f"SELECT ceil(extract(epoch FROM expires_at - now()))::int FROM ops.api_store "
            f"WHERE {_LIVE} AND expires_at IS NOT NULL", key=key,
        )
        return rows[0][0] if rows else None
