"""What every role opens first: the database (migrated), the queue, the worker registry, the
state machine and the storage — one :class:`Core` per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from . import auth, db
from .config import Settings
from .jobs import JobStore
from .queue import TaskQueue
from .storage import FileStorage, S3Storage, open_storage, private_dir, private_file
from .workers import WorkerRegistry

log = logging.getLogger("modelapi.core")


@dataclass
class Core:
    settings: Settings
    db: sa.Engine
    queue: TaskQueue
    jobs: JobStore
    storage: FileStorage | S3Storage
    initial_key: str | None = None
    """The first API key, when this process created it (shown once)."""

    def close(self) -> None:
        self.queue.destroy()
        self.db.dispose()


def prepare_data_dir(settings: Settings) -> None:
    """Make the data dir private before anything is written there: the folder mode 0700 (created
    so, or narrowed), the SQLite database file (wherever ``--database-url`` puts it) created 0600
    before SQLite opens it — its journal and WAL files then get the same mode — and the files of
    an older install (database, WAL, locks, key files) narrowed to 0600."""
    private_dir(settings.data_dir)
    for name in ("initial_api_key", "secret_key"):
        if (settings.data_dir / name).exists():
            private_file(settings.data_dir / name)
    url = sa.engine.make_url(db.sqlalchemy_url(settings.db_url))
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        database = Path(url.database)
        database.parent.mkdir(parents=True, exist_ok=True)
        private_file(database)
        for older in database.parent.glob(f"{database.name}[-.]*"):  # -wal, -shm, .lock, .worker-*.lock
            private_file(older)


def open_core(settings: Settings, *, create_initial_key: bool) -> Core:
    """Connect, migrate (safe when several processes start at once), and open the storage.
    With ``create_initial_key`` (API processes), an empty database gets its first key, written
    to ``<data_dir>/initial_api_key`` (mode 0600).

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
        OSError: the storage cannot be written.
        ValueError: an unsupported ``--storage-url``.
    """
    prepare_data_dir(settings)
    engine = db.connect(settings.db_url)
    secret: list[str] = []

    def first_key(conn: sa.Connection) -> None:
        if create_initial_key:
            created = auth.ensure_initial_key(conn, settings.data_dir)
            if created:
                secret.append(created)

    db.migrate(engine, settings.db_url, then=first_key)
    storage = open_storage(settings.files_url, settings.data_dir)
    storage.check()
    queue = TaskQueue(settings.db_url)
    queue.ensure(settings.queue_poll_interval_s)
    registry = WorkerRegistry(engine, settings.worker_timeout_s)
    jobs = JobStore(engine, queue, registry, max_attempts=settings.max_attempts, prices_usd=settings.prices_usd)
    return Core(settings, engine, queue, jobs, storage, secret[0] if secret else None)
