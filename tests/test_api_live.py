"""Live data through HTTP: newest reading per point and meter, data source health and
dead letters, each limited to the caller's data scope."""

from __future__ import annotations

import datetime as dt

import pytest
from litestar.testing import TestClient

from api_helpers import login, make_user, two_buildings
from app.api import create_app

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def client(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("WATTLINE_DATA_DIR", str(tmp_path))
    with TestClient(app=create_app(db_url)) as c:
        yield c


@pytest.fixture
def site(conn):
    ids = two_buildings(conn)
    for minutes, a, b in ((0, 100.0, 50.0), (15, 101.5, 52.0), (30, 103.0, 53.0)):
        ts = T0 + dt.timedelta(minutes=minutes)
        conn.execute("INSERT INTO raw.point_value (point_id, ts, value) VALUES (%s, %s, %s), (%s, %s, %s)",
                     (ids["p_a1"], ts, a, ids["p_b1"], ts, b))
    conn.execute("UPDATE config.meter_point SET multiplier = 2 WHERE meter_id = %s", (ids["b1"],))
    conn.execute("INSERT INTO energy.meter_interval (meter_id, ts, energy) VALUES (%s, %s, 1.5), (%s, %s, 1.5)",
                 (ids["a1"], T0, ids["a1"], T0 + dt.timedelta(minutes=15)))
    other = conn.execute("INSERT INTO config.data_source (name, protocol, connection) "
                         "VALUES ('plc', 'modbus-tcp', '{\"host\": \"10.0.0.9\"}') RETURNING id").fetchone()[0]
    ids["plc"] = other
    conn.execute("INSERT INTO ops.collector_status (data_source_id, point_id, last_success) VALUES (%s, 0, %s)",
                 (ids["ds"], T0))
    conn.execute("INSERT INTO ops.collector_status (data_source_id, point_id, last_error, last_error_at, "
                 "consecutive_failures) VALUES (%s, 0, 'connection refused', %s, 3)", (other, T0))
    conn.execute("INSERT INTO ops.dead_letter (received_at, data_source_id, topic, payload, reason) VALUES "
                 "(%s, %s, 'site/a', '{bad', 'invalid JSON'), (%s, %s, NULL, 'x', 'unknown point'), "
                 "(%s, NULL, NULL, 'y', 'no data source')",
                 (T0, ids["ds"], T0 + dt.timedelta(minutes=1), other, T0 + dt.timedelta(minutes=2)))
    return ids


def test_latest_point_and_meter_values(client, conn, site):
    make_user(conn, "v", "viewer")
    h = login(client, "v")
    points = {p["point_id"]: p for p in client.get("/api/v1/live/points", headers=h).json()}
    assert points[site["p_a1"]]["value"] == 103.0
    assert points[site["p_a1"]]["ts"].startswith("2026-03-01T00:30:00")
    assert points[site["p_main"]]["value"] is None
    meters = {m["meter_id"]: m for m in client.get("/api/v1/live/meters", headers=h).json()}
    assert meters[site["a1"]]["reading"] == 103.0 and meters[site["a1"]]["energy"] == 1.5
    assert meters[site["a1"]]["power"] == 6.0 and meters[site["a1"]]["interval_ts"].startswith("2026-03-01T00:15")
    assert meters[site["b1"]]["reading"] == 106.0  # scaled by the link's multiplier
    assert meters[site["ta1"]]["point_id"] is None and meters[site["ta1"]]["reading"] is None
    only = client.get("/api/v1/live/points", headers=h, params={"data_source_id": site["plc"]}).json()
    assert only == []


def test_data_source_status_and_dead_letters(client, conn, site):
    make_user(conn, "v", "viewer")
    h = login(client, "v")
    status = {s["data_source"]: s for s in client.get("/api/v1/live/data-sources", headers=h).json()}
    assert status["push"]["state"] == "ok" and status["plc"]["state"] == "failing"
    assert status["plc"]["consecutive_failures"] == 3 and status["plc"]["last_error"] == "connection refused"
    letters = client.get("/api/v1/live/dead-letters", headers=h).json()
    assert [d["reason"] for d in letters] == ["no data source", "unknown point", "invalid JSON"]
    assert len(client.get("/api/v1/live/dead-letters", headers=h, params={"limit": 1}).json()) == 1
    assert client.get("/api/v1/live/dead-letters", headers=h, params={"limit": 0}).status_code == 400


def test_live_data_follows_the_data_scope(client, conn, site):
    make_user(conn, "alice", "viewer", spaces=[site["A"]])
    h = login(client, "alice")
    assert [m["meter_id"] for m in client.get("/api/v1/live/meters", headers=h).json()] == [site["a1"]]
    assert [p["point_id"] for p in client.get("/api/v1/live/points", headers=h).json()] == [site["p_a1"]]
    assert [s["data_source_id"] for s in client.get("/api/v1/live/data-sources", headers=h).json()] == [site["ds"]]
    assert [d["reason"] for d in client.get("/api/v1/live/dead-letters", headers=h).json()] == ["invalid JSON"]


def test_live_needs_read(client, conn, site):
    from app.apikeys import issue_key

    key = issue_key(conn, "gw", ["ingest"]).secret
    assert client.get("/api/v1/live/meters", headers={"X-API-Key": key}).status_code == 403
    assert client.get("/api/v1/live/meters").status_code == 401
