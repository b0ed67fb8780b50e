"""The tenant-facing tables (SQLAlchemy 2 Core): API keys, requests, uploaded files.

The durable queue (DBOS) keeps its own tables in the same database; these tables are the
record a tenant sees (owner key, model, inputs, outputs, cost).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy import event

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

requests = sa.Table(
    "requests",
    metadata,
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
    sa.Column("priority", sa.Integer, nullable=False, default=2),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
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

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_key_id", sa.String(32), nullable=False),
    sa.Column("storage_key", sa.String(300), nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("content_type", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def connect(url: str) -> sa.Engine:
    """An engine on ``url`` with the tables created. SQLite files get WAL and a busy timeout,
    since the queue's own connections write to the same file."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=FULL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine
