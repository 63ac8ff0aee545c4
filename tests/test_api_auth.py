"""Login, refresh, logout and lockout through the real app and database; API keys keep
working beside access tokens; secrets stay out of logs and the audit trail."""

from __future__ import annotations

import datetime as dt

import logging

import jwt
import pytest
from litestar.testing import TestClient

from app import users
from app.api import create_app
from app.apikeys import issue_key
from api_helpers import PASSWORD, login, make_user


@pytest.fixture
def client(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("WATTLINE_DATA_DIR", str(tmp_path))
    with TestClient(app=create_app(db_url)) as c:
        yield c


def test_login_gives_a_short_lived_access_token_that_reads(client, conn):
    make_user(conn, "ada", "viewer")
    r = client.post("/api/v1/auth/login", json={"username": "ADA", "password": PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 15 * 60
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60 and claims["name"] == "ada"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get("/api/v1/meters", headers=headers).status_code == 200


def test_wrong_password_and_unknown_user_answer_alike(client, conn):
    make_user(conn, "ada")
    a = client.post("/api/v1/auth/login", json={"username": "ada", "password": "wrong password!"})
    b = client.post("/api/v1/auth/login", json={"username": "nobody", "password": "wrong password!"})
    assert a.status_code == b.status_code == 401
    assert a.json()["detail"] == b.json()["detail"] == "wrong username or password"
    assert a.headers["content-type"].startswith("application/problem+json")


def test_lockout_after_repeated_failures_even_with_the_right_password(client, conn):
    uid = make_user(conn, "ada")
    for _ in range(users.MAX_FAILURES):
        assert client.post("/api/v1/auth/login", json={"username": "ada", "password": "bad password"}).status_code == 401
    r = client.post("/api/v1/auth/login", json={"username": "ada", "password": PASSWORD})
    assert r.status_code == 423 and "locked" in r.json()["detail"]
    # The lock ends by itself: move it into the past.
    conn.execute("UPDATE config.app_user SET locked_until = now() - interval '1 second' WHERE id = %s", (uid,))
    assert client.post("/api/v1/auth/login", json={"username": "ada", "password": PASSWORD}).status_code == 200
    failed = conn.execute("SELECT failed_logins FROM config.app_user WHERE id = %s", (uid,)).fetchone()[0]
    assert failed == 0


def test_successful_login_resets_the_failure_count(client, conn):
    uid = make_user(conn, "ada")
    for _ in range(users.MAX_FAILURES - 1):
        client.post("/api/v1/auth/login", json={"username": "ada", "password": "bad password"})
    login(client, "ada")
    client.post("/api/v1/auth/login", json={"username": "ada", "password": "bad password"})
    assert login(client, "ada")
    assert conn.execute("SELECT locked_until FROM config.app_user WHERE id = %s", (uid,)).fetchone()[0] is None


def test_refresh_rotates_and_a_reused_token_revokes_the_login(client, conn):
    make_user(conn, "ada")
    first = client.post("/api/v1/auth/login", json={"username": "ada", "password": PASSWORD}).json()
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.json()
    assert second["refresh_token"] != first["refresh_token"]
    # The old token is spent; using it again revokes the whole family, the new one included.
    again = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert again.status_code == 401 and "already used" in again.json()["detail"]
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401
    stored = conn.execute("SELECT token_sha256 FROM config.refresh_token").fetchall()
    assert all(first["refresh_token"].encode() not in bytes(r[0]) for r in stored)


def test_logout_revokes_the_refresh_token(client, conn):
    make_user(conn, "ada")
    tokens = client.post("/api/v1/auth/login", json={"username": "ada", "password": PASSWORD}).json()
    assert client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_expired_forged_and_disabled_tokens_are_refused(client, conn):
    uid = make_user(conn, "ada")
    user = users.get_user(conn, uid)
    expired = users.access_token(user, minutes=-1)
    r = client.get("/api/v1/meters", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["detail"] == "access token expired"
    forged = users.access_token(user, key="not the server's signing key, 32+ bytes long")
    assert client.get("/api/v1/meters", headers={"Authorization": f"Bearer {forged}"}).json()["detail"] == \
        "invalid access token"
    headers = login(client, "ada")
    conn.execute("UPDATE config.app_user SET enabled = false WHERE id = %s", (uid,))
    assert client.get("/api/v1/meters", headers=headers).status_code == 401


def test_api_keys_and_tokens_share_the_bearer_header(client, conn):
    key = issue_key(conn, "dashboard", ["read"]).secret
    assert client.get("/api/v1/meters", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/api/v1/meters", headers={"X-API-Key": key}).status_code == 200
    r = client.get("/api/v1/meters")
    assert r.status_code == 401 and "no API key" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_login_is_rate_limited_per_client(client, conn):
    from app.api.auth import LOGIN_RATE

    codes = [client.post("/api/v1/auth/login", json={"username": f"u{i}", "password": "x"}).status_code
             for i in range(LOGIN_RATE[1] + 1)]
    assert codes[:-1] == [401] * LOGIN_RATE[1] and codes[-1] == 429


def test_login_limit_is_shared_by_every_api_process(client, db_url):
    """A second app on the same database (another worker, another host) counts against
    the same limit, and a restarted one does not forget it."""
    from app.api.auth import LOGIN_RATE

    half = LOGIN_RATE[1] // 2
    attempt = {"username": "nobody", "password": "x"}
    assert {client.post("/api/v1/auth/login", json=attempt).status_code for _ in range(half)} == {401}
    with TestClient(app=create_app(db_url)) as other:
        codes = [other.post("/api/v1/auth/login", json=attempt).status_code
                 for _ in range(LOGIN_RATE[1] - half + 1)]
    assert codes[:-1] == [401] * (LOGIN_RATE[1] - half) and codes[-1] == 429
    with TestClient(app=create_app(db_url)) as restarted:
        assert restarted.post("/api/v1/auth/login", json=attempt).status_code == 429


def test_shared_store_expires_renews_and_deletes(db_url):
    import anyio

    from app.api.database import Database
    from app.api.store import PostgresStore

    async def scenario() -> None:
        database = Database(db_url)
        database.open()
        try:
            a, b = PostgresStore(database, "a"), PostgresStore(database, "b")
            await a.set("k", "v1", expires_in=60)
            await b.set("k", b"other")
            assert await a.get("k") == b"v1" and await b.get("k") == b"other"
            assert 55 <= await a.expires_in("k") <= 60 and await b.expires_in("k") is None
            await a.get("k", renew_for=3600)
            assert await a.expires_in("k") > 3000
            await b.get("k", renew_for=10)              # no expiry: renewing is a no-op
            assert await b.expires_in("k") is None
            await a.set("gone", "x", expires_in=dt.timedelta(seconds=-1))
            assert await a.get("gone") is None and not await a.exists("gone")
            await a.delete("k")
            assert not await a.exists("k") and await b.exists("k")
            await b.delete_all()
            assert await b.get("k") is None
        finally:
            database.close()

    anyio.run(scenario)


def test_password_never_reaches_logs_or_audit(client, conn, caplog):
    caplog.set_level(logging.DEBUG)
    admin = make_user(conn, "root", "admin")
    assert admin
    headers = login(client, "root")
    r = client.post("/api/v1/users", headers=headers, json={"username": "bob", "role": "viewer"})
    assert r.status_code == 201
    generated = r.json()["password"]
    assert len(generated) >= 10
    assert client.post("/api/v1/auth/login", json={"username": "bob", "password": generated}).status_code == 200
    assert PASSWORD not in caplog.text and generated not in caplog.text
    audit = conn.execute("SELECT after::text FROM ops.audit_log WHERE entity = 'user'").fetchall()
    assert audit and all(generated not in a[0] and "argon2" not in a[0] for a in audit)
    stored = conn.execute("SELECT password_hash FROM config.app_user WHERE username = 'bob'").fetchone()[0]
    assert stored.startswith("$argon2id$")


def test_signing_key_comes_from_the_setting_or_a_private_file(tmp_path, monkeypatch):
    from app.settings import get_settings

    monkeypatch.setenv("WATTLINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("WATTLINE_JWT_SECRET", raising=False)
    get_settings.cache_clear()
    users._secret_from_file.cache_clear()
    key = users.signing_key()
    path = tmp_path / "jwt-secret"
    assert path.read_text().strip() == key and (path.stat().st_mode & 0o777) == 0o600
    assert users.signing_key() == key
    monkeypatch.setenv("WATTLINE_JWT_SECRET", "from-the-environment")
    get_settings.cache_clear()
    assert users.signing_key() == "from-the-environment"
    assert "from-the-environment" not in repr(get_settings())
    get_settings.cache_clear()


def test_cli_bootstraps_the_first_admin(db_url, conn, client):
    from typer.testing import CliRunner

    from app.cli import app as cli

    runner = CliRunner()
    r = runner.invoke(cli, ["user", "create", "--role", "admin", "--username", "boss"])
    assert r.exit_code == 0, r.output
    generated = r.stdout.strip().splitlines()[-1]
    assert login(client, "boss", generated)
    r = runner.invoke(cli, ["user", "create", "--username", "eve", "--password-stdin"],
                      input="a chosen password\n")
    assert r.exit_code == 0 and "a chosen password" not in r.output
    assert login(client, "eve", "a chosen password")
    r = runner.invoke(cli, ["user", "create", "--username", "eve", "--password-stdin"], input="another one!!\n")
    assert r.exit_code == 2 and "taken" in r.output
    r = runner.invoke(cli, ["user", "create", "--username", "x", "--role", "root"])
    assert r.exit_code == 2 and "role" in r.output
