"""Drop the single-column ``status`` index of ``requests``: ``(status, priority, seq)`` has it as
its prefix, so it only cost a write on every submit and status change.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_requests_status", table_name="requests")


def downgrade() -> None:
    op.create_index("ix_requests_status", "requests", ["status"])
