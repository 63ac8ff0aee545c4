"""Site configuration as code: the demo imports, round-trips, and bad files are refused
whole with errors that name their path."""

from pathlib import Path

import psycopg
import pytest
import yaml

from app import PROJECT_ROOT
from app.demo import load_demo_tariffs
from app.site import SiteFileError, export_site, export_site_yaml, import_site_file, parse_site_yaml, import_site

DEMO = PROJECT_ROOT / "examples" / "demo-site.yaml"

CONFIG_TABLES = [
    "cost_center", "space", "energy_category", "energy_item", "data_source", "point", "meter",
    "meter_point", "equipment", "combined_equipment", "combined_equipment_member", "tenant", "store",
    "shopfloor", "space_meter", "equipment_meter", "combined_equipment_meter", "tenant_meter",
    "store_meter", "shopfloor_meter",
]


@pytest.fixture(autouse=True)
def demo_tariffs(request):
    """The demo's tariff assignments name tariffs by label: store those first."""
    if "db_url" in request.fixturenames:
        load_demo_tariffs(request.getfixturevalue("db_url"))


def _counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM config.{t}").fetchone()[0] for t in CONFIG_TABLES}


def test_demo_site_imports(db_url, conn):
    report = import_site_file(DEMO)
    assert report.changed
    counts = _counts(conn)
    assert counts["meter"] >= 30
    assert counts["space"] >= 10
    kinds = dict(conn.execute("SELECT kind, count(*) FROM config.meter GROUP BY kind").fetchall())
    assert kinds["virtual"] >= 1 and kinds["offline"] >= 1 and kinds["physical"] >= 30
    categories = {r[0] for r in conn.execute(
        "SELECT DISTINCT c.name FROM config.meter m JOIN config.energy_category c ON c.id = m.category_id")}
    assert {"electricity", "water", "natural gas", "chilled water"} <= categories
    # sub-meters under main meters, two buildings with floors and rooms
    assert conn.execute("SELECT count(*) FROM config.meter WHERE master_meter_id IS NOT NULL").fetchone()[0] >= 10
    depth = conn.execute("SELECT max(depth) FROM config.space_closure").fetchone()[0]
    assert depth >= 4
    buildings = conn.execute("SELECT count(*) FROM config.space WHERE kind = 'building'").fetchone()[0]
    assert buildings >= 2
    assert conn.execute("SELECT count(*) FROM config.tenant").fetchone()[0] >= 1
    assert conn.execute("SELECT count(*) FROM config.store").fetchone()[0] >= 1
    # every physical meter is linked to an energy point
    unlinked = conn.execute(
        "SELECT count(*) FROM config.meter m WHERE kind = 'physical' AND NOT EXISTS "
        "(SELECT 1 FROM config.meter_point mp JOIN config.point p ON p.id = mp.point_id "
        " WHERE mp.meter_id = m.id AND p.object_type = 'energy')").fetchone()[0]
    assert unlinked == 0


def test_import_export_import_reports_no_changes(db_url, conn, tmp_path):
    import_site_file(DEMO)
    before = _counts(conn)
    again = import_site_file(DEMO)
    assert not again.changed, again.summary()
    assert again.summary().startswith("no changes")

    exported = tmp_path / "export.yaml"
    exported.write_text(export_site_yaml())
    report = import_site_file(exported)
    assert not report.changed, report.summary()
    assert _counts(conn) == before
    # the export is a fixed point: exporting again gives the same document
    assert export_site() == yaml.safe_load(exported.read_text())


def test_export_imports_into_an_empty_database(db_url, conn, tmp_path, server_url):
    import_site_file(DEMO)
    first = export_site()
    with psycopg.connect(db_url, autocommit=True) as c:
        for t in ["space_meter", "equipment_meter", "combined_equipment_meter", "tenant_meter", "store_meter",
                  "shopfloor_meter", "combined_equipment_member", "meter_point", "tenant", "store",
                  "shopfloor", "equipment", "combined_equipment"]:
            c.execute(f"DELETE FROM config.{t}")
        c.execute("DELETE FROM config.tariff_assignment")
        c.execute("UPDATE config.meter SET master_meter_id = NULL")
        c.execute("DELETE FROM config.meter")
        c.execute("DELETE FROM config.point")
        c.execute("DELETE FROM config.data_source")
        c.execute("UPDATE config.space SET parent_id = NULL")
        c.execute("DELETE FROM config.space")
        c.execute("DELETE FROM config.carbon_region")
        c.execute("DELETE FROM config.energy_item")
        c.execute("DELETE FROM config.energy_category")
        c.execute("DELETE FROM config.cost_center")
    path = tmp_path / "export.yaml"
    path.write_text(yaml.safe_dump(first, sort_keys=False, allow_unicode=True))
    import_site_file(path)
    assert export_site() == first


BAD_SITE = """
categories:
  - name: electricity
    unit: kWh
    items: [lighting]
data_sources:
  - name: plc
    protocol: modbus-tcp
    connection: {host: 127.0.0.1, port: 70000}
    points:
      - {name: AHU-1 kWh, object_type: energy, address: {register: 0, type: uint32}}
      - {name: Lamp, object_type: digital, address: {register: 3, function: 1, type: float32}}
spaces:
  - name: Campus
    kind: site
    timezone: Mars/Olympus
    children:
      - {name: Hall, kind: building, meters: [Ghost]}
meters:
  - {name: AHU-1, category: electricity, point: AHU-1 kWh}
  - {name: AHU-2, category: electricity, item: heating, point: AHU-1 kWh}
  - {name: Gas, category: gas}
  - {name: AHU-2b, category: electricity, point: AHU-2 kWh}
  - {name: Loop-A, category: electricity, master: Loop-B}
  - {name: Loop-B, category: electricity, master: Loop-A}
  - {name: AHU-1, category: electricity}
tenants:
  - {name: Acme, space: Campus/Nowhere, meters: [AHU-1], lease_start: 2025-02-01, lease_end: 2024-01-01}
"""


def test_bad_file_is_rejected_whole_with_precise_errors(db_url, conn, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SITE)
    with pytest.raises(SiteFileError) as info:
        import_site_file(path)
    errors = info.value.errors
    text = "\n".join(errors)
    # shape errors come first and alone: fix the time zone, then the references are checked
    assert "spaces[0].timezone: unknown IANA time zone 'Mars/Olympus'" in text
    assert _counts(conn) == {t: 0 for t in CONFIG_TABLES}

    path.write_text(BAD_SITE.replace("Mars/Olympus", "Europe/Stockholm"))
    with pytest.raises(SiteFileError) as info:
        import_site_file(path)
    errors = info.value.errors
    expected = [
        "data_sources[0].connection.port: Input should be less than or equal to 65535",
        "data_sources[0].points[1].address: function 1 reads bits: type must be 'bool', not 'float32'",
        "meters[1].item: 'heating' is not an item of category 'electricity'",
        "meters[2].category: unknown energy category 'gas'",
        "meters[3].point: unknown point 'AHU-2 kWh'",
        "meters[6].name: 'AHU-1' is already defined at meters[0]",
        "spaces[0].children[0].meters[0]: unknown meter 'Ghost'",
        "tenants[0].space: unknown space 'Campus/Nowhere'",
        "tenants[0].lease_end: 2024-01-01 is before lease_start 2025-02-01",
    ]
    for message in expected:
        assert any(e.startswith(message) for e in errors), f"missing {message!r} in:\n{text}"
    assert any("meters[4].master: master meters form a cycle" in e for e in errors), text
    assert _counts(conn) == {t: 0 for t in CONFIG_TABLES}


def test_yaml_syntax_error_names_line(db_url, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("categories:\n  - name: x\n    unit: [kWh\n")
    with pytest.raises(SiteFileError) as info:
        import_site_file(path)
    assert "line 4" in str(info.value) or "line 3" in str(info.value)


def test_unknown_field_is_named(db_url):
    with pytest.raises(SiteFileError) as info:
        parse_site_yaml("meters:\n  - {name: M, category: electricity, registr_max: 5}\n")
    assert "meters[0].registr_max: Extra inputs are not permitted" in str(info.value)


def test_dry_run_writes_nothing(db_url, conn):
    report = import_site_file(DEMO, dry_run=True)
    assert report.changed and report.summary().startswith("dry run")
    assert _counts(conn) == {t: 0 for t in CONFIG_TABLES}


def test_space_tree_rejects_cycles(db_url, conn):
    import_site_file(DEMO)
    campus = conn.execute("SELECT id FROM config.space WHERE name = 'North Campus'").fetchone()[0]
    room = conn.execute("SELECT id FROM config.space WHERE name = 'Lab 1'").fetchone()[0]
    with pytest.raises(psycopg.errors.CheckViolation, match="cycle"):
        conn.execute("UPDATE config.space SET parent_id = %s WHERE id = %s", (room, campus))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE config.space SET parent_id = id WHERE id = %s", (campus,))
    # a legal move still works
    b = conn.execute("SELECT id FROM config.space WHERE name = 'Building B'").fetchone()[0]
    conn.execute("UPDATE config.space SET parent_id = %s WHERE id = %s", (b, room))


def test_integrity_rules_live_in_the_database(db_url, conn):
    import_site_file(DEMO)
    # a meter with energy history-bearing links cannot lose its category
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("DELETE FROM config.energy_category WHERE name = 'electricity'")
    # sibling spaces have unique names
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO config.space (parent_id, name) "
                     "SELECT parent_id, name FROM config.space WHERE name = 'Building A'")
    # a point in use by a meter cannot be deleted
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("DELETE FROM config.point WHERE name = 'A-Main kWh'")
    # overlapping validity of a meter's point links is refused
    with pytest.raises(psycopg.errors.ExclusionViolation):
        conn.execute("INSERT INTO config.meter_point (meter_id, point_id, valid_from) "
                     "SELECT meter_id, point_id, '2025-01-01' FROM config.meter_point LIMIT 1")
    # deleting a space's meter link leaves the meter
    conn.execute("DELETE FROM config.space_meter")
    assert conn.execute("SELECT count(*) FROM config.meter").fetchone()[0] >= 30


def test_changing_a_meter_point_from_a_date_keeps_history(db_url, conn, tmp_path):
    import_site_file(DEMO)
    doc = yaml.safe_load(DEMO.read_text())
    meter = next(m for m in doc["meters"] if m["name"] == "A-Elevators")
    meter["point"] = "A-Server-Room kWh"
    meter["multiplier"] = 2.0
    meter["point_from"] = "2026-06-01T00:00:00Z"
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    report = import_site_file(path)
    assert report.updated["meters"] == 1, report.summary()
    rows = conn.execute(
        "SELECT p.name, mp.multiplier, mp.valid_from = '-infinity', mp.valid_to = 'infinity' "
        "FROM config.meter_point mp JOIN config.meter m ON m.id = mp.meter_id "
        "JOIN config.point p ON p.id = mp.point_id WHERE m.name = 'A-Elevators' ORDER BY mp.valid_from"
    ).fetchall()
    assert rows == [("A-Elevators kWh", 1.0, True, False), ("A-Server-Room kWh", 2.0, False, True)]
    assert not import_site_file(path).changed


def test_virtual_meter_formulas_are_checked(db_url, conn, tmp_path):
    doc = yaml.safe_load(DEMO.read_text())
    doc["meters"].append({"name": "Bad-1", "kind": "virtual", "category": "electricity",
                          "formula": "[A-Main] - [AHU-9]"})
    doc["meters"].append({"name": "Loop-1", "kind": "virtual", "category": "electricity",
                          "formula": "[Loop-2] + 1"})
    doc["meters"].append({"name": "Loop-2", "kind": "virtual", "category": "electricity",
                          "formula": "[Loop-1] * 2"})
    path = tmp_path / "formulas.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    with pytest.raises(SiteFileError) as info:
        import_site_file(path)
    text = str(info.value)
    n = len(doc["meters"])
    assert f"meters[{n - 3}].formula: unknown meter 'AHU-9'" in text
    assert "cycle" in text and "Loop-1" in text
    assert _counts(conn)["meter"] == 0


def test_offline_load_profile_round_trips(db_url, conn, tmp_path):
    doc = yaml.safe_load(DEMO.read_text())
    meter = next(m for m in doc["meters"] if m["name"] == "Parking-Lighting")
    meter["load_profile"] = [1.0] * 6 + [0.0] * 12 + [1.0] * 6
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    import_site_file(path)
    exported = export_site()
    assert next(m for m in exported["meters"] if m["name"] == "Parking-Lighting")["load_profile"] == meter["load_profile"]
    assert not import_site_file(path).changed
