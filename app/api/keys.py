"""API key authentication and scope guards.

The middleware turns `X-API-Key: <key>` or `Authorization: Bearer <key>` into
`request.auth` (an app.apikeys.ApiKey) or answers 401; a guard made by
`requires_scope` answers 403 when the key lacks the scope. Routes with
`opt={"exclude_from_auth": True}` (health, docs) need no key.
"""

from __future__ import annotations

import anyio
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.api.problems import problem
from app.apikeys import ApiKey, KeyRejected, verify_key

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="wattline"'}


def presented_key(connection: ASGIConnection) -> str | None:
    key = connection.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = connection.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        presented = presented_key(connection)
        database = connection.app.state.database

        def verify() -> ApiKey:
            with database.connection() as conn:
                return verify_key(conn, presented)

        try:
            key = await anyio.to_thread.run_sync(verify)
        except KeyRejected as exc:
            raise problem(401, "unauthenticated", "Not authenticated", exc.reason, headers=_CHALLENGE) from None
        return AuthenticationResult(user=key.name, auth=key)


def requires_scope(scope: str):
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        key: ApiKey | None = connection.scope.get("auth")
        if key is None or not key.allows(scope):
            have = ", ".join(key.scopes) if key else "none"
            raise problem(403, "forbidden", "Forbidden",
                          f"this API key lacks the '{scope}' scope (it has: {have})")

    guard.__name__ = f"requires_{scope}"
    return guard
