"""Report exports over HTTP: Excel with native charts and a totals row, plotly HTML and
PNG, PDF, the energy-flow Sankey with its losses node, cost by TOU period from the
billing stage, and the tenant bill."""

from __future__ import annotations

import datetime as dt
import io

import openpyxl
import pytest
from litestar.testing import TestClient
from openpyxl.chart import LineChart, PieChart

from app import rollups
from app.api import create_app
from app.apikeys import issue_key
from app.tariffs import import_tariff
from jobs import billing
from jobs import rollups as rollups_job

UTC = dt.timezone.utc
START = dt.datetime(2025, 1, 1, tzinfo=UTC)
END = dt.datetime(2025, 2, 1, tzinfo=UTC)
DAY = [0] * 8 + [1] * 12 + [0] * 4          # period 1 from 08:00 to 20:00
TOU = {"label": "tou", "name": "TOU", "energyratestructure": [[{"rate": 0.10}], [{"rate": 0.30}]],
       "energyweekdayschedule": [DAY] * 12, "energyweekendschedule": [DAY] * 12}


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


@pytest.fixture
def site(conn, monkeypatch):
    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", "UTC")
    from app.settings import get_settings

    get_settings.cache_clear()
    rollups.rebuild(conn, "UTC")
    ids = {"elec": one(conn, "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
                             "RETURNING id")}
    for item in ("lighting", "hvac"):
        ids[item] = one(conn, "INSERT INTO config.energy_item (category_id, name) VALUES (%s, %s) RETURNING id",
                        ids["elec"], item)
    ids["Site"] = one(conn, "INSERT INTO config.space (name, area_m2) VALUES ('Site', 500) RETURNING id")
    for name, item, counted, kwh in (("main", "lighting", True, 4.0), ("pump meter", "hvac", False, 1.0),
                                     ("fan meter", "hvac", False, 2.0)):
        ids[name] = one(conn, "INSERT INTO config.meter (name, category_id, item_id, is_counted) "
                              "VALUES (%s, %s, %s, %s) RETURNING id", name, ids["elec"], ids[item], counted)
        conn.execute("INSERT INTO config.space_meter VALUES (%s, %s)", (ids["Site"], ids[name]))
        conn.execute("INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
                     "SELECT %s, g, %s, 1 FROM generate_series(%s::timestamptz, %s::timestamptz - "
                     "interval '15 minutes', interval '15 minutes') g", (ids[name], kwh, START, END))
    conn.execute("UPDATE config.meter SET master_meter_id = %s WHERE id = ANY (%s)",
                 (ids["main"], [ids["pump meter"], ids["fan meter"]]))
    ids["Pump"] = one(conn, "INSERT INTO config.equipment (name) VALUES ('Pump') RETURNING id")
    conn.execute("INSERT INTO config.equipment_meter VALUES (%s, %s, 'input')", (ids["Pump"], ids["pump meter"]))
    ids["Shop"] = one(conn, "INSERT INTO config.tenant (name, space_id, area_m2) VALUES ('Shop', %s, 50) "
                            "RETURNING id", ids["Site"])
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (ids["Shop"], ids["main"]))
    tariff = import_tariff(conn, TOU)
    conn.execute("INSERT INTO config.tariff_assignment (tariff_id, category_id, tenant_id) VALUES (%s, %s, %s)",
                 (tariff, ids["elec"], ids["Shop"]))
    with conn.transaction():
        rollups_job.run(conn, START, END)
    with conn.transaction():
        billing.run(conn, START, END)
    return ids


@pytest.fixture
def client(db_url, conn):
    key = issue_key(conn, "exports", ["read"]).secret
    with TestClient(app=create_app(db_url)) as c:
        c.headers["X-API-Key"] = key
        yield c


def report(client, fmt, metric="energy", **q):
    q = {"entity": "space", "from": "2025-01-01", "to": "2025-01-14", "format": fmt, **q}
    return client.get(f"/api/v1/reports/{metric}", params=q)


def test_xlsx_has_line_and_pie_charts_totals_row_and_parameters(client, site):
    js = report(client, "json", id=site["Site"], by="item", compare="previous").json()
    r = report(client, "xlsx", id=site["Site"], by="item", compare="previous")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats"), r.content[:400]
    assert "attachment" in r.headers["content-disposition"]
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == ["Summary", "Detail", "Parameters"]
    charts = wb["Summary"]._charts
    assert {type(c) for c in charts} == {LineChart, PieChart}
    detail = list(wb["Detail"].iter_rows(values_only=True))
    assert detail[0][:2] == ("Bucket (local)", "Energy (kWh)")
    assert len(detail) == 1 + 14 + 1
    assert detail[1][0] == dt.datetime(2025, 1, 1)
    assert detail[-1][0] == "Total" and detail[-1][1] == pytest.approx(js["totals"]["value"])
    assert detail[-1][1] == pytest.approx(14 * 96 * 4.0)                  # only the counted meter
    params = dict(wb["Parameters"].iter_rows(values_only=True))
    assert params["Time zone"] == "UTC" and params["Unit"] == "kWh"
    assert params["Completeness"] == 1 and params["Entity"] == "Site"


def test_html_png_pdf(client, site):
    html = report(client, "html", id=site["Site"], by="item")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "Plotly.newPlot" in html.text and '"type":"pie"' in html.text.replace(" ", "")
    png = report(client, "png", id=site["Site"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    pdf = report(client, "pdf", id=site["Site"], compare="previous")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def test_sankey_has_sub_meters_equipment_and_losses(client, site):
    r = client.get("/api/v1/reports/sankey", params={"id": site["Site"], "from": "2025-01-01", "to": "2025-01-01"})
    assert r.status_code == 200, r.text
    flow = r.json()
    label = {i: n["label"] for i, n in enumerate(flow["nodes"])}
    links = {(label[x["source"]], label[x["target"]]): x["value"] for x in flow["links"]}
    assert links == {("main", "pump meter"): 96.0, ("main", "fan meter"): 192.0, ("pump meter", "Pump"): 96.0,
                     ("main", "Losses / unmetered (electricity)"): 384.0 - 96 - 192}
    assert [n["kind"] for n in flow["nodes"]].count("losses") == 1
    html = client.get("/api/v1/reports/sankey", params={"id": site["Site"], "from": "2025-01-01",
                                                        "to": "2025-01-01", "format": "html"})
    assert '"type":"sankey"' in html.text.replace(" ", "") and "Losses" in html.text


def test_cost_by_tou_period_equals_interval_cost(client, conn, site):
    r = report(client, "json", metric="cost", entity="tenant", id=site["Shop"], by="tou_period")
    assert r.status_code == 200, r.text
    rep = r.json()
    exp = dict(conn.execute("SELECT period::text, sum(total)::float8 FROM billing.meter_cost WHERE meter_id = %s "
                            "AND ts >= %s AND ts < %s GROUP BY 1", (site["main"], START, START + dt.timedelta(days=14))
                            ).fetchall())
    assert {g["key"]: g["value"] for g in rep["breakdown"]["groups"]} == pytest.approx(exp)
    assert rep["source"] == "billing.entity_cost_daily"          # the tenant's cost rollup, by period
    # 12 h at 0.30 and 12 h at 0.10, 16 kWh per hour, per day
    assert exp == pytest.approx({"1": 14 * 12 * 16 * 0.30, "0": 14 * 12 * 16 * 0.10})
    daily = report(client, "json", metric="cost", entity="tenant", id=site["Shop"]).json()
    assert daily["source"] == "billing.entity_cost_daily"
    assert daily["totals"]["value"] == pytest.approx(sum(exp.values()))
    assert daily["unit"] == "USD"


def test_tenant_bill_json_xlsx_pdf(client, conn, site):
    r = client.get(f"/api/v1/tenants/{site['Shop']}/bill", params={"month": "2025-01"})
    assert r.status_code == 200, r.text
    bill = r.json()
    total = one(conn, "SELECT total::float8 FROM billing.bill WHERE entity_kind = 'tenant' AND entity_id = %s "
                      "AND is_current", site["Shop"])
    assert bill["total"] == pytest.approx(total) and len(bill["bills"]) == 1
    assert sum(ln["amount"] for ln in bill["bills"][0]["lines"]) == pytest.approx(total)
    x = client.get(f"/api/v1/tenants/{site['Shop']}/bill", params={"month": "2025-01", "format": "xlsx"})
    rows = list(openpyxl.load_workbook(io.BytesIO(x.content))["Bill"].iter_rows(values_only=True))
    assert rows[-1][0] == "Total" and rows[-1][9] == pytest.approx(total)
    p = client.get(f"/api/v1/tenants/{site['Shop']}/bill", params={"month": "2025-01", "format": "pdf"})
    assert p.content.startswith(b"%PDF")
    assert client.get(f"/api/v1/tenants/{site['Shop']}/bill", params={"month": "2025-13"}).status_code in (400, 422)
    empty = client.get(f"/api/v1/tenants/{site['Shop']}/bill", params={"month": "2024-12"}).json()
    assert empty["bills"] == []
