"""API security: users, roles, data scopes, login throttling.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FILES: list[str] = []


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
