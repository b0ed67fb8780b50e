"""The worker: takes requests off the durable queue (DBOS Transact) and runs them on the engine.

One worker per GPU, as a thread of ``modelapi serve`` or as its own ``modelapi worker`` process.
Each worker has a stable, unique id (``--worker-id``, default ``<hostname>-<device>``) that is
its DBOS executor id, held by a lock for its life (:class:`~modelapi.core.workers.WorkerIdLock`),
and runs under the pinned queue version (:data:`modelapi.core.queue.APP_VERSION`) — the two
conditions under which DBOS never runs one job twice (two processes sharing an executor id
recover each other's claims; a process of another version never takes an entry).

- Restart under the same id: DBOS recovers this worker's claimed job, which runs again.
- Death without restart: the heartbeat stops; after ``--worker-timeout-s`` a live worker's
  reaper puts the claimed job back on the queue, where any worker takes it.
- Either way the state machine (:mod:`modelapi.core.jobs`) counts the attempt, fails the request
  after ``--max-attempts`` runs, and fences outdated runs.
- SIGTERM drains: no new jobs; the running job gets ``--shutdown-grace-s`` to finish, then it is
  stopped between steps and handed back to the front of the queue.

Roles (:data:`Role`): a GPU worker (``modelapi worker``) takes the local queue only; an upstream
worker (``modelapi worker --backends ...``: no engine, no torch) the upstream queue only, up to
``--concurrency`` jobs at once, each waiting on its provider on a thread of its own; ``serve``'s
in-process worker takes both.

- A running job is also stopped between steps when a caller asks (``POST /cancel?running=true``
  in any API process: a flag in its row, read at most every :data:`STOP_READ_S`) — it ends
  cancelled with the images already stored — or at its ``Cancel-After`` deadline (failed,
  ``deadline_exceeded``). Every worker sweeps queued requests past their deadline every
  ``--deadline-check-s``.
"""

from __future__ import annotations

import heapq
import logging
import os
import secrets
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from dbos import DBOS
from prometheus_client import Gauge, Histogram

from ..core import db
from ..core.config import Settings
from ..core.jobs import Cancelled, Done, Failed, JobStore, Outcome, Request, Run, Stopped, deadline_exceeded, retry_db
from ..core.delivery import Delivery
from ..core.queue import (APP_NAME, APP_VERSION, QUEUE_NAME, UPSTREAM_QUEUE, WEBHOOK_QUEUE, WEBHOOK_WORKFLOW,
                          WORKFLOW_NAME, EntryId)
from ..core.storage import Storage
from ..core.sweep import Sweeper
from ..core.workers import WorkerIdLock, WorkerRegistry, runner_id
from ..backends import Job, build_router
from ..engine.base import Engine

log = logging.getLogger("modelapi.worker")
JOB_SECONDS = Histogram(
    "modelapi_job_duration_seconds", "Time from start to finish of a request's run, seconds",
    ["model"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
BUSY = Gauge("modelapi_worker_busy", "Requests this worker is running now (0 = idle)")
STAGE_SECONDS = Histogram(
    "modelapi_stage_seconds", "Time of each stage of a completed request (queue, fetch, inference, postprocess, total), seconds",
    ["stage"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)

STOP_READ_S = 0.05
"""A running request's stop flag is read from the database at most this often (one read by its
unique index, between steps): a stop asked from another process lands within one step, or this
long when steps are shorter."""

_runtime: "WorkerRuntime | None" = None
Role = Literal["gpu", "upstream", "both"]
"""Which queues a worker takes: the local one (``gpu``), the upstream one, or both (``serve``)."""


@DBOS.workflow(name=WORKFLOW_NAME)
def run_request(request_id: str) -> None:
    """The durable workflow of one request: a single step that runs it."""
    _run_step(request_id)


@DBOS.step(retries_allowed=False)
def _run_step(request_id: str) -> None:
    assert _runtime is not None, "worker not started"
    _runtime.execute(request_id, DBOS.workflow_id or "")


@DBOS.workflow(name=WEBHOOK_WORKFLOW)
def deliver_webhook(request_id: str, attempt: int, event: int = 0) -> None:
    """The durable workflow of one webhook attempt (at intermediate event ``event`` when not
    0), made by the core's delivery (:class:`modelapi.core.delivery.Delivery`), which this
    process hosts."""
    _deliver_step(request_id, attempt, event)


@DBOS.step(retries_allowed=False)
def _deliver_step(request_id: str, attempt: int, event: int = 0) -> None:
    assert _runtime is not None, "worker not started"
    _runtime.delivery.attempt(request_id, attempt, event)


class _Slots:
    """The engine's inference slots, granted in queue order (priority, then submission) to the
    runs of this worker: a run waits while the slot is taken, or while a run ranked before it
    that this worker holds (``before``, read from the queue) has not yet arrived — as when the
    queue hands a worker two entries at once, or both of a worker's entries are recovered after
    a restart, and their threads arrive in any order."""

    ARRIVAL_WAIT_S = 5.0
    """How long a run waits for an earlier-ranked held run that does not arrive (its entry was
    outdated, or it ended without needing the engine) before going ahead."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiting: list[tuple[int, int]] = []
        self._arrived: set[tuple[int, int]] = set()
        self._cond = threading.Condition()

    def take(self, rank: tuple[int, int], before: set[tuple[int, int]]) -> _Slot:
        """Wait for a slot (``rank``: the request's ``(priority, seq)``)."""
        deadline = time.monotonic() + self.ARRIVAL_WAIT_S
        with self._cond:
            heapq.heappush(self._waiting, rank)
            self._arrived.add(rank)
            while not (self._free > 0 and self._waiting[0] == rank
                       and (not before - self._arrived or time.monotonic() > deadline)):
                self._cond.wait(0.05)
            heapq.heappop(self._waiting)
            self._free -= 1
        return _Slot(self)

    def give(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def done(self, rank: tuple[int, int]) -> None:
        """The run ranked ``rank`` is over (its entry is no longer held)."""
        with self._cond:
            self._arrived.discard(rank)


class _Slot:
    """One taken inference slot, held from before a run begins until its inference ends
    (``with slot:`` gives it back on exit); given back once."""

    def __init__(self, slots: _Slots) -> None:
        self._slots, self._held = slots, True

    def __enter__(self) -> _Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.give()


class _LazySlot:
    """The inference slot of a run from the upstream queue: taken only if the run falls back to
    the local engine in this process (``serve``), when the local backend enters it."""

    def __init__(self, slots: _Slots, rank: tuple[int, int]) -> None:
        self._slots, self._rank = slots, rank
        self._slot: _Slot | None = None

    def __enter__(self) -> _LazySlot:
        self._slot = self._slots.take(self._rank, set())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None


class _StopCheck:
    """A run's ``should_stop``: True once its ``Cancel-After`` deadline has passed, a caller
    asked to stop it (the flag in its row, read at most every ``read_every_s``), or the worker
    is shutting down (``shutdown``); :attr:`reason` keeps the first, and :meth:`outcome` turns
    the run's ``Stopped`` into what that reason means."""

    def __init__(self, jobs: JobStore, req: Request, shutdown: threading.Event, read_every_s: float = STOP_READ_S) -> None:
        self.jobs, self.req, self.shutdown, self.read_every_s = jobs, req, shutdown, read_every_s
        self.reason: Literal["asked", "deadline", "shutdown"] | None = None
        self._read_at = -1e9

    def __call__(self) -> bool:
        if self.reason is None:
            if self.req.past_deadline():
                self.reason = "deadline"
            elif self._asked():
                self.reason = "asked"
            elif self.shutdown.is_set():
                self.reason = "shutdown"
        return self.reason is not None

    def _asked(self) -> bool:
        now = time.monotonic()
        if now - self._read_at < self.read_every_s:
            return False
        self._read_at = now
        try:
            return self.jobs.stop_requested(self.req.request_id)
        except db.UNAVAILABLE as exc:  # the run goes on; the next step reads again
            log.warning("stop flag not read (database unavailable): %s", str(exc).splitlines()[0])
            return False

    def outcome(self, stopped: Stopped) -> Outcome:
        """Asked: cancelled, keeping the images stored; the deadline: failed
        (``deadline_exceeded``); a shutdown: handed back (``stopped`` itself)."""
        if self.reason == "asked":
            return Cancelled(stopped.outputs)
        if self.reason == "deadline":
            return deadline_exceeded(self.req)
        return stopped


class WorkerRuntime:
    """One worker: ``engine`` (loaded once, kept warm; None for an upstream worker) fed from the
    queues of its ``role``; ``backends``: the upstreams an upstream worker runs
    (``--backends``; default every upstream its routes name).

    Raises:
        WorkerIdInUse: from :meth:`launch`, when another live worker has this id.
        ValueError: the routes (or ``backends``) are not usable (:func:`modelapi.backends.check_routes`).
    """

    def __init__(self, settings: Settings, jobs: JobStore, storage: Storage, engine: Engine | None, *,
                 role: Role = "both", backends: list[str] | None = None) -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.engine = engine
        self.role: Role = role
        self.router = build_router(settings, engine if role != "upstream" else None,
                                   set() if role == "gpu" else (set(backends) if backends is not None else None))
        self.delivery = Delivery(settings, jobs, storage)
        self.worker_id = settings.default_worker_id(engine.info.device if engine is not None else "upstream")
        self.instance = secrets.token_hex(8)
        self.runner = runner_id(self.worker_id, self.instance)
        self.draining = threading.Event()
        self.stop_now = threading.Event()
        self.running: set[str] = set()
        self._lock = threading.Lock()
        self._id_lock = WorkerIdLock(jobs.db, self.worker_id)
        # Inference holds the engine; encoding and storing outputs run on a small pool, so the
        # queue gives each worker one job more than it infers at once: the next job's inference
        # starts while the last one's outputs are still being stored.
        self._inference = _Slots(settings.worker_concurrency)
        self._post = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelapi-post")
        self._stopped = threading.Event()
        self._beat: threading.Thread | None = None
        self._deadlines: threading.Thread | None = None

    @property
    def registry(self) -> WorkerRegistry:
        return self.jobs.workers

    # -- lifecycle ---------------------------------------------------------------------------
    def launch(self) -> None:
        """Take the worker id, register, start DBOS (listening to the requests queue only),
        recover this worker's own claimed jobs, start heartbeats and the reaper."""
        global _runtime
        _runtime = self
        self._id_lock.acquire()
        self.registry.register(self.worker_id, self.instance, self.info)
        DBOS(config={
            "name": APP_NAME,
            "system_database_url": self.settings.db_url,
            "executor_id": self.worker_id,
            "application_version": APP_VERSION,
            "log_level": "WARNING",
        })
        queues = {"gpu": [QUEUE_NAME], "upstream": [UPSTREAM_QUEUE], "both": [QUEUE_NAME, UPSTREAM_QUEUE]}[self.role]
        DBOS.listen_queues([*queues, WEBHOOK_QUEUE])
        DBOS.launch()
        for queue in queues:
            self.jobs.queue.configure(
                worker_concurrency=(self.settings.worker_concurrency + 1  # one job ahead (see __init__)
                                    if queue == QUEUE_NAME else self.settings.concurrency),
                max_running_per_key=self.settings.max_running_per_key,
                polling_interval_s=self.settings.queue_poll_interval_s, queue=queue,
            )
        self.jobs.reconcile()
        self._beat = threading.Thread(target=self._heartbeats, name="modelapi-heartbeat", daemon=True)
        self._beat.start()
        if self.settings.sweep_interval_s > 0:  # retention: every worker sweeps (claims keep them apart)
            Sweeper(self.settings, self.jobs, self.storage).start(self._stopped)
        self._deadlines = threading.Thread(target=self.jobs.expire_queued_every, name="modelapi-deadlines", daemon=True,
                                           args=(self.settings.deadline_check_s, self._stopped))
        self._deadlines.start()
        log.info("worker started", extra={"worker": self.worker_id, "queue_version": APP_VERSION, "queues": queues})

    @property
    def info(self) -> dict[str, Any]:
        """What the worker registry (``modelapi workers``) and ``/healthz`` show of this worker."""
        if self.engine is not None and self.role != "upstream":
            return self.engine.info.as_dict()
        return {"engine": "upstream", "device": "none", "backends": sorted(self.router.backends)}

    def _heartbeats(self) -> None:
        """Every ``worker_timeout_s / 4`` (at most 5 s): beat, and reap dead workers — but only
        after this worker's own beats have succeeded for a whole timeout, so that after a
        database outage nobody declares the others dead before they could beat again."""
        timeout = self.settings.worker_timeout_s
        interval = min(5.0, timeout / 4)
        healthy_since = time.monotonic()
        while not self._stopped.wait(interval):
            try:
                if not self._id_lock.held():
                    log.critical("another worker took the id %r while the database was unreachable; stopping",
                                 self.worker_id)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                current = next(iter(self.running), None)
                if not self.registry.heartbeat(self.worker_id, self.instance, current, self.draining.is_set()):
                    log.error("this worker was declared dead (no heartbeat for %.0f s); registering again", timeout)
                    self.registry.register(self.worker_id, self.instance, self.info)
                if not self.draining.is_set() and time.monotonic() - healthy_since >= timeout:
                    self.jobs.reap(self.worker_id)
            except Exception as exc:  # noqa: BLE001 - the database may be down; keep beating
                healthy_since = time.monotonic() + interval
                log.warning("heartbeat failed: %s", str(exc).splitlines()[0])

    def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs; let the running one finish for ``grace_s`` seconds, then stop it
        between steps and hand it back to the queue; then stop DBOS and unregister."""
        self.draining.set()
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running:
            log.warning("shutdown grace period over: handing %d running request(s) back", len(self.running))
            self.stop_now.set()
            while self.running and time.monotonic() < deadline + 30:
                time.sleep(0.05)
        self._stopped.set()
        self._post.shutdown(wait=True)
        DBOS.destroy(workflow_completion_timeout_sec=0)
        try:  # a claim left unfinished is recovered at once by a live worker's reaper
            leaves_claims = bool(self.running) or bool(self.jobs.queue.claimed_by(self.worker_id))
            self.registry.unregister(self.worker_id, self.instance, leaves_claims=leaves_claims)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not unregister: %s", exc)
        self._id_lock.release()

    # -- running one request -----------------------------------------------------------------
    def execute(self, request_id: str, workflow_id: str) -> None:
        """Run one request that this worker took off the queue (entry ``workflow_id``). The
        request stays in_queue (cancellable, at queue position 0) until an inference slot is
        free: the worker holds one job ahead while the last one's outputs are stored."""
        queued = retry_db(lambda: self.jobs.get(request_id), f"reading {request_id}")
        if queued is None or queued.status.is_terminal:
            return
        rank = (queued.priority, queued.seq)
        kind = EntryId.parse(workflow_id).kind
        slot: _Slot | _LazySlot
        if kind == "upstream":  # waits on its provider: no inference slot unless it falls back to local here
            slot = _LazySlot(self._inference, rank)
        else:
            held = retry_db(lambda: self.jobs.ranks(self.jobs.queue.claimed_by(self.worker_id, (QUEUE_NAME,))),
                            "reading held entries")
            slot = self._inference.take(rank, {r for r in held.values() if r < rank})
        try:
            if self.draining.is_set():
                # Taken while stopping: a new entry for another worker (the requeue is conditional
                # on the entry still being the request's), then hold this slot until the process
                # stops, so that this worker takes nothing more.
                if queued.workflow_id == workflow_id:
                    retry_db(lambda: self.jobs.requeue(queued), "requeueing")
                slot.release()
                self._stopped.wait()
                return
            run = retry_db(lambda: self.jobs.begin(queued, self.runner, workflow_id), f"starting {request_id}")
            if run is None:
                return
            with self._lock:
                self.running.add(request_id)
            BUSY.inc()
            t0 = time.monotonic()
            try:
                outcome = self._outcome(run, slot, kind)
                self.jobs.finish(run, outcome)
            finally:
                JOB_SECONDS.labels(run.request.model_id).observe(time.monotonic() - t0)
                BUSY.dec()
                with self._lock:
                    self.running.discard(request_id)
        finally:
            slot.release()
            self._inference.done(rank)

    def _outcome(self, run: Run, slot: _Slot | _LazySlot, kind: str = "run") -> Outcome:
        last = [0.0]

        def progress(p: float) -> None:
            now = time.monotonic()
            if p >= 1.0 or now - last[0] > 0.2:
                last[0] = now
                self.jobs.set_progress(run, p)

        stop = _StopCheck(self.jobs, run.request, self.stop_now)
        try:
            outcome = self.router.run(Job(run.request, run.attempt, self.storage, progress, stop,
                                          on_stored=lambda keys: self.jobs.set_partial(run, keys), pool=self._post,
                                          inference=slot, output_format=self.settings.output_format,
                                          max_pixels=self.settings.max_input_pixels, kind=kind,
                                          tried=list((run.request.metadata or {}).get("backends_tried") or []),
                                          on_upstream=lambda record: self.jobs.set_upstream(run, record)))
        except Exception as exc:  # the job's own error, reported to the client without a traceback
            log.exception("request.error", extra={"request_id": run.request.request_id})
            return Failed("generation_error", f"{type(exc).__name__}: {exc}"[:500])
        if isinstance(outcome, Stopped):
            return stop.outcome(outcome)
        if isinstance(outcome, Done):
            for stage, seconds in outcome.metadata["timings"].items():
                STAGE_SECONDS.labels(stage.removesuffix("_s")).observe(seconds)
        return outcome

