"""Rollups, virtual and offline meters, completeness, gap-filled views.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

FILES: list[str] = []


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
