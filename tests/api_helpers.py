"""Helpers shared by the API tests: users with known passwords, login headers, a small
site with two buildings."""

from __future__ import annotations

from app.users import create_user

PASSWORD = "correct horse battery"


def make_user(conn, username: str, role: str = "viewer", spaces=None, tenants=None) -> int:
    user, _ = create_user(conn, username, role, PASSWORD)
    if spaces is not None or tenants is not None:
        conn.execute("UPDATE config.app_user SET restricted = true WHERE id = %s", (user.id,))
        for s in spaces or []:
            conn.execute("INSERT INTO config.user_space VALUES (%s, %s)", (user.id, s))
        for t in tenants or []:
            conn.execute("INSERT INTO config.user_tenant VALUES (%s, %s)", (user.id, t))
    return user.id


def login(client, username: str, password: str = PASSWORD) -> dict:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def two_buildings(conn) -> dict:
    """campus ─┬─ A ── A-floor1 (meter a1; tenant ta with meter ta1)
               └─ B ── B-floor1 (meter b1); campus itself has meter main."""
    def space(name, parent=None, kind="building"):
        return conn.execute("INSERT INTO config.space (name, parent_id, kind) VALUES (%s, %s, %s) RETURNING id",
                            (name, parent, kind)).fetchone()[0]

    def meter(name, space_id):
        mid = conn.execute("INSERT INTO config.meter (name, category_id) VALUES (%s, %s) RETURNING id",
                           (name, cat)).fetchone()[0]
        if space_id is not None:
            conn.execute("INSERT INTO config.space_meter VALUES (%s, %s)", (space_id, mid))
        return mid

    cat = conn.execute("INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
                       "RETURNING id").fetchone()[0]
    campus = space("campus", kind="site")
    a, b = space("A", campus), space("B", campus)
    a1f, b1f = space("A-floor1", a, "floor"), space("B-floor1", b, "floor")
    ids = {"category": cat, "campus": campus, "A": a, "B": b, "A-floor1": a1f, "B-floor1": b1f}
    ids["main"] = meter("main", campus)
    ids["a1"] = meter("a1", a1f)
    ids["b1"] = meter("b1", b1f)
    ids["ta1"] = meter("ta1", None)
    ids["tenant"] = conn.execute("INSERT INTO config.tenant (name, space_id) VALUES ('shop', NULL) RETURNING id"
                                 ).fetchone()[0]
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (ids["tenant"], ids["ta1"]))
    ds = conn.execute("INSERT INTO config.data_source (name, protocol) VALUES ('push', 'http') RETURNING id"
                      ).fetchone()[0]
    ids["ds"] = ds
    for m in ("main", "a1", "b1"):
        pid = conn.execute("INSERT INTO config.point (data_source_id, name, object_type) VALUES (%s, %s, 'energy') "
                           "RETURNING id", (ds, f"{m}-kwh")).fetchone()[0]
        conn.execute("INSERT INTO config.meter_point (meter_id, point_id) VALUES (%s, %s)", (ids[m], pid))
        ids[f"p_{m}"] = pid
    return ids
