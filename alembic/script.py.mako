"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from app.migrate import run_sql_down, run_sql_up

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}

FILES: list[str] = []


def upgrade() -> None:
    run_sql_up(FILES)


def downgrade() -> None:
    run_sql_down(FILES)
