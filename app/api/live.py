"""Live data for dashboards and integrators: the newest reading of every point, the newest
reading and interval of every meter, data source health and recent dead letters.
Everything is filtered by the caller's data scope (app.scopes)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import Parameter

from app.api.database import Database
from app.api.security import Principal, requires_scope
from app.scopes import visible_ids

PREFIX = "/api/v1/live"


@dataclass
class PointValue:
    point_id: int
    point: str
    data_source_id: int
    unit: str | None
    ts: dt.datetime | None
    value: float | None
    quality: int | None


@dataclass
class MeterValue:
    meter_id: int
    meter: str
    point_id: int | None          # the point feeding the meter now (physical meters)
    reading_ts: dt.datetime | None
    reading: float | None         # its newest register value, scaled
    interval_ts: dt.datetime | None
    energy: float | None          # newest 15-minute energy
    power: float | None           # that energy's mean power (energy × 4 per hour)


@dataclass
class DataSourceStatus:
    data_source_id: int
    data_source: str
    protocol: str
    enabled: bool
    state: str                    # ok, failing, never
    last_success: dt.datetime | None
    last_error: str | None
    last_error_at: dt.datetime | None
    consecutive_failures: int
    failing_points: int


@dataclass
class DeadLetter:
    id: int
    received_at: dt.datetime
    data_source_id: int | None
    topic: str | None
    payload: str
    reason: str


def _ids(conn, principal: NamedDependency[Principal], kind: str) -> list[int] | None:
    ids = visible_ids(conn, principal.scope, kind)
    return None if ids is None else sorted(ids)


def latest_points(conn, principal: NamedDependency[Principal], data_source_id: int | None) -> list[PointValue]:
    rows = conn.execute(
        """
        SELECT p.id, p.name, p.data_source_id, p.unit, r.ts, r.value, r.quality
        FROM config.point p
        LEFT JOIN LATERAL (SELECT v.ts, v.value, v.quality FROM raw.point_value v
                           WHERE v.point_id = p.id ORDER BY v.ts DESC LIMIT 1) r ON true
        WHERE (%(ids)s::int[] IS NULL OR p.id = ANY(%(ids)s))
          AND (%(ds)s::int IS NULL OR p.data_source_id = %(ds)s)
        ORDER BY p.id
        """,
        {"ids": _ids(conn, principal, "point"), "ds": data_source_id},
    ).fetchall()
    return [PointValue(*r) for r in rows]


def latest_meters(conn, principal: NamedDependency[Principal]) -> list[MeterValue]:
    rows = conn.execute(
        """
        SELECT m.id, m.name, mp.point_id, r.ts, r.value * mp.multiplier, i.ts, i.energy, i.energy * 4
        FROM config.meter m
        LEFT JOIN config.meter_point mp ON mp.meter_id = m.id AND mp.valid_from <= now() AND now() < mp.valid_to
        LEFT JOIN LATERAL (SELECT v.ts, v.value FROM raw.point_value v
                           WHERE v.point_id = mp.point_id ORDER BY v.ts DESC LIMIT 1) r ON true
        LEFT JOIN LATERAL (SELECT e.ts, e.energy FROM energy.meter_interval e
                           WHERE e.meter_id = m.id ORDER BY e.ts DESC LIMIT 1) i ON true
        WHERE %(ids)s::int[] IS NULL OR m.id = ANY(%(ids)s)
        ORDER BY m.id
        """,
        {"ids": _ids(conn, principal, "meter")},
    ).fetchall()
    return [MeterValue(*r) for r in rows]


def data_source_status(conn, principal: NamedDependency[Principal]) -> list[DataSourceStatus]:
    rows = conn.execute(
        """
        SELECT ds.id, ds.name, ds.protocol, ds.enabled,
               CASE WHEN s.consecutive_failures > 0 THEN 'failing'
                    WHEN s.last_success IS NULL THEN 'never' ELSE 'ok' END,
               s.last_success, s.last_error, s.last_error_at, coalesce(s.consecutive_failures, 0),
               (SELECT count(*) FROM ops.collector_status f
                WHERE f.data_source_id = ds.id AND f.point_id <> 0 AND f.consecutive_failures > 0)::int
        FROM config.data_source ds
        LEFT JOIN ops.collector_status s ON s.data_source_id = ds.id AND s.point_id = 0
        WHERE %(ids)s::int[] IS NULL OR ds.id = ANY(%(ids)s)
        ORDER BY ds.id
        """,
        {"ids": _ids(conn, principal, "data_source")},
    ).fetchall()
    return [DataSourceStatus(*r) for r in rows]


def dead_letters(conn, principal: NamedDependency[Principal], data_source_id: int | None, limit: int) -> list[DeadLetter]:
    rows = conn.execute(
        """
        SELECT id, received_at, data_source_id, topic, payload, reason FROM ops.dead_letter
        WHERE (%(ids)s::int[] IS NULL OR data_source_id = ANY(%(ids)s))
          AND (%(ds)s::int IS NULL OR data_source_id = %(ds)s)
        ORDER BY received_at DESC, id DESC LIMIT %(n)s
        """,
        {"ids": _ids(conn, principal, "data_source"), "ds": data_source_id, "n": limit},
    ).fetchall()
    return [DeadLetter(*r) for r in rows]


class LiveController(Controller):
    path = PREFIX
    tags = ["live"]
    guards = [requires_scope("read")]

    @get("/points", operation_id="livePoints", summary="Newest reading of every visible point", sync_to_thread=True)
    def points(self, database: NamedDependency[Database], principal: NamedDependency[Principal],
               data_source_id: int | None = Parameter(default=None)) -> list[PointValue]:
        with database.connection() as conn:
            return latest_points(conn, principal, data_source_id)

    @get("/meters", operation_id="liveMeters", summary="Newest reading and 15-minute energy of every visible meter",
         sync_to_thread=True)
    def meters(self, database: NamedDependency[Database], principal: NamedDependency[Principal]) -> list[MeterValue]:
        with database.connection() as conn:
            return latest_meters(conn, principal)

    @get("/data-sources", operation_id="liveDataSources", summary="Health of every visible data source",
         sync_to_thread=True)
    def data_sources(self, database: NamedDependency[Database], principal: NamedDependency[Principal]) -> list[DataSourceStatus]:
        with database.connection() as conn:
            return data_source_status(conn, principal)

    @get("/dead-letters", operation_id="liveDeadLetters", summary="Recent messages collectors could not accept",
         sync_to_thread=True)
    def dead_letters(self, database: NamedDependency[Database], principal: NamedDependency[Principal],
                     data_source_id: int | None = Parameter(default=None),
                     limit: int = Parameter(default=100, ge=1, le=1000)) -> list[DeadLetter]:
        with database.connection() as conn:
            return dead_letters(conn, principal, data_source_id, limit)


@dataclass
class Readiness:
    status: str          # "ready" or "not-ready"
    database: str        # "ok" or "unreachable"
    schema: str | None   # the migrated revision


class ReadinessController(Controller):
    """Readiness: the database answers and is migrated. (Liveness: /api/v1/health.)"""

    path = "/api/v1/ready"
    opt = {"exclude_from_auth": True}
    tags = ["operations"]

    @get(operation_id="ready", summary="Ready to serve: database reachable and migrated", sync_to_thread=True)
    def ready(self, database: NamedDependency[Database]) -> Response[Readiness]:
        try:
            with database.connection(timeout_s=2) as conn:
                row = conn.execute("SELECT version_num FROM public.alembic_version").fetchone()
        except Exception:
            return Response(Readiness("not-ready", "unreachable", None), status_code=503)
        if row is None:
            return Response(Readiness("not-ready", "ok", None), status_code=503)
        return Response(Readiness("ready", "ok", row[0]))
