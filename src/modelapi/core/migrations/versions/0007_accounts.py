"""Accounts: keys carry limits (model allow-list, submits per minute, queue and running caps, a
budget per period), a role and an expiry; the budget's reservations and spending per period;
each request remembers what it reserved.

- ``api_keys``: ``role`` (``user`` | ``admin``; the oldest key of an existing database becomes
  the admin key, as the first key of a new one is), ``expires_at``, ``last_used_at``,
  ``models`` (JSON list, empty = all), ``rpm``, ``max_queued``, ``max_running``, ``budget_usd``,
  ``budget_period`` (``day`` | ``month`` | ``total``), and the rate window
  (``rate_window``: the minute, as unix seconds // 60; ``rate_count``: submits in it).
- ``key_budgets``: one row per key and budget period (``day:YYYY-MM-DD``, ``month:YYYY-MM`` or
  ``total``): ``reserved_usd`` (cost of the key's requests submitted in the period and not yet
  ended) and ``spent_usd`` (cost of those completed).
- ``requests``: ``reserved_usd`` and ``budget_period``, the reservation a submit made.
- ``usage``: ``images`` (how many images the completed request produced).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(8), nullable=False, server_default="user"))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("models", sa.JSON))
        batch.add_column(sa.Column("rpm", sa.Integer))
        batch.add_column(sa.Column("max_queued", sa.Integer))
        batch.add_column(sa.Column("max_running", sa.Integer))
        batch.add_column(sa.Column("budget_usd", sa.Float))
        batch.add_column(sa.Column("budget_period", sa.String(8)))
        batch.add_column(sa.Column("rate_window", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("rate_count", sa.Integer, nullable=False, server_default="0"))
    op.execute("UPDATE api_keys SET role = 'admin' WHERE id = "
               "(SELECT id FROM (SELECT id FROM api_keys ORDER BY created_at, id LIMIT 1) AS oldest)")
    op.create_table(
        "key_budgets",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("period", sa.String(20), primary_key=True),
        sa.Column("reserved_usd", sa.Float, nullable=False),
        sa.Column("spent_usd", sa.Float, nullable=False),
    )
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("reserved_usd", sa.Float))
        batch.add_column(sa.Column("budget_period", sa.String(20)))
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("images", sa.Integer))
    op.create_index("ix_usage_created_at", "usage", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_created_at", "usage")
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("images")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("budget_period")
        batch.drop_column("reserved_usd")
    op.drop_table("key_budgets")
    with op.batch_alter_table("api_keys") as batch:
        for name in ("rate_count", "rate_window", "budget_period", "budget_usd", "max_running", "max_queued", "rpm",
                     "models", "last_used_at", "expires_at", "role"):
            batch.drop_column(name)
