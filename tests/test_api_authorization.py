"""The authorization matrix: roles against reads and writes, data scopes against every
way of reaching another building's data, API key scopes and expiry, and the audit log."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from api_helpers import login, make_user, two_buildings
from app.api import create_app
from app.apikeys import issue_key
from app.scopes import DataScope, can_see, scope_of, visible_ids, visible_meter_ids


@pytest.fixture
def client(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("WATTLINE_DATA_DIR", str(tmp_path))
    with TestClient(app=create_app(db_url)) as c:
        yield c


@pytest.fixture
def site(conn):
    return two_buildings(conn)


def ids_of(response) -> set[int]:
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()["items"]}


@pytest.mark.parametrize("role,can_write", [("viewer", False), ("engineer", True), ("admin", True)])
def test_roles_against_reads_and_writes(client, conn, site, role, can_write):
    make_user(conn, "u", role)
    h = login(client, "u")
    assert client.get("/api/v1/meters", headers=h).status_code == 200
    r = client.post("/api/v1/cost-centers", headers=h, json={"name": "ops"})
    assert r.status_code == (201 if can_write else 403)
    r = client.patch(f"/api/v1/meters/{site['a1']}", headers=h, json={"description": "x"})
    assert r.status_code == (200 if can_write else 403)
    r = client.delete(f"/api/v1/meters/{site['a1']}", headers=h)
    assert r.status_code == (204 if can_write else 403)
    r = client.get("/api/v1/users", headers=h)
    assert r.status_code == (200 if role == "admin" else 403)
    if not can_write:
        assert "write" in client.post("/api/v1/cost-centers", headers=h, json={"name": "x"}).json()["detail"]


def test_building_a_user_cannot_reach_building_b(client, conn, site):
    make_user(conn, "alice", "viewer", spaces=[site["A"]])
    h = login(client, "alice")
    # lists: A and its floor, A's meter, nothing of B or the campus above
    assert ids_of(client.get("/api/v1/spaces", headers=h)) == {site["A"], site["A-floor1"]}
    assert ids_of(client.get("/api/v1/meters", headers=h)) == {site["a1"]}
    # direct reads of B's meter, B itself and the parent space are not found
    for path in (f"/api/v1/meters/{site['b1']}", f"/api/v1/spaces/{site['B']}", f"/api/v1/spaces/{site['campus']}",
                 f"/api/v1/meters/{site['main']}", f"/api/v1/points/{site['p_b1']}"):
        assert client.get(path, headers=h).status_code == 404, path
    assert client.get(f"/api/v1/meters/{site['a1']}", headers=h).status_code == 200
    # ...nor through links, filters or the tree
    assert client.get("/api/v1/space-meters", headers=h, params={"space_id": site["campus"]}).json()["total"] == 0
    assert client.get("/api/v1/meters", headers=h, params={"name": "b1"}).json()["total"] == 0
    assert client.get(f"/api/v1/space-meters/{site['B-floor1']}/{site['b1']}", headers=h).status_code == 404
    tree = client.get("/api/v1/spaces/tree", headers=h).json()
    assert [n["name"] for n in tree] == ["A"] and [c["name"] for c in tree[0]["children"]] == ["A-floor1"]
    live = client.get("/api/v1/live/meters", headers=h).json()
    assert [m["meter_id"] for m in live] == [site["a1"]]
    assert {p["point_id"] for p in client.get("/api/v1/live/points", headers=h).json()} == {site["p_a1"]}
    # scoped users cannot change configuration even as engineers, nor export the whole site
    make_user(conn, "aeng", "engineer", spaces=[site["A"]])
    he = login(client, "aeng")
    assert client.patch(f"/api/v1/meters/{site['a1']}", headers=he, json={"description": "x"}).status_code == 403
    assert client.get("/api/v1/site/export", headers=he).status_code == 403


def test_a_scope_on_the_parent_space_covers_the_subtree(client, conn, site):
    make_user(conn, "boss", "viewer", spaces=[site["campus"]])
    h = login(client, "boss")
    assert ids_of(client.get("/api/v1/meters", headers=h)) == {site["main"], site["a1"], site["b1"]}


def test_tenant_scope(client, conn, site):
    make_user(conn, "shopkeeper", "viewer", tenants=[site["tenant"]])
    h = login(client, "shopkeeper")
    assert ids_of(client.get("/api/v1/meters", headers=h)) == {site["ta1"]}
    assert ids_of(client.get("/api/v1/tenants", headers=h)) == {site["tenant"]}
    assert ids_of(client.get("/api/v1/spaces", headers=h)) == set()


def test_restricted_to_a_deleted_space_sees_nothing(client, conn, site):
    uid = make_user(conn, "ghost", "viewer", spaces=[site["B-floor1"]])
    conn.execute("DELETE FROM config.space_meter WHERE space_id = %s", (site["B-floor1"],))
    conn.execute("DELETE FROM config.space WHERE id = %s", (site["B-floor1"],))
    assert conn.execute("SELECT count(*) FROM config.user_space WHERE user_id = %s", (uid,)).fetchone()[0] == 0
    h = login(client, "ghost")
    assert ids_of(client.get("/api/v1/meters", headers=h)) == set()


def test_scope_rules_directly(conn, site):
    a = scope_of([site["A"]])
    assert visible_meter_ids(conn, DataScope()) is None
    assert can_see(conn, a, "space", site["A-floor1"]) and not can_see(conn, a, "space", site["campus"])
    assert can_see(conn, a, "point", site["p_a1"]) and not can_see(conn, a, "point", site["p_b1"])
    assert visible_ids(conn, a, "data_source") == {site["ds"]}
    # a cost center is visible only when every meter charged to it is
    cc = conn.execute("INSERT INTO config.cost_center (name) VALUES ('shared') RETURNING id").fetchone()[0]
    conn.execute("UPDATE config.meter SET cost_center_id = %s WHERE id IN (%s, %s)", (cc, site["a1"], site["b1"]))
    assert not can_see(conn, a, "cost_center", cc)
    assert can_see(conn, scope_of([site["campus"]]), "cost_center", cc)
    eq = conn.execute("INSERT INTO config.equipment (name, space_id) VALUES ('ahu', %s) RETURNING id",
                      (site["A-floor1"],)).fetchone()[0]
    assert can_see(conn, a, "equipment", eq) and not can_see(conn, scope_of([site["B"]]), "equipment", eq)


def test_api_key_scopes_expiry_and_data_scope(client, conn, site):
    read = issue_key(conn, "reader", ["read"]).secret
    ingest = issue_key(conn, "gateway", ["ingest"]).secret
    write = issue_key(conn, "integrator", ["read", "write"]).secret
    expired = issue_key(conn, "old", ["read"], expires_in_days=1)
    conn.execute("UPDATE config.api_key SET created_at = now() - interval '3 days', "
                 "expires_at = now() - interval '1 day' WHERE id = %s", (expired.key.id,))
    assert client.get("/api/v1/meters", headers={"X-API-Key": read}).status_code == 200
    r = client.post("/api/v1/cost-centers", headers={"X-API-Key": read}, json={"name": "x"})
    assert r.status_code == 403 and "lacks the 'write' scope" in r.json()["detail"]
    assert client.get("/api/v1/meters", headers={"X-API-Key": ingest}).status_code == 403
    assert client.post("/api/v1/cost-centers", headers={"X-API-Key": write}, json={"name": "x"}).status_code == 201
    assert client.get("/api/v1/users", headers={"X-API-Key": write}).status_code == 403
    r = client.get("/api/v1/meters", headers={"X-API-Key": expired.secret})
    assert r.status_code == 401 and r.json()["detail"] == "API key expired"
    # a key restricted to building B
    make_user(conn, "root", "admin")
    admin = login(client, "root")
    scoped = client.post("/api/v1/api-keys", headers=admin,
                         json={"name": "b-dash", "scopes": ["read"], "space_ids": [site["B"]]}).json()
    assert scoped["restricted"] and scoped["space_ids"] == [site["B"]]
    assert ids_of(client.get("/api/v1/meters", headers={"X-API-Key": scoped["secret"]})) == {site["b1"]}


def test_the_audit_log_records_who_what_before_and_after(client, conn, site):
    make_user(conn, "eng", "engineer")
    h = login(client, "eng")
    r = client.patch(f"/api/v1/meters/{site['a1']}", headers=h, json={"description": "main AHU feed",
                                                                     "hourly_high": 500})
    assert r.status_code == 200
    actor, action, entity, entity_id, before, after = conn.execute(
        "SELECT actor, action, entity, entity_id, before, after FROM ops.audit_log ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert actor.startswith("user:eng#") and action == "update" and entity == "meter"
    assert entity_id == str(site["a1"])
    assert before["description"] is None and before["hourly_high"] is None
    assert after["description"] == "main AHU feed" and after["hourly_high"] == 500
    key = issue_key(conn, "robot", ["read", "write"])
    client.delete(f"/api/v1/meters/{site['b1']}", headers={"X-API-Key": key.secret})
    row = conn.execute("SELECT actor, action, before->>'name', after FROM ops.audit_log ORDER BY id DESC LIMIT 1"
                       ).fetchone()
    assert row == (f"apikey:robot#{key.key.id}", "delete", "b1", None)
    # a refused write leaves no entry
    n = conn.execute("SELECT count(*) FROM ops.audit_log").fetchone()[0]
    client.post("/api/v1/spaces", headers=h, json={"name": "dup", "parent_id": 424242})
    assert conn.execute("SELECT count(*) FROM ops.audit_log").fetchone()[0] == n


def test_admins_read_the_audit_log_and_the_last_admin_stays(client, conn, site):
    root = make_user(conn, "root", "admin")
    h = login(client, "root")
    client.patch(f"/api/v1/meters/{site['a1']}", headers=h, json={"description": "feeds AHU-1"})
    entries = client.get("/api/v1/audit-log", headers=h, params={"entity": "meter"}).json()
    assert entries[0]["action"] == "update" and entries[0]["after"]["description"] == "feeds AHU-1"
    make_user(conn, "v", "viewer")
    assert client.get("/api/v1/audit-log", headers=login(client, "v")).status_code == 403
    # the last enabled admin can be neither demoted, disabled nor deleted
    assert client.patch(f"/api/v1/users/{root}", headers=h, json={"role": "viewer"}).status_code == 409
    assert client.patch(f"/api/v1/users/{root}", headers=h, json={"enabled": False}).status_code == 409
    assert client.delete(f"/api/v1/users/{root}", headers=h).status_code == 409
    make_user(conn, "root2", "admin")
    assert client.patch(f"/api/v1/users/{root}", headers=h, json={"role": "engineer"}).status_code == 200
