"""Foundation: schemas, configuration model, raw and energy hypertables, ops tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FILES = ["schemas.sql", "config.sql", "raw.sql", "energy.sql", "ops.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
