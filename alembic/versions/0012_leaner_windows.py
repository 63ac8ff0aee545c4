"""Normalize sums each link piece's quarters where it reads them; clean and normalize
windows take a ROWS frame; the look-ups of readings either side of a range each become
one function (energy.good_neighbours, raw.fourth_readings).

Both compute the same rows as before, with less work per reading (docs/architecture.md,
"How it runs"). This revision re-creates the functions as written in sql/clean.sql and
sql/normalize.sql now. Downgrading leaves them: the earlier bodies computed the same
rows, and downgrading revision 0004 drops them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27
"""

from app.migrate import replace_functions

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_functions("clean.sql", ["raw.fourth_readings", "raw.clean_ranges"])
    replace_functions("normalize.sql", ["energy.good_neighbours", "energy.point_work", "energy.normalize_ranges"])


def downgrade() -> None:
    pass
