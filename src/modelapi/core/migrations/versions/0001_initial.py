"""The first schema: API keys, requests, uploaded files (one process, SQLite).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "requests",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(40), nullable=False, unique=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False, index=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("inputs", sa.JSON, nullable=False),
        sa.Column("input_files", sa.JSON, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("body_hash", sa.String(64)),
        sa.Column("workflow_id", sa.String(80), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("progress", sa.Float),
        sa.Column("outputs", sa.JSON),
        sa.Column("metadata", sa.JSON),
        sa.Column("error", sa.JSON),
        sa.Column("billed_units", sa.Integer),
        sa.Column("cost_usd", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("owner_key_id", "idempotency_key"),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("owner_key_id", sa.String(32), nullable=False),
        sa.Column("storage_key", sa.String(300), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in ("files", "requests", "api_keys"):
        op.drop_table(table)
