"""Who is calling, and what they may do.

Authentication (one middleware): `Authorization: Bearer <token>` carries either a JWT
access token from POST /api/v1/auth/login (a user) or an API key (`wl_…`, also accepted
as `X-API-Key`). Either becomes a `Principal` in `request.auth`:

  principal   role       scopes                       data scope
  user        its role   admin: read, write, ingest   its granted spaces/tenants, or all
                         engineer: read, write
                         viewer: read
  API key     engineer when it has `write`, else viewer; the key's own scopes; its grants

Authorization: guards declared on controllers — `requires_scope("read"|"write"|"ingest")`
and `requires_role("admin", ...)` — and the principal's `scope` (app.scopes.DataScope)
applied by services to every read. The guards are coroutines although they never wait:
Litestar runs a plain-function guard in a worker thread, a thread hop per guard per
request. Handlers get the principal through the dependency
`principal`. Routes with `opt={"exclude_from_auth": True}` need no credentials.

Credential cache: looking a credential up costs one to three queries, so each process
keeps the principal it resolved for a presented credential (keyed by the credential's
SHA-256) for at most AUTH_CACHE_SECONDS. Within that bound:

- expiry is exact: an entry never outlives the API key's `expires_at` or the access
  token's `exp`;
- revoking a key, and changing, disabling or deleting a user, through this process's API
  clears the process's cache at once; done elsewhere (another worker, the CLI, SQL) it
  takes effect within AUTH_CACHE_SECONDS;
- rejected credentials are never cached (every attempt is checked against the database).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import anyio
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.api.database import Database
from app.api.keys import presented_key
from app.api.problems import problem
from app.apikeys import KeyRejected, verify_key
from app.scopes import DataScope
from app.users import LoginRejected, access_token_claims, get_user

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wattline"'}
ROLE_RANK = {"viewer": 0, "engineer": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    kind: str                     # "user" or "api_key"
    id: int
    name: str
    role: str                     # admin, engineer, viewer
    scopes: tuple[str, ...]       # read, write, ingest
    scope: DataScope = field(default_factory=DataScope)
    data_source_id: int | None = None   # API keys bound to one data source (ingest)

    def allows(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return f"{'user' if self.kind == 'user' else 'apikey'}:{self.name}#{self.id}"


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


def _key_scope(conn, key_id: int) -> DataScope:
    row = conn.execute(
        """
        SELECT k.restricted,
               CASE WHEN k.restricted THEN ARRAY(SELECT space_id FROM config.api_key_space
                                                WHERE api_key_id = k.id) END,
               CASE WHEN k.restricted THEN ARRAY(SELECT tenant_id FROM config.api_key_tenant
                                                WHERE api_key_id = k.id) END
        FROM config.api_key k WHERE k.id = %s
        """,
        (key_id,),
    ).fetchone()
    if not row or not row[0]:
        return DataScope()
    return DataScope(frozenset(row[1]), frozenset(row[2]))


def resolve(conn, presented: str | None) -> tuple[Principal, float]:
    """The principal for presented credentials and until when (POSIX seconds) the
    credential itself is valid; KeyRejected/LoginRejected otherwise."""
    if presented and _looks_like_jwt(presented):
        user_id, expires = access_token_claims(presented)
        user = get_user(conn, user_id)
        if user is None or not user.enabled:
            raise LoginRejected("account disabled or removed")
        return Principal("user", user.id, user.username, user.role, user.scopes, user.scope), expires
    if not presented:
        raise KeyRejected("no API key given (send X-API-Key, or Authorization: Bearer with an "
                          "API key or an access token from /api/v1/auth/login)")
    key = verify_key(conn, presented)
    role = "engineer" if "write" in key.scopes else "viewer"
    expires = key.expires_at.timestamp() if key.expires_at is not None else math.inf
    return (Principal("api_key", key.id, key.name, role, key.scopes, _key_scope(conn, key.id), key.data_source_id),
            expires)


def authenticate(conn, presented: str | None) -> Principal:
    """The principal for presented credentials; KeyRejected/LoginRejected otherwise."""
    return resolve(conn, presented)[0]


AUTH_CACHE_SECONDS = 5.0      # revocation elsewhere takes effect within this time
AUTH_CACHE_ENTRIES = 10_000


class AuthCache:
    """Principals of recently verified credentials, per process (see the module doc).

    An entry is used while both its freshness (AUTH_CACHE_SECONDS after it was looked up,
    monotonic clock) and the credential's own expiry (wall clock) hold. `clear()` drops
    everything and bumps a generation, so a lookup that read the database before a
    change cannot store its stale answer after the change cleared the cache.
    """

    def __init__(self, ttl_s: float = AUTH_CACHE_SECONDS, max_entries: int = AUTH_CACHE_ENTRIES,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self.wall = wall
        self.generation = 0
        self._entries: dict[bytes, tuple[Principal, float, float]] = {}

    @staticmethod
    def digest(presented: str) -> bytes:
        return hashlib.sha256(presented.encode()).digest()

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        principal, fresh_until, valid_until = entry
        if self.clock() >= fresh_until or self.wall() >= valid_until:
            self._entries.pop(digest, None)
            return None
        return principal

    def put(self, digest: bytes, principal: Principal, valid_until: float, generation: int) -> None:
        if self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()   # many distinct credentials at once: start over, never grow
        self._entries[digest] = (principal, self.clock() + self.ttl_s, valid_until)

    def clear(self) -> None:
        """Forget every principal (a user or key changed through this process)."""
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def forget_credentials(app) -> None:
    """Call after revoking a key or changing a user: this process stops using what it
    cached at once (other processes within AUTH_CACHE_SECONDS)."""
    cache = getattr(app.state, "auth_cache", None)
    if cache is not None:
        cache.clear()


class AuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        presented = presented_key(connection)
        state = connection.app.state
        database = state.database
        cache: AuthCache | None = getattr(state, "auth_cache", None)
        digest = AuthCache.digest(presented) if presented and cache is not None else None
        if digest is not None:
            principal = cache.get(digest)
            if principal is not None:
                return AuthenticationResult(user=principal.name, auth=principal)
            generation = cache.generation

        def verify() -> tuple[Principal, float]:
            with database.connection() as conn:
                return resolve(conn, presented)

        try:
            principal, valid_until = await anyio.to_thread.run_sync(verify)
        except (KeyRejected, LoginRejected) as exc:
            raise problem(401, "unauthenticated", "Not authenticated", exc.reason, headers=_CHALLENGE) from None
        if digest is not None:
            cache.put(digest, principal, valid_until, generation)
        return AuthenticationResult(user=principal.name, auth=principal)


def requires_scope(scope: str):
    """Guard: the principal holds `scope` (read, write or ingest)."""
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        p = connection.scope.get("auth")
        if p is None or not p.allows(scope):
            have = ", ".join(p.scopes) if p else "none"
            who = "this API key" if getattr(p, "kind", "api_key") == "api_key" else "this user's role"
            raise problem(403, "forbidden", "Forbidden", f"{who} lacks the '{scope}' scope (it has: {have})")

    guard.__name__ = f"requires_{scope}"
    return guard


def requires_role(*roles: str):
    """Guard: the principal's role is one of `roles`."""
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        p = connection.scope.get("auth")
        if p is None or p.role not in roles:
            raise problem(403, "forbidden", "Forbidden",
                          f"requires role {' or '.join(roles)} (you are {getattr(p, 'role', 'anonymous')})")

    guard.__name__ = f"requires_role_{'_'.join(roles)}"
    return guard


async def requires_unrestricted(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: the principal's data scope is the whole organisation (configuration writes)."""
    p = connection.scope.get("auth")
    if p is None or not p.scope.unrestricted:
        raise problem(403, "forbidden", "Forbidden",
                      "principals restricted to some spaces or tenants cannot change configuration")


def provide_principal(request: Request, database: NamedDependency[Database]) -> Principal:
    """Dependency `principal`: the authenticated caller.

    It names `database` (unused) so that Litestar resolves the two dependencies one after
    the other: two dependencies of the same depth are resolved concurrently in a task
    group, which cost more per request than the two attribute lookups themselves."""
    return request.auth
