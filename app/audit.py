"""The audit log: every write through the API or the CLI, with who, when, what, before
and after, in ops.audit_log. One helper, called by every write service in the same
transaction as the change, so a change and its record commit (or roll back) together.

Secrets never reach the log: fields named like passwords, hashes or tokens are masked.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SECRET_FIELDS = {"password", "password_hash", "secret", "secret_sha256", "token", "token_sha256",
                 "refresh_token", "access_token"}
MASK = "***"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if k in SECRET_FIELDS and v is not None else _plain(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return MASK
    return value


def record(conn: psycopg.Connection, actor: str, action: str, entity: str, entity_id: Any = None,
           before: Any = None, after: Any = None) -> int:
    """Append one audit entry; returns its id. `action`: create, update, delete, import…"""
    row = conn.execute(
        "INSERT INTO ops.audit_log (actor, action, entity, entity_id, before, after) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (actor, action, entity, None if entity_id is None else str(entity_id),
         None if before is None else Jsonb(_plain(before)),
         None if after is None else Jsonb(_plain(after))),
    ).fetchone()
    return row[0]


def entries(conn: psycopg.Connection, *, entity: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first."""
    cols = ("id", "at", "actor", "action", "entity", "entity_id", "before", "after")
    rows = conn.execute(
        f"SELECT {', '.join(cols)} FROM ops.audit_log WHERE %(e)s::text IS NULL OR entity = %(e)s "
        "ORDER BY id DESC LIMIT %(n)s", {"e": entity, "n": limit},
    ).fetchall()
    return [dict(zip(cols, r)) for r in rows]


__all__ = ["record", "entries"]
