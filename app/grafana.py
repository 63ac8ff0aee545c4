"""Letting a Grafana log in: the migrations create the read-only role wattline_reader
without a login (roles are cluster-wide; a password in a migration would be one secret
shared by every database), so `wattline db reader-password` gives it one when an
installation wants Grafana, and prints the settings the provisioned data source reads
(grafana/provisioning/datasources/wattline.yaml).

The password travels as a SCRAM verifier computed here, so the clear text never reaches
the server's statement log.
"""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

READER_ROLE = "wattline_reader"


class ReaderRoleMissing(RuntimeError):
    """The database has not been migrated to the revision that creates the role."""


def set_reader_password(conn: psycopg.Connection, password: str | None = None) -> str:
    """Give wattline_reader LOGIN and a password (a new random one unless given); returns it."""
    if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER_ROLE,)).fetchone():
        raise ReaderRoleMissing(f"role {READER_ROLE} does not exist: run `wattline db upgrade` first")
    password = password or secrets.token_urlsafe(24)
    verifier = conn.pgconn.encrypt_password(password.encode(), READER_ROLE.encode(), b"scram-sha-256")
    conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
        sql.Identifier(READER_ROLE), sql.Literal(verifier.decode())))
    return password


def grafana_env(url: str, password: str) -> dict[str, str]:
    """The WATTLINE_GRAFANA_DB_* variables the provisioning file reads, for this database."""
    u = make_url(url)
    return {
        "WATTLINE_GRAFANA_DB_HOST": u.host or "127.0.0.1",
        "WATTLINE_GRAFANA_DB_PORT": str(u.port or 5432),
        "WATTLINE_GRAFANA_DB_NAME": u.database or "",
        "WATTLINE_GRAFANA_DB_USER": READER_ROLE,
        "WATTLINE_GRAFANA_DB_PASSWORD": password,
    }
