"""HTTP push ingest through the real Litestar app and a real database: whole batches
accepted or rejected with per-row problems, duplicates counted, API keys enforced."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from litestar.testing import TestClient

from app.api import create_app
from app.apikeys import issue_key, revoke_key
from app.ingest import InputError, parse_timestamp, parse_value

UTC = dt.timezone.utc
PROBLEM = "application/problem+json"


@pytest.fixture
def site(conn):
    def source(name, protocol="http", connection="{}"):
        return conn.execute(
            "INSERT INTO config.data_source (name, protocol, connection) VALUES (%s, %s, %s) RETURNING id",
            (name, protocol, connection),
        ).fetchone()[0]

    def point(ds, name, address="{}", ratio=1.0, offset=0.0, high=None):
        return conn.execute(
            'INSERT INTO config.point (data_source_id, name, object_type, address, ratio, "offset", high_limit) '
            "VALUES (%s, %s, 'energy', %s, %s, %s, %s) RETURNING id",
            (ds, name, address, ratio, offset, high),
        ).fetchone()[0]

    push, other = source("push"), source("push-2")
    modbus = source("plc", "modbus-tcp", '{"host": "127.0.0.1"}')
    ids = {
        "main": point(push, "main", high=1e6),
        "flow": point(push, "flow", '{"key": "f1"}', ratio=0.1),
        "shared@push": point(push, "shared"),
        "shared@push-2": point(other, "shared"),
        "plc": point(modbus, "plc-energy"),
    }
    return {"points": ids, "push": push, "other": other}


@pytest.fixture
def keys(conn, site):
    return {
        "ingest": issue_key(conn, "gateway", ["ingest"]).secret,
        "read": issue_key(conn, "dashboard", ["read"]).secret,
        "bound": issue_key(conn, "push-2 only", ["ingest"], data_source_id=site["other"]).secret,
    }


@pytest.fixture
def client(db_url):
    with TestClient(app=create_app(db_url, max_body_bytes=64 * 1024)) as c:
        yield c


def post(client, key, body, content_type="application/json", bearer=False):
    headers = {"Content-Type": content_type}
    if key:
        headers["Authorization" if bearer else "X-API-Key"] = f"Bearer {key}" if bearer else key
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/api/v1/ingest", content=content, headers=headers)


def stored(conn):
    return conn.execute(
        "SELECT p.name, v.ts, v.value, v.quality FROM raw.point_value v "
        "JOIN config.point p ON p.id = v.point_id ORDER BY p.name, v.ts"
    ).fetchall()


def test_health_needs_no_key(client):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


def test_valid_batch_is_written_scaled_and_a_repeat_counts_duplicates(client, conn, keys, site):
    batch = [
        {"point": "main", "ts": "2024-03-01T10:00:00+01:00", "value": 100},
        {"point": "main", "ts": 1709287200, "value": 2e6},               # above the high limit: flagged
        {"point": "f1", "ts": "2024-03-01T09:00:00Z", "value": 55},      # HTTP key, ratio 0.1
        {"point": site["points"]["shared@push-2"], "ts": "2024-03-01T09:00:00", "value": 7},  # id
    ]
    r = post(client, keys["ingest"], batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 4, "duplicates": 0}
    nine = dt.datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert stored(conn) == [
        ("flow", nine, 5.5, 0),
        ("main", nine, 100.0, 0),
        ("main", dt.datetime(2024, 3, 1, 10, tzinfo=UTC), 2e6, 1),
        ("shared", nine, 7.0, 0),
    ]
    r = post(client, keys["ingest"], {"readings": batch[:2] + [
        {"point": "main", "ts": "2024-03-01T11:00:00Z", "value": 101}]})
    assert r.json() == {"accepted": 1, "duplicates": 2}


def test_invalid_batch_is_rejected_whole_with_every_problem(client, conn, keys, site):
    batch = [
        {"point": "main", "ts": "2024-03-01T09:00:00Z", "value": 1},
        {"point": "nope", "ts": "2024-03-01T09:00:00Z", "value": 1},
        {"point": "main", "ts": "yesterday", "value": "NaN"},
        {"point": "shared", "ts": "2024-03-01T09:00:00Z", "value": 1},
        {"point": "plc-energy", "ts": "2024-03-01T09:00:00Z", "value": 1},
        {"point": "main", "value": 3},
        "not an object",
    ]
    r = post(client, keys["ingest"], batch)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["title"] == "Invalid readings"
    assert body["detail"] == "6 of 7 readings are invalid; nothing was written"
    errors = {(e["row"], e["field"]): e for e in body["errors"]}
    assert errors[(2, "point")]["reason"] == "unknown point among the points of http data sources"
    assert errors[(3, "ts")]["value"] == "yesterday"
    assert errors[(3, "value")]["reason"] == "not a finite number"
    assert "ambiguous" in errors[(4, "point")]["reason"]
    assert "'push'" in errors[(4, "point")]["reason"] and "'push-2'" in errors[(4, "point")]["reason"]
    assert errors[(5, "point")]["value"] == "plc-energy"   # not an http source's point
    assert errors[(6, "ts")]["reason"] == "missing timestamp"
    assert (7, "point") in errors
    assert stored(conn) == []


def test_csv_batches(client, conn, keys):
    csv_ok = "\ufeffpoint,ts,value\nmain,2024-03-01T09:00:00Z,10\n\nf1,2024-03-01T09:15:00Z,20\n"
    r = post(client, keys["ingest"], csv_ok.encode(), "text/csv; charset=utf-8")
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "duplicates": 0}

    csv_bad = "point,ts,value\nmain,2024-03-01T10:00:00Z,10\nmain,2024-03-01T10:15:00Z,ten\n"
    r = post(client, keys["ingest"], csv_bad, "text/csv")
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"row": 2, "line": 3, "field": "value", "value": "ten", "reason": "not a number"}
    ]
    r = post(client, keys["ingest"], "meter;when;kwh\nmain;x;1\n", "text/csv")
    assert r.status_code == 400
    assert "point,ts,value" in r.json()["detail"]
    assert len(stored(conn)) == 2


def test_malformed_and_unsupported_bodies(client, keys):
    r = post(client, keys["ingest"], "[{", "application/json")
    assert r.status_code == 400 and "invalid JSON" in r.json()["detail"]
    r = post(client, keys["ingest"], [], "application/json")
    assert r.status_code == 400 and r.json()["title"] == "Empty batch"
    r = post(client, keys["ingest"], "<xml/>", "application/xml")
    assert r.status_code == 415
    r = post(client, keys["ingest"], [{"point": "main", "ts": 1, "value": 1}] * 5000)
    assert r.status_code == 413
    assert r.headers["content-type"].startswith(PROBLEM)


def test_authentication_and_scopes(client, conn, keys):
    batch = [{"point": "main", "ts": "2024-03-01T09:00:00Z", "value": 1}]
    r = post(client, None, batch)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "no API key" in r.json()["detail"]

    assert post(client, "garbage", batch).json()["detail"] == "malformed API key"
    forged = keys["ingest"][:-4] + "AAAA"
    assert post(client, forged, batch).json()["detail"] == "unknown API key"

    r = post(client, keys["read"], batch)
    assert r.status_code == 403
    assert "lacks the 'ingest' scope" in r.json()["detail"]

    assert post(client, keys["ingest"], batch, bearer=True).status_code == 200

    issued = issue_key(conn, "old", ["ingest"], expires_in_days=1)
    conn.execute("UPDATE config.api_key SET created_at = now() - interval '3 days', "
                 "expires_at = now() - interval '1 day' WHERE id = %s", (issued.key.id,))
    r = post(client, issued.secret, batch)
    assert r.status_code == 401 and r.json()["detail"] == "API key expired"

    revoked = issue_key(conn, "gone", ["ingest"])
    assert revoke_key(conn, revoked.key.id)
    assert post(client, revoked.secret, batch).json()["detail"] == "API key revoked"


def test_a_key_bound_to_a_data_source_sees_only_its_points(client, conn, keys, site):
    r = post(client, keys["bound"], [{"point": "shared", "ts": "2024-03-01T09:00:00Z", "value": 3}])
    assert r.status_code == 200 and r.json()["accepted"] == 1   # not ambiguous for this key
    r = post(client, keys["bound"], [{"point": "main", "ts": "2024-03-01T09:00:00Z", "value": 3}])
    assert r.status_code == 422
    assert r.json()["errors"][0]["reason"] == "unknown point among the points of this key's data source"


def test_database_down_answers_503(server_url, db_url, keys):
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with TestClient(app=create_app(db_url)) as c:
        assert c.get("/api/v1/health").status_code == 200
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            try:
                r = c.post("/api/v1/ingest", json=[], headers={"X-API-Key": keys["ingest"]})
                assert r.status_code == 503
                assert r.json()["title"] == "Database unavailable"
                assert c.get("/api/v1/health").json() == {"status": "degraded", "database": "unreachable"}
            finally:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')


NOW = dt.datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("raw, expected", [
    (1709280000, dt.datetime(2024, 3, 1, 8, tzinfo=UTC)),               # epoch seconds
    (1709280000.5, dt.datetime(2024, 3, 1, 8, 0, 0, 500000, tzinfo=UTC)),
    (1709280000123, dt.datetime(2024, 3, 1, 8, 0, 0, 123000, tzinfo=UTC)),  # milliseconds
    ("1709280000", dt.datetime(2024, 3, 1, 8, tzinfo=UTC)),
    ("2024-03-01T09:00:00+01:00", dt.datetime(2024, 3, 1, 8, tzinfo=UTC)),
    ("2024-03-01 08:00:00Z", dt.datetime(2024, 3, 1, 8, tzinfo=UTC)),
    ("2024-03-01T08:00:00", dt.datetime(2024, 3, 1, 8, tzinfo=UTC)),     # naive: UTC here
])
def test_timestamp_spellings(raw, expected):
    assert parse_timestamp(raw, now=NOW) == expected


def test_naive_local_times_follow_the_zone_across_dst():
    from zoneinfo import ZoneInfo

    sthlm = ZoneInfo("Europe/Stockholm")
    # The repeated autumn hour is its first occurrence (summer time, +02:00).
    assert parse_timestamp("2024-10-27 02:30", naive_tz=sthlm, now=NOW) == dt.datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    kolkata = ZoneInfo("Asia/Kolkata")
    assert parse_timestamp("2024-01-01 05:30", naive_tz=kolkata, now=NOW) == dt.datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(InputError, match="daylight-saving gap"):
        parse_timestamp("2024-03-31 02:30", naive_tz=sthlm, now=NOW)


@pytest.mark.parametrize("raw, reason", [
    (True, "a boolean is not a timestamp"),
    ("2026-01-03T00:00:00Z", "more than a day in the future"),
    (-5, "before 1970"),
    (1e15, "epoch number too large"),
    (None, "missing timestamp"),
])
def test_timestamps_refused(raw, reason):
    with pytest.raises(InputError, match=reason):
        parse_timestamp(raw, now=NOW)


@pytest.mark.parametrize("raw, reason", [
    (float("nan"), "not a finite number"), ("inf", "not a finite number"), (False, "a boolean"),
    ("", "missing value"), ("1,5", "not a number"), ([1], "a list is not a number"),
])
def test_values_refused(raw, reason):
    with pytest.raises(InputError, match=reason):
        parse_value(raw)
