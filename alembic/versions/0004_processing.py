"""Processing: cleaning, normalization, recomputation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FILES: list[str] = ["clean.sql", "normalize.sql", "recompute.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
