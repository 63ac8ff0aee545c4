"""Clean and normalize look up neighbouring readings inside a window fixed per statement.

Their functions were SQL functions whose look-ups were bounded only by other rows'
values, which makes TimescaleDB test every raw chunk on every probe (docs/architecture.md,
"Look-ups that do not grow with the history"). This revision re-creates them as written
in sql/clean.sql and sql/normalize.sql now. Downgrading leaves them: the earlier bodies
computed the same rows, and downgrading revision 0004 drops them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

from app.migrate import replace_functions

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_functions("clean.sql", ["raw.clean_ranges"])
    replace_functions("normalize.sql", ["energy.point_work", "energy.new_reading_work", "energy.normalize_ranges"])


def downgrade() -> None:
    pass
