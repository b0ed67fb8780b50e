"""Deadlines and stopping a running request: ``deadline_at`` (a submit's ``Cancel-After``, as a
time) and ``stop_requested_at`` (``POST /cancel?running=true``: the running worker reads it
between steps), and a partial index of the queued requests that have a deadline, which the
deadline sweep reads (:meth:`modelapi.core.jobs.JobStore.expire_queued`): it holds only those
rows, so the sweep costs the same however many requests exist, and requests without a deadline
never write to it.

Plain ``ADD COLUMN`` (no batch copy of the table on SQLite, which would drop the counting
triggers of 0003).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

QUEUED_WITH_DEADLINE = sa.text("status = 'in_queue' AND deadline_at IS NOT NULL")


def upgrade() -> None:
    op.add_column("requests", sa.Column("deadline_at", sa.DateTime(timezone=True)))
    op.add_column("requests", sa.Column("stop_requested_at", sa.DateTime(timezone=True)))
    op.create_index("ix_requests_queued_deadline", "requests", ["deadline_at"],
                    sqlite_where=QUEUED_WITH_DEADLINE, postgresql_where=QUEUED_WITH_DEADLINE)


def downgrade() -> None:
    op.drop_index("ix_requests_queued_deadline", table_name="requests")
    op.drop_column("requests", "stop_requested_at")
    op.drop_column("requests", "deadline_at")
