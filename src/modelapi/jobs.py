"""Requests and their states. Every state change of a request happens here, as one
conditional UPDATE, so that two actors (the API cancelling, the worker starting) never both win.

::

    in_queue ──start──► in_progress ──complete──► completed
       │  ▲                 │  │
       │  └───hand_back─────┘  └──fail──► failed
       └──cancel──► cancelled

The queue itself (ordering, one job at a time per worker, recovery after a crash) is DBOS's;
see :mod:`modelapi.worker`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import db
from .types import Status

log = logging.getLogger("modelapi.jobs")
R = db.requests
C = R.c


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
    queue_position: int | None = None


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def _log(event: str, request_id: str, **fields: Any) -> None:
    log.info(event, extra={"request_id": request_id, **fields})


def _row(row: Any, position: int | None = None) -> Request:
    data = {k: row[k] for k in Request.__dataclass_fields__ if k != "queue_position"}
    data["status"] = Status(data["status"])
    for k in ("created_at", "started_at", "finished_at"):
        data[k] = db.as_utc(data[k])
    return Request(**data, queue_position=position)


class JobStore:
    """The requests table. All methods are safe to call from any thread."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- reads -------------------------------------------------------------------------------
    _AHEAD = sa.select(sa.func.count()).select_from(R).where(
        C.status == Status.IN_QUEUE.value,
        sa.tuple_(C.priority, C.seq) < sa.tuple_(sa.bindparam("priority"), sa.bindparam("seq")),
    )

    def get(self, request_id: str, owner_key_id: str | None = None) -> Request | None:
        """The request, or None when unknown — or owned by another key than ``owner_key_id``."""
        query = R.select().where(C.request_id == request_id)
        if owner_key_id is not None:
            query = query.where(C.owner_key_id == owner_key_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                return None
            position = None
            if row["status"] == Status.IN_QUEUE:
                position = conn.execute(self._AHEAD, {"priority": row["priority"], "seq": row["seq"]}).scalar_one()
        return _row(row, position)

    _POLL = sa.text(
        "SELECT k.id, k.revoked_at, r.status, r.progress, r.priority, r.seq FROM api_keys k "
        "LEFT JOIN requests r ON r.owner_key_id = k.id AND r.request_id = :rid WHERE k.key_hash = :h"
    )

    def poll(self, request_id: str, key_hash: str) -> tuple[bool, tuple[Status, float | None, int | None] | None]:
        """The hot path of status polls, in one round trip: (is the key live, and
        (status, progress, queue_position) of that key's request or None)."""
        with self.engine.connect() as conn:
            row = conn.execute(self._POLL, {"rid": request_id, "h": key_hash}).first()
            if row is None or row.revoked_at is not None:
                return False, None
            if row.status is None:
                return True, None
            status = Status(row.status)
            position = None
            if status is Status.IN_QUEUE:
                position = conn.execute(self._AHEAD, {"priority": row.priority, "seq": row.seq}).scalar_one()
        return True, (status, row.progress, position)

    def find_idempotent(self, owner_key_id: str, idempotency_key: str) -> Request | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                R.select().where(C.owner_key_id == owner_key_id, C.idempotency_key == idempotency_key)
            ).mappings().first()
        return _row(row) if row else None

    def count_queued(self, owner_key_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(R).where(
                    C.owner_key_id == owner_key_id, C.status == Status.IN_QUEUE.value
                )
            ).scalar_one()

    def list(self, *statuses: Status) -> list[Request]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                R.select().where(C.status.in_([s.value for s in statuses])).order_by(C.priority, C.seq)
            ).mappings()
            return [_row(r) for r in rows]

    def counts(self) -> list[tuple[str, str, int]]:
        """(model_id, status, count) for every pair present."""
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(C.model_id, C.status, sa.func.count()).group_by(C.model_id, C.status)
            )]

    def usage(self) -> list[dict[str, Any]]:
        """Totals per key: requests, completed, billed units, cost (USD)."""
        K = db.api_keys.c
        completed = sa.func.sum(sa.case((C.status == Status.COMPLETED.value, 1), else_=0))
        query = (
            sa.select(
                K.id, K.name, K.prefix,
                sa.func.count(C.seq).label("requests"),
                sa.func.coalesce(completed, 0).label("completed"),
                sa.func.coalesce(sa.func.sum(C.billed_units), 0).label("billed_units"),
                sa.func.coalesce(sa.func.sum(C.cost_usd), 0.0).label("cost_usd"),
            )
            .select_from(db.api_keys.outerjoin(R, C.owner_key_id == K.id))
            .group_by(K.id, K.name, K.prefix)
            .order_by(K.created_at)
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    # -- state changes -----------------------------------------------------------------------
    def create(
        self, *, request_id: str, owner_key_id: str, model_id: str, inputs: dict[str, Any],
        input_files: list[str], seed: int, idempotency_key: str | None, body_hash: str | None,
    ) -> Request:
        """Store a new in_queue request (committed before this returns)."""
        values = dict(
            request_id=request_id, owner_key_id=owner_key_id, model_id=model_id,
            status=Status.IN_QUEUE.value, inputs=inputs, input_files=input_files, seed=seed,
            idempotency_key=idempotency_key, body_hash=body_hash,
            workflow_id=f"{request_id}.0", priority=2, attempts=0, created_at=db.utcnow(),
        )
        with self.engine.begin() as conn:
            conn.execute(R.insert().values(**values))
        _log("request.in_queue", request_id, model_id=model_id, owner=owner_key_id)
        return self.get(request_id)  # type: ignore[return-value]

    def _transition(self, request_id: str, frm: tuple[Status, ...], **values: Any) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                R.update()
                .where(C.request_id == request_id, C.status.in_([s.value for s in frm]))
                .values(**values)
            )
        return result.rowcount == 1

    def cancel(self, request_id: str) -> bool:
        """in_queue -> cancelled. False when the request is no longer in the queue."""
        ok = self._transition(request_id, (Status.IN_QUEUE,), status=Status.CANCELLED.value, finished_at=db.utcnow())
        if ok:
            _log("request.cancelled", request_id)
        return ok

    def start(self, request_id: str) -> bool:
        """in_queue -> in_progress (attempts + 1). False when cancelled or already terminal."""
        ok = self._transition(
            request_id, (Status.IN_QUEUE,), status=Status.IN_PROGRESS.value,
            started_at=db.utcnow(), progress=0.0, attempts=C.attempts + 1,
        )
        if ok:
            _log("request.in_progress", request_id)
        return ok

    def restart(self, request_id: str) -> bool:
        """in_progress -> in_progress again after a crash (attempts + 1)."""
        ok = self._transition(
            request_id, (Status.IN_PROGRESS,), started_at=db.utcnow(), progress=0.0, attempts=C.attempts + 1
        )
        if ok:
            _log("request.restarted", request_id)
        return ok

    def set_progress(self, request_id: str, progress: float) -> None:
        self._transition(request_id, (Status.IN_PROGRESS,), progress=round(float(progress), 4))

    def complete(
        self, request_id: str, *, outputs: list[str], metadata: dict[str, Any],
        billed_units: int, cost_usd: float,
    ) -> bool:
        """in_progress -> completed, once: False when it was completed (or failed) already."""
        ok = self._transition(
            request_id, (Status.IN_PROGRESS,), status=Status.COMPLETED.value, progress=1.0,
            outputs=outputs, metadata=metadata, billed_units=billed_units, cost_usd=cost_usd,
            finished_at=db.utcnow(),
        )
        if ok:
            _log("request.completed", request_id, images=len(outputs))
        return ok

    def fail(self, request_id: str, code: str, message: str) -> bool:
        """in_queue / in_progress -> failed with ``{"code", "message"}``."""
        ok = self._transition(
            request_id, (Status.IN_QUEUE, Status.IN_PROGRESS), status=Status.FAILED.value,
            error={"code": code, "message": message}, finished_at=db.utcnow(),
        )
        if ok:
            _log("request.failed", request_id, error_code=code, error_message=message)
        return ok

    def hand_back(self, request_id: str) -> bool:
        """in_progress -> in_queue (graceful shutdown), ahead of the queue; the attempt is not counted."""
        ok = self._transition(
            request_id, (Status.IN_PROGRESS,), status=Status.IN_QUEUE.value, priority=1,
            progress=None, started_at=None, attempts=C.attempts - 1,
        )
        if ok:
            _log("request.handed_back", request_id)
        return ok

    def requeue(self, request_id: str, workflow_id: str) -> None:
        """Give an in_queue request whose queue entry is gone (it was taken off the queue by a
        worker that then stopped) a new entry id, ahead of the queue (priority 1; new requests get 2)."""
        self._transition(request_id, (Status.IN_QUEUE,), workflow_id=workflow_id, priority=1)
