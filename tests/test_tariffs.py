"""Tariff validation (every problem named by its field), URDB import as is, and a real-
shaped URDB tariff priced end to end through the billing stage."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from app import PROJECT_ROOT
from app.tariffs import TariffError, import_tariff, validate, validate_all
from test_billing_job import assign, make_site, run_stage, write_energy, assert_interval_cost_sums_to_bills

FIXTURE = Path(__file__).parent / "fixtures" / "urdb_tou_tiered_demand.json"
UTC = dt.timezone.utc


@pytest.fixture
def urdb() -> dict:
    return json.loads(FIXTURE.read_text())


def problems(data) -> list[str]:
    with pytest.raises(TariffError) as exc:
        validate_all(data)
    return exc.value.problems


def test_fixture_is_valid_with_every_field(urdb):
    (t,) = validate_all(urdb)
    for field in ("energyratestructure", "energyweekdayschedule", "energyweekendschedule", "demandratestructure",
                  "demandweekdayschedule", "demandweekendschedule", "flatdemandstructure", "flatdemandmonths",
                  "fixedchargefirstmeter", "fixedchargeunits", "mincharge", "minchargeunits"):
        assert getattr(t, field) is not None, field
    assert t.energyratestructure[0][0].adj == 0.002 and t.energyratestructure[0][0].unit == "kWh"
    assert t.wattline.timezone == "America/Chicago" and t.demand_minutes == 15
    assert t.model_extra["sector"] == "Commercial"          # URDB descriptive fields are kept


def test_ragged_schedule_is_named(urdb):
    t = urdb["items"][0]
    t["energyweekdayschedule"][3] = t["energyweekdayschedule"][3][:23]
    assert problems(t) == ["energyweekdayschedule[3]: 23 hours, expected 24"]


def test_period_without_rate_is_named(urdb):
    t = urdb["items"][0]
    t["energyratestructure"] = t["energyratestructure"][:2]     # period 2 (winter) loses its rate
    assert problems(t) == [
        "energyratestructure[2]: period 2 is used by energyweekdayschedule but has no rate",
        "energyratestructure[2]: period 2 is used by energyweekendschedule but has no rate"]


def test_tiers_not_ascending_are_named(urdb):
    t = urdb["items"][0]
    t["energyratestructure"][0][1]["max"] = 5000                # below tier 0's 10000
    assert problems(t) == ["energyratestructure[0][1].max: tiers not ascending (5000.0 after 10000.0)"]


def test_every_problem_is_reported_at_once(urdb):
    t = urdb["items"][0]
    t["demandweekendschedule"] = t["demandweekendschedule"][:11]
    t["flatdemandmonths"] = [0] * 12
    t["flatdemandmonths"][7] = 3
    t["fixedchargeunits"] = "$/year"
    t["energyratestructure"][1][0]["unit"] = "therms"
    t["wattline"]["timezone"] = "Mars/Olympus"
    t["wattline"]["currency"] = "usd"
    got = problems(t)
    assert "wattline.timezone: Value error, unknown IANA time zone 'Mars/Olympus'" in got
    assert "wattline.currency: Value error, 'usd' is not an ISO 4217 code such as USD or SEK" in got
    t["wattline"]["timezone"], t["wattline"]["currency"] = "UTC", "USD"
    assert problems(t) == [
        "demandweekendschedule: 11 months, expected 12",
        "energyratestructure[1][0].unit: 'therms' is not one of kWh, kWh daily, kWh/kW, kWh/kW daily",
        "energyratestructure[1]: tiers mix units ['kWh', 'therms']",
        "flatdemandstructure[3]: period 3 is used by flatdemandmonths but has no rate",
        "fixedchargeunits: '$/year' is not one of $/month, $/day",
    ]


def test_type_errors_name_the_field():
    assert problems({"name": "x", "energyratestructure": [[{"rate": "cheap"}]],
                     "energyweekdayschedule": [[0] * 24] * 12, "energyweekendschedule": [[0] * 24] * 12}) == [
        "energyratestructure[0][0].rate: Input should be a valid number, unable to parse string as a number"]
    assert problems({"name": "x", "fixedchargefirstmeter": 5, "wattline": {"power_factor": {
        "threshold": 0.9, "method": "kvarh"}}}) == [
        "wattline.power_factor.rate: required for method 'kvarh' (price per kvarh)"]


def test_invalid_tariff_is_not_stored(conn, urdb):
    bad = copy.deepcopy(urdb)
    bad["items"][0]["energyweekdayschedule"][0] = [0] * 25
    with pytest.raises(TariffError, match=r"energyweekdayschedule\[0\]: 25 hours, expected 24"):
        import_tariff(conn, bad)
    assert conn.execute("SELECT count(*) FROM config.tariff").fetchone()[0] == 0


def test_urdb_json_imports_as_is_and_prices(conn, urdb):
    tid = import_tariff(conn, urdb)
    assert import_tariff(conn, urdb) == tid                     # same file again: nothing changes
    row = conn.execute("SELECT label, timezone, currency, valid_from, version, source FROM config.tariff").fetchone()
    assert row[:5] == ("5f0c2e1a5457a3a1b8e7d001", "America/Chicago", "USD",
                       dt.datetime(2025, 1, 1, tzinfo=UTC), 1)
    assert row[5] == urdb["items"][0]                            # kept exactly as imported

    cat, cc, (m,) = make_site(conn)
    rcat, _, (q,) = make_site(conn, category="reactive energy", unit="kvarh")
    conn.execute("INSERT INTO config.reactive_meter VALUES (%s, %s)", (m, q))
    assign(conn, tid, category=cat, cost_center=cc)
    # July 2025 in Chicago (CDT, UTC−5): 1 kWh and 0.75 kvarh every 15 minutes.
    start, end = dt.datetime(2025, 7, 1, 5, tzinfo=UTC), dt.datetime(2025, 8, 1, 5, tzinfo=UTC)
    write_energy(conn, m, start, end, 1.0)
    write_energy(conn, q, start, end, 0.75)
    run_stage(conn, start, end)

    lines = conn.execute(
        "SELECT l.kind, l.period, l.tier, l.quantity, l.amount FROM billing.bill_line l JOIN billing.bill b "
        "ON b.id = l.bill_id WHERE b.entity_kind = 'meter' AND b.entity_id = %s ORDER BY l.line_no", (m,)).fetchall()
    # July 2025: 23 weekdays, 4 July (Friday) a holiday → 22 on-peak days × 6 h (14–20) × 4 kWh = 528 kWh
    # in period 1; 2976 − 528 = 2448 kWh in period 0. Both within tier 0 (< 10000 kWh).
    # Energy: 2448 × (0.08 + 0.002) = 200.736 → 200.74; 528 × (0.20 + 0.002) = 106.656 → 106.66
    # TOU demand 4 kW: period 0 × 2.50 = 10.00, period 1 × (12.00 + 0.50) = 50.00; flat 4 kW × 4.00 = 16.00
    # Power factor: P 2976 kWh, Q 2232 kvarh → PF 0.8 < 0.9; allowance 2976 × √0.19 / 0.9 = 1441.34 kvarh,
    # excess 790.66 kvarh × 0.01 = 7.91. Fixed 45.00. Minimum 150.00 < subtotal 436.31: not applied.
    # Sales tax 6.25 % × 436.31 = 27.269… → 27.27. Total 463.58.
    excess = 2232 - 2976 * math.sqrt(0.19) / 0.9
    assert [(k, p, t, a) for k, p, t, _, a in lines] == [
        ("energy", 0, 0, Decimal("200.74")), ("energy", 1, 0, Decimal("106.66")),
        ("demand", 0, 0, Decimal("10.00")), ("demand", 1, 0, Decimal("50.00")), ("demand", 0, 0, Decimal("16.00")),
        ("power_factor", None, None, Decimal("7.91")), ("fixed", None, None, Decimal("45.00")),
        ("tax", None, None, Decimal("27.27"))]
    assert float(lines[0][3]) == 2448 and float(lines[1][3]) == 528
    assert float(lines[5][3]) == pytest.approx(excess, abs=1e-6)
    total = conn.execute("SELECT total FROM billing.bill WHERE entity_kind = 'meter' AND entity_id = %s", (m,)).fetchone()[0]
    assert total == Decimal("463.58")
    # The reactive meter has no tariff of its own: it is not billed.
    assert conn.execute("SELECT count(*) FROM billing.bill WHERE entity_kind = 'meter' AND entity_id = %s",
                        (q,)).fetchone()[0] == 0
    assert_interval_cost_sums_to_bills(conn)


def test_cli_validate_and_import(db_url, urdb, tmp_path):
    bad = copy.deepcopy(urdb["items"][0])
    bad["energyweekdayschedule"][3] = bad["energyweekdayschedule"][3][:23]
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    cmd = [sys.executable, "-c", "from app.cli import main; main()"]
    res = subprocess.run([*cmd, "tariff", "validate", str(bad_file)], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert res.returncode == 2 and "energyweekdayschedule[3]: 23 hours, expected 24" in res.stderr
    res = subprocess.run([*cmd, "tariff", "import", str(FIXTURE)], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*cmd, "tariff", "list"], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert "5f0c2e1a5457a3a1b8e7d001" in res.stdout
