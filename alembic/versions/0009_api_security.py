"""API security: users, roles, data scopes, login throttling.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

sql/api_security.sql: users, refresh tokens, user and API key data scopes.
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FILES: list[str] = ["api_security.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
