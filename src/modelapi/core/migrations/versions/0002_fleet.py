"""The fleet: who runs a request, worker heartbeats, a billing ledger.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("run_by", sa.String(200)))
    op.create_index("ix_requests_status_priority_seq", "requests", ["status", "priority", "seq"])
    op.create_table(
        "usage",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False, index=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("billed_units", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Requests completed before the ledger existed are billed from their own row.
    op.execute(
        "INSERT INTO usage (request_id, owner_key_id, model_id, billed_units, cost_usd, created_at) "
        "SELECT request_id, owner_key_id, model_id, billed_units, cost_usd, finished_at FROM requests "
        "WHERE status = 'completed' AND billed_units IS NOT NULL"
    )
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(200), primary_key=True),
        sa.Column("instance", sa.String(32), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("engine", sa.JSON, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("current_request", sa.String(40)),
        sa.Column("draining", sa.Boolean, nullable=False),
        sa.Column("reaped_by", sa.String(200)),
        sa.Column("reaped_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("usage")
    op.drop_index("ix_requests_status_priority_seq", "requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("run_by")
