"""People who log in: users, passwords, lockout, access and refresh tokens.

- Passwords are hashed with argon2id (argon2-cffi's defaults); a hash made with older
  parameters is upgraded at the next successful login.
- After MAX_FAILURES consecutive failed logins a user is locked for LOCK_MINUTES; the
  lock ends by itself. A failure against an unknown user costs the same hash time, so
  answers do not reveal which usernames exist.
- An access token is a JWT (HS256) valid ACCESS_MINUTES, naming the user (`sub`); the
  user's role, state and data scope are read from the database, not the token: the API
  keeps what it read for at most a few seconds per process (app.api.security.AuthCache),
  so disabling or re-scoping a user through the API takes effect at once, and done
  elsewhere (the CLI, SQL, another API process) within that bound.
- A refresh token is 256 random bits, stored as SHA-256, valid REFRESH_DAYS, used once:
  each refresh revokes it and issues the next of its family. Presenting a used token
  again revokes the whole family (somebody holds a copy).
- The signing key is WATTLINE_JWT_SECRET, else a random key generated once into
  <data_dir>/jwt-secret (mode 0600). Passwords, keys and tokens are never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jwt
import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from app.scopes import DataScope

ROLES = ("admin", "engineer", "viewer")
ROLE_SCOPES = {"admin": ("read", "write", "ingest"), "engineer": ("read", "write"), "viewer": ("read",)}
MAX_FAILURES = 5
LOCK_MINUTES = 15
ACCESS_MINUTES = 15
REFRESH_DAYS = 30
ALGORITHM = "HS256"
ISSUER = "wattline"
MIN_PASSWORD = 10

_hasher = PasswordHasher()  # argon2id
_DUMMY_HASH = _hasher.hash("not a real password, used to keep timing even")


class LoginRejected(Exception):
    """Login or token refused; `reason` is safe to show the caller."""

    def __init__(self, reason: str, status: int = 401):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    enabled: bool
    scope: DataScope

    @property
    def scopes(self) -> tuple[str, ...]:
        return ROLE_SCOPES[self.role]


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int  # seconds the access token lives
    token_type: str = "Bearer"


# ------------------------------------------------------------------- passwords
def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password: must be at least {MIN_PASSWORD} characters")


# ----------------------------------------------------------------------- users
_USER_COLS = "id, username, role, enabled, restricted"


def _scope(conn: psycopg.Connection, user_id: int, restricted: bool) -> DataScope:
    if not restricted:
        return DataScope()
    spaces = conn.execute("SELECT space_id FROM config.user_space WHERE user_id = %s", (user_id,)).fetchall()
    tenants = conn.execute("SELECT tenant_id FROM config.user_tenant WHERE user_id = %s", (user_id,)).fetchall()
    return DataScope(frozenset(r[0] for r in spaces), frozenset(r[0] for r in tenants))


def _user(conn: psycopg.Connection, row) -> User:
    return User(row[0], row[1], row[2], row[3], _scope(conn, row[0], row[4]))


def create_user(conn: psycopg.Connection, username: str, role: str = "viewer",
                password: str | None = None) -> tuple[User, str]:
    """Create a user; returns it and the password (generated when none is given)."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    password = password if password is not None else generate_password()
    check_password_strength(password)
    try:
        row = conn.execute(
            f"INSERT INTO config.app_user (username, password_hash, role) VALUES (%s, %s, %s) "
            f"RETURNING {_USER_COLS}",
            (username, hash_password(password), role),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise ValueError(f"username: {username!r} is taken") from None
    except psycopg.errors.CheckViolation:
        raise ValueError("username: 1-64 letters, digits or _ . @ -") from None
    return _user(conn, row), password


def get_user(conn: psycopg.Connection, user_id: int) -> User | None:
    """The user with their data scope, in one round trip (every authenticated request
    that misses the API's credential cache reads it)."""
    row = conn.execute(
        """
        SELECT u.id, u.username, u.role, u.enabled, u.restricted,
               CASE WHEN u.restricted THEN ARRAY(SELECT space_id FROM config.user_space
                                                WHERE user_id = u.id) END,
               CASE WHEN u.restricted THEN ARRAY(SELECT tenant_id FROM config.user_tenant
                                                WHERE user_id = u.id) END
        FROM config.app_user u WHERE u.id = %s
        """,
        (user_id,),
    ).fetchone()
    if row is None:
        return None
    scope = DataScope(frozenset(row[5]), frozenset(row[6])) if row[4] else DataScope()
    return User(row[0], row[1], row[2], row[3], scope)


def set_password(conn: psycopg.Connection, user_id: int, password: str) -> None:
    check_password_strength(password)
    conn.execute(
        "UPDATE config.app_user SET password_hash = %s, failed_logins = 0, locked_until = NULL WHERE id = %s",
        (hash_password(password), user_id),
    )
    revoke_all(conn, user_id)


def authenticate(conn: psycopg.Connection, username: str, password: str) -> User:
    """The user whose password this is, or LoginRejected (401, or 423 while locked)."""
    rejected: LoginRejected | None = None
    with conn.transaction():  # the failure count must commit even though the login fails
        row = conn.execute(
            "SELECT id, password_hash, enabled, locked_until > now(), locked_until "
            "FROM config.app_user WHERE lower(username) = lower(%s) FOR UPDATE",
            (username,),
        ).fetchone()
        if row is None:
            try:
                _hasher.verify(_DUMMY_HASH, password)
            except VerificationError:
                pass
            raise LoginRejected("wrong username or password")
        user_id, stored, enabled, locked, locked_until = row
        if locked:
            raise LoginRejected(f"account locked after {MAX_FAILURES} failed logins until "
                                f"{locked_until.isoformat(timespec='seconds')}", status=423)
        try:
            _hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            conn.execute(
                """
                UPDATE config.app_user SET
                    failed_logins = failed_logins + 1,
                    locked_until = CASE WHEN failed_logins + 1 >= %s
                                        THEN now() + make_interval(mins => %s) END
                WHERE id = %s
                """,
                (MAX_FAILURES, LOCK_MINUTES, user_id),
            )
            rejected = LoginRejected("wrong username or password")
        else:
            if not enabled:
                raise LoginRejected("account disabled")
            new_hash = hash_password(password) if _hasher.check_needs_rehash(stored) else stored
            conn.execute(
                "UPDATE config.app_user SET failed_logins = 0, locked_until = NULL, last_login_at = now(), "
                "password_hash = %s WHERE id = %s",
                (new_hash, user_id),
            )
    if rejected is not None:
        raise rejected
    return get_user(conn, user_id)


def unlock(conn: psycopg.Connection, user_id: int) -> None:
    conn.execute("UPDATE config.app_user SET failed_logins = 0, locked_until = NULL WHERE id = %s", (user_id,))


# --------------------------------------------------------------------- tokens
@lru_cache(maxsize=4)
def _secret_from_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
        except Exception:
            os.close(fd)
            raise
        os.close(fd)
    return path.read_text().strip()


def signing_key() -> str:
    from app.settings import get_settings

    settings = get_settings()
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value()
    try:
        return _secret_from_file(settings.data_dir / "jwt-secret")
    except FileExistsError:  # another process created it a moment ago
        _secret_from_file.cache_clear()
        return _secret_from_file(settings.data_dir / "jwt-secret")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def access_token(user: User, *, minutes: float = ACCESS_MINUTES, key: str | None = None) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    claims = {"sub": str(user.id), "name": user.username, "role": user.role, "iss": ISSUER,
              "typ": "access", "iat": now, "exp": now + dt.timedelta(minutes=minutes),
              "jti": secrets.token_hex(8)}
    return jwt.encode(claims, key or signing_key(), algorithm=ALGORITHM)


def decode_access_token(token: str, key: str | None = None) -> int:
    """The user id an access token names, or LoginRejected (expired, forged, wrong kind)."""
    return access_token_claims(token, key)[0]


def access_token_claims(token: str, key: str | None = None) -> tuple[int, float]:
    """The user id an access token names and when it expires (POSIX seconds), or
    LoginRejected (expired, forged, wrong kind)."""
    try:
        claims = jwt.decode(token, key or signing_key(), algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "sub", "iat"]})
    except jwt.ExpiredSignatureError:
        raise LoginRejected("access token expired") from None
    except jwt.InvalidTokenError:
        raise LoginRejected("invalid access token") from None
    if claims.get("typ") != "access":
        raise LoginRejected("invalid access token")
    try:
        return int(claims["sub"]), float(claims["exp"])
    except (TypeError, ValueError):
        raise LoginRejected("invalid access token") from None


def _new_refresh(conn: psycopg.Connection, user_id: int, family: uuid.UUID) -> str:
    token = "wlr_" + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO config.refresh_token (user_id, family, token_sha256, expires_at) "
        "VALUES (%s, %s, %s, now() + make_interval(days => %s))",
        (user_id, family, _digest(token), REFRESH_DAYS),
    )
    return token


def issue_tokens(conn: psycopg.Connection, user: User) -> Tokens:
    """A fresh access token and the first refresh token of a new family."""
    refresh = _new_refresh(conn, user.id, uuid.uuid4())
    return Tokens(access_token(user), refresh, ACCESS_MINUTES * 60)


def refresh(conn: psycopg.Connection, token: str) -> Tokens:
    """Trade a refresh token for a new pair (the old one stops working)."""
    reused = False
    with conn.transaction():  # a reuse's revocation must commit though the refresh fails
        row = conn.execute(
            "SELECT id, user_id, family, revoked_at IS NOT NULL, expires_at <= now() "
            "FROM config.refresh_token WHERE token_sha256 = %s FOR UPDATE",
            (_digest(token or ""),),
        ).fetchone()
        if row is None:
            raise LoginRejected("unknown refresh token")
        token_id, user_id, family, revoked, expired = row
        if revoked:
            conn.execute("UPDATE config.refresh_token SET revoked_at = coalesce(revoked_at, now()) "
                         "WHERE family = %s", (family,))
            reused = True
        if not reused:
            if expired:
                raise LoginRejected("refresh token expired")
            user = get_user(conn, user_id)
            if user is None or not user.enabled:
                raise LoginRejected("account disabled")
            conn.execute("UPDATE config.refresh_token SET revoked_at = now() WHERE id = %s", (token_id,))
            new = _new_refresh(conn, user_id, family)
    if reused:
        raise LoginRejected("refresh token already used: every token of this login is now revoked")
    return Tokens(access_token(user), new, ACCESS_MINUTES * 60)


def logout(conn: psycopg.Connection, token: str) -> bool:
    """Revoke the refresh token's whole family (this login). False: unknown token."""
    cur = conn.execute(
        "UPDATE config.refresh_token SET revoked_at = coalesce(revoked_at, now()) WHERE family = "
        "(SELECT family FROM config.refresh_token WHERE token_sha256 = %s)",
        (_digest(token or ""),),
    )
    return cur.rowcount > 0


def revoke_all(conn: psycopg.Connection, user_id: int) -> None:
    conn.execute("UPDATE config.refresh_token SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
                 (user_id,))
