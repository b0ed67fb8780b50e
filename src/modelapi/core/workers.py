"""Who is working: the ``workers`` table (heartbeats) and the lock that makes a worker id unique.

A worker registers on start, beats every few seconds (``--worker-timeout-s`` / 4, at most 5 s)
with the request it runs, and unregisters on a clean stop. Time is the database's clock, so
machines with skewed clocks agree on who is late. A worker silent for ``--worker-timeout-s`` is
dead; :meth:`WorkerRegistry.claim_dead` hands each dead worker to one live worker, which puts its
claimed jobs back on the queue and then removes its row (:meth:`modelapi.core.jobs.JobStore.reap`).
Each process life under an id is an *instance* (a random token): a worker restarted under its id
is a new instance, so the runs of its previous life count as interrupted.

The id lock is held by the live process for its whole life and released by the operating system
when the process dies (a Postgres session advisory lock on a connection of its own; on SQLite, an
exclusive file lock next to the database file): a second live worker with the same id cannot
start, while a restart after ``kill -9`` can, at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import db

log = logging.getLogger("modelapi.workers")
W = db.workers.c


class WorkerIdInUse(RuntimeError):
    """Another live worker holds this worker id (a server-side error, not in the SDK's tree)."""


def runner_id(worker_id: str, instance: str) -> str:
    """``<worker id>#<instance>``: one process's life under a worker id (a restart is a new
    instance), as recorded in ``requests.run_by``."""
    return f"{worker_id}#{instance}"


class WorkerRegistry:
    """The workers table.

    Args:
        engine: the database.
        timeout_s: a worker with no heartbeat for this long is dead (``--worker-timeout-s``).
    """

    def __init__(self, engine: sa.Engine, timeout_s: float = 60.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self._now = db.now_s(engine.dialect.name)

    def register(self, worker_id: str, instance: str, engine_info: dict[str, Any]) -> None:
        """Add (or take over, after a restart) the row of ``worker_id`` for this ``instance``."""
        values = dict(instance=instance, host=socket.gethostname(), pid=os.getpid(), engine=engine_info,
                      started_at=self._now, heartbeat_at=self._now, current_request=None, draining=False,
                      reaped_by=None, reaped_at=None)
        with self.engine.begin() as conn:
            if conn.execute(db.workers.update().where(W.worker_id == worker_id).values(**values)).rowcount == 0:
                conn.execute(db.workers.insert().values(worker_id=worker_id, **values))

    def heartbeat(self, worker_id: str, instance: str, current_request: str | None, draining: bool) -> bool:
        """Record that this instance is alive. False when its row is gone or taken (it was
        declared dead and reaped)."""
        with self.engine.begin() as conn:
            return conn.execute(db.workers.update().where(W.worker_id == worker_id, W.instance == instance,
                                                          W.reaped_by.is_(None)).values(
                heartbeat_at=self._now, current_request=current_request, draining=draining,
            )).rowcount == 1

    def unregister(self, worker_id: str, instance: str, *, leaves_claims: bool) -> None:
        """A clean stop. With ``leaves_claims`` (a job it claimed may still be unfinished) the row
        is marked dead at once instead of removed, so that a live worker recovers its claims."""
        where = (W.worker_id == worker_id, W.instance == instance)
        with self.engine.begin() as conn:
            if leaves_claims:
                conn.execute(db.workers.update().where(*where).values(heartbeat_at=0.0))
            else:
                conn.execute(db.workers.delete().where(*where))

    def live(self) -> list[dict[str, Any]]:
        """Live workers, oldest first: ``{worker_id, host, pid, engine, current_request,
        draining, started_at, heartbeat_age_s}``."""
        query = (
            sa.select(W.worker_id, W.host, W.pid, W.engine, W.current_request, W.draining, W.started_at,
                      (self._now - W.heartbeat_at).label("heartbeat_age_s"))
            .where(W.heartbeat_at > self._now - self.timeout_s)
            .order_by(W.started_at)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def is_live(self, runner: str) -> bool:
        """True when ``runner`` (see :func:`runner_id`) is a live process: same worker id, same
        instance, recent heartbeat."""
        worker_id, _, instance = runner.rpartition("#")
        with self.engine.connect() as conn:
            return conn.execute(sa.select(W.worker_id).where(
                W.worker_id == worker_id, W.instance == instance, W.heartbeat_at > self._now - self.timeout_s,
            )).first() is not None

    def claim_dead(self, me: str) -> list[tuple[str, float]]:
        """Dead workers (no heartbeat for ``timeout_s``) whose recovery this caller now owns:
        ``(worker_id, heartbeat_at seen)``. A claim is one conditional UPDATE, so two reapers
        never own one worker; a claim whose reaper died is taken again after ``timeout_s``.
        Call :meth:`forget` once its jobs are back on the queue."""
        stale_claim = sa.or_(W.reaped_at.is_(None), W.reaped_at <= self._now - self.timeout_s)
        with self.engine.connect() as conn:
            dead = conn.execute(sa.select(W.worker_id, W.heartbeat_at).where(
                W.heartbeat_at <= self._now - self.timeout_s, W.worker_id != me, stale_claim,
            )).all()
        claimed = []
        for worker_id, seen in dead:
            with self.engine.begin() as conn:
                if conn.execute(db.workers.update().where(W.worker_id == worker_id, W.heartbeat_at == seen, stale_claim)
                                .values(reaped_by=me, reaped_at=self._now)).rowcount == 1:
                    claimed.append((worker_id, seen))
        return claimed

    def forget(self, worker_id: str, seen: float) -> None:
        """Remove a reaped worker's row (unless it came back meanwhile)."""
        with self.engine.begin() as conn:
            conn.execute(db.workers.delete().where(W.worker_id == worker_id, W.heartbeat_at == seen))


class WorkerIdLock:
    """Holds ``worker_id`` for this process's life (see the module docstring).

    Raises:
        WorkerIdInUse: from :meth:`acquire`, when another live process holds the id.
    """

    def __init__(self, engine: sa.Engine, worker_id: str) -> None:
        self.engine, self.worker_id = engine, worker_id
        self._conn: sa.Connection | None = None
        self._file: Any = None

    def acquire(self) -> None:
        if self.engine.dialect.name == "postgresql":
            if not self._pg_lock():
                raise WorkerIdInUse(self._in_use())
            return
        path = Path(self.engine.url.database or "modelapi.sqlite3")
        name = hashlib.sha256(self.worker_id.encode()).hexdigest()[:16]
        fh = os.fdopen(os.open(f"{path}.worker-{name}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a")  # private, as the data dir
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise WorkerIdInUse(self._in_use()) from None
        self._file = fh

    def held(self) -> bool:
        """True while this process still holds the id. A Postgres restart drops the lock with
        its connection: it is taken again here, unless another worker took the id meanwhile
        (then False: this process must stop)."""
        if self.engine.dialect.name != "postgresql":
            return self._file is not None
        if self._conn is None:
            return self._pg_lock()  # database errors propagate: not knowing is not losing
        try:
            self._conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.DBAPIError:
            self._conn.invalidate()
            self._conn.close()
            self._conn = None
        return self._pg_lock()  # the server restarted; database errors propagate

    def _in_use(self) -> str:
        return (f"worker id {self.worker_id!r} is in use by another live worker; "
                "give this one its own --worker-id (e.g. <host>-gpu1)")

    def _pg_lock(self) -> bool:
        name = f"modelapi.worker:{self.engine.url.database}:{self.worker_id}"  # advisory locks are cluster-wide
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._file is not None:
            self._file.close()
            self._file = None
