"""The report engine over HTTP against a real database: every number is compared with a
sum computed independently from energy.meter_interval in plain SQL."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from litestar.testing import TestClient

from app import rollups
from app.api import create_app
from app.apikeys import issue_key
from app.reports import engine, params
from app.scopes import DataScope
from jobs import rollups as rollups_job

ZONE = "Europe/Stockholm"
Z = ZoneInfo(ZONE)
START = dt.datetime(2025, 3, 24, tzinfo=Z)     # a Monday; 2025-03-30 is the spring DST change
END = dt.datetime(2025, 4, 7, tzinfo=Z)
DATA_FROM = dt.datetime(2025, 3, 10, tzinfo=Z)  # data starts two weeks earlier (comparisons)
MISSING_DAY = dt.datetime(2025, 4, 2, tzinfo=Z)  # no meter has data on this local day


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


@pytest.fixture
def site(conn, monkeypatch):
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", ZONE)
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, ZONE)
    ids: dict[str, int] = {}
    for name, unit, kgce in (("electricity", "kWh", 0.1229), ("cooling", "kWh", 0), ("gas", "m3", 1.2143)):
        ids[name] = one(conn, "INSERT INTO config.energy_category (name, unit, kgce_factor) VALUES (%s, %s, %s) "
                              "RETURNING id", name, unit, kgce)
    for item in ("lighting", "hvac"):
        ids[item] = one(conn, "INSERT INTO config.energy_item (category_id, name) VALUES (%s, %s) RETURNING id",
                        ids["electricity"], item)
    ids["Site"] = one(conn, "INSERT INTO config.space (name, kind, area_m2) VALUES ('Site', 'site', 2000) "
                            "RETURNING id")
    ids["Building"] = one(conn, "INSERT INTO config.space (name, parent_id, area_m2) VALUES ('Building', %s, 800) "
                                "RETURNING id", ids["Site"])
    ids["Floor"] = one(conn, "INSERT INTO config.space (name, parent_id) VALUES ('Floor', %s) RETURNING id",
                       ids["Building"])
    meters = [  # name, category, item, counted, space, kWh per interval (scaled by hour of day)
        ("main", "electricity", None, True, "Site", 2.0),
        ("b1", "electricity", "lighting", True, "Building", 1.0),
        ("f1", "electricity", "hvac", True, "Floor", 0.5),
        ("f1 sub", "electricity", "hvac", False, "Floor", 0.2),
        ("gas", "gas", None, True, "Site", 3.0),
        ("chiller in", "electricity", "hvac", True, "Building", 0.25),
        ("chiller out", "cooling", None, None, None, 1.0),
    ]
    for name, cat, item, counted, space, kwh in meters:
        ids[name] = one(conn, "INSERT INTO config.meter (name, category_id, item_id, is_counted) "
                              "VALUES (%s, %s, %s, %s) RETURNING id", name, ids[cat], ids.get(item),
                        counted if counted is not None else True)
        if space:
            conn.execute("INSERT INTO config.space_meter VALUES (%s, %s)", (ids[space], ids[name]))
        # Energy varies with the local hour; exact binary fractions keep the sums exact.
        conn.execute(
            "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
            "SELECT %s, g, %s * (1 + extract(hour FROM g AT TIME ZONE %s)::int / 8.0), 1 "
            "FROM generate_series(%s::timestamptz, %s::timestamptz - interval '15 minutes', "
            "interval '15 minutes') g",
            (ids[name], kwh, ZONE, DATA_FROM, END))
    conn.execute("UPDATE config.meter SET master_meter_id = %s WHERE id = %s", (ids["f1"], ids["f1 sub"]))
    # Gaps: a whole local day without data; b1 misses two hours on 2025-03-25.
    conn.execute("DELETE FROM energy.meter_interval WHERE ts >= %s AND ts < %s",
                 (MISSING_DAY, MISSING_DAY + dt.timedelta(days=1)))
    conn.execute("DELETE FROM energy.meter_interval WHERE meter_id = %s AND ts >= %s AND ts < %s",
                 (ids["b1"], dt.datetime(2025, 3, 25, 10, tzinfo=Z), dt.datetime(2025, 3, 25, 12, tzinfo=Z)))
    ids["Chiller"] = one(conn, "INSERT INTO config.equipment (name, space_id) VALUES ('Chiller', %s) RETURNING id",
                         ids["Building"])
    conn.execute("INSERT INTO config.equipment_meter VALUES (%s, %s, 'input'), (%s, %s, 'output')",
                 (ids["Chiller"], ids["chiller in"], ids["Chiller"], ids["chiller out"]))
    ids["Tenant"] = one(conn, "INSERT INTO config.tenant (name, space_id, area_m2) VALUES ('Shop', %s, 100) "
                              "RETURNING id", ids["Building"])
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (ids["Tenant"], ids["b1"]))
    with conn.transaction():
        rollups_job.run(conn, DATA_FROM, END)
    return ids


@pytest.fixture
def client(db_url, conn):
    key = issue_key(conn, "reports", ["read"]).secret
    with TestClient(app=create_app(db_url)) as c:
        c.headers["X-API-Key"] = key
        yield c


def get(client, metric="energy", **q):
    q.setdefault("from", "2025-03-24")
    q.setdefault("to", "2025-04-06")
    return client.get(f"/api/v1/reports/{metric}", params=q)


def meter_ids(conn, *names):
    return [r[0] for r in conn.execute("SELECT id FROM config.meter WHERE name = ANY (%s) ORDER BY id",
                                       (list(names),)).fetchall()]


def expected_series(conn, ids, granularity, lo, hi):
    """Independent sums from energy.meter_interval, per local bucket (no gap-filling)."""
    unit = {"15min": None, "hour": "hour", "day": "day", "week": "week", "month": "month"}[granularity]
    bucket = "ts" if unit is None else f"date_trunc('{unit}', ts AT TIME ZONE '{ZONE}')"
    rows = conn.execute(
        f"SELECT {bucket} AS b, sum(energy::numeric)::float8, count(energy) FROM energy.meter_interval "
        "WHERE meter_id = ANY (%s) AND ts >= %s AND ts < %s GROUP BY 1 ORDER BY 1", (ids, lo, hi)).fetchall()
    return rows


def local_key(iso: str, granularity: str):
    t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if granularity == "15min":
        return t
    return t.astimezone(Z).replace(tzinfo=None)


def test_space_daily_energy_equals_independent_sums_with_nulls_and_completeness(client, conn, site):
    r = get(client, entity="space", id=site["Site"], granularity="day", category="electricity")
    assert r.status_code == 200, r.text
    rep = r.json()
    counted = meter_ids(conn, "main", "b1", "f1", "chiller in")          # not "f1 sub", not gas
    exp = {b: (v, n) for b, v, n in expected_series(conn, counted, "day", START, END)}
    assert rep["source"] == "energy.entity_daily" and rep["unit"] == "kWh" and rep["meters"] == 4
    assert len(rep["series"]) == 14
    for pt in rep["series"]:
        day = local_key(pt["bucket"], "day")
        if day == MISSING_DAY.replace(tzinfo=None):
            assert pt["value"] is None and pt["present"] == 0
        else:
            assert pt["value"] == exp[day][0]
            assert pt["present"] == exp[day][1]
        assert pt["expected"] == 4 * (92 if day == dt.datetime(2025, 3, 30) else 96)
    total = sum(v for v, _ in exp.values())
    assert rep["totals"]["value"] == pytest.approx(total, rel=1e-12)
    assert rep["totals"]["expected"] == 4 * (13 * 96 + 92)
    assert rep["totals"]["present"] == sum(n for _, n in exp.values())
    assert rep["completeness"]["ratio"] == round(rep["totals"]["present"] / rep["totals"]["expected"], 6)
    assert rep["intensity"]["value"] == pytest.approx(total / 2000)
    assert rep["intensity"]["unit"] == "kWh/m²"


def test_hourly_and_15min_read_the_meter_rollups_and_intervals(client, conn, site):
    b = get(client, entity="space", id=site["Building"], granularity="hour", category="electricity",
            **{"from": "2025-03-25", "to": "2025-03-25"}).json()
    ids = meter_ids(conn, "b1", "f1", "chiller in")
    exp = {k: v for k, v, _ in expected_series(conn, ids, "hour", dt.datetime(2025, 3, 25, tzinfo=Z),
                                               dt.datetime(2025, 3, 26, tzinfo=Z))}
    assert b["source"] == "energy.meter_hourly" and len(b["series"]) == 24
    assert {local_key(p["bucket"], "hour"): p["value"] for p in b["series"]} == exp
    assert [p["present"] for p in b["series"]][10:12] == [8, 8]            # b1 missing 10:00–12:00
    q = get(client, entity="meter", id=site["f1"], granularity="15min",
            **{"from": "2025-03-25T06:00", "to": "2025-03-25T07:00"}).json()
    exp = expected_series(conn, [site["f1"]], "15min", dt.datetime(2025, 3, 25, 6, tzinfo=Z),
                          dt.datetime(2025, 3, 25, 7, tzinfo=Z))
    assert q["source"] == "energy.meter_interval"
    assert [(local_key(p["bucket"], "15min"), p["value"]) for p in q["series"]] == [(b, v) for b, v, _ in exp]


def test_dst_day_has_23_hours_and_92_intervals(client, conn, site):
    r = get(client, entity="meter", id=site["main"], granularity="hour", **{"from": "2025-03-30", "to": "2025-03-30"})
    rep = r.json()
    assert len(rep["series"]) == 23
    exp = one(conn, "SELECT sum(energy::numeric)::float8 FROM energy.meter_interval WHERE meter_id = %s "
                    "AND ts >= %s AND ts < %s", site["main"], dt.datetime(2025, 3, 30, tzinfo=Z),
              dt.datetime(2025, 3, 31, tzinfo=Z))
    assert rep["totals"]["value"] == pytest.approx(exp) and rep["totals"]["expected"] == 92
    d = get(client, entity="meter", id=site["main"], granularity="day", **{"from": "2025-03-30", "to": "2025-03-30"})
    assert d.json()["series"][0]["expected"] == 92 and d.json()["series"][0]["value"] == pytest.approx(exp)


def test_breakdowns_child_item_category(client, conn, site):
    rep = get(client, entity="space", id=site["Site"], by="child", category="electricity").json()
    groups = {g["key"]: g["value"] for g in rep["breakdown"]["groups"]}
    lo, hi = START, END

    def total(*names):
        return one(conn, "SELECT sum(energy::numeric)::float8 FROM energy.meter_interval WHERE meter_id = ANY (%s) "
                         "AND ts >= %s AND ts < %s", meter_ids(conn, *names), lo, hi)

    # The Building child holds its nested Floor's counted meter; the non-counted sub-meter counts nowhere.
    assert groups == pytest.approx({"(this space)": total("main"), "Building": total("b1", "f1", "chiller in")})
    assert sum(g["share"] for g in rep["breakdown"]["groups"]) == pytest.approx(1, abs=1e-5)
    item = get(client, entity="space", id=site["Building"], by="item", category="electricity").json()
    assert {g["key"]: g["value"] for g in item["breakdown"]["groups"]} == pytest.approx(
        {"lighting": total("b1"), "hvac": total("f1", "chiller in")})
    assert item["source"] == "energy.entity_daily"
    # Several categories: native units need a choice, kgce sums them.
    bad = get(client, entity="space", id=site["Site"])
    assert bad.status_code == 422 and bad.json()["field"] == "category"
    kg = get(client, entity="space", id=site["Site"], by="category", unit="kgce").json()
    cats = {g["key"]: g["value"] for g in kg["breakdown"]["groups"]}
    assert kg["unit"] == "kgce"
    assert cats["gas"] == pytest.approx(total("gas") * 1.2143)
    assert cats["electricity"] == pytest.approx(total("main", "b1", "f1", "chiller in") * 0.1229)


def test_comparison_previous_and_last_year(client, conn, site):
    rep = get(client, entity="meter", id=site["main"], compare="previous",
              **{"from": "2025-03-31", "to": "2025-04-06"}).json()
    c = rep["comparison"]
    prev = one(conn, "SELECT sum(energy::numeric)::float8 FROM energy.meter_interval WHERE meter_id = %s "
                     "AND ts >= %s AND ts < %s", site["main"], dt.datetime(2025, 3, 24, tzinfo=Z),
               dt.datetime(2025, 3, 31, tzinfo=Z))
    assert local_key(c["from"], "day") == dt.datetime(2025, 3, 24) and c["total"] == pytest.approx(prev)
    assert c["change"] == pytest.approx(rep["totals"]["value"] - prev)
    assert c["change_pct"] == pytest.approx((rep["totals"]["value"] - prev) / prev * 100, abs=1e-3)
    assert len(c["series"]) == 7
    ly = get(client, entity="meter", id=site["main"], compare="last_year").json()["comparison"]
    assert ly["total"] is None and all(p["value"] is None for p in ly["series"])


def test_peak_and_base_load_from_15_minute_energy(client, conn, site):
    rep = get(client, entity="space", id=site["Building"], category="electricity",
              **{"from": "2025-03-24", "to": "2025-03-24"}).json()
    ids = meter_ids(conn, "b1", "f1", "chiller in")
    peak, base = conn.execute(
        "SELECT max(s) * 4, percentile_cont(0.05) WITHIN GROUP (ORDER BY s * 4) FROM ("
        " SELECT ts, sum(energy::numeric) AS s FROM energy.meter_interval WHERE meter_id = ANY (%s) "
        " AND ts >= %s AND ts < %s GROUP BY ts) x", (ids, START, START + dt.timedelta(days=1))).fetchone()
    assert rep["load"]["resolution"] == "15min"
    assert rep["load"]["peak_kw"] == pytest.approx(float(peak))
    assert rep["load"]["base_kw"] == pytest.approx(float(base))


def test_efficiency_of_a_chiller(client, conn, site):
    rep = get(client, "efficiency", entity="equipment", id=site["Chiller"]).json()
    sums = dict(conn.execute(
        "SELECT meter_id, sum(energy::numeric) FROM energy.meter_interval WHERE meter_id = ANY (%s) "
        "AND ts >= %s AND ts < %s GROUP BY 1", (meter_ids(conn, "chiller in", "chiller out"), START,
                                                  END)).fetchall())
    assert rep["totals"]["value"] == pytest.approx(float(sums[site["chiller out"]] / sums[site["chiller in"]]))
    assert rep["totals"]["value"] == pytest.approx(4.0)
    assert rep["unit"] == "kWh/kWh"
    assert any(p["value"] is None for p in rep["series"])                  # the day without data
    assert get(client, "efficiency", entity="space", id=site["Site"]).json()["field"] == "entity"


def test_weekly_and_tenant_reports(client, conn, site):
    rep = get(client, entity="tenant", id=site["Tenant"], granularity="week").json()
    assert [local_key(p["bucket"], "week") for p in rep["series"]] == [
        dt.datetime(2025, 3, 24), dt.datetime(2025, 3, 31)]
    exp = {b: v for b, v, _ in expected_series(conn, [site["b1"]], "week", START, END)}
    assert [p["value"] for p in rep["series"]] == pytest.approx(list(exp.values()))
    assert rep["intensity"]["area_m2"] == 100


def test_bad_parameters_are_problems_naming_the_field(client, site):
    cases = [
        (dict(entity="space", id=site["Site"], **{"from": "yesterday"}), "from"),
        (dict(entity="space", id=site["Site"], **{"from": "2025-03-05", "to": "2025-03-01"}), "to"),
        (dict(entity="meter", id=site["main"], granularity="15min", **{"from": "2020-01-01", "to": "2025-01-01"}),
         "granularity"),
        (dict(entity="meter", id=site["main"], category="steam"), "category"),
    ]
    for q, field in cases:
        r = get(client, **q)
        assert r.status_code == 422, (q, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["field"] == field
    assert get(client, entity="space", id=99999).status_code == 404
    unavailable = get(client, "cost", entity="space", id=site["Site"])    # billing has not run here
    assert unavailable.status_code == 409 and "billing.cost_daily" in unavailable.json()["detail"]
    assert get(client, entity="space", id=site["Site"], granularity="fortnight").status_code == 400
    assert client.get("/api/v1/reports/energy", params={"entity": "space", "id": 1, "from": "2025-01-01",
                                                        "to": "2025-01-02"}, headers={"X-API-Key": "nope"}
                      ).status_code == 401


def test_data_scope_limits_the_engine(conn, site):
    p = params.parse(metric="energy", entity="space", entity_id=site["Site"], granularity="day",
                     start="2025-03-24", end="2025-03-30", zone=ZONE, category="electricity")
    floor_only = DataScope(frozenset({site["Building"]}), None)
    with pytest.raises(engine.Forbidden):
        engine.build(conn, p, floor_only)                                   # a parent space
    inside = params.parse(metric="energy", entity="space", entity_id=site["Floor"], granularity="day",
                          start="2025-03-24", end="2025-03-30", zone=ZONE)
    assert engine.build(conn, inside, floor_only)["totals"]["value"] is not None
    tenant_only = DataScope(None, frozenset({site["Tenant"]}))
    with pytest.raises(engine.Forbidden):
        engine.build(conn, inside, tenant_only)


def test_a_key_scoped_to_a_building_cannot_read_the_site_directly_or_by_export(client, conn, site):
    issued = issue_key(conn, "building only", ["read"])
    conn.execute("UPDATE config.api_key SET restricted = true WHERE id = %s", (issued.key.id,))
    conn.execute("INSERT INTO config.api_key_space (api_key_id, space_id) VALUES (%s, %s)",
                 (issued.key.id, site["Building"]))
    h = {"X-API-Key": issued.secret}
    june = {"from": "2025-03-24", "to": "2025-03-30", "category": "electricity"}
    for q in ({"entity": "space", "id": site["Site"]}, {"entity": "space", "id": site["Site"], "format": "xlsx"},
              {"entity": "meter", "id": site["main"]}):
        r = client.get("/api/v1/reports/energy", params={**june, **q}, headers=h)
        assert r.status_code == 403, (q, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = client.get("/api/v1/reports/sankey", params={"id": site["Site"], "from": "2025-03-24", "to": "2025-03-24"},
                   headers=h)
    assert r.status_code == 403
    for q in ({"entity": "space", "id": site["Building"]}, {"entity": "space", "id": site["Floor"]},
              {"entity": "meter", "id": site["f1"]}, {"entity": "tenant", "id": site["Tenant"]}):
        assert client.get("/api/v1/reports/energy", params={**june, **q}, headers=h).status_code == 200, q


def test_carbon_metrics_equal_the_interval_emissions(client, conn, site):
    from jobs import carbon

    for basis, k in (("location", 0.5), ("market", 0.25)):
        conn.execute("INSERT INTO config.emission_factor (category_id, basis, scope, kgco2e_per_unit, source) "
                     "VALUES (%s, %s, 2, %s, 'test')", (site["electricity"], basis, k))
    with conn.transaction():
        carbon.run(conn, DATA_FROM, END)
    lo, hi = START, dt.datetime(2025, 3, 31, tzinfo=Z)
    ids = meter_ids(conn, "b1", "f1", "chiller in")
    loc, mkt = conn.execute(
        "SELECT sum(kgco2e_location::numeric)::float8, sum(kgco2e_market::numeric)::float8 "
        "FROM carbon.meter_emission WHERE meter_id = ANY (%s) AND ts >= %s AND ts < %s", (ids, lo, hi)).fetchone()
    q = {"entity": "space", "id": site["Building"], "from": "2025-03-24", "to": "2025-03-30"}
    r = client.get("/api/v1/reports/carbon", params=q).json()
    assert r["unit"] == "kgCO2e" and r["source"] == "carbon.meter_daily"
    assert r["totals"]["value"] == pytest.approx(loc)
    assert client.get("/api/v1/reports/carbon-market", params=q).json()["totals"]["value"] == pytest.approx(mkt)
    assert mkt == pytest.approx(loc / 2)
