"""Normalize takes a link piece's quarters as they are when it is the only piece of its
work range, and pairs readings from two arrays instead of a window.

Nearly every meter has one link over a range; its per-piece quarter sums are then the
meter's, and energy.normalize_ranges no longer sorts and re-aggregates them with the other
pieces (sql/normalize.sql, `computed`). A piece's consecutive readings are paired by
unnesting its readings as an array beside the same array shifted by one, cheaper than
lag() over the scan. Same rows as before. This revision re-creates the
function as written in sql/normalize.sql now; downgrading leaves it (the earlier body
computed the same rows, and downgrading revision 0004 drops it).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27
"""

from app.migrate import replace_functions

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    replace_functions("normalize.sql", ["energy.normalize_ranges"])


def downgrade() -> None:
    pass
