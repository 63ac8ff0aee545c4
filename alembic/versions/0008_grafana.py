"""Read-only api views for dashboards and the Grafana reader role.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FILES: list[str] = []


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
