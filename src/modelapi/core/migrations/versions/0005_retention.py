"""Retention: when a request's stored files were deleted (``deleted_at``), the retention it asked
for (``retention_s``, NULL = the server's ``--retention-s``) and when its outputs expire by that
ask (``expires_at``); which request last used an upload (``files.used_by``); the sweeper's
counters (``sweep_counts``); and the indexes the sweeper reads (:mod:`modelapi.core.sweep`).

The request indexes are partial, over finished rows only, so a submit (``finished_at`` NULL)
writes no entry in them:

- ``ix_requests_unswept``: finished requests whose files are not deleted yet, oldest first
  (the server's retention);
- ``ix_requests_expiring``: the same, by the expiry a request asked for;
- ``ix_requests_swept``: requests whose files are deleted, oldest first (pruned after
  ``--keep-requests-s``).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SWEEP_COUNTERS = ("objects", "requests_expired", "requests", "files", "queue")


def _index(name: str, table: str, column: str, where: str) -> None:
    """A partial index (both dialects)."""
    op.create_index(name, table, [column], sqlite_where=sa.text(where), postgresql_where=sa.text(where))


def upgrade() -> None:
    # plain ADD COLUMN (no batch copy of the table: that would drop the counting triggers on SQLite)
    op.add_column("requests", sa.Column("retention_s", sa.Integer))
    op.add_column("requests", sa.Column("expires_at", sa.DateTime(timezone=True)))
    op.add_column("requests", sa.Column("deleted_at", sa.DateTime(timezone=True)))
    _index("ix_requests_unswept", "requests", "finished_at", "deleted_at IS NULL AND finished_at IS NOT NULL")
    _index("ix_requests_expiring", "requests", "expires_at", "deleted_at IS NULL AND expires_at IS NOT NULL")
    _index("ix_requests_swept", "requests", "finished_at", "deleted_at IS NOT NULL")
    op.add_column("files", sa.Column("used_by", sa.String(40)))
    op.create_index("ix_files_used_by", "files", ["used_by"])
    _index("ix_files_unused", "files", "created_at", "used_by IS NULL")
    counts = op.create_table(
        "sweep_counts",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(counts, [{"name": name, "n": 0} for name in SWEEP_COUNTERS])


def downgrade() -> None:
    op.drop_table("sweep_counts")
    op.drop_index("ix_files_unused", "files")
    op.drop_index("ix_files_used_by", "files")
    op.drop_column("files", "used_by")
    for name in ("ix_requests_swept", "ix_requests_expiring", "ix_requests_unswept"):
        op.drop_index(name, "requests")
    for column in ("deleted_at", "expires_at", "retention_s"):
        op.drop_column("requests", column)
