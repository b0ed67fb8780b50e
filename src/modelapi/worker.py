"""The worker: takes requests off the durable queue (DBOS Transact) and runs the engine.

The queue is a DBOS queue on the same database as the requests table: jobs run in submission
order (handed-back jobs first), ``worker_concurrency`` at a time per process (1 = one model
per GPU). A job whose process died mid-run is recovered by DBOS on restart and run again, up to
``max_attempts`` runs, then marked failed; :meth:`Worker.reconcile` gives any in_queue request
without a live queue entry a new one, so nothing accepted is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from dbos import DBOS, SetEnqueueOptions, SetWorkflowID
from prometheus_client import Histogram

from . import catalog
from .config import Settings
from .engine.base import Engine
from .engine.params import prepare
from .errors import GenerationStopped, InputError
from .jobs import JobStore
from .storage import LocalStorage
from .types import Status

log = logging.getLogger("modelapi.worker")
QUEUE_NAME = "modelapi-requests"
JOB_SECONDS = Histogram(
    "modelapi_job_duration_seconds", "Time from start to finish of a request's run, seconds",
    ["model"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)

_worker: "Worker | None" = None


@DBOS.workflow()
def run_request(request_id: str) -> None:
    """The durable workflow of one request: a single step that runs it."""
    _run_step(request_id)


@DBOS.step(retries_allowed=False)
def _run_step(request_id: str) -> None:
    assert _worker is not None, "worker not started"
    _worker.execute(request_id)


class Worker:
    """Runs requests through ``engine`` (loaded once, kept warm)."""

    def __init__(self, settings: Settings, jobs: JobStore, storage: LocalStorage, engine: Engine) -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.engine = engine
        self.draining = threading.Event()
        self.stop_now = threading.Event()
        self.running: set[str] = set()
        self._lock = threading.Lock()
        self._queue = None

    # -- lifecycle ---------------------------------------------------------------------------
    def launch(self) -> None:
        """Start DBOS on the settings' database and register the queue."""
        global _worker
        _worker = self
        DBOS(config={
            "name": "modelapi",
            "system_database_url": self.settings.db_url,
            "log_level": "WARNING",
            "run_admin_server": False,
        })
        DBOS.launch()
        self._queue = DBOS.register_queue(
            QUEUE_NAME,
            worker_concurrency=self.settings.worker_concurrency,
            polling_interval_sec=self.settings.queue_poll_interval_s,
            on_conflict="always_update",
        )
        self.reconcile()

    def enqueue(self, request_id: str, workflow_id: str, priority: int) -> None:
        """Put a request on the durable queue (committed before this returns)."""
        with SetWorkflowID(workflow_id), SetEnqueueOptions(priority=priority):
            self._queue.enqueue(run_request, request_id)

    def cancel(self, workflow_id: str) -> None:
        DBOS.cancel_workflow(workflow_id)

    def reconcile(self) -> None:
        """After a restart: every in_queue request gets a live queue entry; an in_progress one
        with no live workflow (its run was lost) is failed."""
        for req in self.jobs.list(Status.IN_QUEUE, Status.IN_PROGRESS):
            wf = DBOS.get_workflow_status(req.workflow_id)
            live = wf is not None and wf.status in ("ENQUEUED", "PENDING")
            if live:
                continue
            if req.status is Status.IN_QUEUE:
                n = int(req.workflow_id.rsplit(".", 1)[1]) + 1
                workflow_id = f"{req.request_id}.{n}"
                self.jobs.requeue(req.request_id, workflow_id)
                self.enqueue(req.request_id, workflow_id, 1)
                log.info("request.requeued", extra={"request_id": req.request_id})
            else:
                self.jobs.fail(req.request_id, "interrupted", "the worker stopped while running this request")

    def shutdown(self, grace_s: float) -> None:
        """Stop taking jobs; let the running one finish for ``grace_s`` seconds, then stop it
        between steps and hand it back to the queue; then stop DBOS."""
        self.draining.set()
        deadline = time.monotonic() + grace_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.running:
            log.warning("shutdown grace period over: handing %d running request(s) back", len(self.running))
            self.stop_now.set()
            while self.running and time.monotonic() < deadline + 30:
                time.sleep(0.05)
        DBOS.destroy(workflow_completion_timeout_sec=0)

    # -- running one request -----------------------------------------------------------------
    def execute(self, request_id: str) -> None:
        req = self.jobs.get(request_id)
        if req is None or req.status.is_terminal:
            return
        if self.draining.is_set():
            # Shutting down: leave it queued; the next start gives it a new queue entry.
            raise GenerationStopped("worker is shutting down")
        if req.status is Status.IN_PROGRESS:  # our process died while running it
            if req.attempts >= self.settings.max_attempts:
                self.jobs.fail(request_id, "interrupted", f"the worker stopped {req.attempts} times while running this request")
                return
            self.jobs.restart(request_id)
        elif not self.jobs.start(request_id):
            return  # cancelled meanwhile
        with self._lock:
            self.running.add(request_id)
        t0 = time.monotonic()
        try:
            self._generate(req)
        except GenerationStopped:
            self.jobs.hand_back(request_id)
            raise
        except InputError as exc:
            self.jobs.fail(request_id, "invalid_input", exc.msg)
        except Exception as exc:  # the job's own error, reported to the client without a traceback
            log.exception("request.error", extra={"request_id": request_id})
            self.jobs.fail(request_id, "generation_error", f"{type(exc).__name__}: {exc}"[:500])
        finally:
            JOB_SECONDS.labels(req.model_id).observe(time.monotonic() - t0)
            with self._lock:
                self.running.discard(request_id)

    def _generate(self, req: Any) -> None:
        from PIL import Image
        import io

        model = catalog.get(req.model_id)
        refs = [Image.open(io.BytesIO(self.storage.get(key))).convert("RGB") for key in req.input_files]
        rewrite = getattr(self.engine, "rewrite_prompts", None)
        spec = prepare(model, req.inputs, refs, rewrite=rewrite, seed=req.seed)
        last = [0.0]

        def progress(p: float) -> None:
            now = time.monotonic()
            if p >= 1.0 or now - last[0] > 0.2:
                last[0] = now
                self.jobs.set_progress(req.request_id, p)

        images = self.engine.generate(spec, progress, self.stop_now.is_set)
        outputs = []
        for i, (image, prompt) in enumerate(zip(images, spec.prompts)):
            key = f"outputs/{req.request_id}/{i}.png"
            self.storage.put_png(key, image, {
                "prompt": prompt, "seed": str(spec.seed + i), "model_id": req.model_id,
                "random_weights": str(self.engine.info.get("random_weights", False)).lower(),
            })
            outputs.append(key)
        units = req.inputs.get(model.task.max_images_field) if model.task.billed_by == "max_images" else len(outputs)
        metadata = {
            **spec.plan,
            "image_count": len(outputs),
            "width": images[0].width, "height": images[0].height,
            "seed": spec.seed,
            **self.engine.info,
        }
        price = self.settings.prices_usd.get(req.model_id, 0.0)
        self.jobs.complete(
            req.request_id, outputs=outputs, metadata=metadata,
            billed_units=int(units), cost_usd=round(int(units) * price, 6),
        )
