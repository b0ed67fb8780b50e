"""Requests and their states: the state machine. Every write to the requests table happens here
(a webhook's attempt records included); every state change of a request is
one conditional UPDATE (with its queue entry and its bill in the same transaction), so that
two actors — an API process cancelling, workers starting, a reaper recovering — never both win.

::

    in_queue ──begin──► in_progress ──finish(Done)──► completed   (+ one usage row)
       │  ▲                 │  │  │
       │  └─finish(Stopped)─┘  │  └──finish(Failed)──► failed      (deadline_exceeded among others)
       │                       └──finish(Cancelled)──► cancelled   (+ a usage row per image kept)
       └──cancel / expire_queued──► cancelled                      (deadline: error.code "deadline")

Deadlines (a submit's ``Cancel-After``, kept as ``deadline_at``): a queued request past its
deadline is cancelled with ``error.code: "deadline"`` and not billed, by :meth:`JobStore.expire_queued`
(a periodic sweep) or by :meth:`JobStore.begin` (at dequeue), whichever comes first; a running one
is stopped by its worker between steps and failed with ``deadline_exceeded``. A running request
is stopped on request (:meth:`JobStore.request_stop`, read by its worker with
:meth:`JobStore.stop_requested`) and ends cancelled, keeping the images already stored.

The queue itself (ordering, claiming, recovery of a restarted worker's claims) is DBOS's; see
:mod:`modelapi.core.queue`. Policies that live here:

- Fair share: a new request gets priority ``max(head, the key's newest active priority + 1)``,
  where ``head`` is the smallest priority among queued requests (when none is queued, the
  largest among running ones), so keys take turns
  (round-robin by submission rank): one key with 200 queued requests delays another key's single
  request by at most one request per worker. Requests handed back to the queue get priority 1
  (before all others).
- Crash recovery: a run that was interrupted (its worker died) is run again by the worker that
  gets its entry back — the same worker after a restart, or any live worker after the dead one's
  entries were reaped (:meth:`JobStore.reap`) — up to ``max_attempts`` runs, then it is failed.
  A run is fenced by ``(attempts, run_by)``: an outdated run can never finish a request.
- A request whose run belongs to a live worker process is never started by another, and only
  the request's current queue entry can start it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from collections.abc import Generator
from typing import Any, Callable, TypeGuard, TypeVar

import sqlalchemy as sa

from .. import catalog
from ..types import Status
from .auth import live_key
from . import accounts, db, files, usage, webhook_events
from .queue import EntryId, TaskQueue
from .workers import WorkerRegistry

log = logging.getLogger("modelapi.jobs")
R = db.requests
C = R.c
T = TypeVar("T")
FIRST = 1
"""Priority of requests handed back to the queue (graceful shutdown, recovery): before all others."""
NEW = 2
"""The smallest priority of a new request (fair-share ranks count up from here)."""
_SEEN = {"version": C.version + 1}
"""Part of every UPDATE that changes what a client sees (status, progress, an upstream's queue
position): the stream's event ids."""
EXACT_POSITIONS = 1000
"""Queue positions below this are counted exactly on every read; beyond it they come from a
snapshot of the queue's order (see :class:`QueueOrder`), so a poll costs the same at any depth."""


@dataclass(frozen=True)
class Request:
    """A request as stored. ``queue_position`` is set only while in_queue (0 = next)."""

    request_id: str
    owner_key_id: str
    model_id: str
    status: Status
    inputs: dict[str, Any]
    input_files: list[str]
    seed: int
    workflow_id: str
    priority: int
    attempts: int
    progress: float | None
    outputs: list[str] | None
    metadata: dict[str, Any] | None
    error: dict[str, Any] | None
    billed_units: int | None
    cost_usd: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None = None
    body_hash: str | None = None
    run_by: str | None = None
    version: int = 0
    seq: int = 0
    webhook: dict[str, Any] | None = None
    partial_outputs: list[str] | None = None
    retention_s: int | None = None
    expires_at: datetime | None = None
    deleted_at: datetime | None = None
    deadline_at: datetime | None = None
    reserved_usd: float | None = None
    budget_period: str | None = None
    upstream: dict[str, Any] | None = None
    queue_position: int | None = None

    def shown(self) -> tuple[Status, float | None, int | None]:
        """What a client sees of it: ``(status, progress, queue_position)`` (:func:`shown`)."""
        return shown(self.status, self.progress, self.queue_position, self.upstream)

    def past_deadline(self) -> bool:
        """True once the request's ``Cancel-After`` deadline has passed (never without one)."""
        return self.deadline_at is not None and db.utcnow() >= self.deadline_at

    def cancel_after_s(self) -> float | None:
        """The submit's ``Cancel-After``, seconds (None: no deadline)."""
        return None if self.deadline_at is None else round((self.deadline_at - self.created_at).total_seconds(), 3)


def shown(status: Status, progress: float | None, position: int | None,
          upstream: dict[str, Any] | None) -> tuple[Status, float | None, int | None]:
    """``(status, progress, queue_position)`` as a client sees them: those stored, except while an
    upstream with a queue of its own (``runcomfy``) queues our in_progress request
    (``upstream.status`` ``in_queue``): then in_queue at the upstream's queue position."""
    if status is Status.IN_PROGRESS and upstream and upstream.get("status") == "in_queue":
        at = upstream.get("queue_position")
        return Status.IN_QUEUE, None, at if isinstance(at, int) and not isinstance(at, bool) and at >= 0 else None
    return status, progress, position


@dataclass(frozen=True)
class Polled:
    """What a status poll needs of a request, as the client sees it (:func:`shown`;
    ``upstream``: the queue position is an upstream's)."""

    status: Status
    progress: float | None
    queue_position: int | None
    partial_outputs: list[str] | None
    upstream: bool = False


@dataclass(frozen=True)
class Run:
    """One run of a request by one worker process (``runner``: ``<worker id>#<instance>``),
    attempt ``attempt`` (1-based)."""

    request: Request
    runner: str
    attempt: int

    @property
    def worker_id(self) -> str:
        return self.runner.rpartition("#")[0]


@dataclass(frozen=True)
class Done:
    """Outcome: every image is stored under ``outputs`` (storage keys). ``metadata`` is the
    client's ``result.metadata``; ``ledger`` what only the usage ledger records
    (``upstream_units``: the provider's billed units)."""

    outputs: list[str]
    metadata: dict[str, Any]
    ledger: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """Outcome: the request failed; ``code`` and ``message`` go to the client as ``error``."""

    code: str
    message: str


@dataclass(frozen=True)
class Stopped:
    """Outcome: stopped between steps (graceful shutdown): back to the front of the queue.
    ``outputs``: the storage keys of the images stored before the stop (dropped here; a
    :class:`Cancelled` keeps them)."""

    outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Moved:
    """Outcome: the next backend of the request's route runs from the other queue (``kind``:
    ``"run"``, the local engine's, or ``"upstream"``): back in_queue under a new entry of that
    queue, at its own priority; ``tried`` (``[{"backend", "outcome"}]`` so far) is kept as
    ``metadata.backends_tried`` for the run that follows."""

    kind: str
    tried: list[dict[str, str]]


@dataclass(frozen=True)
class Cancelled:
    """Outcome: stopped between steps at the caller's request (``POST /cancel?running=true``):
    cancelled, keeping ``outputs`` (storage keys of the images stored before the stop, in
    order), billed per image kept (:func:`modelapi.core.usage.bill_images`)."""

    outputs: list[str]


Outcome = Done | Failed | Stopped | Cancelled | Moved

DEADLINE = "deadline"
"""``error.code`` of a request cancelled because it had not started by its ``Cancel-After``."""
DEADLINE_EXCEEDED = "deadline_exceeded"
"""``error.code`` of a request failed because it was still running at its ``Cancel-After``."""


def deadline_error(req: Request) -> dict[str, str]:
    """The ``error`` of a request cancelled at its deadline before it started."""
    return {"code": DEADLINE, "message": f"not started within its Cancel-After of {req.cancel_after_s():g} s; cancelled"}


def deadline_exceeded(req: Request) -> Failed:
    """The outcome of a run stopped at its request's deadline."""
    return Failed(DEADLINE_EXCEEDED, f"still running at its Cancel-After deadline ({req.cancel_after_s():g} s after "
                                     "the submit); stopped")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def _log(event: str, request_id: str, **fields: Any) -> None:
    log.info(event, extra={"request_id": request_id, **fields})


def _row(row: Any, position: int | None = None) -> Request:
    data = {k: row[k] for k in Request.__dataclass_fields__ if k != "queue_position"}
    data["status"] = Status(data["status"])
    for k in ("created_at", "started_at", "finished_at", "expires_at", "deleted_at", "deadline_at"):
        data[k] = db.as_utc(data[k])
    return Request(**data, queue_position=position)


def _ends(req: Request) -> dict[str, Any]:
    """The values of an UPDATE that makes ``req`` terminal: ``finished_at`` now, and
    ``expires_at`` when the request asked for its own retention."""
    now = db.utcnow()
    return {"finished_at": now, "expires_at": now + timedelta(seconds=req.retention_s) if req.retention_s is not None else None}


def retry_db(fn: Callable[[], T], what: str, patience_s: float = 600.0) -> T:
    """``fn()``, retried with backoff while the database is unreachable (e.g. Postgres
    restarting), for up to ``patience_s`` seconds; then the last error is raised."""
    deadline, delay = time.monotonic() + patience_s, 0.2
    while True:
        try:
            return fn()
        except db.UNAVAILABLE as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable while %s; retrying in %.1f s: %s", what, delay, str(exc).splitlines()[0])
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _expired_ids(sqlite: bool) -> sa.Select[Any]:
    """The ids of queued requests past their deadline, oldest deadline first, read from the
    partial index of queued requests with a deadline (migration 0006; the WHERE repeats its
    terms, as a partial index needs). SQLite, which has no statistics, would rather walk every
    queued request by ``(status, priority, seq)``: there the index is named (``INDEXED BY``)."""
    if sqlite:
        rid, status = sa.column("request_id", sa.String), sa.column("status", sa.String)
        deadline = sa.column("deadline_at", sa.DateTime(timezone=True))
        source: Any = sa.text("requests INDEXED BY ix_requests_queued_deadline")
    else:
        rid, status, deadline, source = C.request_id, C.status, C.deadline_at, R
    return (sa.select(rid).select_from(source)
            .where(status == sa.literal_column("'in_queue'"), deadline.is_not(None), deadline <= sa.bindparam("now"))
            .order_by(deadline).limit(sa.bindparam("n")))


def _newest_priority(status: Status) -> sa.ScalarSelect[int]:
    """The priority of a key's newest ranked request in ``status``. The newest active one has the
    key's largest priority (each was given more than those active before it), so this reads a few
    index entries however many requests the key has queued."""
    return (sa.select(C.priority).where(C.owner_key_id == sa.bindparam("owner"), C.status == status.value, C.priority >= NEW)
            .order_by(C.seq.desc()).limit(1).scalar_subquery())


_FAIR_SHARE = sa.select(  # (head of the queue, largest running, key's newest queued, key's newest running)
    sa.select(sa.func.min(C.priority)).where(C.priority >= NEW, C.status == Status.IN_QUEUE.value).scalar_subquery(),
    sa.select(sa.func.max(C.priority)).where(C.priority >= NEW, C.status == Status.IN_PROGRESS.value).scalar_subquery(),
    _newest_priority(Status.IN_QUEUE), _newest_priority(Status.IN_PROGRESS),
)


class QueueOrder:
    """Queue positions beyond ``exact`` (default :data:`EXACT_POSITIONS`): the order of the whole queue, read at
    most every ``max(1 s, 20 x the time one read takes)`` (so keeping it costs at most ~5% of
    one thread whatever the queue's depth). Positions it gives may be that many seconds old;
    a request queued after the last read is placed at the back."""

    def __init__(self, engine: sa.Engine, exact: int = EXACT_POSITIONS) -> None:
        self.exact = exact
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._lock = threading.Lock()
        self._order: dict[str, int] = {}
        self._taken_at = -1e9
        self._max_age_s = 1.0

    def position(self, request_id: str) -> int:
        if time.monotonic() - self._taken_at > self._max_age_s and self._lock.acquire(blocking=not self._order):
            try:
                t0 = time.monotonic()
                with self._reads.connect() as conn:
                    ids = conn.execute(sa.select(C.request_id).where(C.status == Status.IN_QUEUE.value)
                                       .order_by(C.priority, C.seq)).scalars().all()
                self._order = {rid: i for i, rid in enumerate(ids)}
                self._taken_at = time.monotonic()
                self._max_age_s = max(1.0, 20 * (self._taken_at - t0))
            finally:
                self._lock.release()
        order = self._order
        return max(self.exact, order.get(request_id, len(order)))


class JobStore:
    """The requests table and its state machine. All methods are safe to call from any thread.

    Args:
        database: the database (a SQLAlchemy engine), kept as :attr:`db`.
        queue: the durable queue (entries are written in the same transactions as the rows).
        workers: the worker registry (who is alive).
        max_attempts: runs of one request before an interrupted one is failed (``--max-attempts``).
        prices_usd: price per billed unit by model id (``--prices-usd``).
    """

    def __init__(self, database: sa.Engine, queue: TaskQueue, workers: WorkerRegistry, *,
                 max_attempts: int = 2, prices_usd: dict[str, float] | None = None) -> None:
        self.db = database
        self._reads = database.execution_options(isolation_level="AUTOCOMMIT")  # no BEGIN/ROLLBACK round trips
        self.queue = queue
        self.workers = workers
        self.max_attempts = max_attempts
        self.prices_usd = prices_usd or {}
        self.order = QueueOrder(database)
        self.async_reads = db.AsyncReads.for_engine(database)
        """Non-blocking reads for :meth:`poll_async` (Postgres), else None."""
        self._poll_read, self._ahead_read = db.DriverRead(database, self._POLL), db.DriverRead(database, self._AHEAD)
        self._expired = _expired_ids(database.dialect.name == "sqlite")

    # -- reads -------------------------------------------------------------------------------
    _AHEAD = sa.select(sa.func.count()).select_from(
        sa.select(sa.literal(1)).where(
            C.status == Status.IN_QUEUE.value,
            sa.tuple_(C.priority, C.seq) < sa.tuple_(sa.bindparam("priority"), sa.bindparam("seq")),
        ).order_by(C.priority, C.seq).limit(sa.bindparam("cap")).subquery()  # ordered: Postgres walks the index
    )

    def _position(self, conn: sa.Connection, request_id: str, priority: int, seq: int) -> int:
        ahead = conn.execute(self._AHEAD, {"priority": priority, "seq": seq, "cap": self.order.exact}).scalar_one()
        return ahead if ahead < self.order.exact else self.order.position(request_id)

    def get(self, request_id: str, owner_key_id: str | None = None) -> Request | None:
        """The request, or None when unknown — or owned by another key than ``owner_key_id``."""
        query = R.select().where(C.request_id == request_id)
        if owner_key_id is not None:
            query = query.where(C.owner_key_id == owner_key_id)
        with self.db.connect() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            position = None
            if row["status"] == Status.IN_QUEUE:
                position = self._position(conn, request_id, row["priority"], row["seq"])
        return _row(row, position)

    _POLL = (
        sa.select(db.api_keys.c.id, C.status, C.progress, C.priority, C.seq, C.partial_outputs,
                  sa.case((C.status == Status.IN_PROGRESS.value, C.upstream)))  # NULL unless in_progress: nothing to decode
        .select_from(db.api_keys.outerjoin(R, sa.and_(C.owner_key_id == db.api_keys.c.id, C.request_id == sa.bindparam("rid"))))
        .where(live_key(sa.bindparam("h")))
    )

    def poll(self, request_id: str, key_hash: str) -> tuple[bool, Polled | None]:
        """The hot path of status polls, in one round trip (two while queued): (is the key live,
        and that key's request's status, progress, queue position and partial outputs, or None)."""
        key_ok, polled = db.run_reads(self.db, lambda: self._poll_steps(request_id, key_hash))
        if self._beyond_exact(polled):
            polled = replace(polled, queue_position=self.order.position(request_id))
        return key_ok, polled

    async def poll_async(self, request_id: str, key_hash: str) -> tuple[bool, Polled | None]:
        """:meth:`poll` awaited on the event loop, where the database has non-blocking reads
        (:attr:`async_reads`: Postgres); the same reads, the same answer."""
        assert self.async_reads is not None, "no non-blocking reads on this database"
        key_ok, polled = await self.async_reads.run(lambda: self._poll_steps(request_id, key_hash))
        if self._beyond_exact(polled):  # the snapshot may need a (blocking) read
            polled = replace(polled, queue_position=await asyncio.to_thread(self.order.position, request_id))
        return key_ok, polled

    def _beyond_exact(self, polled: Polled | None) -> TypeGuard[Polled]:
        """A queued request at least ``order.exact`` entries back: its position comes from the
        snapshot (:class:`QueueOrder`)."""
        return polled is not None and not polled.upstream and polled.queue_position is not None \
            and polled.queue_position >= self.order.exact

    def _poll_steps(self, request_id: str, key_hash: str) -> Generator[tuple[db.DriverRead, dict[str, Any]], Any, tuple[bool, Polled | None]]:
        """The poll's reads, written once for :meth:`poll` and :meth:`poll_async`: yields each
        ``(read, params)`` and is sent its row. A queue position of ``order.exact`` or more is
        only "that far back" (the callers read it from the snapshot)."""
        row = yield self._poll_read, {"rid": request_id, "h": key_hash}
        if row is None:  # no live key of that hash
            return False, None
        _, status_name, progress, priority, seq, partial, upstream = row
        if status_name is None:
            return True, None
        if isinstance(partial, str):  # a raw JSON column (SQLite)
            partial = json.loads(partial)
        status = Status(status_name)
        if upstream is not None:  # in_progress on an upstream
            seen, _, at = shown(status, progress, None, json.loads(upstream) if isinstance(upstream, str) else upstream)
            if seen is Status.IN_QUEUE:
                return True, Polled(seen, None, at, None, upstream=True)
        position = None
        if status is Status.IN_QUEUE:
            position = (yield self._ahead_read, {"priority": priority, "seq": seq, "cap": self.order.exact})[0]
        return True, Polled(status, progress, position, partial if status is Status.IN_PROGRESS else None)

    def versions(self, request_ids: list[str]) -> dict[str, int]:
        """The change counter of each of ``request_ids`` (any owner): the cheap read a status
        stream's watcher makes every tick."""
        with self._reads.connect() as conn:
            return dict(conn.execute(sa.select(C.request_id, C.version).where(C.request_id.in_(request_ids))).all())

    def watch(self, request_ids: list[str]) -> list[Request]:
        """The rows of ``request_ids`` (any owner; ownership was checked when each stream
        opened), without queue positions (see :meth:`queue_positions`)."""
        with self._reads.connect() as conn:
            return [_row(r) for r in conn.execute(R.select().where(C.request_id.in_(request_ids))).mappings()]

    def queue_positions(self, request_ids: list[str]) -> dict[str, int]:
        """Queue positions of queued ``request_ids`` in one read of the queue's head (the first
        ``exact`` entries), however many are asked for; those further back from the snapshot
        (:class:`QueueOrder`)."""
        with self._reads.connect() as conn:
            head = conn.execute(sa.select(C.request_id).where(C.status == Status.IN_QUEUE.value)
                                .order_by(C.priority, C.seq).limit(self.order.exact)).scalars().all()
        at = {rid: i for i, rid in enumerate(head)}
        return {rid: at[rid] if rid in at else self.order.position(rid) for rid in request_ids}

    def ranks(self, workflow_ids: list[str]) -> dict[str, tuple[int, int]]:
        """``(priority, seq)`` of the active requests whose current queue entry is one of
        ``workflow_ids``, by entry."""
        if not workflow_ids:
            return {}
        with self._reads.connect() as conn:
            rows = conn.execute(sa.select(C.workflow_id, C.priority, C.seq).where(  # by request id: indexed
                C.request_id.in_({EntryId.parse(w).request_id for w in workflow_ids}), C.workflow_id.in_(workflow_ids),
                self._ACTIVE)).all()
        return {r.workflow_id: (r.priority, r.seq) for r in rows}

    def change_seq(self) -> int:
        """A number that grows on every status change of any request (queue positions can only
        move when it does): the newest id of the counts ledger."""
        with self._reads.connect() as conn:
            return conn.execute(sa.select(sa.func.max(db.request_counts.c.id))).scalar() or 0

    def page(self, owner_key_id: str | None, *, status: Status | None = None, model_id: str | None = None,
             limit: int = 20, before_seq: int | None = None) -> list[Request]:
        """Up to ``limit`` of the key's requests (every key's when ``owner_key_id`` is None),
        newest first, older than ``before_seq`` (a keyset cursor: pages never skip or repeat a
        request while new ones arrive). Costs ``limit`` index entries (indexes
        ``(owner_key_id[, status | model_id], seq)``)."""
        query = R.select()
        if owner_key_id is not None:
            query = query.where(C.owner_key_id == owner_key_id)
        if status is not None:
            query = query.where(C.status == status.value)
        if model_id is not None:
            query = query.where(C.model_id == model_id)
        if before_seq is not None:
            query = query.where(C.seq < before_seq)
        with self._reads.connect() as conn:
            rows = conn.execute(query.order_by(C.seq.desc()).limit(limit)).mappings().all()
            return [_row(r, self._position(conn, r["request_id"], r["priority"], r["seq"])
                         if r["status"] == Status.IN_QUEUE else None) for r in rows]

    def find_idempotent(self, owner_key_id: str, idempotency_key: str) -> Request | None:
        with self.db.connect() as conn:
            row = conn.execute(
                R.select().where(C.owner_key_id == owner_key_id, C.idempotency_key == idempotency_key)
            ).mappings().first()
        return _row(row) if row else None

    def count_queued(self, owner_key_id: str, up_to: int) -> int:
        """The key's queued requests, counted up to ``up_to`` (the cost stays bounded)."""
        with self._reads.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(sa.literal(1)).where(C.owner_key_id == owner_key_id, C.status == Status.IN_QUEUE.value)
                .limit(up_to).subquery()
            )).scalar_one()

    def with_status(self, *statuses: Status) -> list[Request]:
        with self.db.connect() as conn:
            rows = conn.execute(
                R.select().where(C.status.in_([s.value for s in statuses])).order_by(C.priority, C.seq)
            ).mappings()
            return [_row(r) for r in rows]

    _COMPACT_AFTER = 1000

    def counts(self) -> list[tuple[str, str, int]]:
        """(model_id, status, count) for every pair with requests, from the ``request_counts``
        ledger (kept by triggers; see :data:`modelapi.core.db.request_counts`). When the ledger
        has grown past ``_COMPACT_AFTER`` rows it is folded into one row per pair, in one
        transaction (concurrent folds by other processes delete disjoint rows), so reading it
        costs the same however many requests exist."""
        K = db.request_counts.c
        with self._reads.connect() as conn:
            rows = conn.execute(sa.select(K.model_id, K.status, sa.func.sum(K.n), sa.func.count())
                                .group_by(K.model_id, K.status)).all()
        if sum(r[3] for r in rows) > self._COMPACT_AFTER:
            with self.db.begin() as conn:
                folded: dict[tuple[str, str], int] = {}
                for model_id, status, n in conn.execute(db.request_counts.delete().returning(K.model_id, K.status, K.n)):
                    folded[(model_id, status)] = folded.get((model_id, status), 0) + n
                kept = [{"model_id": m, "status": st, "n": n} for (m, st), n in folded.items() if n]
                if kept:
                    conn.execute(db.request_counts.insert(), kept)
        return [(m, st, int(n)) for m, st, n, _ in rows if n]

    def queue_summary(self) -> dict[str, Any]:
        """The queue now, by model: ``{"queued", "running", "oldest_queued_at" (ISO 8601 or
        null), "oldest_wait_s" (seconds the oldest queued request has waited, or null),
        "models": [{"model_id", "queued", "running", "oldest_queued_at", "oldest_wait_s"}]}``
        (every model of the catalogue, in its order)."""
        now = db.utcnow()
        with self._reads.connect() as conn:
            rows = conn.execute(sa.select(C.model_id, C.status, sa.func.count(), sa.func.min(C.created_at))
                                .where(self._ACTIVE).group_by(C.model_id, C.status)).all()
        by_model: dict[str, dict[str, Any]] = {m: {"model_id": m, "queued": 0, "running": 0, "oldest_queued_at": None, "oldest_wait_s": None}
                    for m in catalog.models()}
        oldest_all: datetime | None = None
        for model_id, status, n, first in rows:
            entry = by_model.setdefault(model_id, {"model_id": model_id, "queued": 0, "running": 0,
                                                   "oldest_queued_at": None, "oldest_wait_s": None})
            if status == Status.IN_PROGRESS.value:
                entry["running"] = n
                continue
            oldest = db.as_utc(first)
            assert oldest is not None
            entry |= {"queued": n, "oldest_queued_at": db.iso(oldest),
                      "oldest_wait_s": round((now - oldest).total_seconds(), 3)}
            oldest_all = oldest if oldest_all is None or oldest < oldest_all else oldest_all
        models = list(by_model.values())
        return {"queued": sum(m["queued"] for m in models), "running": sum(m["running"] for m in models),
                "oldest_queued_at": db.iso(oldest_all),
                "oldest_wait_s": None if oldest_all is None else round((now - oldest_all).total_seconds(), 3),
                "models": models}

    # -- submit and cancel (API side) ---------------------------------------------------------
    _ACTIVE = C.status.in_([Status.IN_QUEUE.value, Status.IN_PROGRESS.value])

    def _fair_priority(self, conn: sa.Connection, owner_key_id: str) -> int:
        queued_head, running_max, *own = conn.execute(_FAIR_SHARE, {"owner": owner_key_id}).one()
        own = [p for p in own if p is not None]
        return max(queued_head or running_max or NEW, max(own) + 1 if own else NEW)

    def create(
        self, *, request_id: str, owner_key_id: str, model_id: str, inputs: dict[str, Any],
        input_files: list[str], seed: int, idempotency_key: str | None, body_hash: str | None,
        webhook: dict[str, Any] | None = None, admission: accounts.Admission | None = None,
        upstream: bool = False, tried: list[dict[str, str]] | None = None,
        cancel_after_s: float | None = None, retention_s: int | None = None,
    ) -> Request:
        """Store a new in_queue request and its queue entry in one transaction (both committed
        before this returns, or neither exists). ``webhook``: ``{"url", "base_url"}`` to deliver
        the result to (see :mod:`modelapi.core.delivery`), and ``"intermediate_status": True``
        to deliver the status changes before it too (:mod:`modelapi.core.webhook_events`).
        ``admission``: the key's limits,
        checked first in the same transaction (the request keeps its budget reservation).
        ``upstream``: the entry goes on the upstream queue (its route's first backend to run is
        an upstream), with ``tried`` (backends passed over at submit: overflow) kept as
        ``metadata.backends_tried``.
        ``cancel_after_s``: the request's deadline, seconds after now (``Cancel-After``; None: none).
        ``retention_s``: seconds its files are kept once it finished, when the key asked for
        less than the server's (``--retention-s``; None: the server's). The uploads its inputs
        name are marked used by it in the same transaction (deleted with it; see
        :func:`modelapi.core.files.mark_used`).

        Raises:
            sqlalchemy.exc.IntegrityError: the key's ``idempotency_key`` is taken.
            APIStatusError: ``admission`` refused it (see :meth:`modelapi.core.accounts.Admission.check`);
                nothing was stored or counted.
        """
        entry = EntryId(request_id, 0, "upstream" if upstream else "run")
        now = db.utcnow()
        req = Request(
            request_id=request_id, owner_key_id=owner_key_id, model_id=model_id, status=Status.IN_QUEUE,
            inputs=inputs, input_files=input_files, seed=seed, workflow_id=str(entry), priority=NEW,
            attempts=0, progress=None, outputs=None, metadata={"backends_tried": tried} if tried else None, error=None, billed_units=None, cost_usd=None,
            created_at=now, started_at=None, finished_at=None, idempotency_key=idempotency_key,
            body_hash=body_hash, retention_s=retention_s, deadline_at=None if cancel_after_s is None else now + timedelta(seconds=cancel_after_s),
            webhook=webhook and {**webhook, "attempts": 0, "last_status_code": None, "delivered_at": None},
        )
        with self.db.begin() as conn:
            if admission is not None:
                admission.check(conn)
                req = replace(req, reserved_usd=admission.reserved_usd, budget_period=admission.period)
            req = replace(req, priority=self._fair_priority(conn, owner_key_id))
            conn.execute(R.insert().values(
                {k: v for k, v in req.__dict__.items() if k not in ("queue_position", "run_by", "version", "seq", "partial_outputs",
                                                                     "expires_at", "deleted_at")} | {"status": req.status.value}
            ))
            files.mark_used(conn, owner_key_id, files.upload_ids(inputs), request_id)
            self.queue.enqueue(conn, entry=entry, priority=req.priority, owner_key_id=owner_key_id)
        _log("request.in_queue", request_id, model_id=model_id, owner=owner_key_id, priority=req.priority)
        return req

    def cancel(self, req: Request, error: dict[str, str] | None = None) -> bool:
        """in_queue -> cancelled (with ``error``: a deadline's, :func:`deadline_error`), and its
        queue entry removed. False when it is no longer queued."""
        with self.db.begin() as conn:
            ok = conn.execute(R.update().where(C.request_id == req.request_id, C.status == Status.IN_QUEUE.value)
                              .values(status=Status.CANCELLED.value, **_ends(req), error=error, **_SEEN)).rowcount == 1
            if ok:
                self._ended(conn, req)
        if ok:
            _log("request.cancelled", req.request_id, **({"error_code": error["code"]} if error else {}))
            try:  # tidy only: a worker that still takes the entry finds the request cancelled
                self.queue.cancel(req.workflow_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not remove %s from the queue: %s", req.workflow_id, exc)
        return ok

    def expire_queued(self, limit: int = 100) -> list[str]:
        """Cancel the queued requests past their ``Cancel-After`` deadline (oldest deadline first,
        at most ``limit``): ``error.code: "deadline"``, not billed, off the queue. One read of
        the partial index of queued requests with a deadline, then one conditional cancel each,
        so sweeps in several processes at once cancel each request once. Returns the request
        ids this call cancelled."""
        with self._reads.connect() as conn:
            ids = conn.execute(self._expired, {"now": db.utcnow(), "n": limit}).scalars().all()
            expired = [_row(r) for r in conn.execute(R.select().where(C.request_id.in_(ids))).mappings()] if ids else []
        return [req.request_id for req in expired if self.cancel(req, deadline_error(req))]

    def expire_queued_every(self, interval_s: float, stop: threading.Event) -> None:
        """:meth:`expire_queued` every ``interval_s`` seconds (``--deadline-check-s``) until
        ``stop`` is set: a queued request leaves the queue at most that long after its deadline
        (every worker and API-only process runs this in a thread). A database outage skips a
        round."""
        while not stop.wait(interval_s):
            try:
                while len(self.expire_queued()) == 100:  # a backlog: go on at once
                    pass
            except Exception as exc:  # noqa: BLE001 - the database may be down; the next round tries again
                log.warning("deadline sweep failed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def request_stop(self, req: Request) -> bool:
        """Ask the worker running ``req`` to stop at its next step or image boundary (``POST
        /cancel?running=true``): its run then ends cancelled, keeping the images already stored.
        False when the request is not in_progress. Asking again changes nothing that matters."""
        with self.db.begin() as conn:
            ok = conn.execute(R.update().where(C.request_id == req.request_id, C.status == Status.IN_PROGRESS.value)
                              .values(stop_requested_at=db.utcnow())).rowcount == 1
        if ok:
            _log("request.stop_requested", req.request_id)
        return ok

    def stop_requested(self, request_id: str) -> bool:
        """Whether a stop was asked for the request (:meth:`request_stop`): the one read (by
        unique index) a running worker makes between steps."""
        with self._reads.connect() as conn:
            return conn.execute(sa.select(C.stop_requested_at.is_not(None)).where(C.request_id == request_id)).scalar() is True

    # -- runs (worker side) -------------------------------------------------------------------
    def begin(self, req: Request, runner: str, workflow_id: str) -> Run | None:
        """Start a run of ``req`` (as read by the caller, any time since its queue entry was
        taken) by ``runner`` (``<worker id>#<instance>``) from queue entry ``workflow_id``, or
        None when there is nothing to run: terminal or cancelled, an outdated entry, already
        running in another live process, or interrupted ``max_attempts`` times (then it is
        failed with ``error.code = "interrupted"``). The write is conditional on the state
        ``req`` shows, so a read that has gone stale meanwhile starts nothing. A request past
        its ``Cancel-After`` deadline is not started: cancelled (``deadline``) when queued,
        failed (``deadline_exceeded``) when an interrupted run would be run again."""
        request_id = req.request_id
        if req.status.is_terminal:
            return None
        if req.workflow_id != workflow_id:
            _log("request.outdated_entry", request_id, entry=workflow_id)
            return None
        if req.status is Status.IN_QUEUE:
            if req.past_deadline():
                self.cancel(req, deadline_error(req))
                return None
            frm = C.status == Status.IN_QUEUE.value
        else:  # an earlier run was interrupted: its worker died (or restarted: a new instance)
            if req.run_by is not None and self.workers.is_live(req.run_by):
                _log("request.running_elsewhere", request_id, worker=req.run_by)
                return None
            if req.past_deadline():
                failed = deadline_exceeded(req)
                self._fail(req, failed.code, failed.message, C.attempts == req.attempts, C.workflow_id == workflow_id)
                return None
            if req.attempts >= self.max_attempts:
                self._fail(req, "interrupted", f"the worker stopped {req.attempts} times while running this request",
                           C.attempts == req.attempts, C.workflow_id == workflow_id)
                return None
            frm = sa.and_(C.status == Status.IN_PROGRESS.value, C.attempts == req.attempts)
        with self.db.begin() as conn:
            # the key's max_running, checked under its row's lock in this transaction
            if req.status is Status.IN_QUEUE and accounts.at_running_cap(conn, req.owner_key_id):
                if self._defer(conn, req):
                    _log("request.deferred", request_id, reason="max_running", retry_s=accounts.RUNNING_RETRY_S)
                return None
            ok = conn.execute(R.update().where(C.request_id == request_id, C.workflow_id == workflow_id, frm).values(
                status=Status.IN_PROGRESS.value, started_at=db.utcnow(), progress=0.0,
                attempts=req.attempts + 1, run_by=runner, partial_outputs=None, upstream=None, **_SEEN,
            )).rowcount == 1
            if ok:
                self._webhook_event(conn, req, None)
        if not ok:
            return None
        run = Run(req, runner, req.attempts + 1)
        _log("request.in_progress" if req.status is Status.IN_QUEUE else "request.restarted", request_id,
             worker=run.worker_id, attempt=run.attempt)
        return run

    def _defer(self, conn: sa.Connection, req: Request) -> bool:
        """``req`` (in_queue) waits: its key has ``max_running`` requests running. A new queue
        entry, runnable after :data:`~modelapi.core.accounts.RUNNING_RETRY_S`, takes the place of
        the current one (which then ends without running). False when it moved on meanwhile."""
        entry = EntryId.parse(req.workflow_id).next()
        ok = conn.execute(R.update().where(C.request_id == req.request_id, C.status == Status.IN_QUEUE.value,
                                           C.workflow_id == req.workflow_id).values(workflow_id=str(entry))).rowcount == 1
        if ok:
            self.queue.enqueue(conn, entry=entry, priority=req.priority, owner_key_id=req.owner_key_id,
                               delay_s=accounts.RUNNING_RETRY_S)
        return ok

    def _this_run(self, run: Run) -> sa.ColumnElement[bool]:
        return sa.and_(C.request_id == run.request.request_id, C.status == Status.IN_PROGRESS.value,
                       C.attempts == run.attempt, C.run_by == run.runner)

    def set_progress(self, run: Run, progress: float) -> None:
        """Record progress (0-1). Best effort: a database outage skips the update."""
        try:
            with self.db.begin() as conn:
                conn.execute(R.update().where(self._this_run(run)).values(progress=round(float(progress), 4), **_SEEN))
        except db.UNAVAILABLE as exc:
            log.warning("progress not recorded (database unavailable): %s", str(exc).splitlines()[0])

    def set_partial(self, run: Run, outputs: list[str]) -> None:
        """Publish the storage keys of the images stored so far (shown while in_progress as
        ``partial_output``; an intermediate webhook event when more than any before). Best
        effort, like progress."""
        try:
            with self.db.begin() as conn:
                if conn.execute(R.update().where(self._this_run(run)).values(partial_outputs=list(outputs), **_SEEN)).rowcount:
                    self._webhook_event(conn, run.request, list(outputs))
        except db.UNAVAILABLE as exc:
            log.warning("partial outputs not recorded (database unavailable): %s", str(exc).splitlines()[0])

    def set_upstream(self, run: Run, record: dict[str, Any] | None) -> None:
        """Record the upstream's side of the run (``requests.upstream``: ``{backend, request_id,
        status, queue_position, cancel_url}``; None: none now), read by a client's cancel and
        shown on its status (in_queue at the upstream's position while the upstream queues it:
        :func:`shown`). Best effort, like progress."""
        try:
            with self.db.begin() as conn:
                conn.execute(R.update().where(self._this_run(run)).values(upstream=record, **_SEEN))
        except db.UNAVAILABLE as exc:
            log.warning("upstream state not recorded (database unavailable): %s", str(exc).splitlines()[0])

    def cancel_running(self, req: Request) -> bool:
        """in_progress -> cancelled, for a run whose upstream has cancelled its side (a client's
        cancel forwarded while the upstream queued it): the worker's run is then outdated and
        its outcome changes nothing. False when the request left that run meanwhile."""
        with self.db.begin() as conn:
            ok = conn.execute(R.update().where(
                C.request_id == req.request_id, C.status == Status.IN_PROGRESS.value, C.attempts == req.attempts,
            ).values(status=Status.CANCELLED.value, finished_at=db.utcnow(), **_SEEN)).rowcount == 1
            if ok:
                self._ended(conn, req)
        if ok:
            _log("request.cancelled", req.request_id, upstream=True)
        return ok

    def finish(self, run: Run, outcome: Outcome) -> bool:
        """Apply a run's outcome, once: ``Done`` -> completed and billed (one usage row, same
        transaction); ``Failed`` -> failed; ``Cancelled`` -> cancelled with the images kept,
        billed per image (a usage row when any, same transaction); ``Stopped`` -> back to the
        front of the queue under a new queue entry (same transaction). False when the run was outdated (another run took
        over) or the request left in_progress meanwhile. Retries while the database is down."""
        return retry_db(lambda: self._finish(run, outcome), f"finishing {run.request.request_id}")

    def _finish(self, run: Run, outcome: Outcome) -> bool:
        req = run.request
        with self.db.begin() as conn:
            update = R.update().where(self._this_run(run))
            if isinstance(outcome, Done):
                units, cost = usage.bill(catalog.models()[req.model_id], req.inputs, len(outcome.outputs), self.prices_usd)
                ok = conn.execute(update.values(
                    status=Status.COMPLETED.value, progress=1.0, outputs=outcome.outputs, metadata=outcome.metadata,
                    billed_units=units, cost_usd=cost, **_ends(req), **_SEEN,
                )).rowcount == 1
                if ok:
                    usage.record(conn, req.request_id, req.owner_key_id, req.model_id, units, cost,
                                 len(outcome.outputs), outcome.metadata, outcome.ledger)
                    self._ended(conn, req, cost)
                event, fields = "request.completed", {"images": len(outcome.outputs), "worker": run.worker_id}
            elif isinstance(outcome, Failed):
                ok = conn.execute(update.values(
                    status=Status.FAILED.value, error={"code": outcome.code, "message": outcome.message},
                    **_ends(req), **_SEEN,
                )).rowcount == 1
                if ok:
                    self._ended(conn, req)
                event, fields = "request.failed", {"error_code": outcome.code, "error_message": outcome.message}
            elif isinstance(outcome, Moved):
                current = conn.execute(sa.select(C.workflow_id).where(C.request_id == req.request_id)).scalar_one()
                entry = EntryId(req.request_id, EntryId.parse(current).generation + 1, outcome.kind)  # type: ignore[arg-type]
                ok = conn.execute(update.values(
                    status=Status.IN_QUEUE.value, progress=None, started_at=None, attempts=run.attempt - 1,
                    run_by=None, workflow_id=str(entry), metadata={"backends_tried": outcome.tried},
                    partial_outputs=None, **_SEEN,
                )).rowcount == 1
                if ok:
                    self.queue.enqueue(conn, entry=entry, priority=req.priority, owner_key_id=req.owner_key_id)
                event, fields = "request.moved", {"worker": run.worker_id, "queue": entry.queue}
            elif isinstance(outcome, Cancelled):
                units, cost = usage.bill_images(req.model_id, len(outcome.outputs), self.prices_usd)
                ok = conn.execute(update.values(
                    status=Status.CANCELLED.value, outputs=outcome.outputs, billed_units=units, cost_usd=cost,
                    **_ends(req), **_SEEN,
                )).rowcount == 1
                if ok:
                    if units:
                        usage.record(conn, req.request_id, req.owner_key_id, req.model_id, units, cost, len(outcome.outputs))
                    self._ended(conn, req, cost)
                event, fields = "request.cancelled", {"images": len(outcome.outputs), "worker": run.worker_id}
            else:
                current = conn.execute(sa.select(C.workflow_id).where(C.request_id == req.request_id)).scalar_one()
                entry = EntryId.parse(current).next()
                ok = conn.execute(update.values(
                    status=Status.IN_QUEUE.value, priority=FIRST, progress=None, started_at=None,
                    attempts=run.attempt - 1, run_by=None, workflow_id=str(entry), **_SEEN,
                )).rowcount == 1
                if ok:
                    self.queue.enqueue(conn, entry=entry, priority=FIRST, owner_key_id=req.owner_key_id)
                event, fields = "request.handed_back", {"worker": run.worker_id}
        if ok:
            _log(event, req.request_id, **fields)
        else:
            _log("request.outdated_run", req.request_id, worker=run.worker_id, attempt=run.attempt)
        return ok

    def record_webhook_attempt(self, request_id: str, status_code: int | None, event: int = 0) -> dict[str, Any]:
        """Count one webhook attempt in the request's ``webhook`` record (``attempts``,
        ``last_status_code``, and ``delivered_at`` on a 2xx) — of its terminal state, or of its
        intermediate event ``event`` (1-based; in ``record["events"]``, and a delivered one
        ends: the next event's, or the terminal one's, first attempt is enqueued in the same
        transaction). Returns the record. An attempt at an event that has ended already (a
        re-run after a crash) changes nothing."""
        with self.db.begin() as conn:
            record, status, owner = self._locked_webhook(conn, request_id)
            if event:
                if event != webhook_events.current(record):
                    return record
                record = webhook_events.attempted(record, event, status_code, db.utcnow())
                self._next_webhook(conn, request_id, record, Status(status), owner)
            else:
                record["attempts"] = int(record.get("attempts") or 0) + 1
                record["last_status_code"] = status_code
                if status_code is not None and 200 <= status_code < 300:
                    record["delivered_at"] = db.iso(db.utcnow())
            conn.execute(R.update().where(C.request_id == request_id).values(webhook=record))
        return record

    def give_up_webhook_event(self, request_id: str, event: int) -> None:
        """End intermediate webhook event ``event`` undelivered (its retries ran out): the next
        one's, or the terminal one's, first attempt is enqueued in the same transaction."""
        with self.db.begin() as conn:
            record, status, owner = self._locked_webhook(conn, request_id)
            if event != webhook_events.current(record):
                return
            record = webhook_events.end(record, event)
            self._next_webhook(conn, request_id, record, Status(status), owner)
            conn.execute(R.update().where(C.request_id == request_id).values(webhook=record))

    def _locked_webhook(self, conn: sa.Connection, request_id: str) -> tuple[dict[str, Any], str, str]:
        """The request's webhook record, status and owner, its row locked until ``conn``'s
        transaction ends (SQLite: the database's write lock, taken by a write first)."""
        if conn.dialect.name == "sqlite":
            conn.execute(R.update().where(C.request_id == request_id).values(webhook=C.webhook))
        record, status, owner = conn.execute(sa.select(C.webhook, C.status, C.owner_key_id)
                                             .where(C.request_id == request_id).with_for_update()).one()
        return dict(record or {}), status, owner

    def _next_webhook(self, conn: sa.Connection, request_id: str, record: dict[str, Any], status: Status,
                      owner: str) -> None:
        """After an intermediate event ended (``record`` shows it): the first attempt of the
        next event, or of the terminal delivery once the request is terminal; nothing while
        the chain waits for an event to be made."""
        following = webhook_events.current(record)
        if following:
            self.queue.enqueue_webhook(conn, request_id=request_id, attempt=1, owner_key_id=owner, event=following)
        elif status.is_terminal:
            self.queue.enqueue_webhook(conn, request_id=request_id, attempt=1, owner_key_id=owner)

    def _webhook_event(self, conn: sa.Connection, req: Request, partial_outputs: list[str] | None) -> None:
        """In the transaction of ``req``'s change to in_progress (``partial_outputs`` None) or
        of its new partial outputs, its row already updated (so locked): the intermediate
        webhook event that makes, if its receiver asked for them
        (:mod:`modelapi.core.webhook_events`), enqueued now if no earlier event is pending."""
        if not webhook_events.wanted(req.webhook):
            return
        record, progress = conn.execute(sa.select(C.webhook, C.progress).where(C.request_id == req.request_id)).one()
        record = webhook_events.made(dict(record), progress, partial_outputs, db.utcnow())
        if record is None:
            return
        conn.execute(R.update().where(C.request_id == req.request_id).values(webhook=record))
        if webhook_events.pending(record) == 1:
            self.queue.enqueue_webhook(conn, request_id=req.request_id, attempt=1, owner_key_id=req.owner_key_id,
                                       event=webhook_events.current(record))

    def _ended(self, conn: sa.Connection, req: Request, cost_usd: float = 0.0) -> None:
        """In the transaction that made ``req`` terminal: its budget reservation settled (what
        it cost, ``cost_usd``, counted as spent; :func:`modelapi.core.accounts.settle`), and its
        webhook's first attempt (whether a request has a webhook is set at submit and never
        changes) — unless an intermediate event is still pending: the end of the last one
        enqueues it."""
        accounts.settle(conn, req.owner_key_id, req.reserved_usd, req.budget_period, cost_usd)
        if req.webhook is None:
            return
        if webhook_events.wanted(req.webhook):
            record = conn.execute(sa.select(C.webhook).where(C.request_id == req.request_id)).scalar_one()
            if webhook_events.pending(record):
                return
        self.queue.enqueue_webhook(conn, request_id=req.request_id, attempt=1, owner_key_id=req.owner_key_id)

    def _fail(self, req: Request, code: str, message: str, *where: sa.ColumnElement[bool]) -> bool:
        with self.db.begin() as conn:
            ok = conn.execute(R.update().where(C.request_id == req.request_id, self._ACTIVE, *where).values(
                status=Status.FAILED.value, error={"code": code, "message": message}, **_ends(req), **_SEEN,
            )).rowcount == 1
            if ok:
                self._ended(conn, req)
        if ok:
            _log("request.failed", req.request_id, error_code=code, error_message=message)
        return ok

    def requeue(self, req: Request) -> bool:
        """Give a queued or interrupted request a new queue entry, at its own priority, in place
        of ``req.workflow_id`` (an entry that will not run: taken by a worker that is stopping,
        or of another queue version). False when the request moved on meanwhile."""
        entry = EntryId.parse(req.workflow_id).next()
        with self.db.begin() as conn:
            ok = conn.execute(R.update().where(
                C.request_id == req.request_id, self._ACTIVE, C.workflow_id == req.workflow_id,
            ).values(workflow_id=str(entry))).rowcount == 1
            if ok:
                self.queue.enqueue(conn, entry=entry, priority=req.priority, owner_key_id=req.owner_key_id)
        if ok:
            _log("request.requeued", req.request_id)
        return ok

    def reconcile(self) -> None:
        """At a worker's start: every in_queue request gets a live queue entry; an in_progress
        one whose entry is gone (its run was lost) is failed; a webhook attempt queued by an
        earlier release without a partition key is replaced by the next attempt, with one."""
        for entry in self.queue.unpartitioned_webhooks():
            req = self.get(entry.request_id)
            self.queue.cancel(str(entry))
            if req is not None:
                self.queue.enqueue_webhook(None, request_id=req.request_id, attempt=entry.generation + 1,
                                           owner_key_id=req.owner_key_id, event=entry.event)
        active = self.with_status(Status.IN_QUEUE, Status.IN_PROGRESS)
        live: set[str] = set()
        for i in range(0, len(active), 500):
            live |= self.queue.live([r.workflow_id for r in active[i:i + 500]])
        for req in active:
            if req.workflow_id in live:
                continue
            if req.status is Status.IN_QUEUE:
                if self.requeue(req):
                    try:
                        self.queue.cancel(req.workflow_id)
                    except Exception:  # noqa: BLE001 - the old entry may not exist at all
                        pass
            elif req.run_by is None or not self.workers.is_live(req.run_by):
                self._fail(req, "interrupted", "the worker stopped while running this request",
                           C.workflow_id == req.workflow_id)

    def reap(self, me: str) -> list[str]:
        """Recover the claims of dead workers (no heartbeat for ``--worker-timeout-s``): their
        entries go back on the queue, where a live worker takes them and runs them again (an
        attempt counts). Each dead worker is claimed by one live one; its row is removed only
        once its entries are back, so a reaper that dies midway is replaced. Returns the
        workflow ids put back."""
        resumed = []
        for worker_id, seen in self.workers.claim_dead(me):
            entries = self.queue.claimed_by(worker_id)
            for workflow_id in entries:
                self.queue.resume(workflow_id)
            self.workers.forget(worker_id, seen)
            resumed += entries
            log.warning("worker %s is dead (no heartbeat); its %d claimed request(s) went back on the queue",
                        worker_id, len(entries), extra={"worker": worker_id, "by": me})
        return resumed

    # -- retention (the sweeper, DELETE) --------------------------------------------------------
    def claim_expired(self, now: datetime, retention_s: float, limit: int) -> tuple[list[Request], list[str]]:
        """Mark up to ``limit`` finished requests whose files are due for deletion as deleted
        (``deleted_at = now``), oldest first: finished more than ``retention_s`` (the server's
        ``--retention-s``) before ``now``, or past the ``expires_at`` they asked for. In the same
        transaction the rows of the uploads they were the last to use are deleted. Returns the
        requests (as marked) and those uploads' storage keys: the caller deletes their
        files. Each request is returned to one caller only, however many call at once (the
        claim is conditional on ``deleted_at IS NULL``; Postgres skips rows another claim
        holds)."""
        due = [
            sa.and_(C.finished_at.is_not(None), C.finished_at < now - timedelta(seconds=retention_s)),
            sa.and_(C.expires_at.is_not(None), C.expires_at < now),
        ]
        order = [C.finished_at, C.expires_at]
        claimed: list[Request] = []
        with self.db.begin() as conn:
            for where, by in zip(due, order):
                if len(claimed) >= limit:
                    break
                ids = db.picked(sa.select(C.request_id).where(C.deleted_at.is_(None), where).order_by(by)
                                .limit(limit - len(claimed)))
                rows = conn.execute(R.update().where(C.request_id.in_(ids), C.deleted_at.is_(None))
                                    .values(deleted_at=now).returning(*R.c)).mappings().all()
                claimed += [_row(r) for r in rows]
            uploads = files.FileStore.claim_used_by(conn, [r.request_id for r in claimed])
        for req in claimed:
            _log("request.files_expired", req.request_id)
        return claimed, uploads

    def mark_deleted(self, req: Request) -> tuple[Request, list[str] | None]:
        """``DELETE`` of a finished request: mark it deleted now and delete the rows of the
        uploads it was the last to use (one transaction). Returns the request as stored after
        the call and, when this call marked it, those uploads' storage keys (the caller deletes
        the request's files); None when it was marked before (by the sweeper or an earlier
        ``DELETE``: idempotent).

        Raises:
            ValueError: the request is not finished.
        """
        with self.db.begin() as conn:
            row = conn.execute(R.update().where(C.request_id == req.request_id, C.deleted_at.is_(None),
                                                C.finished_at.is_not(None))
                               .values(deleted_at=db.utcnow()).returning(*R.c)).mappings().first()
            uploads = files.FileStore.claim_used_by(conn, [req.request_id]) if row is not None else None
        if row is not None:
            _log("request.deleted", req.request_id)
            return _row(row), uploads
        current = self.get(req.request_id)
        if current is None or current.deleted_at is None:
            raise ValueError(f"request {req.request_id} is not finished")
        return current, None

    def prune(self, before: datetime, limit: int) -> list[Request]:
        """Delete up to ``limit`` request rows whose files were deleted and that finished before
        ``before`` (``--keep-requests-s``), oldest first; the rows deleted (each returned to one
        caller only). The usage ledger keeps their billing."""
        ids = db.picked(sa.select(C.request_id).where(C.deleted_at.is_not(None), C.finished_at < before)
                        .order_by(C.finished_at).limit(limit))
        with self.db.begin() as conn:
            rows = conn.execute(R.delete().where(C.request_id.in_(ids)).returning(*R.c)).mappings().all()
        return [_row(r) for r in rows]
