"""The database: the tenant-facing tables (SQLAlchemy 2 Core), connections, and migrations.

Tables: ``api_keys``, ``key_budgets``, ``requests``, ``files``, ``usage`` (the billing ledger), ``workers``
(heartbeats) and ``request_counts`` (kept by triggers), ``sweep_counts``. The durable queue (DBOS Transact) keeps its own tables in the same database, so a
request row and its queue entry are written in one transaction.

Two kinds of database, picked by URL (``--database-url``):

- ``sqlite:///PATH`` — one machine (the default, ``<data_dir>/modelapi.sqlite3``);
- ``postgresql://USER:PASS@HOST:PORT/DB`` — the fleet (driven by psycopg 3).

Schema changes are Alembic migrations (``core/migrations/versions``); :func:`migrate` applies
them on start in every role, serialised across processes (a Postgres advisory lock, or a file
lock next to a SQLite file), so several processes may start at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.sql.compiler import SQLCompiler

T = TypeVar("T")

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
    sa.Column("webhook_secret", sa.String(64)),
    sa.Column("role", sa.String(8), nullable=False, server_default="user"),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
    sa.Column("models", sa.JSON),
    sa.Column("rpm", sa.Integer),
    sa.Column("max_queued", sa.Integer),
    sa.Column("max_running", sa.Integer),
    sa.Column("budget_usd", sa.Float),
    sa.Column("budget_period", sa.String(8)),
    sa.Column("rate_window", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rate_count", sa.Integer, nullable=False, server_default="0"),
)
"""A key's limits (migration 0007; see :mod:`modelapi.core.accounts`): ``models`` (allow-list,
null or empty = all), ``rpm``, ``max_queued``, ``max_running``, ``budget_usd`` per
``budget_period``; null = no limit of that kind. ``rate_window``/``rate_count``: the current
minute (unix seconds // 60) and the key's submits in it."""

key_budgets = sa.Table(
    "key_budgets",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("period", sa.String(20), primary_key=True),
    sa.Column("reserved_usd", sa.Float, nullable=False),
    sa.Column("spent_usd", sa.Float, nullable=False),
)
"""Per key and budget period (``day:YYYY-MM-DD``, ``month:YYYY-MM``, ``total``): the cost reserved
by requests not yet ended, and the cost of those completed."""

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(40), nullable=False, unique=True),
    sa.Column("owner_key_id", sa.String(32), nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
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
    sa.Column("run_by", sa.String(200)),
    sa.Column("version", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("webhook", sa.JSON),
    sa.Column("partial_outputs", sa.JSON),
    sa.Column("retention_s", sa.Integer),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("deadline_at", sa.DateTime(timezone=True)),
    sa.Column("stop_requested_at", sa.DateTime(timezone=True)),
    sa.Column("reserved_usd", sa.Float),
    sa.Column("budget_period", sa.String(20)),
    sa.Column("upstream", sa.JSON),
    sa.UniqueConstraint("owner_key_id", "idempotency_key"),
    sa.Index("ix_requests_status_priority_seq", "status", "priority", "seq"),
    sa.Index("ix_requests_owner_seq", "owner_key_id", "seq"),
    sa.Index("ix_requests_owner_status_seq", "owner_key_id", "status", "seq"),
    sa.Index("ix_requests_owner_model_seq", "owner_key_id", "model_id", "seq"),
    sa.Index("ix_requests_queued_deadline", "deadline_at", sqlite_where=sa.text("status = 'in_queue' AND deadline_at IS NOT NULL"),
             postgresql_where=sa.text("status = 'in_queue' AND deadline_at IS NOT NULL")),
)
"""``version`` counts the changes a client can see (status, progress): status stream event ids.
``webhook``: ``{url, base_url, attempts, last_status_code, delivered_at}`` when the submit named one
(and ``intermediate_status``, ``events``, ``events_ended``: see :mod:`modelapi.core.webhook_events`).
``partial_outputs``: storage keys of the images stored so far while in_progress.
``reserved_usd``, ``budget_period``: what the submit reserved against its key's budget (null when
the key had none), given back or turned into spending when the request ends.
``deadline_at``: the submit's ``Cancel-After`` as a time (None: no deadline); ``stop_requested_at``:
when ``POST /cancel?running=true`` asked the running worker to stop (read between steps).
``retention_s``: how long the request's files are kept once it finished, as the submit asked
(NULL: the server's ``--retention-s``); ``expires_at``: finished_at + retention_s (NULL when not
asked); ``deleted_at``: when its outputs and inputs were deleted (retention or ``DELETE``).
Partial indexes for the sweeper: migration 0005.
``upstream``: while an upstream backend that has a queue of its own (``runcomfy``) runs it, that
upstream's side: ``{backend, request_id, status, queue_position, cancel_url}`` (0009)."""

request_counts = sa.Table(
    "request_counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)
"""+1/-1 rows appended by triggers on ``requests`` (migration 0003): requests by model and status
without counting the requests table; ``max(id)`` is a sequence that moves on every status change."""

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("owner_key_id", sa.String(32), nullable=False),
    sa.Column("storage_key", sa.String(300), nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("content_type", sa.String(40), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_by", sa.String(40)),
)
"""``used_by``: the newest request whose inputs used the upload (NULL: never used)."""

sweep_counts = sa.Table(
    "sweep_counts",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("n", sa.BigInteger, nullable=False),
)
"""What every sweeper has deleted, fleet-wide (:mod:`modelapi.core.sweep`): one row per counter."""

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("request_id", sa.String(40), primary_key=True),
    sa.Column("owner_key_id", sa.String(32), nullable=False, index=True),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("billed_units", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("images", sa.Integer),
    sa.Column("backend", sa.String(40), nullable=True),  # which backend ran it (0008)
    sa.Column("upstream_request_id", sa.String(200), nullable=True),  # the provider's request id
    sa.Column("upstream_units", sa.Integer, nullable=True),  # the units the provider billed
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(200), primary_key=True),
    sa.Column("instance", sa.String(32), nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("engine", sa.JSON, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("current_request", sa.String(40)),
    sa.Column("draining", sa.Boolean, nullable=False, default=False),
    sa.Column("reaped_by", sa.String(200)),
    sa.Column("reaped_at", sa.Float),
)
"""``started_at`` and ``heartbeat_at`` are unix seconds on the database's clock (see :func:`now_s`),
so workers on machines whose clocks disagree still agree on who is late."""


UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
"""Errors meaning the database cannot be reached now (down, restarting, pool exhausted): the
API answers them 503, the workers retry."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` suffix (how times are written in bodies and JSON columns)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else None


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def now_s(dialect: str) -> sa.ColumnElement:
    """The database server's clock as unix seconds (a SQL expression)."""
    if dialect == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    return sa.literal_column("extract(epoch from clock_timestamp())")


def picked(rows: sa.Select) -> sa.Select:
    """The rows a claim (``UPDATE``/``DELETE ... WHERE key IN picked(...)``) works on: ``rows``
    (one column, a ``LIMIT``) read once, as a materialised CTE — a plain ``IN (subquery)`` may be
    re-run by Postgres for each row and claim more than the limit — and, on Postgres, skipping
    rows that another claim holds (``FOR UPDATE SKIP LOCKED``), so concurrent claims take
    different rows instead of waiting. SQLite has one writer at a time anyway."""
    cte = rows.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
    return sa.select(*cte.c)


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` URLs are driven by psycopg 3 (SQLAlchemy's own default is psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def connect(url: str) -> sa.Engine:
    """An engine on ``url`` (no schema changes: see :func:`migrate`). SQLite files get WAL and a
    busy timeout, since the queue's own connections write to the same file; Postgres
    connections are checked before use, so a restarted server is reconnected by itself."""
    url = sqlalchemy_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            dbapi_conn.execute("PRAGMA busy_timeout=30000")
            # WAL is kept in the file; switching to it needs the file to itself, which SQLite
            # refuses at once (no busy wait) while other processes start on a new file.
            for attempt in range(100):
                try:
                    if dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        dbapi_conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 99:
                        raise
                    time.sleep(0.05)
            dbapi_conn.execute("PRAGMA synchronous=FULL")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=10,
                            connect_args={"connect_timeout": 5})


class DriverRead:
    """A read-only statement compiled once for ``engine``'s driver, run by :func:`driver_reads`."""

    def __init__(self, engine: sa.Engine, statement: sa.ClauseElement) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=engine.dialect))
        self.sql = compiled.string
        self.defaults = {name: bind.value for bind, name in compiled.bind_names.items()}
        self.order = tuple(compiled.positiontup or ()) if compiled.positional else None

    def args(self, params: dict[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        values = self.defaults | params
        return values if self.order is None else tuple(values[name] for name in self.order)


@contextlib.contextmanager
def driver_reads(engine: sa.Engine) -> Iterator[Callable[[DriverRead, dict[str, Any]], Any]]:
    """``fetchone(read, params)`` (a row tuple, or None) on one pooled connection in autocommit,
    through the driver's own cursor: for the status poll, the most frequent read, SQLAlchemy's
    Connection and Result layers cost several times the driver's work. The connection is checked
    out as usual (on Postgres, pinged first); driver errors are raised as SQLAlchemy's
    (``OperationalError``, ...: the API answers :data:`UNAVAILABLE` with 503), and a connection an
    error shows dead is invalidated, as ``sa.Connection.execute`` does. Values come back as the
    driver gives them, as through ``sa.text``. SQLite reads outside a transaction anyway (its
    driver begins one only before a write); a psycopg connection is put in autocommit for the
    block (no ``BEGIN`` and ``ROLLBACK`` round trips)."""
    dialect = engine.dialect
    error = dialect.loaded_dbapi.Error
    try:
        fairy = engine.raw_connection()
    except error as exc:
        raise sa.exc.DBAPIError.instance(None, None, exc, error, dialect=dialect) from exc
    postgres = dialect.name == "postgresql"
    try:
        if postgres:
            fairy.driver_connection.autocommit = True  # type: ignore[union-attr]
        cursor = fairy.cursor()

        def fetchone(read: DriverRead, params: dict[str, Any]) -> Any:
            args = read.args(params)
            try:
                cursor.execute(read.sql, args)
                return cursor.fetchone()
            except error as exc:
                dead = dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
                if dead:
                    fairy.invalidate(exc)
                raise sa.exc.DBAPIError.instance(read.sql, args, exc, error, connection_invalidated=dead,
                                                 dialect=dialect) from exc

        yield fetchone
        cursor.close()
    finally:
        try:
            if postgres and fairy.is_valid:
                fairy.driver_connection.autocommit = False  # type: ignore[union-attr]
        finally:
            fairy.close()


class AsyncReads:
    """Postgres only: reads awaited on the event loop (psycopg's asyncio connections, pooled by
    ``psycopg_pool``, in autocommit), so the status poll, the most frequent call, costs no thread
    hand-over (which costs more CPU than the read itself). :meth:`for_engine` gives None on
    SQLite, which has no non-blocking reads.

    The pool opens on first use (on the running loop), at most ``max_size`` connections (default
    10), no ping on checkout: a connection that a Postgres restart broke fails its statement, is
    dropped by the pool, and the read is tried again on another (``max_size + 1`` tries in all).
    Driver and pool errors are raised as SQLAlchemy's ``OperationalError``: the API answers 503,
    as for :data:`UNAVAILABLE`."""

    def __init__(self, conninfo: str, max_size: int = 10) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.max_size = max_size
        self.pool = AsyncConnectionPool(conninfo, min_size=1, max_size=max_size, open=False, timeout=10,
                                        kwargs={"autocommit": True, "connect_timeout": 5})

    @classmethod
    def for_engine(cls, engine: sa.Engine) -> "AsyncReads | None":
        if engine.dialect.name != "postgresql":
            return None
        url = engine.url.set(drivername="postgresql")
        return cls(url.render_as_string(hide_password=False))

    async def run(self, steps: Callable[[], Generator[tuple[DriverRead, dict[str, Any]], Any, T]]) -> T:
        """Drive ``steps()`` — a generator that yields ``(read, params)`` and is sent each read's
        row (a tuple, or None) — on one connection; its return value."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if self.pool.closed:  # not opened yet (opening twice is harmless; a closed pool refuses)
            await self.pool.open()
        for attempt in range(self.max_size + 1):
            conn = None
            try:
                async with self.pool.connection() as conn:
                    gen = steps()
                    row = None
                    try:
                        while True:
                            read, params = gen.send(row)
                            row = await (await conn.execute(read.sql, read.args(params))).fetchone()
                    except StopIteration as done:
                        return done.value
            except psycopg.OperationalError as exc:
                if conn is None or not conn.broken or attempt == self.max_size:
                    raise sa.exc.OperationalError(None, None, exc) from exc
            except PoolTimeout as exc:
                raise sa.exc.OperationalError(None, None, exc) from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.pool.close()


def run_reads(engine: sa.Engine, steps: Callable[[], Generator[tuple[DriverRead, dict[str, Any]], Any, T]]) -> T:
    """:meth:`AsyncReads.run`'s blocking twin: ``steps()`` driven through :func:`driver_reads`."""
    with driver_reads(engine) as fetchone:
        gen = steps()
        row = None
        try:
            while True:
                read, params = gen.send(row)
                row = fetchone(read, params)
        except StopIteration as done:
            return done.value


MIGRATIONS = Path(__file__).parent / "migrations"
_PG_STARTUP_LOCK = 0x6D6F64656C617069  # "modelapi"


@contextlib.contextmanager
def startup_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction held under the database-wide start-up lock: one process at a time migrates
    and creates the first key. Postgres: an advisory lock released at commit; SQLite: an
    exclusive file lock on ``<database file>.lock``."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_STARTUP_LOCK})
            yield conn
        return
    path = Path(engine.url.database or "modelapi.sqlite3")
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as lock:  # private, as the data dir
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine: sa.Engine, system_database_url: str, then: Callable[[sa.Connection], None] | None = None) -> None:
    """Bring the database to the newest schema: the queue's own tables (DBOS's migrations,
    serialised by DBOS itself; they build indexes concurrently, so they must run outside any
    transaction of ours), then, under :func:`startup_lock`, ours (Alembic, ``head``) and
    ``then(conn)`` in the same transaction. A database made before migrations existed (tables, no ``alembic_version``) is
    recognised as revision 0001 and upgraded from there."""
    from alembic import command
    from alembic.config import Config
    from dbos import DBOS

    DBOS.migrate(system_database_url)
    with startup_lock(engine) as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        tables = sa.inspect(conn).get_table_names()
        if "requests" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")
        command.upgrade(config, "head")
        if then is not None:
            then(conn)
