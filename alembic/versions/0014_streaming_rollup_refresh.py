"""Rollup tables are refilled with a streaming aggregate.

energy.refill_rollup_table (the table path of every per-meter rollup: energy, interval
cost, emissions) now groups rows in the order the source's (meter_id, time) index
delivers them instead of a hash aggregate the planner sized for far fewer groups, which
spilled to disk and needed a sort after it. Same rows (numeric sums). This revision
re-creates the function as written in sql/energy_rollups.sql now; downgrading leaves it
(the earlier body wrote the same rows, and downgrading revision 0005 drops it).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from app.migrate import replace_functions

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_functions("energy_rollups.sql", ["energy.refill_rollup_table"])


def downgrade() -> None:
    pass
