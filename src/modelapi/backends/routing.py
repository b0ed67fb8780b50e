"""Routing: which backends run a model's requests, in which order, and what happens when one
fails.

The first backend of the model's route is tried. On :class:`~modelapi.backends.base.Unavailable`
(429, 5xx, a timeout, a connection error) it is tried again up to ``retries`` times with
exponential backoff (``backoff_s``, doubling), then the request moves on to the next backend;
:class:`~modelapi.backends.base.Rejected` (validation, content policy) fails the request at
once. A backend that failed ``breaker_threshold`` times in a row is skipped for
``breaker_cooldown_s`` seconds (circuit breaker), then tried again by one request.

Queues: a run taken from the local queue starts at the route's ``local``, one from the upstream
queue at the route's first upstream backend; backends an earlier run tried are not tried again,
and backends before the start (passed over at submit: overflow) come last. When the next backend
is not one this process runs (``local`` in an upstream worker, an upstream in a GPU worker), the
run ends :class:`~modelapi.core.jobs.Moved`: the request goes back in_queue on that backend's
queue, its ``backends_tried`` kept.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge

from ..core.jobs import Done, Failed, Moved, Outcome
from .base import Backend, Job, Rejected, Unavailable

log = logging.getLogger("modelapi.backends")

CIRCUIT_OPEN = Gauge("modelapi_backend_circuit_open", "1 while the backend is skipped after repeated failures (circuit open)",
                     ["backend"])
RUNS = Counter("modelapi_backend_runs", "Tries of a backend by outcome (ok, unavailable, rejected, skipped)",
               ["backend", "outcome"])
DEFAULT_ROUTE = ("local",)


class CircuitBreaker:
    """Counts a backend's failures in a row; open (skip it) for ``cooldown_s`` seconds after
    ``threshold`` of them, then half-open: one try closes it again or reopens it."""

    def __init__(self, name: str, threshold: int = 5, cooldown_s: float = 30.0) -> None:
        self.name, self.threshold, self.cooldown_s = name, threshold, cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()
        CIRCUIT_OPEN.labels(name).set(0)

    def allow(self) -> bool:
        """May a request try the backend now? (Half-open: the first caller after the cool-down.)"""
        with self._lock:
            if self.opened_at is None:
                return True
            if time.monotonic() - self.opened_at >= self.cooldown_s:
                self.opened_at = time.monotonic()  # one try; the others still skip
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.failures, self.opened_at = 0, None
        CIRCUIT_OPEN.labels(self.name).set(0)

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.threshold:
                if self.opened_at is None:
                    log.warning("backend %s failed %d times in a row: skipped for %.0f s", self.name, self.failures,
                                self.cooldown_s)
                self.opened_at = time.monotonic()
        if self.opened_at is not None:
            CIRCUIT_OPEN.labels(self.name).set(1)

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


class Router:
    """Runs each job on the backends of its model's route (``routes``: model id -> backend
    names; a model not named -> ``["local"]``). ``backends`` must hold every name the routes use.

    Args:
        retries: tries again of an unavailable backend before moving on (default 2).
        backoff_s: the wait before the first try again, doubled for each next one, seconds.
        breaker_threshold, breaker_cooldown_s: see :class:`CircuitBreaker`.
    """

    def __init__(self, routes: dict[str, list[str]], backends: dict[str, Backend], *, retries: int = 2,
                 backoff_s: float = 0.5, breaker_threshold: int = 5, breaker_cooldown_s: float = 30.0) -> None:
        self.routes = {model: list(names) for model, names in routes.items()}
        self.backends = backends
        self.retries, self.backoff_s = retries, backoff_s
        self.breakers = {name: CircuitBreaker(name, breaker_threshold, breaker_cooldown_s) for name in backends}

    def route(self, model_id: str) -> list[str]:
        return self.routes.get(model_id) or list(DEFAULT_ROUTE)

    def order(self, model_id: str, kind: str, tried: list[dict[str, str]]) -> list[str]:
        """The backends a run from queue ``kind`` tries, in order (see the module's docstring)."""
        route = self.route(model_id)
        start = next((i for i, n in enumerate(route) if (n == "local") == (kind == "run")), 0)
        done = {t["backend"] for t in tried if not t["outcome"].startswith("overflow")}
        return [n for n in route[start:] + route[:start] if n not in done]

    def health(self) -> dict[str, Any]:
        """Per backend: ``{"circuit": "closed"|"open", "failures_in_a_row", ...the backend's own}``."""
        return {name: {"circuit": self.breakers[name].state, "failures_in_a_row": self.breakers[name].failures,
                       **backend.health()} for name, backend in self.backends.items()}

    def run(self, job: Job) -> Outcome:
        """Run ``job`` on its route. ``Done.metadata`` gains ``backend`` (the one that made the
        outputs) and ``backends_tried`` (``[{"backend", "outcome"}]``, in order, the last
        ``"ok"``). Returns ``Failed(code, provider message)`` on a refusal,
        ``Failed("upstream_unavailable", ...)`` naming each backend's outcome when none could run
        it, and ``Moved`` when the next backend runs from the other queue. Other exceptions of a
        backend propagate (the worker fails the request ``generation_error``)."""
        tried: list[dict[str, str]] = list(job.tried)
        for name in self.order(job.request.model_id, job.kind, tried):
            if name not in self.backends:
                return Moved("run" if name == "local" else "upstream", tried)
            backend, breaker = self.backends[name], self.breakers[name]
            if not breaker.allow():
                RUNS.labels(name, "skipped").inc()
                tried.append({"backend": name, "outcome": "skipped: circuit open"})
                continue
            outcome = self._try(job, backend, breaker)
            if isinstance(outcome, str):
                tried.append({"backend": name, "outcome": outcome})
                continue
            if isinstance(outcome, Done):
                tried.append({"backend": name, "outcome": "ok"})
                return Done(outcome.outputs, {**outcome.metadata, "backend": name, "backends_tried": tried}, outcome.ledger)
            return outcome
        summary = "; ".join(f"{t['backend']}: {t['outcome']}" for t in tried)
        return Failed("upstream_unavailable", f"no backend could run the request ({summary})"[:500])

    def _try(self, job: Job, backend: Backend, breaker: CircuitBreaker) -> Outcome | str:
        """The backend's outcome, or why it was unavailable after its tries."""
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                outcome = backend.run(job)
            except Rejected as exc:
                breaker.success()  # it answered: it is up
                RUNS.labels(backend.name, "rejected").inc()
                return Failed(exc.code, exc.message[:500])
            except Unavailable as exc:
                breaker.failure()
                RUNS.labels(backend.name, "unavailable").inc()
                log.warning("backend %s unavailable (try %d): %s", backend.name, attempt + 1, exc.outcome,
                            extra={"request_id": job.request.request_id})
                if not exc.retry or attempt == self.retries or breaker.state == "open":
                    return exc.outcome
                if _wait(delay, job.should_stop):
                    return exc.outcome
                delay *= 2
                continue
            breaker.success()
            RUNS.labels(backend.name, "ok").inc()
            return outcome
        raise AssertionError("unreachable")


def _wait(seconds: float, should_stop: Any) -> bool:
    """Sleep ``seconds``, waking early (True) when ``should_stop()`` turns True."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if should_stop():
            return True
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    return False
