"""The ``worker`` role: load the engine, take jobs, serve ``/healthz`` and ``/metrics`` on
``--metrics-port`` — and nothing of the API. With ``--backends``: an upstream worker (no
engine, torch never imported) that takes upstream jobs only."""

from __future__ import annotations

import logging
import signal
from contextlib import asynccontextmanager
from typing import Any, Callable

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..core.auth import operations_authorized
from ..core.config import Settings
from ..core.context import Core, open_core
from ..backends.routing import CIRCUIT_OPEN, RUNS
from ..engine import load_engine
from .runtime import BUSY, JOB_SECONDS, STAGE_SECONDS, Role, WorkerRuntime

log = logging.getLogger("modelapi.worker")


def start_upstream_worker(settings: Settings, core: Core) -> tuple[WorkerRuntime, tuple[Any, ...]]:
    """Start an upstream worker on ``core`` (``--backends``): no engine; it takes upstream jobs
    only, up to ``--concurrency`` at once. Returns the runtime and its metrics collectors.

    Raises:
        ValueError: ``--backends`` names a non-upstream backend, or misses one the routes name.
        WorkerIdInUse: another live worker has this worker id.
    """
    from ..backends import check_upstream_worker

    names = [n.strip() for n in (settings.backends or "").split(",") if n.strip()]
    check_upstream_worker(settings.routes, names)
    runtime = WorkerRuntime(settings, core.jobs, core.storage, None, role="upstream", backends=names)
    runtime.launch()
    return runtime, (JOB_SECONDS, STAGE_SECONDS, BUSY, CIRCUIT_OPEN, RUNS)


def start_worker(settings: Settings, core: Core, role: Role = "both") -> tuple[WorkerRuntime, tuple[Any, ...]]:
    """Load the engine and start a worker on ``core`` taking the queues of ``role`` (``serve``:
    both; ``modelapi worker``: the local one). Returns the runtime and its metrics
    collectors (job durations, stage durations, busy, and GPU memory on cuda).

    Raises:
        EngineError: the weights could not be loaded.
        WorkerIdInUse: another live worker has this worker id.
    """
    engine = load_engine(settings)
    if engine.info.random_weights:
        log.warning("RANDOM WEIGHTS: engine %s at %s produces noise images, not real generations",
                    engine.info.engine, engine.info.weights)
    runtime = WorkerRuntime(settings, core.jobs, core.storage, engine, role=role)
    runtime.launch()
    collectors: list[Any] = [JOB_SECONDS, STAGE_SECONDS, BUSY, CIRCUIT_OPEN, RUNS]
    device = engine.info.device
    if device.startswith("cuda"):
        import torch

        gpu = Gauge("modelapi_gpu_memory_bytes", "GPU memory held by tensors of this worker, bytes",
                    registry=None)
        gpu.set_function(lambda: float(torch.cuda.memory_allocated(device)))
        collectors.append(gpu)
    return runtime, tuple(collectors)


def _bearer(request: Request) -> str | None:
    """The token of the request's ``Authorization: Bearer <token>``, else None."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def health_app(runtime: WorkerRuntime, collectors: tuple[Any, ...], on_shutdown: Any,
               authorized: Callable[[str | None], bool]) -> Starlette:
    """``GET /healthz`` and ``GET /metrics`` (Prometheus text). ``authorized`` tells whether a
    Bearer token (None when absent) may see the details: a live API key or ``--metrics-token``.
    With it, /healthz is ``{"status": "ok"|"draining", "worker_id", "running", "engine"}`` and
    /metrics answers; without, /healthz is ``{"status"}`` only and /metrics answers 401."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)

    def healthz(request: Request) -> JSONResponse:
        state = "draining" if runtime.draining.is_set() else "ok"
        if not authorized(_bearer(request)):
            return JSONResponse({"status": state})
        return JSONResponse({
            "status": state,
            "worker_id": runtime.worker_id, "running": sorted(runtime.running), "engine": runtime.info,
            "backends": runtime.router.health(),
        })

    def metrics(request: Request) -> Response:
        if not authorized(_bearer(request)):
            return JSONResponse({"error_code": 401001, "error_message": "/metrics needs an API key or the --metrics-token",
                                 "detail": None}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette):  # noqa: ANN202
        yield
        await run_in_threadpool(on_shutdown)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)], lifespan=lifespan)


def run_worker(settings: Settings) -> None:
    """Run a worker until SIGINT/SIGTERM; then drain (``--shutdown-grace-s``) and exit 0."""
    from ..backends import check_routes

    check_routes(settings.routes)  # before the engine loads: a route without credentials stops here
    if settings.backends:
        from ..backends import check_upstream_worker

        check_upstream_worker(settings.routes, [n.strip() for n in settings.backends.split(",") if n.strip()])
    core = open_core(settings, create_initial_key=False)
    if settings.backends:
        runtime, collectors = start_upstream_worker(settings, core)
    else:
        runtime, collectors = start_worker(settings, core, role="gpu")

    def stop() -> None:
        log.info("shutting down: no new jobs; a running job has %.0f s to finish", settings.shutdown_grace_s)
        runtime.shutdown(settings.shutdown_grace_s)
        core.close()
        log.info("stopped")

    app = health_app(runtime, collectors, stop,
                     lambda token: operations_authorized(core.db, settings.metrics_token, token))
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.metrics_port, log_level="warning", lifespan="on"))
    print(f"modelapi worker {runtime.worker_id} running; health and metrics on "
          f"http://{settings.host}:{settings.metrics_port}/healthz", flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
