"""The read-only role Grafana logs in as: it reads every api view and calls the api
functions, touches nothing else, writes nothing, keeps its grants when views are
recreated, and gets a login only through `wattline db reader-password`."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from app.grafana import READER_ROLE, grafana_env, set_reader_password

INTERNAL = ("raw.point_value", "energy.meter_interval", "energy.meter_daily", "config.meter",
            "config.data_source", "ops.job_run", "ops.dirty_range", "billing.bill", "carbon.meter_emission")


def api_views(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT format('%I.%I', schemaname, viewname) FROM pg_views WHERE schemaname = 'api' ORDER BY 1")]


@pytest.fixture
def saved_login(server_url):
    """The role is cluster-wide: put its login state back after a test changes it."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        can_login, verifier = admin.execute(
            "SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s", (READER_ROLE,)).fetchone()
    yield
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("ALTER ROLE {} {} PASSWORD {}").format(
            psycopg.sql.Identifier(READER_ROLE), psycopg.sql.SQL("LOGIN" if can_login else "NOLOGIN"),
            psycopg.sql.Literal(verifier)))


def test_role_exists_without_login(conn):
    row = conn.execute("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                       "WHERE rolname = %s", (READER_ROLE,)).fetchone()
    assert row is not None and row[1:] == (False, False, False)


def test_reader_reads_every_api_view_and_nothing_else(conn):
    views = api_views(conn)
    assert {"api.space", "api.meter", "api.meter_raw", "api.meter_interval", "api.latest_reading",
            "api.collector_status", "api.dead_letter", "api.job_run", "api.dirty_pending",
            "api.meter_energy_daily", "api.entity_energy_daily", "api.carbon_daily"} <= set(views)
    conn.execute(f"SET ROLE {READER_ROLE}")
    for view in views:
        conn.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()
    for table in INTERNAL:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM api.job_run")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE VIEW api.mine AS SELECT 1")


def test_reader_calls_the_api_functions_after_migration(conn):
    conn.execute("INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh')")
    meter = conn.execute("INSERT INTO config.meter (name, category_id) SELECT 'm', id FROM "
                         "config.energy_category RETURNING id").fetchone()[0]
    conn.execute(f"SET ROLE {READER_ROLE}")
    rows = conn.execute("SELECT count(*) FROM api.meter_series(%s, 'day', %s, %s)",
                        (meter, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                         dt.datetime(2026, 1, 8, tzinfo=dt.timezone.utc))).fetchone()[0]
    assert rows == 7


def test_grants_survive_views_being_recreated(conn):
    """Default privileges: a rollup rebuild drops and recreates the api views."""
    from app.rollups import rebuild

    rebuild(conn)
    conn.execute("CREATE VIEW api.added_later AS SELECT 1 AS one")
    conn.execute(f"SET ROLE {READER_ROLE}")
    assert conn.execute("SELECT one FROM api.added_later").fetchone() == (1,)
    conn.execute("SELECT * FROM api.meter_energy_daily LIMIT 1").fetchall()
    conn.execute("SELECT * FROM api.entity_completeness_daily LIMIT 1").fetchall()


def test_reader_password_gives_a_read_only_login(conn, db_url, saved_login):
    password = set_reader_password(conn)
    env = grafana_env(db_url, password)
    assert env["WATTLINE_GRAFANA_DB_USER"] == READER_ROLE and env["WATTLINE_GRAFANA_DB_NAME"] == make_url(db_url).database
    url = make_url(db_url).set(username=READER_ROLE, password=password).render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as reader:
        assert reader.execute("SELECT current_user").fetchone() == (READER_ROLE,)
        assert reader.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert reader.execute("SHOW statement_timeout").fetchone() == ("1min",)
        reader.execute("SELECT count(*) FROM api.space").fetchone()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("CREATE TEMP TABLE t (x int)")
    stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (READER_ROLE,)).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$") and password not in stored


def test_reader_password_command(db_url, saved_login):
    from app.cli import app

    result = CliRunner().invoke(app, ["db", "reader-password", "--password", "chosen-secret-1"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split("=", 1) for line in result.output.strip().splitlines())
    assert lines["WATTLINE_GRAFANA_DB_USER"] == READER_ROLE
    assert lines["WATTLINE_GRAFANA_DB_PASSWORD"] == "chosen-secret-1"
    assert lines["WATTLINE_GRAFANA_DB_PORT"] == str(make_url(db_url).port)
    url = make_url(db_url).set(username=READER_ROLE, password="chosen-secret-1").render_as_string(hide_password=False)
    with psycopg.connect(url) as reader:
        assert reader.execute("SELECT 1 FROM api.reporting").fetchone() == (1,)
