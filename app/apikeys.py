"""API keys for machines: issue, verify, revoke.

A key reads `wl_<prefix>_<secret>`: the prefix finds the row, the secret is 32 random
bytes. Only SHA-256 of the whole key is stored. Argon2 (also installed) exists to make
guessing *low-entropy passwords* slow; a 256-bit random secret cannot be guessed at any
speed, so a slow hash would only cost every ingest request tens of milliseconds and a
lot of memory, and hand an attacker a cheap way to load the server. The comparison is
constant-time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import psycopg

SCOPES = ("read", "write", "ingest")
KEY_PREFIX = "wl"
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class KeyRejected(Exception):
    """The presented key cannot be used; `reason` is safe to show the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    data_source_id: int | None
    expires_at: dt.datetime | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # the whole key text: shown once, never stored


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def issue_key(
    conn: psycopg.Connection,
    name: str,
    scopes: list[str] | tuple[str, ...],
    *,
    expires_in_days: float | None = None,
    data_source_id: int | None = None,
) -> IssuedKey:
    """Create a key; the returned `secret` is the only copy of it."""
    scopes = tuple(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise ValueError(f"scopes: {unknown or 'none given'} (choose from {', '.join(SCOPES)})")
    if expires_in_days is not None and expires_in_days <= 0:
        raise ValueError(f"expires: {expires_in_days} days must be positive")
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(12))
    secret = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    row = conn.execute(
        """
        INSERT INTO config.api_key (name, prefix, secret_sha256, scopes, data_source_id, expires_at)
        VALUES (%s, %s, %s, %s, %s, CASE WHEN %s::float8 IS NULL THEN NULL
                                         ELSE now() + make_interval(secs => %s::float8 * 86400) END)
        RETURNING id, expires_at
        """,
        (name, prefix, _digest(secret), list(scopes), data_source_id, expires_in_days, expires_in_days),
    ).fetchone()
    return IssuedKey(ApiKey(row[0], name, prefix, scopes, data_source_id, row[1]), secret)


def verify_key(conn: psycopg.Connection, presented: str | None) -> ApiKey:
    """The key's record, or KeyRejected saying whether it is missing, malformed,
    unknown, revoked or expired."""
    if not presented:
        raise KeyRejected("no API key given (send X-API-Key or Authorization: Bearer)")
    parts = presented.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1]:
        raise KeyRejected("malformed API key")
    row = conn.execute(
        """
        SELECT id, name, prefix, secret_sha256, scopes, data_source_id, expires_at,
               revoked_at IS NOT NULL, expires_at IS NOT NULL AND expires_at <= now()
        FROM config.api_key WHERE prefix = %s
        """,
        (parts[1],),
    ).fetchone()
    if row is None or not hmac.compare_digest(bytes(row[3]), _digest(presented.strip())):
        raise KeyRejected("unknown API key")
    if row[7]:
        raise KeyRejected("API key revoked")
    if row[8]:
        raise KeyRejected("API key expired")
    # Coarse last-use stamp: at most one write per key per minute.
    conn.execute(
        "UPDATE config.api_key SET last_used_at = now() WHERE id = %s "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (row[0],),
    )
    return ApiKey(row[0], row[1], row[2], tuple(row[4]), row[5], row[6])


def revoke_key(conn: psycopg.Connection, key_id: int) -> bool:
    cur = conn.execute(
        "UPDATE config.api_key SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (key_id,)
    )
    return cur.rowcount == 1


def list_keys(conn: psycopg.Connection) -> list[dict]:
    cols = ("id", "name", "prefix", "scopes", "data_source_id", "created_at", "expires_at",
            "revoked_at", "last_used_at")
    rows = conn.execute(f"SELECT {', '.join(cols)} FROM config.api_key ORDER BY id").fetchall()
    return [dict(zip(cols, r)) for r in rows]
