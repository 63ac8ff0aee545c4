"""Rollups, virtual and offline meters, completeness, gap-filled views.

The per-meter rollups are built by energy.build_meter_rollups(zone), which picks the
materialisation by edition (ops.timescale_edition()): continuous aggregates on the
Community edition, tables on the Apache edition. The zone is the installation's
WATTLINE_REPORTING_TIMEZONE at migration time; app.rollups.rebuild changes it later.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

from app.migrate import run_sql_down, run_sql_up
from app.settings import get_settings

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BEFORE_BUILD = ["virtual_meters.sql", "offline_meters.sql", "energy_rollups.sql"]
AFTER_BUILD = ["entity_rollups.sql", "completeness.sql", "api_energy.sql"]
FILES = BEFORE_BUILD + AFTER_BUILD


def upgrade() -> None:
    run_sql_up(BEFORE_BUILD)
    op.get_bind().connection.driver_connection.execute(
        "SELECT energy.build_meter_rollups(%s)", (get_settings().reporting_timezone,)
    )
    run_sql_up(AFTER_BUILD)


def downgrade() -> None:
    run_sql_down(FILES)
