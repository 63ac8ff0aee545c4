"""Shared set-up for the carbon tests: categories, regions, meters and intervals written
directly (with the energy rollups the carbon stage reads), factor files as text."""

from __future__ import annotations

import datetime as dt

from app.carbon import import_factors, import_intensity, parse_factor_csv, _read_csv, INTENSITY_FIELDS

UTC = dt.timezone.utc


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def category(conn, name: str, unit: str, kgce: float) -> int:
    return conn.execute(
        "INSERT INTO config.energy_category (name, unit, kgce_factor) VALUES (%s, %s, %s) RETURNING id",
        (name, unit, kgce),
    ).fetchone()[0]


def meter(conn, name: str, category_id: int, region: str | None = None, via_space: bool = False) -> int:
    region_id = None
    if region:
        conn.execute("INSERT INTO config.carbon_region (name) VALUES (%s) ON CONFLICT DO NOTHING", (region,))
        region_id = conn.execute("SELECT id FROM config.carbon_region WHERE name = %s", (region,)).fetchone()[0]
    meter_id = conn.execute(
        "INSERT INTO config.meter (name, category_id, grid_region_id) VALUES (%s, %s, %s) RETURNING id",
        (name, category_id, None if via_space else region_id),
    ).fetchone()[0]
    if via_space:
        site = conn.execute(
            "INSERT INTO config.space (name, kind, grid_region_id) VALUES (%s, 'site', %s) RETURNING id",
            (f"site of {name}", region_id),
        ).fetchone()[0]
        room = conn.execute(
            "INSERT INTO config.space (name, parent_id, kind) VALUES ('room', %s, 'room') RETURNING id", (site,)
        ).fetchone()[0]
        conn.execute("INSERT INTO config.space_meter (space_id, meter_id) VALUES (%s, %s)", (room, meter_id))
    return meter_id


def intervals(conn, meter_id: int, start: dt.datetime, count: int, energy: float) -> None:
    conn.execute(
        "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
        "SELECT %s, g, %s, 1 FROM generate_series(%s::timestamptz, %s::timestamptz, interval '15 minutes') g",
        (meter_id, energy, start, start + dt.timedelta(minutes=15 * (count - 1))),
    )


def factors(conn, csv_text: str) -> None:
    with conn.transaction():
        import_factors(conn, parse_factor_csv(csv_text), "test factors")


def intensity(conn, csv_text: str) -> None:
    with conn.transaction():
        import_intensity(conn, _read_csv(csv_text, "test series", INTENSITY_FIELDS, ()), "test series")


def emission_rows(conn, meter_id: int) -> list[tuple]:
    return conn.execute(
        "SELECT ts, scope, kgco2e_location::float8, kgco2e_market::float8, kgce::float8, carbon.flag_names(flags) "
        "FROM carbon.meter_emission WHERE meter_id = %s ORDER BY ts",
        (meter_id,),
    ).fetchall()


def energy_rollups(conn) -> None:
    """Fill the energy rollups over every interval, as jobs.rollups does before jobs.carbon."""
    for granularity in ("hour", "day", "month"):
        conn.execute("SELECT energy.refresh_meter_rollup(%s, '-infinity', 'infinity')", (granularity,))
