"""The ``worker`` role: load the engine, take jobs, serve ``/healthz`` and ``/metrics`` on
``--metrics-port`` — and nothing of the API."""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.config import Settings
from ..core.context import Core, open_core
from ..engine import load_engine
from .runtime import BUSY, JOB_SECONDS, STAGE_SECONDS, WorkerRuntime

log = logging.getLogger("modelapi.worker")


def start_worker(settings: Settings, core: Core) -> tuple[WorkerRuntime, tuple[Any, ...]]:
    """Load the engine and start a worker on ``core``. Returns the runtime and its metrics
    collectors (job durations, stage durations, busy, and GPU memory on cuda).

    Raises:
        EngineError: the weights could not be loaded.
        WorkerIdInUse: another live worker has this worker id.
    """
    engine = load_engine(settings)
    if engine.info.random_weights:
        log.warning("RANDOM WEIGHTS: engine %s at %s produces noise images, not real generations",
                    engine.info.engine, engine.info.weights)
    runtime = WorkerRuntime(settings, core.jobs, core.storage, engine)
    runtime.launch()
    collectors: list[Any] = [JOB_SECONDS, STAGE_SECONDS, BUSY]
    device = engine.info.device
    if device.startswith("cuda"):
        import torch

        gpu = Gauge("modelapi_gpu_memory_bytes", "GPU memory held by tensors of this worker, bytes",
                    registry=None)
        gpu.set_function(lambda: float(torch.cuda.memory_allocated(device)))
        collectors.append(gpu)
    return runtime, tuple(collectors)


def health_app(runtime: WorkerRuntime, collectors: tuple[Any, ...], on_shutdown: Any) -> Starlette:
    """``GET /healthz`` (``{"status": "ok"|"draining", "worker_id", "running", "engine"}``) and
    ``GET /metrics`` (Prometheus text)."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)

    def healthz(_: Request) -> JSONResponse:
        return JSONResponse({
            "status": "draining" if runtime.draining.is_set() else "ok",
            "worker_id": runtime.worker_id, "running": sorted(runtime.running), "engine": runtime.engine.info.as_dict(),
        })

    def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette):  # noqa: ANN202
        yield
        await run_in_threadpool(on_shutdown)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)], lifespan=lifespan)


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGINT/SIGTERM; then drain (``--shutdown-grace-s``) and exit 0."""
    core = open_core(settings, create_initial_key=False)
    runtime, collectors = start_worker(settings, core)

    def stop() -> None:
        log.info("shutting down: no new jobs; a running job has %.0f s to finish", settings.shutdown_grace_s)
        runtime.shutdown(settings.shutdown_grace_s)
        core.close()
        log.info("stopped")

    app = health_app(runtime, collectors, stop)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.metrics_port, log_level="warning", lifespan="on"))
    print(f"modelapi worker {runtime.worker_id} running; health and metrics on "
          f"http://{settings.host}:{settings.metrics_port}/healthz", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
