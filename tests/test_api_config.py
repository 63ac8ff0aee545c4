"""Configuration CRUD through HTTP: every entity family, validation naming the field,
database integrity errors as 409/422 problems, filtering, sorting, pagination, the space
tree, site import and export, and the audit trail of each write."""

from __future__ import annotations

import json

import pytest
import yaml
from litestar.testing import TestClient

from api_helpers import login, make_user, two_buildings
from app.api import create_app
from app.api.services.config import ENTITIES

PROBLEM = "application/problem+json"


@pytest.fixture
def client(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("WATTLINE_DATA_DIR", str(tmp_path))
    with TestClient(app=create_app(db_url)) as c:
        yield c


@pytest.fixture
def eng(client, conn):
    make_user(conn, "eng", "engineer")
    return login(client, "eng")


def test_every_entity_family_lists(client, eng):
    for entity in ENTITIES:
        r = client.get(f"/api/v1/{entity.path}", headers=eng)
        assert r.status_code == 200, (entity.path, r.text)
        assert set(r.json()) == {"items", "total", "limit", "offset"}


def test_create_read_update_delete_a_space(client, eng, conn):
    r = client.post("/api/v1/spaces", headers=eng, json={"name": "HQ", "kind": "building", "area_m2": 1200.5})
    assert r.status_code == 201, r.text
    hq = r.json()
    assert hq["name"] == "HQ" and hq["area_m2"] == 1200.5 and hq["parent_id"] is None
    assert client.get(f"/api/v1/spaces/{hq['id']}", headers=eng).json() == hq
    r = client.patch(f"/api/v1/spaces/{hq['id']}", headers=eng, json={"timezone": "Europe/Stockholm"})
    assert r.status_code == 200 and r.json()["timezone"] == "Europe/Stockholm" and r.json()["name"] == "HQ"
    assert client.delete(f"/api/v1/spaces/{hq['id']}", headers=eng).status_code == 204
    assert client.get(f"/api/v1/spaces/{hq['id']}", headers=eng).status_code == 404
    actions = conn.execute("SELECT action, actor FROM ops.audit_log WHERE entity = 'space' ORDER BY id").fetchall()
    assert [a for a, _ in actions] == ["create", "update", "delete"]
    assert all(actor.startswith("user:eng#") for _, actor in actions)


def test_schema_errors_name_the_field(client, eng):
    r = client.post("/api/v1/spaces", headers=eng, json={"name": "X", "colour": "red"})
    assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM)
    assert "colour" in r.text
    r = client.post("/api/v1/spaces", headers=eng, json={"kind": "building"})
    assert r.status_code == 400 and "name" in r.text


def test_integrity_errors_become_problems_naming_the_field(client, eng):
    root = client.post("/api/v1/spaces", headers=eng, json={"name": "root"}).json()
    child = client.post("/api/v1/spaces", headers=eng, json={"name": "child", "parent_id": root["id"]}).json()
    # unique sibling name
    r = client.post("/api/v1/spaces", headers=eng, json={"name": "child", "parent_id": root["id"]})
    assert r.status_code == 409 and r.json()["field"] in ("name", "parent_id")
    # unknown parent
    r = client.post("/api/v1/spaces", headers=eng, json={"name": "orphan", "parent_id": 999999})
    assert r.status_code == 422 and r.json()["field"] == "parent_id"
    # cycle
    r = client.patch(f"/api/v1/spaces/{root['id']}", headers=eng, json={"parent_id": child["id"]})
    assert r.status_code == 409 and r.json()["field"] == "parent_id" and "cycle" in r.json()["detail"]
    # check constraint (time zone)
    r = client.patch(f"/api/v1/spaces/{root['id']}", headers=eng, json={"timezone": "Mars/Olympus"})
    assert r.status_code == 422 and r.json()["field"] == "timezone"
    # still referenced
    r = client.delete(f"/api/v1/spaces/{root['id']}", headers=eng)
    assert r.status_code == 409 and "still used by space" in r.json()["detail"]
    # unique name on another table
    client.post("/api/v1/energy-categories", headers=eng, json={"name": "gas", "unit": "m3"})
    r = client.post("/api/v1/energy-categories", headers=eng, json={"name": "gas", "unit": "m3"})
    assert r.status_code == 409 and r.json()["field"] == "name"


def test_protocol_settings_and_addresses_are_validated(client, eng):
    r = client.post("/api/v1/data-sources", headers=eng,
                    json={"name": "plc", "protocol": "modbus-tcp", "connection": {"host": "10.0.0.2", "port": 0}})
    assert r.status_code == 422 and r.json()["field"] == "connection.port"
    ds = client.post("/api/v1/data-sources", headers=eng,
                     json={"name": "plc", "protocol": "modbus-tcp", "connection": {"host": "10.0.0.2"}})
    assert ds.status_code == 201, ds.text
    r = client.post("/api/v1/points", headers=eng, json={
        "data_source_id": ds.json()["id"], "name": "kwh", "object_type": "energy", "address": {"bogus": 1}})
    assert r.status_code == 422 and r.json()["field"].startswith("address")
    r = client.post("/api/v1/points", headers=eng, json={
        "data_source_id": 424242, "name": "kwh", "object_type": "energy"})
    assert r.status_code == 422 and r.json()["field"] == "data_source_id"


def test_virtual_meter_formulas_are_checked(client, eng, conn):
    ids = two_buildings(conn)
    base = {"category_id": ids["category"], "kind": "virtual"}
    r = client.post("/api/v1/meters", headers=eng, json={**base, "name": "rest", "formula": "main - nosuch"})
    assert r.status_code == 422 and r.json()["field"] == "formula" and "nosuch" in r.json()["detail"]
    ok = client.post("/api/v1/meters", headers=eng, json={**base, "name": "rest", "formula": "main - a1 - b1"})
    assert ok.status_code == 201, ok.text
    r = client.post("/api/v1/meters", headers=eng, json={**base, "name": "loop", "formula": "rest + loop2"})
    assert r.status_code == 422
    client.post("/api/v1/meters", headers=eng, json={**base, "name": "v2", "formula": "rest * 2"})
    r = client.patch(f"/api/v1/meters/{ok.json()['id']}", headers=eng, json={"formula": "v2 - 1"})
    assert r.status_code == 422 and "cycle" in r.json()["detail"]
    r = client.post("/api/v1/meters", headers=eng, json={**base, "name": "empty"})
    assert r.status_code == 422 and r.json()["field"] == "formula"


def test_links_with_composite_keys(client, eng, conn):
    ids = two_buildings(conn)
    r = client.post("/api/v1/space-meters", headers=eng, json={"space_id": ids["B"], "meter_id": ids["a1"]})
    assert r.status_code == 201
    assert client.get(f"/api/v1/space-meters/{ids['B']}/{ids['a1']}", headers=eng).status_code == 200
    r = client.post("/api/v1/space-meters", headers=eng, json={"space_id": ids["B"], "meter_id": ids["a1"]})
    assert r.status_code == 409
    assert client.delete(f"/api/v1/space-meters/{ids['B']}/{ids['a1']}", headers=eng).status_code == 204
    # meter <-> point: history rows keyed by meter and valid_from (also -infinity)
    links = client.get("/api/v1/meter-points", headers=eng, params={"meter_id": ids["a1"]}).json()["items"]
    assert len(links) == 1 and links[0]["valid_from"] == "-infinity"
    r = client.patch(f"/api/v1/meter-points/{ids['a1']}/-infinity", headers=eng,
                     json={"valid_to": "2026-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    r = client.post("/api/v1/meter-points", headers=eng, json={
        "meter_id": ids["a1"], "point_id": ids["p_b1"], "valid_from": "2025-12-01T00:00:00Z", "multiplier": 40})
    assert r.status_code == 409  # overlaps the first period
    r = client.post("/api/v1/meter-points", headers=eng, json={
        "meter_id": ids["a1"], "point_id": ids["p_b1"], "valid_from": "2026-01-01T00:00:00Z", "multiplier": 40})
    assert r.status_code == 201, r.text
    assert client.get(f"/api/v1/meter-points/{ids['a1']}/2026-01-01T00:00:00Z", headers=eng).json()["multiplier"] == 40
    r = client.patch("/api/v1/equipment-meters/1/1", headers=eng, json={"direction": "output"})
    assert r.status_code == 404


def test_filter_sort_paginate(client, eng, conn):
    for i in range(7):
        client.post("/api/v1/cost-centers", headers=eng, json={"name": f"cc-{i}", "external_id": "odd" if i % 2 else "even"})
    page = client.get("/api/v1/cost-centers", headers=eng, params={"limit": 3, "offset": 2, "sort": "-name"}).json()
    assert page["total"] == 7 and page["limit"] == 3 and page["offset"] == 2
    assert [c["name"] for c in page["items"]] == ["cc-4", "cc-3", "cc-2"]
    odd = client.get("/api/v1/cost-centers", headers=eng, params={"external_id": "odd"}).json()
    assert odd["total"] == 3
    assert client.get("/api/v1/cost-centers", headers=eng, params={"q": "C-6"}).json()["total"] == 1
    r = client.get("/api/v1/cost-centers", headers=eng, params={"sort": "colour"})
    assert r.status_code == 422 and r.json()["field"] == "sort"
    r = client.get("/api/v1/cost-centers", headers=eng, params={"colour": "red"})
    assert r.status_code == 422 and r.json()["field"] == "colour"
    assert client.get("/api/v1/cost-centers", headers=eng, params={"limit": 0}).status_code == 400
    empty = client.get("/api/v1/cost-centers", headers=eng, params={"offset": 100}).json()
    assert empty["items"] == [] and empty["total"] == 7


def test_space_tree_is_nested(client, eng, conn):
    ids = two_buildings(conn)
    tree = client.get("/api/v1/spaces/tree", headers=eng).json()
    assert [n["name"] for n in tree] == ["campus"]
    assert [c["name"] for c in tree[0]["children"]] == ["A", "B"]
    assert tree[0]["children"][0]["children"][0]["id"] == ids["A-floor1"]


SITE = """
categories:
  - {name: electricity, unit: kWh}
spaces:
  - name: HQ
    kind: building
    meters: [main]
    children:
      - {name: Floor 1, kind: floor}
data_sources:
  - name: push
    protocol: http
    points:
      - {name: main-kwh, object_type: energy}
meters:
  - {name: main, category: electricity, point: push/main-kwh}
"""


def test_site_import_yaml_and_json_and_export(client, eng, conn):
    r = client.post("/api/v1/site/import", headers={**eng, "Content-Type": "application/yaml"}, content=SITE)
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True
    again = client.post("/api/v1/site/import", headers={**eng, "Content-Type": "application/yaml"}, content=SITE)
    assert again.json()["changed"] is False
    exported = client.get("/api/v1/site/export", headers=eng, params={"format": "json"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/json")
    doc = exported.json()
    assert doc["meters"][0]["name"] == "main"
    as_yaml = client.get("/api/v1/site/export", headers=eng)
    assert yaml.safe_load(as_yaml.text) == doc
    r = client.post("/api/v1/site/import", headers=eng, content=json.dumps(doc))
    assert r.status_code == 200 and r.json()["changed"] is False
    bad = yaml.safe_load(SITE)
    bad["meters"][0]["point"] = "push/nosuch"
    r = client.post("/api/v1/site/import", headers=eng, content=json.dumps(bad))
    assert r.status_code == 422 and r.json()["field"].startswith("meters[0]")
    assert conn.execute("SELECT count(*) FROM ops.audit_log WHERE entity = 'site'").fetchone()[0] == 1


def test_users_and_api_keys_are_admin_business(client, conn, eng):
    make_user(conn, "root", "admin")
    admin = login(client, "root")
    assert client.get("/api/v1/users", headers=eng).status_code == 403
    r = client.post("/api/v1/users", headers=admin,
                    json={"username": "carol", "role": "engineer", "password": "a long password 1"})
    assert r.status_code == 201 and "password" in r.json()
    uid = r.json()["id"]
    assert client.post("/api/v1/users", headers=admin,
                       json={"username": "CAROL", "password": "a long password 1"}).status_code == 409
    r = client.patch(f"/api/v1/users/{uid}", headers=admin, json={"role": "viewer", "space_ids": [99999]})
    assert r.status_code == 422 and r.json()["field"] == "space_ids"
    r = client.patch(f"/api/v1/users/{uid}", headers=admin, json={"role": "viewer"})
    assert r.json()["role"] == "viewer"
    listed = client.get("/api/v1/users", headers=admin).json()
    assert listed["total"] == 3 and all("password" not in u and "password_hash" not in u for u in listed["items"])
    key = client.post("/api/v1/api-keys", headers=admin, json={"name": "grafana", "scopes": ["read"],
                                                              "expires_in_days": 30})
    assert key.status_code == 201 and key.json()["secret"].startswith("wl_")
    assert client.get("/api/v1/meters", headers={"X-API-Key": key.json()["secret"]}).status_code == 200
    keys = client.get("/api/v1/api-keys", headers=admin).json()["items"]
    assert keys and all("secret" not in k for k in keys)
    assert client.delete(f"/api/v1/api-keys/{key.json()['id']}", headers=admin).status_code == 204
    assert client.get("/api/v1/meters", headers={"X-API-Key": key.json()["secret"]}).status_code == 401
    assert client.delete(f"/api/v1/users/{uid}", headers=admin).status_code == 204


def test_openapi_docs_and_readiness(client):
    schema = client.get("/api/docs/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/spaces" in paths and "/api/v1/auth/login" in paths and "/api/v1/live/meters" in paths
    assert client.get("/api/docs").status_code == 200
    ready = client.get("/api/v1/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["schema"]
    assert client.get("/api/v1/health").status_code == 200


def test_tariffs_import_list_and_assign(client, eng, conn):
    from pathlib import Path

    urdb = json.loads((Path(__file__).parent / "fixtures" / "urdb_tou_tiered_demand.json").read_text())
    r = client.post("/api/v1/tariffs/import", headers=eng, json=urdb)
    assert r.status_code == 200, r.text
    tariff = r.json()[0]
    listed = client.get("/api/v1/tariffs", headers=eng).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == tariff["id"]
    # tariffs change only through the validated import
    assert client.post("/api/v1/tariffs", headers=eng, json={"name": "x"}).status_code == 405
    bad = json.loads(json.dumps(urdb))
    bad["items"][0]["energyweekdayschedule"][3] = bad["items"][0]["energyweekdayschedule"][3][:23]
    r = client.post("/api/v1/tariffs/import", headers=eng, json=bad)
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["field"] == "energyweekdayschedule[3]", r.json()
    cc = client.post("/api/v1/cost-centers", headers=eng, json={"name": "shop"}).json()
    cat = client.post("/api/v1/energy-categories", headers=eng, json={"name": "electricity", "unit": "kWh"}).json()
    r = client.post("/api/v1/tariff-assignments", headers=eng,
                    json={"tariff_id": tariff["id"], "cost_center_id": cc["id"], "category_id": cat["id"]})
    assert r.status_code == 201, r.text
    r = client.delete(f"/api/v1/tariffs/{tariff['id']}", headers=eng)
    assert r.status_code == 409 and "tariff_assignment" in r.json()["detail"]


def test_ingest_is_rate_limited(client, conn, monkeypatch):
    from app.apikeys import issue_key

    key = issue_key(conn, "gw", ["ingest"]).secret
    from app.api import INGEST_RATE_LIMIT

    limit = INGEST_RATE_LIMIT.rate_limit[1]
    codes = {client.post("/api/v1/ingest", headers={"X-API-Key": key}, json=[]).status_code for _ in range(limit)}
    assert codes == {400}  # empty batches, each answered
    assert client.post("/api/v1/ingest", headers={"X-API-Key": key}, json=[]).status_code == 429


def test_cors_follows_the_setting(db_url, monkeypatch):
    from app.settings import get_settings

    monkeypatch.setenv("WATTLINE_CORS_ORIGINS", "https://ems.example.org")
    get_settings.cache_clear()
    with TestClient(app=create_app(db_url)) as c:
        r = c.options("/api/v1/meters", headers={"Origin": "https://ems.example.org",
                                                 "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": "authorization"})
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "https://ems.example.org"
        r = c.get("/api/v1/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in r.headers
    monkeypatch.delenv("WATTLINE_CORS_ORIGINS")
    get_settings.cache_clear()
    with TestClient(app=create_app(db_url)) as c:
        r = c.get("/api/v1/health", headers={"Origin": "https://ems.example.org"})
        assert "access-control-allow-origin" not in r.headers
