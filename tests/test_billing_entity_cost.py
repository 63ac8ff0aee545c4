"""Cost rollups by TOU period and the entity cost rollups: every figure is compared with
sums computed independently from billing.meter_cost (and a membership written out by
hand), after the first run, after late data and after a meter link changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from app import rollups
from app.reports import engine, params
from app.tariffs import import_tariff
from jobs import billing
from jobs import rollups as rollups_job
from jobs.dirty import log_energy_change
from test_billing_job import assert_daily_cost_is_its_definition

ZONE = "Europe/Stockholm"            # reporting zone; the tariff is in UTC, so local days cut its hours
Z = ZoneInfo(ZONE)
UTC = dt.timezone.utc
START = dt.datetime(2025, 3, 20, tzinfo=UTC)   # across the spring DST change and a month end
END = dt.datetime(2025, 4, 10, tzinfo=UTC)
DAY = [0] * 8 + [1] * 12 + [0] * 4
TOU = {"label": "tou", "name": "TOU", "energyratestructure": [[{"rate": 0.10}], [{"rate": 0.30}]],
       "energyweekdayschedule": [DAY] * 12, "energyweekendschedule": [[0] * 24] * 12,
       "fixedchargefirstmeter": 7.5,
       "wattline": {"timezone": "UTC", "taxes": [{"name": "VAT", "percent": 25}]}}


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


@pytest.fixture
def site(conn, monkeypatch):
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", ZONE)
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, ZONE)
    ids = {"elec": one(conn, "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
                             "RETURNING id")}
    for item in ("lighting", "hvac"):
        ids[item] = one(conn, "INSERT INTO config.energy_item (category_id, name) VALUES (%s, %s) RETURNING id",
                        ids["elec"], item)
    ids["plant"] = one(conn, "INSERT INTO config.cost_center (name) VALUES ('plant') RETURNING id")
    ids["Site"] = one(conn, "INSERT INTO config.space (name) VALUES ('Site') RETURNING id")
    ids["Building"] = one(conn, "INSERT INTO config.space (name, parent_id) VALUES ('Building', %s) RETURNING id",
                          ids["Site"])
    ids["Floor"] = one(conn, "INSERT INTO config.space (name, parent_id) VALUES ('Floor', %s) RETURNING id",
                       ids["Building"])
    ids["Annex"] = one(conn, "INSERT INTO config.space (name, parent_id) VALUES ('Annex', %s) RETURNING id",
                       ids["Site"])
    meters = [  # name, item, counted, space, kWh per interval (scaled by the hour)
        ("main", None, True, "Site", 2.0),
        ("b1", "lighting", True, "Building", 1.0),
        ("f1", "hvac", True, "Floor", 0.5),
        ("f1 sub", "hvac", False, "Floor", 0.25),
        ("pump", "hvac", True, "Annex", 0.75),
    ]
    for name, item, counted, space, kwh in meters:
        ids[name] = one(conn, "INSERT INTO config.meter (name, category_id, item_id, is_counted, cost_center_id) "
                              "VALUES (%s, %s, %s, %s, %s) RETURNING id", name, ids["elec"], ids.get(item),
                        counted, ids["plant"])
        conn.execute("INSERT INTO config.space_meter VALUES (%s, %s)", (ids[space], ids[name]))
        conn.execute(
            "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
            "SELECT %s, g, %s * (1 + extract(hour FROM g AT TIME ZONE 'UTC')::int / 8.0), 1 "
            "FROM generate_series(%s::timestamptz, %s::timestamptz - interval '15 minutes', "
            "interval '15 minutes') g", (ids[name], kwh, START, END))
    ids["Pump"] = one(conn, "INSERT INTO config.equipment (name) VALUES ('Pump') RETURNING id")
    conn.execute("INSERT INTO config.equipment_meter VALUES (%s, %s, 'input')", (ids["Pump"], ids["pump"]))
    ids["Shop"] = one(conn, "INSERT INTO config.tenant (name) VALUES ('Shop') RETURNING id")
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (ids["Shop"], ids["b1"]))
    tariff = import_tariff(conn, TOU)
    conn.execute("INSERT INTO config.tariff_assignment (tariff_id, category_id, cost_center_id) VALUES (%s, %s, %s)",
                 (tariff, ids["elec"], ids["plant"]))
    with conn.transaction():
        rollups_job.run(conn, START, END)
    with conn.transaction():
        billing.run(conn, START, END)
    return ids


def membership(ids) -> dict[tuple[str, int], list[int]]:
    """Who counts where, written out by hand (not from energy.entity_meter)."""
    m = {k: ids[k] for k in ("main", "b1", "f1", "f1 sub", "pump")}
    return {
        ("space", ids["Site"]): [m["main"], m["b1"], m["f1"], m["pump"]],     # not the uncounted sub-meter
        ("space", ids["Building"]): [m["b1"], m["f1"]],
        ("space", ids["Floor"]): [m["f1"]],
        ("space", ids["Annex"]): [m["pump"]],
        ("equipment", ids["Pump"]): [m["pump"]],
        ("tenant", ids["Shop"]): [m["b1"]],
        ("cost_center", ids["plant"]): list(m.values()),
    }


def expected(conn, meter_ids, unit):
    """{(local day or month, period): (energy charge, allocated, total, intervals)} from meter_cost."""
    rows = conn.execute(
        "SELECT date_trunc(%s, ts AT TIME ZONE %s), coalesce(period, -1), sum(energy_charge), "
        "sum(allocated_charge), sum(total), count(*) FROM billing.meter_cost WHERE meter_id = ANY (%s) "
        "GROUP BY 1, 2", (unit, ZONE, meter_ids)).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def stored(conn, table, kind, entity_id):
    rows = conn.execute(
        f"SELECT bucket AT TIME ZONE %s, period, sum(energy_charge), sum(allocated_charge), sum(total), "
        f"sum(intervals) FROM billing.{table} WHERE entity_kind = %s AND entity_id = %s AND direction = 'input' "
        "GROUP BY 1, 2", (ZONE, kind, entity_id)).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def assert_entity_rollups_match(conn, members):
    for (kind, entity_id), meter_ids in members.items():
        assert stored(conn, "entity_cost_daily", kind, entity_id) == expected(conn, meter_ids, "day"), (kind, entity_id)
        assert stored(conn, "entity_cost_monthly", kind, entity_id) == expected(conn, meter_ids, "month"), \
            (kind, entity_id)


def test_entity_cost_rollups_equal_interval_cost_by_period(conn, site):
    members = membership(site)
    assert_entity_rollups_match(conn, members)
    # Both TOU periods occur, and the local days of the reporting zone cut the UTC tariff's hours.
    periods = {k[1] for k in expected(conn, members[("space", site["Site"])], "day")}
    assert periods == {0, 1}
    # Per-meter rollups carry the period too, and sum to the interval rows at every grain.
    for table, unit in (("cost_daily", "day"), ("cost_monthly", "month")):
        got = conn.execute(f"SELECT bucket AT TIME ZONE %s, period, sum(energy_charge), sum(allocated_charge), "
                           f"sum(total), sum(intervals) FROM billing.{table} WHERE meter_id = %s GROUP BY 1, 2",
                           (ZONE, site["f1"])).fetchall()
        assert {(r[0], r[1]): tuple(r[2:]) for r in got} == expected(conn, [site["f1"]], unit)
    # The days written from the priced arrays are the rows the SQL definition gives, with
    # the days a billing period cuts (the reporting zone is not the tariff's) from SQL.
    assert_daily_cost_is_its_definition(conn)
    assert one(conn, "SELECT to_regclass('billing.cost_hourly')") is None
    assert one(conn, "SELECT count(*) FROM billing.entity_dirty") == 0


def report(conn, **kw):
    kw.setdefault("granularity", "day")
    kw.setdefault("start", "2025-03-24")
    kw.setdefault("end", "2025-04-06")
    return engine.build(conn, params.parse(metric="cost", zone=ZONE, **kw))


def test_site_cost_by_tou_period_reads_the_entity_rollup(conn, site):
    counted = membership(site)[("space", site["Site"])]
    lo, hi = dt.datetime(2025, 3, 24, tzinfo=Z), dt.datetime(2025, 4, 7, tzinfo=Z)
    by_period = dict(conn.execute(
        "SELECT period::text, sum(total) FROM billing.meter_cost WHERE meter_id = ANY (%s) AND ts >= %s AND ts < %s "
        "GROUP BY 1", (counted, lo, hi)).fetchall())
    per_day = dict(conn.execute(
        "SELECT date_trunc('day', ts AT TIME ZONE %s), sum(total) FROM billing.meter_cost "
        "WHERE meter_id = ANY (%s) AND ts >= %s AND ts < %s GROUP BY 1", (ZONE, counted, lo, hi)).fetchall())

    rep = report(conn, entity="space", entity_id=site["Site"], by="tou_period")
    assert rep["source"] == "billing.entity_cost_daily"
    assert {g["key"]: g["value"] for g in rep["breakdown"]["groups"]} == pytest.approx(
        {k: float(v) for k, v in by_period.items()}, rel=1e-12)
    assert {dt.datetime.fromisoformat(str(p["bucket"])).astimezone(Z).replace(tzinfo=None): p["value"]
            for p in rep["series"]} == pytest.approx({k: float(v) for k, v in per_day.items()}, rel=1e-12)
    assert all(sum(p["groups"].values()) == pytest.approx(p["value"]) for p in rep["series"])
    assert rep["meters"] == 4 and rep["totals"]["present"] == 4 * (13 * 96 + 92)

    plain = report(conn, entity="space", entity_id=site["Site"])
    assert plain["source"] == "billing.entity_cost_daily"
    assert plain["totals"]["value"] == pytest.approx(float(sum(by_period.values())), rel=1e-12)

    # A year by month reads the monthly entity rollup; one meter reads its per-meter rollups.
    monthly = report(conn, entity="space", entity_id=site["Site"], by="tou_period", granularity="month",
                     start="2025-01-01", end="2025-12-31")
    assert monthly["source"] == "billing.entity_cost_monthly"
    whole = dict(conn.execute("SELECT period::text, sum(total) FROM billing.meter_cost WHERE meter_id = ANY (%s) "
                              "GROUP BY 1", (counted,)).fetchall())
    assert {g["key"]: g["value"] for g in monthly["breakdown"]["groups"]} == pytest.approx(
        {k: float(v) for k, v in whole.items()}, rel=1e-12)
    meter = report(conn, entity="meter", entity_id=site["f1"], by="tou_period")
    assert meter["source"] == "billing.cost_daily"
    f1 = dict(conn.execute("SELECT period::text, sum(total) FROM billing.meter_cost WHERE meter_id = %s "
                           "AND ts >= %s AND ts < %s GROUP BY 1", (site["f1"], lo, hi)).fetchall())
    assert {g["key"]: g["value"] for g in meter["breakdown"]["groups"]} == pytest.approx(
        {k: float(v) for k, v in f1.items()}, rel=1e-12)
    hourly = report(conn, entity="tenant", entity_id=site["Shop"], by="tou_period", granularity="hour",
                    start="2025-03-25", end="2025-03-25")
    assert hourly["source"] == "billing.meter_cost" and len(hourly["series"]) == 24
    assert {g["key"] for g in hourly["breakdown"]["groups"]} == {"0", "1"}
    assert hourly["totals"]["value"] == pytest.approx(float(one(
        conn, "SELECT sum(total) FROM billing.meter_cost WHERE meter_id = %s AND ts >= %s AND ts < %s", site["b1"],
        dt.datetime(2025, 3, 25, tzinfo=Z), dt.datetime(2025, 3, 26, tzinfo=Z))), rel=1e-12)


def test_late_data_recomputes_the_entity_cost_rollups(conn, site):
    before = stored(conn, "entity_cost_daily", "space", site["Site"])
    late = (dt.datetime(2025, 4, 2, 9, tzinfo=UTC), dt.datetime(2025, 4, 2, 13, tzinfo=UTC))
    conn.execute("UPDATE energy.meter_interval SET energy = energy * 3 WHERE meter_id = %s AND ts >= %s AND ts < %s",
                 (site["f1"], *late))
    log_energy_change(conn, *late, "late reading", [site["f1"]])
    with conn.transaction():
        rollups_job.run(conn, None, None)
    with conn.transaction():
        billing.run(conn, None, None)
    after = stored(conn, "entity_cost_daily", "space", site["Site"])
    assert after != before
    # The April bill changed (energy in period 1 and the tax on it), March did not.
    april = [k for k in after if k[0] >= dt.datetime(2025, 4, 1)]
    assert any(after[k] != before[k] for k in april)
    assert all(after[k] == before[k] for k in after if k[0] < dt.datetime(2025, 3, 31))
    assert_entity_rollups_match(conn, membership(site))
    assert_daily_cost_is_its_definition(conn)


def test_link_changes_recompute_the_whole_cost_history(conn, site):
    conn.execute("UPDATE config.space_meter SET space_id = %s WHERE meter_id = %s", (site["Annex"], site["f1"]))
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (site["Shop"], site["f1"]))
    conn.execute("UPDATE config.meter SET is_counted = true WHERE id = %s", (site["f1 sub"],))
    with conn.transaction():
        rollups_job.run(conn, None, None)          # consumes ops.entity_dirty for the energy rollups
    with conn.transaction():
        billing.run(conn, None, None)              # nothing to re-price: only the memberships changed
    members = membership(site)
    members[("space", site["Site"])].append(site["f1 sub"])
    members[("space", site["Building"])] = [site["b1"], site["f1 sub"]]   # the sub-meter now counts
    members[("space", site["Floor"])] = [site["f1 sub"]]
    members[("space", site["Annex"])] = [site["pump"], site["f1"]]
    members[("tenant", site["Shop"])] = [site["b1"], site["f1"]]
    assert_entity_rollups_match(conn, members)
    assert one(conn, "SELECT count(*) FROM billing.entity_dirty") == 0


def test_api_cost_views_sum_the_periods(conn, site):
    n_daily, n_keys = conn.execute(
        "SELECT count(*), count(DISTINCT (meter_id, bucket)) FROM api.cost_daily").fetchone()
    assert n_daily == n_keys                                      # one row per meter and day
    assert one(conn, "SELECT sum(total) FROM api.cost_monthly") == one(conn, "SELECT sum(total) FROM billing.meter_cost")
    counted = membership(site)[("space", site["Site"])]
    got = dict(conn.execute("SELECT day, total FROM api.entity_cost_daily WHERE entity_kind = 'space' "
                            "AND entity_id = %s", (site["Site"],)).fetchall())
    exp = dict(conn.execute("SELECT (ts AT TIME ZONE %s)::date, sum(total) FROM billing.meter_cost "
                            "WHERE meter_id = ANY (%s) GROUP BY 1", (ZONE, counted)).fetchall())
    assert got == exp
    meters = dict(conn.execute("SELECT month, meters FROM api.entity_cost_monthly WHERE entity_kind = 'cost_center' "
                               "AND entity_id = %s", (site["plant"],)).fetchall())
    assert set(meters.values()) == {5}
    assert one(conn, "SELECT sum(total) FROM api.entity_cost_monthly WHERE entity_kind = 'cost_center'") == \
        one(conn, "SELECT sum(total) FROM billing.meter_cost")
    by_period = dict(conn.execute(
        "SELECT coalesce(period, -1), sum(total) FROM api.entity_cost_period_monthly WHERE entity_kind = 'space' "
        "AND entity_id = %s GROUP BY 1", (site["Site"],)).fetchall())
    assert by_period == dict(conn.execute(
        "SELECT coalesce(period, -1), sum(total) FROM billing.meter_cost WHERE meter_id = ANY (%s) GROUP BY 1",
        (counted,)).fetchall())


def test_a_backfill_in_shares_of_time_gives_the_rows_of_one_run(conn, site):
    """A backfill prices the billing periods in shares of time on two connections (March
    on one, April on the other) and settles after both: the same interval cost, bills and
    cost rollups - the local days a period edge cuts included - as the one-transaction
    run the fixture made."""
    from jobs import runner
    from test_billing_job import _billing_state

    state = _billing_state(conn)
    conn.execute("TRUNCATE billing.meter_cost, billing.cost_daily, billing.cost_monthly, "
                 "billing.entity_cost_daily, billing.entity_cost_monthly, billing.bill_line, billing.bill, "
                 "billing.meter_watermark")
    conn.execute("DELETE FROM ops.job_run")
    runner.backfill(conn, START, END, stages=[billing], workers=2)
    runs = conn.execute("SELECT rows_touched FROM ops.job_run WHERE stage = 'billing' ORDER BY id").fetchall()
    assert len(runs) == 4                                   # prepare, two shares, finish
    assert runs[1][0] > 0 and runs[2][0] > 0                # each share priced a month
    assert _billing_state(conn) == state
    assert_entity_rollups_match(conn, membership(site))
    assert_daily_cost_is_its_definition(conn)
    assert one(conn, "SELECT count(*) FROM billing.meter_cost WHERE meter_id < 0") == 0
