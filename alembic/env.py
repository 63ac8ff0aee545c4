"""Alembic environment: online migrations against Wattline's database.

The URL is taken from `config.attributes["url"]` (set by app.migrate) or the settings.
The version table stays in `public` so that downgrading to base can drop every
Wattline schema, `ops` included.
"""

from alembic import context
from sqlalchemy import create_engine, pool

from app.db import database_url, sqlalchemy_url

config = context.config
url = config.attributes.get("url") or database_url()


def run_migrations_online() -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `wattline db upgrade`")
run_migrations_online()
