"""Where a request presents its credential: `X-API-Key: <key>` or
`Authorization: Bearer <key-or-token>`. app.api.security turns it into a Principal."""

from __future__ import annotations

from litestar.connection import ASGIConnection


def presented_key(connection: ASGIConnection) -> str | None:
    key = connection.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = connection.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
