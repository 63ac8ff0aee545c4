"""api views of cost and bills for dashboards and analysts.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

FILES: list[str] = ["api_billing.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
