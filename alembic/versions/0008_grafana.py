"""Read-only api views for dashboards and the Grafana reader role.

sql/api_ops.sql adds the configuration, raw-data and operations views the dashboards
read; sql/grafana_role.sql creates the cluster-wide NOLOGIN role wattline_reader (if
missing) and grants it the api schema only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FILES: list[str] = ["api_ops.sql", "grafana_role.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
