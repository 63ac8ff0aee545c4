"""Carbon: emission factors, grid intensity, interval emissions.

sql/carbon.sql builds the carbon rollups in the zone the energy rollups (0005) were
built in; jobs.carbon rebuilds them if the energy rollups later move zone.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from app.migrate import run_sql_down, run_sql_up

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FILES: list[str] = ["carbon.sql"]


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
