"""The usage ledger records which backend ran a request, and for an upstream its request id and
the units the provider billed (ModelArk ``usage.generated_images``); NULL on rows from before.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("backend", sa.String(40), nullable=True))
        batch.add_column(sa.Column("upstream_request_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("upstream_units", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("upstream_units")
        batch.drop_column("upstream_request_id")
        batch.drop_column("backend")
