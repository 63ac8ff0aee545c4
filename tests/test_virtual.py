"""Virtual meters stage: hand-computed results, a missing input, flags carried from the
inputs, chains of virtual meters, incremental recomputation and formula changes."""

from __future__ import annotations

import datetime as dt

import pytest

from jobs import virtual
from jobs.dirty import log_energy_change

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 6, 8, tzinfo=UTC)
Q = dt.timedelta(minutes=15)


def add_meter(conn, name: str, formula: str | None = None) -> int:
    cat = conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
        "ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit RETURNING id"
    ).fetchone()[0]
    return conn.execute(
        "INSERT INTO config.meter (name, kind, category_id, formula) VALUES (%s, %s, %s, %s) RETURNING id",
        (name, "virtual" if formula else "physical", cat, formula),
    ).fetchone()[0]


def put(conn, meter_id: int, values: list[float | None], quality: int = 1, start: dt.datetime = T0) -> None:
    """Intervals from `start`, one per value (None: no row), logged as normalize would."""
    rows = [(meter_id, start + i * Q, v, quality) for i, v in enumerate(values) if v is not None]
    conn.cursor().executemany(
        "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (meter_id, ts) DO UPDATE SET energy = EXCLUDED.energy, quality = EXCLUDED.quality",
        rows,
    )
    log_energy_change(conn, start, start + len(values) * Q, "normalize: intervals rewritten", [meter_id])


def series(conn, meter_id: int) -> list[tuple]:
    return conn.execute(
        "SELECT ts, energy, quality FROM energy.meter_interval WHERE meter_id = %s ORDER BY ts", (meter_id,)
    ).fetchall()


def run(conn, start=None, end=None) -> int:
    with conn.transaction():
        return virtual.run(conn, start, end)


@pytest.fixture
def site(conn):
    ids = {n: add_meter(conn, n) for n in ("main", "chiller", "AHU-1")}
    ids["net"] = add_meter(conn, "net", "main - (chiller + [AHU-1])")
    put(conn, ids["main"], [10.0, 10.0, 12.0, 11.0])
    put(conn, ids["chiller"], [3.0, 4.0, 5.0, 2.0])
    put(conn, ids["AHU-1"], [2.0, None, 1.5, 1.0])       # the second interval is missing
    conn.execute("UPDATE energy.meter_interval SET quality = 4 WHERE meter_id = %s AND ts = %s",
                 (ids["chiller"], T0 + 2 * Q))          # estimated across a gap
    return ids


def test_missing_input_gives_null_flagged_missing_never_zero(conn, site):
    assert run(conn) == 4
    assert series(conn, site["net"]) == [
        (T0, 5.0, 16),
        (T0 + Q, None, 16 | 256),
        (T0 + 2 * Q, 5.5, 16 | 4),      # the chiller's estimated flag is carried over
        (T0 + 3 * Q, 8.0, 16),
    ]
    logged = conn.execute(
        "SELECT meter_id, range_start, range_end FROM ops.dirty_range WHERE reason LIKE 'virtual:%'"
    ).fetchall()
    assert logged == [(site["net"], T0, T0 + 4 * Q)]


def test_second_run_without_changes_does_nothing(conn, site):
    run(conn)
    assert run(conn) == 0


def test_late_input_recomputes_only_its_range(conn, site):
    run(conn)
    put(conn, site["AHU-1"], [0.5], start=T0 + Q)     # the missing interval arrives
    assert run(conn) == 2                              # one removed, one written
    assert series(conn, site["net"])[1] == (T0 + Q, 5.5, 16)


def test_chain_of_virtual_meters_in_dependency_order(conn, site):
    half = add_meter(conn, "half net", "[net] / 2")      # created before its input is computed
    run(conn)
    assert series(conn, half) == [
        (T0, 2.5, 16), (T0 + Q, None, 16 | 256), (T0 + 2 * Q, 2.75, 16 | 4), (T0 + 3 * Q, 4.0, 16),
    ]
    put(conn, site["main"], [20.0], start=T0 + 3 * Q)
    run(conn)
    assert series(conn, half)[3] == (T0 + 3 * Q, 8.5, 16)    # (20 - (2 + 1)) / 2


def test_formula_change_recomputes_whole_history(conn, site):
    run(conn)
    conn.execute("UPDATE config.meter SET formula = 'main - chiller' WHERE id = %s", (site["net"],))
    run(conn)
    assert [r[1] for r in series(conn, site["net"])] == [7.0, 6.0, 7.0, 9.0]


def test_explicit_range_recomputes_everything_in_it(conn, site):
    run(conn)
    conn.execute("UPDATE energy.meter_interval SET energy = 99 WHERE meter_id = %s", (site["net"],))
    assert run(conn, T0 + Q, T0 + 3 * Q) == 4
    assert [r[1] for r in series(conn, site["net"])] == [99.0, None, 5.5, 99.0]


def test_bad_formula_is_skipped_and_others_still_run(conn, site, caplog):
    conn.execute("INSERT INTO config.meter (name, kind, category_id, formula) "
                 "SELECT 'broken', 'virtual', category_id, 'main + ghost' FROM config.meter WHERE name = 'main'")
    run(conn)
    assert "virtual meter 'broken' skipped: unknown meter(s) 'ghost'" in caplog.text
    assert len(series(conn, site["net"])) == 4
