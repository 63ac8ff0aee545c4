"""Database access shared by every process: URL resolution, engines, raw psycopg
connections, TimescaleDB edition detection and the SQL-file runner the migrations use."""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import datetime as dt

import psycopg
from psycopg.types.datetime import DatetimeDumper, TimestamptzLoader
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from app import SQL_DIR
from app.settings import Settings, get_settings


# Validity ranges use PostgreSQL's ±infinity timestamps (open-ended links). Python has no
# infinite datetime, so they map to datetime.min / datetime.max (UTC) both ways.
INFINITY = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
NEG_INFINITY = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class _InfinityLoader(TimestamptzLoader):
    def load(self, data):
        if data == b"infinity":
            return INFINITY
        if data == b"-infinity":
            return NEG_INFINITY
        return super().load(data)


class _InfinityDumper(DatetimeDumper):
    def dump(self, obj):
        if obj == INFINITY:
            return b"infinity"
        if obj == NEG_INFINITY:
            return b"-infinity"
        return super().dump(obj)


psycopg.adapters.register_loader("timestamptz", _InfinityLoader)
psycopg.adapters.register_dumper(dt.datetime, _InfinityDumper)


def database_url(settings: Settings | None = None) -> str:
    """libpq URL (postgresql://…): WATTLINE_DATABASE_URL, else the embedded cluster's."""
    settings = settings or get_settings()
    if settings.database_url:
        url = make_url(settings.database_url)
        return url.set(drivername="postgresql").render_as_string(hide_password=False)
    from app.embedded import get_cluster

    return get_cluster(settings).url()


def sqlalchemy_url(url: str | None = None) -> str:
    return make_url(url or database_url()).set(drivername="postgresql+psycopg").render_as_string(
        hide_password=False
    )


def redact(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, future=True)


def get_engine(url: str | None = None) -> Engine:
    return _engine(url or database_url())


@contextmanager
def connect(url: str | None = None, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A plain psycopg 3 connection (COPY, set work); commits on success, rolls back on error."""
    with psycopg.connect(url or database_url(), autocommit=autocommit) as conn:
        yield conn


def timescale_info(conn: psycopg.Connection) -> dict[str, str]:
    """PostgreSQL and TimescaleDB versions and the edition: 'apache' or 'timescale'."""
    row = conn.execute(
        """
        SELECT current_setting('server_version'),
               (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
               current_setting('timescaledb.license', true)
        """
    ).fetchone()
    return {"postgresql": row[0], "timescaledb": row[1] or "not installed", "edition": row[2] or "unknown"}


_DOWN_MARKER = re.compile(r"^--\s*migrate:down\s*$", re.MULTILINE)


def sql_file_parts(name: str) -> tuple[str, str]:
    """The upgrade and downgrade halves of sql/<name>.sql, split at `-- migrate:down`."""
    text = (SQL_DIR / name).read_text()
    parts = _DOWN_MARKER.split(text, maxsplit=1)
    return parts[0], (parts[1] if len(parts) > 1 else "")
