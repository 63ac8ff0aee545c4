"""Migrations go up and down cleanly, and the ORM models match the migrated schema."""

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from app import migrate
from app.db import sqlalchemy_url, timescale_info
from app.models import Base

SCHEMAS = {"config", "raw", "energy", "billing", "carbon", "ops", "api"}


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace").fetchall()
    return {r[0] for r in rows} & SCHEMAS


def _hypertables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT hypertable_schema || '.' || hypertable_name FROM timescaledb_information.hypertables"
        ).fetchall()
    return {r[0] for r in rows}


def test_every_revision_upgrades_and_downgrades(empty_db_url):
    script = ScriptDirectory.from_config(migrate.alembic_config(empty_db_url))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert revisions[0] == "0001"
    for rev in revisions:  # one step at a time, up then down then up again
        migrate.upgrade(rev, url=empty_db_url)
        assert migrate.current_revision(empty_db_url) == rev
        migrate.downgrade("-1", url=empty_db_url)
        migrate.upgrade(rev, url=empty_db_url)
    assert _schemas(empty_db_url) == SCHEMAS
    assert {"raw.point_value", "energy.meter_interval"} <= _hypertables(empty_db_url)
    migrate.downgrade("base", url=empty_db_url)
    assert migrate.current_revision(empty_db_url) is None
    assert _schemas(empty_db_url) == set()
    with psycopg.connect(empty_db_url) as conn:
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%%'"
        ).fetchone()[0]
    assert leftovers == 0


def test_models_match_migrated_schema(db_url):
    engine = create_engine(sqlalchemy_url(db_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parent: (
                    type_ != "schema" or name == "config"
                ),
                "compare_type": True,
            },
        )
        diff = [d for d in compare_metadata(ctx, Base.metadata) if _relevant(d)]
    assert diff == []


def _relevant(entry) -> bool:
    # Indexes and unique constraints that only SQL declares (expression indexes, the
    # exclusion constraint) are the database's business; tables and columns must match.
    kind = entry[0] if isinstance(entry, tuple) else entry[0][0]
    return kind in {"add_table", "remove_table", "add_column", "remove_column", "modify_type",
                    "modify_nullable", "add_fk", "remove_fk"}


def test_edition_is_detected(db_url):
    with psycopg.connect(db_url) as conn:
        info = timescale_info(conn)
        assert info["edition"] in {"apache", "timescale"}
        assert info["timescaledb"][0].isdigit()
        assert conn.execute("SELECT ops.timescale_edition()").fetchone()[0] == info["edition"]
