"""Small builders for processing tests: a data source, energy points, physical meters
and their links, and readings written the way collectors write them."""

from __future__ import annotations

import datetime as dt

import psycopg

from app.readings import write_readings

UTC = dt.timezone.utc


def t(text: str) -> dt.datetime:
    """'2026-01-05 10:15' (UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def data_source(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT id FROM config.data_source WHERE name = 'test-source'").fetchone()
    if row:
        return row[0]
    return conn.execute(
        "INSERT INTO config.data_source (name, protocol) VALUES ('test-source', 'http') RETURNING id"
    ).fetchone()[0]


def category(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT id FROM config.energy_category WHERE name = 'electricity'").fetchone()
    if row:
        return row[0]
    return conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') RETURNING id"
    ).fetchone()[0]


def point(conn: psycopg.Connection, name: str, object_type: str = "energy") -> int:
    return conn.execute(
        "INSERT INTO config.point (data_source_id, name, object_type) VALUES (%s, %s, %s) RETURNING id",
        (data_source(conn), name, object_type),
    ).fetchone()[0]


def meter(
    conn: psycopg.Connection,
    name: str,
    *,
    register_max: float | None = None,
    hourly_low: float | None = None,
    hourly_high: float | None = None,
    multiplier: float = 1.0,
) -> tuple[int, int]:
    """A physical meter fed by a new energy point for all time: (meter_id, point_id)."""
    pid = point(conn, f"{name}-register")
    mid = conn.execute(
        "INSERT INTO config.meter (name, category_id, register_max, hourly_low, hourly_high) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (name, category(conn), register_max, hourly_low, hourly_high),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO config.meter_point (meter_id, point_id, multiplier) VALUES (%s, %s, %s)",
        (mid, pid, multiplier),
    )
    return mid, pid


def readings(conn: psycopg.Connection, point_id: int, series: list[tuple[dt.datetime, float]]) -> None:
    with conn.transaction():
        write_readings(conn, [(point_id, ts, value, 0) for ts, value in series])


def intervals(conn: psycopg.Connection, meter_id: int) -> list[tuple[dt.datetime, float, int]]:
    return conn.execute(
        "SELECT ts, energy, quality FROM energy.meter_interval WHERE meter_id = %s ORDER BY ts", (meter_id,)
    ).fetchall()


def every(start: dt.datetime, step_min: float, values: list[float]) -> list[tuple[dt.datetime, float]]:
    return [(start + dt.timedelta(minutes=step_min * i), v) for i, v in enumerate(values)]
