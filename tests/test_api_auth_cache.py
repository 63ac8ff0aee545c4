"""The per-process credential cache (app.api.security.AuthCache): revocation, disabling and
re-scoping through the API take effect at once; done elsewhere (SQL, the CLI, another
worker) within AUTH_CACHE_SECONDS; expiry is never extended; refusals are not cached."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from litestar.testing import TestClient

from api_helpers import login, make_user, two_buildings
from app import users
from app.api import create_app
from app.api.security import AUTH_CACHE_SECONDS, AuthCache, Principal
from app.apikeys import issue_key, revoke_key


class Clock:
    """A monotonic and a wall clock the test moves by hand."""

    def __init__(self):
        self.mono = 1000.0
        self.offset = 0.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.offset += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(db_url, tmp_path, monkeypatch, clock):
    monkeypatch.setenv("WATTLINE_DATA_DIR", str(tmp_path))
    app = create_app(db_url)
    app.state.auth_cache = AuthCache(clock=clock.monotonic, wall=clock.wall)
    with TestClient(app=app) as c:
        yield c


def cache_of(client) -> AuthCache:
    return client.app.state.auth_cache


def meters(client, headers) -> int:
    return client.get("/api/v1/meters", headers=headers).status_code


def test_the_bound_is_at_most_five_seconds():
    assert 0 < AUTH_CACHE_SECONDS <= 5


def test_a_key_is_looked_up_once_then_served_from_the_cache(client, conn):
    key = issue_key(conn, "dash", ["read"]).secret
    assert meters(client, {"X-API-Key": key}) == 200
    assert len(cache_of(client)) == 1
    # the database no longer knows the key; the cached principal still answers, briefly
    conn.execute("DELETE FROM config.api_key WHERE name = 'dash'")
    assert meters(client, {"X-API-Key": key}) == 200
    assert meters(client, {"Authorization": f"Bearer {key}"}) == 200


def test_revoking_through_the_api_takes_effect_at_once(client, conn):
    make_user(conn, "root", "admin")
    admin = login(client, "root")
    issued = issue_key(conn, "dash", ["read"])
    assert meters(client, {"X-API-Key": issued.secret}) == 200   # cached now
    assert client.delete(f"/api/v1/api-keys/{issued.key.id}", headers=admin).status_code == 204
    r = client.get("/api/v1/meters", headers={"X-API-Key": issued.secret})
    assert r.status_code == 401 and r.json()["detail"] == "API key revoked"


def test_revoking_elsewhere_takes_effect_within_the_bound(client, conn, clock):
    issued = issue_key(conn, "dash", ["read"])
    assert meters(client, {"X-API-Key": issued.secret}) == 200
    assert revoke_key(conn, issued.key.id)          # the CLI, another worker, SQL
    clock.advance(AUTH_CACHE_SECONDS - 0.5)
    assert meters(client, {"X-API-Key": issued.secret}) == 200
    clock.advance(0.5)
    r = client.get("/api/v1/meters", headers={"X-API-Key": issued.secret})
    assert r.status_code == 401 and r.json()["detail"] == "API key revoked"
    # and a refusal is not cached: it is checked again (and refused again) every time
    assert len(cache_of(client)) == 0
    assert meters(client, {"X-API-Key": issued.secret}) == 401


def test_the_cache_never_outlives_a_keys_expiry(client, conn, clock):
    issued = issue_key(conn, "short", ["read"], expires_in_days=1)
    conn.execute("UPDATE config.api_key SET expires_at = now() + interval '2 seconds' WHERE id = %s",
                 (issued.key.id,))
    assert meters(client, {"X-API-Key": issued.secret}) == 200
    digest = AuthCache.digest(issued.secret)
    assert cache_of(client).get(digest) is not None
    clock.offset += 2.5     # past expires_at on the wall clock, still fresh in the cache
    assert cache_of(client).get(digest) is None
    assert len(cache_of(client)) == 0


def test_the_cache_never_outlives_an_access_tokens_expiry(client, conn, clock):
    uid = make_user(conn, "ada")
    token = users.access_token(users.get_user(conn, uid), minutes=1)
    assert meters(client, {"Authorization": f"Bearer {token}"}) == 200
    digest = AuthCache.digest(token)
    assert cache_of(client).get(digest) is not None
    clock.offset += 61      # past the token's exp on the wall clock, still fresh in the cache
    assert cache_of(client).get(digest) is None


def test_disabling_a_user_through_the_api_takes_effect_at_once(client, conn):
    make_user(conn, "root", "admin")
    uid = make_user(conn, "ada", "engineer")
    admin, ada = login(client, "root"), login(client, "ada")
    assert meters(client, ada) == 200
    assert client.patch(f"/api/v1/users/{uid}", headers=admin, json={"enabled": False}).status_code == 200
    assert meters(client, ada) == 401


def test_demoting_and_rescoping_a_user_take_effect_at_once(client, conn):
    site = two_buildings(conn)
    make_user(conn, "root", "admin")
    uid = make_user(conn, "ada", "engineer")
    admin, ada = login(client, "root"), login(client, "ada")
    assert client.post("/api/v1/cost-centers", headers=ada, json={"name": "x"}).status_code == 201
    assert client.patch(f"/api/v1/users/{uid}", headers=admin, json={"role": "viewer"}).status_code == 200
    assert client.post("/api/v1/cost-centers", headers=ada, json={"name": "y"}).status_code == 403
    r = client.patch(f"/api/v1/users/{uid}", headers=admin, json={"space_ids": [site["A"]]})
    assert r.status_code == 200, r.text
    ids = {m["id"] for m in client.get("/api/v1/meters", headers=ada).json()["items"]}
    assert ids == {site["a1"]}


def test_deleting_a_user_takes_effect_at_once(client, conn):
    make_user(conn, "root", "admin")
    uid = make_user(conn, "ada")
    admin, ada = login(client, "root"), login(client, "ada")
    assert meters(client, ada) == 200
    assert client.delete(f"/api/v1/users/{uid}", headers=admin).status_code == 204
    assert meters(client, ada) == 401


def test_disabling_a_user_elsewhere_takes_effect_within_the_bound(client, conn, clock):
    uid = make_user(conn, "ada")
    ada = login(client, "ada")
    assert meters(client, ada) == 200
    conn.execute("UPDATE config.app_user SET enabled = false WHERE id = %s", (uid,))
    clock.advance(AUTH_CACHE_SECONDS)
    r = client.get("/api/v1/meters", headers=ada)
    assert r.status_code == 401 and r.json()["detail"] == "account disabled or removed"


def test_a_lookup_that_started_before_a_change_cannot_store_its_stale_answer():
    cache = AuthCache()
    p = Principal("api_key", 1, "k", "viewer", ("read",))
    generation = cache.generation       # a request starts reading the database…
    cache.clear()                       # …an admin revokes the key meanwhile
    cache.put(b"d", p, float("inf"), generation)
    assert cache.get(b"d") is None
    cache.put(b"d", p, float("inf"), cache.generation)
    assert cache.get(b"d") is p


def test_the_cache_stays_bounded():
    cache = AuthCache(max_entries=3)
    p = Principal("api_key", 1, "k", "viewer", ("read",))
    for i in range(10):
        cache.put(bytes([i]), p, float("inf"), cache.generation)
        assert len(cache) <= 3


def test_a_zero_ttl_disables_the_cache():
    cache = AuthCache(ttl_s=0)
    cache.put(b"d", Principal("api_key", 1, "k", "viewer", ("read",)), float("inf"), cache.generation)
    assert cache.get(b"d") is None and len(cache) == 0


def test_expiry_on_the_wall_clock_is_checked_on_every_hit():
    now = [dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp()]
    cache = AuthCache(wall=lambda: now[0])
    p = Principal("api_key", 1, "k", "viewer", ("read",))
    cache.put(b"d", p, now[0] + 1, cache.generation)
    assert cache.get(b"d") is p
    now[0] += 1
    assert cache.get(b"d") is None
