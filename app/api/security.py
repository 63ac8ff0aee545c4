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
applied by services to every read. Handlers get the principal through the dependency
`principal`. Routes with `opt={"exclude_from_auth": True}` need no credentials.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.api.keys import presented_key
from app.api.problems import problem
from app.apikeys import KeyRejected, verify_key
from app.scopes import DataScope
from app.users import LoginRejected, decode_access_token, get_user

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
    restricted = conn.execute("SELECT restricted FROM config.api_key WHERE id = %s", (key_id,)).fetchone()
    if not restricted or not restricted[0]:
        return DataScope()
    spaces = conn.execute("SELECT space_id FROM config.api_key_space WHERE api_key_id = %s", (key_id,)).fetchall()
    tenants = conn.execute("SELECT tenant_id FROM config.api_key_tenant WHERE api_key_id = %s",
                           (key_id,)).fetchall()
    return DataScope(frozenset(r[0] for r in spaces), frozenset(r[0] for r in tenants))


def authenticate(conn, presented: str | None) -> Principal:
    """The principal for presented credentials; KeyRejected/LoginRejected otherwise."""
    if presented and _looks_like_jwt(presented):
        user = get_user(conn, decode_access_token(presented))
        if user is None or not user.enabled:
            raise LoginRejected("account disabled or removed")
        return Principal("user", user.id, user.username, user.role, user.scopes, user.scope)
    if not presented:
        raise KeyRejected("no API key given (send X-API-Key, or Authorization: Bearer with an "
                          "API key or an access token from /api/v1/auth/login)")
    key = verify_key(conn, presented)
    role = "engineer" if "write" in key.scopes else "viewer"
    return Principal("api_key", key.id, key.name, role, key.scopes, _key_scope(conn, key.id), key.data_source_id)


class AuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        presented = presented_key(connection)
        database = connection.app.state.database

        def verify() -> Principal:
            with database.connection() as conn:
                return authenticate(conn, presented)

        try:
            principal = await anyio.to_thread.run_sync(verify)
        except (KeyRejected, LoginRejected) as exc:
            raise problem(401, "unauthenticated", "Not authenticated", exc.reason, headers=_CHALLENGE) from None
        return AuthenticationResult(user=principal.name, auth=principal)


def requires_scope(scope: str):
    """Guard: the principal holds `scope` (read, write or ingest)."""
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        p = connection.scope.get("auth")
        if p is None or not p.allows(scope):
            have = ", ".join(p.scopes) if p else "none"
            who = "this API key" if getattr(p, "kind", "api_key") == "api_key" else "this user's role"
            raise problem(403, "forbidden", "Forbidden", f"{who} lacks the '{scope}' scope (it has: {have})")

    guard.__name__ = f"requires_{scope}"
    return guard


def requires_role(*roles: str):
    """Guard: the principal's role is one of `roles`."""
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        p = connection.scope.get("auth")
        if p is None or p.role not in roles:
            raise problem(403, "forbidden", "Forbidden",
                          f"requires role {' or '.join(roles)} (you are {getattr(p, 'role', 'anonymous')})")

    guard.__name__ = f"requires_role_{'_'.join(roles)}"
    return guard


def requires_unrestricted(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Guard: the principal's data scope is the whole organisation (configuration writes)."""
    p = connection.scope.get("auth")
    if p is None or not p.scope.unrestricted:
        raise problem(403, "forbidden", "Forbidden",
                      "principals restricted to some spaces or tenants cannot change configuration")


def provide_principal(request: Request) -> Principal:
    """Dependency `principal`: the authenticated caller."""
    return request.auth
