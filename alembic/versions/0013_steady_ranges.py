"""Cleaning skips the eight-neighbour pass for steady ranges.

A range whose readings and context are all finite, unflagged and (on a register) never
falling can produce no flag; raw.clean_ranges now decides that with one lag and looks at
the 4 readings either side of each reading only for the other ranges (sql/clean.sql).
Same flags as before. This revision re-creates the function as written in sql/clean.sql
now; downgrading leaves it (the earlier body gave the same flags, and downgrading
revision 0004 drops it).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from app.migrate import replace_functions

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_functions("clean.sql", ["raw.clean_ranges"])


def downgrade() -> None:
    pass
