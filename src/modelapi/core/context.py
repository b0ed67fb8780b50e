"""What every role opens first: the database (migrated), the queue, the worker registry, the
state machine and the storage — one :class:`Core` per process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from . import auth, db
from .config import Settings
from .jobs import JobStore
from .queue import TaskQueue
from .storage import FileStorage, S3Storage, open_storage
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


def open_core(settings: Settings, *, create_initial_key: bool) -> Core:
    """Connect, migrate (safe when several processes start at once), and open the storage.
    With ``create_initial_key`` (API processes), an empty database gets its first key, written
    to ``<data_dir>/initial_api_key`` (mode 0600).

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
        OSError: the storage cannot be written.
        ValueError: an unsupported ``--storage-url``.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
