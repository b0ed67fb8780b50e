"""A request running on an upstream backend remembers the upstream's side of it while it runs
(``requests.upstream``: ``{backend, request_id, status, queue_position, cancel_url}``), so that
the API can forward a client's cancel while the upstream still queues it; NULL otherwise.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("upstream", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("upstream")
