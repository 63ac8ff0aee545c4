"""HTTP ingest and API keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FILES: list[str] = ["ingest.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
