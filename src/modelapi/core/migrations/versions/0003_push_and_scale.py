"""Push and scale: a change counter per request (stream event ids), webhooks, images published
before a series completes, per-key signing secrets, indexes for listing a key's requests, and request counts kept by triggers.

``request_counts`` is an append-only ledger of +1/-1 rows written by triggers on ``requests``
(insert, delete, and every change of status or model), so counting requests by model and status
costs the size of the ledger since its last compaction (:func:`modelapi.core.jobs.JobStore.counts`),
never the size of the requests table. Appending, rather than updating one row per (model,
status), means concurrent transactions never wait on each other's counters.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = [
    """CREATE TRIGGER requests_count_insert AFTER INSERT ON requests BEGIN
         INSERT INTO request_counts (model_id, status, n) VALUES (NEW.model_id, NEW.status, 1);
       END""",
    """CREATE TRIGGER requests_count_update AFTER UPDATE OF status, model_id ON requests
       WHEN OLD.status IS NOT NEW.status OR OLD.model_id IS NOT NEW.model_id BEGIN
         INSERT INTO request_counts (model_id, status, n) VALUES (OLD.model_id, OLD.status, -1), (NEW.model_id, NEW.status, 1);
       END""",
    """CREATE TRIGGER requests_count_delete AFTER DELETE ON requests BEGIN
         INSERT INTO request_counts (model_id, status, n) VALUES (OLD.model_id, OLD.status, -1);
       END""",
]

POSTGRES_TRIGGERS = [
    """CREATE FUNCTION modelapi_count_requests() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP IN ('UPDATE', 'DELETE') THEN
           INSERT INTO request_counts (model_id, status, n) VALUES (OLD.model_id, OLD.status, -1);
         END IF;
         IF TG_OP IN ('UPDATE', 'INSERT') THEN
           INSERT INTO request_counts (model_id, status, n) VALUES (NEW.model_id, NEW.status, 1);
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER requests_count_insert AFTER INSERT OR DELETE ON requests
       FOR EACH ROW EXECUTE FUNCTION modelapi_count_requests()""",
    """CREATE TRIGGER requests_count_update AFTER UPDATE OF status, model_id ON requests FOR EACH ROW
       WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.model_id IS DISTINCT FROM NEW.model_id)
       EXECUTE FUNCTION modelapi_count_requests()""",
]


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("webhook", sa.JSON))
        batch.add_column(sa.Column("partial_outputs", sa.JSON))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64)))
    op.drop_index("ix_requests_owner_key_id", table_name="requests")  # (owner_key_id, seq) covers it
    op.create_index("ix_requests_owner_seq", "requests", ["owner_key_id", "seq"])
    op.create_index("ix_requests_owner_status_seq", "requests", ["owner_key_id", "status", "seq"])
    op.create_index("ix_requests_owner_model_seq", "requests", ["owner_key_id", "model_id", "seq"])
    op.create_table(
        "request_counts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sqlite_autoincrement=True,  # ids never reused: max(id) is a change sequence
    )
    op.execute("INSERT INTO request_counts (model_id, status, n) "
               "SELECT model_id, status, count(*) FROM requests GROUP BY model_id, status")
    for statement in SQLITE_TRIGGERS if op.get_bind().dialect.name == "sqlite" else POSTGRES_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    pg = op.get_bind().dialect.name != "sqlite"
    for name in ("requests_count_insert", "requests_count_update", "requests_count_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON requests" if pg else ""))
    if pg:
        op.execute("DROP FUNCTION IF EXISTS modelapi_count_requests()")
    op.drop_table("request_counts")
    for name in ("ix_requests_owner_model_seq", "ix_requests_owner_status_seq", "ix_requests_owner_seq"):
        op.drop_index(name, "requests")
    op.create_index("ix_requests_owner_key_id", "requests", ["owner_key_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("webhook_secret")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("partial_outputs")
        batch.drop_column("webhook")
        batch.drop_column("version")
