"""Billing: tariffs, bills, interval cost.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FILES: list[str] = ["billing.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
