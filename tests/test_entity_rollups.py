"""Entity rollups: a space tree with nested spaces and a non-counted sub-meter,
equipment input and output, combined equipment, tenant, shopfloor and cost center, by
category and by item; link changes recompute the history."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from app import rollups
from jobs import rollups as rollups_job
from jobs.dirty import log_energy_change

UTC = dt.timezone.utc
DAY1 = dt.datetime(2025, 1, 6, tzinfo=UTC)
DAY2 = DAY1 + dt.timedelta(days=1)


def one(conn, sql: str, *args):
    return conn.execute(sql, args).fetchone()[0]


def write_day(conn, meter_id: int, day: dt.datetime, energy: float) -> None:
    conn.execute(
        "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
        "SELECT %s, g, %s, 1 FROM generate_series(%s::timestamptz, %s::timestamptz + interval '1 day' "
        "- interval '15 minutes', interval '15 minutes') g",
        (meter_id, energy, day, day),
    )
    log_energy_change(conn, day, day + dt.timedelta(days=1), "test: intervals written", [meter_id])


def run(conn, start=None, end=None) -> int:
    with conn.transaction():
        return rollups_job.run(conn, start, end)


@pytest.fixture
def site(conn, monkeypatch):
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", "UTC")
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, "UTC")
    ids: dict[str, int] = {}
    ids["elec"] = one(conn, "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') RETURNING id")
    for item in ("lighting", "hvac"):
        ids[item] = one(conn, "INSERT INTO config.energy_item (category_id, name) VALUES (%s, %s) RETURNING id",
                        ids["elec"], item)
    ids["Site"] = one(conn, "INSERT INTO config.space (name, kind) VALUES ('Site', 'site') RETURNING id")
    ids["Building A"] = one(conn, "INSERT INTO config.space (name, parent_id) VALUES ('Building A', %s) RETURNING id",
                            ids["Site"])
    for floor in ("Floor 1", "Floor 2"):
        ids[floor] = one(conn, "INSERT INTO config.space (name, parent_id) VALUES (%s, %s) RETURNING id",
                         floor, ids["Building A"])
    ids["CC"] = one(conn, "INSERT INTO config.cost_center (name) VALUES ('CC') RETURNING id")
    meters = [  # name, item, counted, cost center, space, energy per interval on day 1
        ("main", None, True, "CC", "Site", 2.0),
        ("f1", "lighting", True, None, "Floor 1", 1.0),
        ("f2", "hvac", True, "CC", "Floor 2", 0.5),
        ("f2 sub", "hvac", False, None, "Floor 2", 0.25),
    ]
    for name, item, counted, cc, space, energy in meters:
        ids[name] = one(
            conn,
            "INSERT INTO config.meter (name, category_id, item_id, is_counted, cost_center_id) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            name, ids["elec"], ids.get(item), counted, ids.get(cc),
        )
        conn.execute("INSERT INTO config.space_meter VALUES (%s, %s)", (ids[space], ids[name]))
        write_day(conn, ids[name], DAY1, energy)
    write_day(conn, ids["f1"], DAY2, 1.0)
    ids["AHU"] = one(conn, "INSERT INTO config.equipment (name) VALUES ('AHU') RETURNING id")
    conn.execute("INSERT INTO config.equipment_meter VALUES (%s, %s, 'input'), (%s, %s, 'output')",
                 (ids["AHU"], ids["f2"], ids["AHU"], ids["f2 sub"]))
    ids["Plant"] = one(conn, "INSERT INTO config.combined_equipment (name) VALUES ('Plant') RETURNING id")
    conn.execute("INSERT INTO config.combined_equipment_member VALUES (%s, %s)", (ids["Plant"], ids["AHU"]))
    conn.execute("INSERT INTO config.combined_equipment_meter VALUES (%s, %s, 'input')", (ids["Plant"], ids["f1"]))
    ids["T"] = one(conn, "INSERT INTO config.tenant (name) VALUES ('T') RETURNING id")
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (ids["T"], ids["f1"]))
    ids["Line"] = one(conn, "INSERT INTO config.shopfloor (name) VALUES ('Line') RETURNING id")
    conn.execute("INSERT INTO config.shopfloor_meter VALUES (%s, %s)", (ids["Line"], ids["main"]))
    run(conn)
    return ids


def daily(conn, kind: str, entity_id: int, direction: str = "input") -> list[tuple]:
    return conn.execute(
        "SELECT day, energy, meters, expected, present FROM api.entity_energy_daily "
        "WHERE entity_kind = %s AND entity_id = %s AND direction = %s ORDER BY bucket",
        (kind, entity_id, direction),
    ).fetchall()


def test_space_subtree_counts_only_counted_meters(conn, site):
    # Site: main 192 + f1 96 + f2 48 (f2 sub not counted); day 2 only f1 reported.
    assert daily(conn, "space", site["Site"]) == [
        (dt.date(2025, 1, 6), Decimal(336), 3, 288, 288),
        (dt.date(2025, 1, 7), Decimal(96), 3, 288, 96),
    ]
    assert daily(conn, "space", site["Building A"])[0] == (dt.date(2025, 1, 6), Decimal(144), 2, 192, 192)
    assert daily(conn, "space", site["Floor 2"]) == [(dt.date(2025, 1, 6), Decimal(48), 1, 96, 96)]


def test_by_item_and_monthly(conn, site):
    items = conn.execute(
        "SELECT item, energy FROM api.entity_energy_item_daily WHERE entity_kind = 'space' AND entity_id = %s "
        "AND day = '2025-01-06' ORDER BY item NULLS FIRST", (site["Site"],)).fetchall()
    assert items == [(None, Decimal(192)), ("hvac", Decimal(48)), ("lighting", Decimal(96))]
    month = conn.execute(
        "SELECT month, energy, meters, expected, present FROM api.entity_energy_monthly "
        "WHERE entity_kind = 'space' AND entity_id = %s", (site["Site"],)).fetchall()
    assert month == [(dt.date(2025, 1, 1), Decimal(432), 3, 3 * 31 * 96, 384)]


def test_equipment_combined_tenant_shopfloor_cost_center(conn, site):
    day1 = dt.date(2025, 1, 6)
    assert daily(conn, "equipment", site["AHU"]) == [(day1, Decimal(48), 1, 96, 96)]
    assert daily(conn, "equipment", site["AHU"], "output") == [(day1, Decimal(24), 1, 96, 96)]
    assert daily(conn, "combined_equipment", site["Plant"])[0] == (day1, Decimal(144), 2, 192, 192)
    # The plant reported (inputs) on day 2 while its output meter did not: NULL, all missing.
    assert daily(conn, "combined_equipment", site["Plant"], "output") == [
        (day1, Decimal(24), 1, 96, 96), (dt.date(2025, 1, 7), None, 1, 96, 0)]
    assert daily(conn, "tenant", site["T"])[0] == (day1, Decimal(96), 1, 96, 96)
    assert daily(conn, "shopfloor", site["Line"]) == [(day1, Decimal(192), 1, 96, 96)]
    assert daily(conn, "cost_center", site["CC"]) == [(day1, Decimal(240), 2, 192, 192)]


def test_link_changes_recompute_history(conn, site):
    conn.execute("DELETE FROM config.space_meter WHERE space_id = %s AND meter_id = %s", (site["Floor 2"], site["f2"]))
    conn.execute("INSERT INTO config.space_meter VALUES (%s, %s)", (site["Floor 1"], site["f2"]))
    run(conn)
    assert daily(conn, "space", site["Floor 1"])[0] == (dt.date(2025, 1, 6), Decimal(144), 2, 192, 192)
    assert daily(conn, "space", site["Floor 2"]) == []
    assert daily(conn, "space", site["Site"])[0][1] == Decimal(336)
    # The sub-meter starts counting: it reaches every space above it.
    conn.execute("UPDATE config.meter SET is_counted = true WHERE id = %s", (site["f2 sub"],))
    run(conn)
    assert daily(conn, "space", site["Floor 2"]) == [(dt.date(2025, 1, 6), Decimal(24), 1, 96, 96)]
    assert daily(conn, "space", site["Site"])[0][1] == Decimal(360)
    # A meter leaves the cost center; a floor moves under the site directly.
    conn.execute("UPDATE config.meter SET cost_center_id = NULL WHERE id = %s", (site["main"],))
    conn.execute("UPDATE config.space SET parent_id = %s WHERE id = %s", (site["Site"], site["Floor 1"]))
    run(conn)
    assert daily(conn, "cost_center", site["CC"]) == [(dt.date(2025, 1, 6), Decimal(48), 1, 96, 96)]
    assert daily(conn, "space", site["Building A"]) == [(dt.date(2025, 1, 6), Decimal(24), 1, 96, 96)]


def test_incremental_equals_full_refresh(conn, site):
    write_day(conn, site["f2"], DAY2, 0.5)
    conn.execute("UPDATE energy.meter_interval SET energy = 3 WHERE meter_id = %s AND ts = %s", (site["main"], DAY1))
    log_energy_change(conn, DAY1, DAY1 + dt.timedelta(minutes=15), "test: late", [site["main"]])
    run(conn)
    snapshot = {t: conn.execute(f"SELECT * FROM energy.{t} ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
                for t in ("entity_daily", "entity_monthly")}
    assert daily(conn, "space", site["Site"])[0][1] == Decimal(337)
    conn.execute("TRUNCATE energy.entity_daily, energy.entity_monthly")
    run(conn, dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2025, 2, 1, tzinfo=UTC))
    for t, rows in snapshot.items():
        assert conn.execute(f"SELECT * FROM energy.{t} ORDER BY 1, 2, 3, 4, 5, 6").fetchall() == rows, t
