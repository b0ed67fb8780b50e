"""Where a new request waits, decided at submit: the local queue when its route starts with
``local`` (every model not named), else the upstream queue. With ``--overflow-wait-s S``, a
request whose route starts with ``local`` and names another backend goes to the upstream queue
at once when its estimated wait for ``local`` is above ``S`` seconds (``backends_tried`` then
starts with ``{"backend": "local", "outcome": "overflow: estimated wait N s > S s"}``).

The estimate: (local requests queued ahead) x (mean time of the newest :data:`HISTORY` local runs,
:data:`DEFAULT_RUN_S` before any) / (live GPU workers x ``--worker-concurrency``); infinite with
no live GPU worker. It is read at most once a second (:data:`MAX_AGE_S`), so a submit costs at
most three small reads a second however many arrive.
"""

from __future__ import annotations

import threading
import time
import json
from typing import Any

import sqlalchemy as sa

from ..core import db
from ..core.jobs import JobStore
from ..types import Status
from . import effective_routes

HISTORY = 20
"""Completed local runs the mean run time is taken over."""
DEFAULT_RUN_S = 30.0
"""The run time assumed before any local run has completed, seconds."""
MAX_AGE_S = 1.0
"""How old the estimate may be, seconds."""
QUEUED_CAP = 10_000
"""Queued requests counted at most (the count's cost stays bounded)."""


class Placement:
    """Places new requests (see the module's docstring).

    Args:
        routes: ``--routes``.
        overflow_wait_s: ``--overflow-wait-s`` (None: off).
        worker_concurrency: ``--worker-concurrency`` (local runs per GPU worker).
    """

    def __init__(self, jobs: JobStore, routes: dict[str, list[str]], overflow_wait_s: float | None,
                 worker_concurrency: int = 1) -> None:
        self.jobs, self.routes = jobs, effective_routes(routes)
        self.overflow_wait_s, self.worker_concurrency = overflow_wait_s, worker_concurrency
        self._lock = threading.Lock()
        self._estimate: tuple[float, float] | None = None  # (when, seconds)

    def place(self, model_id: str) -> tuple[bool, list[dict[str, str]]]:
        """``(upstream, tried)`` for a new request of ``model_id``: whether it goes on the
        upstream queue, and the backends passed over (overflow)."""
        route = self.routes.get(model_id) or ["local"]
        if route[0] != "local":
            return True, []
        if self.overflow_wait_s is None or len(route) < 2:
            return False, []
        wait = self.local_wait_s()
        if wait <= self.overflow_wait_s:
            return False, []
        shown = "no GPU worker" if wait == float("inf") else f"{wait:.0f} s"
        return True, [{"backend": "local", "outcome": f"overflow: estimated wait {shown} > {self.overflow_wait_s:g} s"}]

    def local_wait_s(self) -> float:
        """The estimated wait of a new local request, seconds (at most :data:`MAX_AGE_S` old)."""
        with self._lock:
            if self._estimate is not None and time.monotonic() - self._estimate[0] < MAX_AGE_S:
                return self._estimate[1]
            value = self._read()
            self._estimate = (time.monotonic(), value)
            return value

    def _read(self) -> float:
        R = db.requests.c
        slots = sum(1 for w in self.jobs.workers.live() if (w.get("engine") or {}).get("engine") != "upstream")
        if slots == 0:
            return float("inf")
        with self.jobs.db.connect() as conn:
            ahead = conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(sa.literal(1)).where(R.status == Status.IN_QUEUE.value,
                                               R.workflow_id.not_like("%.upstream.%")).limit(QUEUED_CAP).subquery()
            )).scalar_one()
            if not ahead:
                return 0.0
            # the newest completed requests, on the (status, priority, seq) index: fair-share
            # priorities grow with submission, so the largest are the newest
            rows = conn.execute(sa.select(R.started_at, R.finished_at, R["metadata"]).where(
                R.status == Status.COMPLETED.value).order_by(R.priority.desc(), R.seq.desc()).limit(HISTORY * 3)).all()
        runs: list[float] = [(f - s).total_seconds() for s, f, meta in rows
                             if s and f and _backend(meta) == "local"][:HISTORY]
        run_s = sum(runs) / len(runs) if runs else DEFAULT_RUN_S
        return ahead * run_s / (slots * max(1, self.worker_concurrency))


def _backend(metadata: Any) -> str | None:
    if isinstance(metadata, str):  # a raw JSON column (SQLite)
        metadata = json.loads(metadata)
    return metadata.get("backend", "local") if isinstance(metadata, dict) else None
