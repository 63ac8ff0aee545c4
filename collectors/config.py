"""Collector view of the configuration: enabled data sources with their points.

Loaded from the database by every collector so that they agree on what a point is; the
`fingerprint` changes whenever anything a collector depends on changes, which is how the
collector service notices configuration edits without a restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import psycopg

from app.protocols import parse_address, parse_connection
from app.readings import PointScaling


@dataclass(frozen=True)
class PointConfig:
    id: int
    name: str
    object_type: str
    address: Any          # app.protocols.*Address for the source's protocol
    scaling: PointScaling
    unit: str | None = None


@dataclass(frozen=True)
class SourceConfig:
    id: int
    name: str
    protocol: str
    connection: Any       # app.protocols.*Connection
    poll_interval_s: float
    points: tuple[PointConfig, ...] = field(default_factory=tuple)


_QUERY = """
SELECT ds.id, ds.name, ds.protocol, ds.connection, ds.poll_interval_s::float8,
       coalesce(json_agg(json_build_object(
           'id', p.id, 'name', p.name, 'object_type', p.object_type, 'address', p.address,
           'ratio', p.ratio, 'offset', p."offset", 'low_limit', p.low_limit,
           'high_limit', p.high_limit, 'unit', p.unit) ORDER BY p.id)
         FILTER (WHERE p.id IS NOT NULL), '[]')
FROM config.data_source ds
LEFT JOIN config.point p ON p.data_source_id = ds.id
WHERE ds.enabled AND (%(protocol)s::text IS NULL OR ds.protocol = %(protocol)s)
GROUP BY ds.id
ORDER BY ds.id
"""


def load_sources(conn: psycopg.Connection, protocol: str | None = None) -> list[SourceConfig]:
    sources = []
    for sid, name, proto, connection, interval, points in conn.execute(_QUERY, {"protocol": protocol}):
        sources.append(
            SourceConfig(
                id=sid, name=name, protocol=proto,
                connection=parse_connection(proto, connection),
                poll_interval_s=interval,
                points=tuple(
                    PointConfig(
                        id=p["id"], name=p["name"], object_type=p["object_type"],
                        address=parse_address(proto, p["address"]),
                        scaling=PointScaling(p["id"], p["ratio"], p["offset"], p["low_limit"], p["high_limit"]),
                        unit=p["unit"],
                    )
                    for p in points
                ),
            )
        )
    return sources


def fingerprint(conn: psycopg.Connection) -> str:
    """Hash of everything collectors read from the configuration."""
    rows = conn.execute(
        """SELECT json_agg(t ORDER BY t.id)::text FROM (
             SELECT ds.*, (SELECT json_agg(p ORDER BY p.id) FROM config.point p
                           WHERE p.data_source_id = ds.id) AS points
             FROM config.data_source ds) t"""
    ).fetchone()
    return hashlib.sha256((rows[0] or "").encode()).hexdigest()
