"""Building and running the server process: database, keys, storage, engine, queue, HTTP."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import auth, db
from ..config import Settings
from ..engine import load_engine
from ..jobs import JobStore
from ..service import Service
from ..storage import LocalStorage
from ..worker import Worker
from .app import create_app

log = logging.getLogger("modelapi.server")


def build(settings: Settings, *, announce_key: bool = True) -> tuple[FastAPI, Service]:
    """Open everything ``serve`` needs, load the engine (once, kept warm), start the queue.

    Raises:
        EngineError: the weights could not be loaded (the message says what to do).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine_db = db.connect(settings.db_url)
    secret = auth.ensure_initial_key(engine_db, settings.data_dir)
    if secret and announce_key:
        print(
            f"\nCreated the first API key (shown once; also in {settings.data_dir / 'initial_api_key'}, mode 0600):\n\n"
            f"    {secret}\n",
            flush=True,
        )
    if settings.allow_private_urls:
        log.warning("--allow-private-urls is ON: input URLs may reach loopback and private networks (SSRF guard off). Use only for tests.")
    storage = LocalStorage.open(settings.data_dir, settings.base_url)
    engine = load_engine(settings)
    if engine.info.get("random_weights"):
        log.warning("RANDOM WEIGHTS: engine %s at %s produces noise images, not real generations",
                    engine.info.get("engine"), engine.info.get("weights"))
    worker = Worker(settings, JobStore(engine_db), storage, engine)
    service = Service(settings, engine_db, storage, worker)
    worker.launch()
    app = create_app(service)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        yield
        log.info("shutting down: no new jobs; a running job has %.0f s to finish", settings.shutdown_grace_s)
        await run_in_threadpool(worker.shutdown, settings.shutdown_grace_s)
        log.info("stopped")

    app.router.lifespan_context = lifespan
    return app, service


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM. On SIGTERM: stop taking jobs, let the running one
    finish within ``shutdown_grace_s`` (or hand it back to the queue), exit cleanly."""
    app, service = build(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    log.info("serving", extra={"url": settings.base_url, "data_dir": str(settings.data_dir)})
    print(f"modelapi listening on http://{settings.host}:{settings.port} (public URL {settings.base_url})", flush=True)
    # uvicorn re-raises the signal it caught once it has stopped; by then the lifespan has
    # drained the worker, so the re-raised signal only needs to be swallowed for a clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()


def start_in_thread(settings: Settings) -> tuple[uvicorn.Server, Service, threading.Thread]:
    """Serve in a background thread (for ``modelapi demo``); stop with ``server.should_exit = True``."""
    app, service = build(settings, announce_key=False)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, service, thread
