"""Schema migrations: Alembic revisions that execute the commented files in sql/.

Each sql/ file holds its upgrade and, after a `-- migrate:down` line, its downgrade, so
one concern's creation and removal are read side by side.
"""

from __future__ import annotations

from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from app import PROJECT_ROOT
from app.db import database_url, sql_file_parts, sqlalchemy_url


def _execute(sql: str) -> None:
    # The raw psycopg connection runs a multi-statement script with dollar quotes and %
    # as written; SQLAlchemy's text() would try to parse bind parameters out of it.
    if sql.strip():
        op.get_bind().connection.driver_connection.execute(sql)


def run_sql_up(files: list[str]) -> None:
    for name in files:
        _execute(sql_file_parts(name)[0])


def replace_functions(file: str, names: list[str]) -> None:
    """Re-create functions of an sql/ file as they are written there now (CREATE OR REPLACE),
    for a revision that changes a function an earlier revision created. Each function is
    read from its `CREATE FUNCTION name(` to the end of its `$fn$` body."""
    up = sql_file_parts(file)[0]
    for name in names:
        start = up.index(f"CREATE FUNCTION {name}(")
        end = up.index("$fn$;", up.index("$fn$", up.index(" AS $fn$", start) + 8)) + len("$fn$;")
        _execute("CREATE OR REPLACE FUNCTION " + up[start + len("CREATE FUNCTION "):end])


def run_sql_down(files: list[str]) -> None:
    for name in reversed(files):
        _execute(sql_file_parts(name)[1])


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    cfg.attributes["url"] = url or database_url()
    return cfg


def upgrade(revision: str = "head", url: str | None = None) -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(revision: str, url: str | None = None) -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    engine = create_engine(sqlalchemy_url(url or database_url()), poolclass=pool.NullPool)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        return ctx.get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
