"""The ``serve`` role: the API process, with an in-process worker (the one-machine default) or
without one (``--no-worker``: it only enqueues; it never imports the engine or torch, and never
runs the DBOS runtime)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from ..core.config import Settings
from ..core.context import open_core
from ..types import is_loopback_host
from .app import create_app
from .service import Service

log = logging.getLogger("modelapi.server")


def build(settings: Settings, *, announce_key: bool = True) -> tuple[FastAPI, Service]:
    """Open the database (migrated), the storage and the queue; with ``settings.worker``, load
    the engine (once, kept warm) and start a worker in this process.

    Raises:
        EngineError: the weights could not be loaded (the message says what to do).
        WorkerIdInUse: another live worker has this worker id.
    """
    from ..backends import check_routes

    check_routes(settings.routes)  # before anything starts: a route without credentials stops here
    core = open_core(settings, create_initial_key=True)
    if core.initial_key and announce_key:
        announce_initial_key(settings, core.initial_key)
    if settings.allow_private_urls:
        log.warning("--allow-private-urls is ON: input URLs may reach loopback and private networks (SSRF guard off). Use only for tests.")
    service = Service(core)
    worker: Any = None
    collectors: tuple = ()
    stopping = threading.Event()
    if settings.worker:
        from ..worker.main import start_worker  # the engine and torch load only here

        worker, collectors = start_worker(settings, core)
        service.backends_health = worker.router.health
    else:  # API only: it sweeps queued requests past their Cancel-After too (a worker does in its own process)
        threading.Thread(target=core.jobs.expire_queued_every, args=(settings.deadline_check_s, stopping),
                         name="modelapi-deadlines", daemon=True).start()
    app = create_app(service, collectors)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        yield
        service.draining.set()
        stopping.set()
        if worker is not None:
            log.info("shutting down: no new jobs; a running job has %.0f s to finish", settings.shutdown_grace_s)
            await run_in_threadpool(worker.shutdown, settings.shutdown_grace_s)
        if core.jobs.async_reads is not None:
            await core.jobs.async_reads.close()
        core.close()
        log.info("stopped")

    app.router.lifespan_context = lifespan
    return app, service


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), which closes a connection that holds the server without
    a request in progress: one whose request headers are not complete ``header_timeout_s``
    seconds after it opened or after its last answer (a client trickling headers, or the body
    of a request already answered). uvicorn itself bounds only an idle keep-alive connection
    (``timeout_keep_alive``), and any byte received stops that clock."""

    header_timeout_s: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._expire)

    def _expire(self) -> None:
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


def announce_initial_key(settings: Settings, key: str) -> None:
    """Say on stdout where the first API key is: its file (mode 0600) and the playground's URL.
    The key itself (and the playground URL carrying it in its fragment) only with
    ``--print-key``: a log collector must not see it by default."""
    key_file = settings.data_dir / "initial_api_key"
    if settings.print_key:
        print(f"\nCreated the first API key (shown once; also in {key_file}, mode 0600):\n\n    {key}\n", flush=True)
    else:
        print(f"\nCreated the first API key, in {key_file} (mode 0600; --print-key shows it here).\n", flush=True)
    if is_loopback_host(settings.host):
        if settings.print_key:
            # The key rides in the fragment: the browser never sends it to the server in a URL.
            print(f"Open the playground: {settings.base_url}/#key={key}\n", flush=True)
        else:
            print(f"Open the playground: {settings.base_url}/ and paste the key from that file.\n", flush=True)


def _uvicorn(app: FastAPI, settings: Settings) -> uvicorn.Server:
    """The HTTP server: ``settings.max_connections`` connections at most (a request above them
    is answered 503 by uvicorn), each closed when it sends no complete request headers within
    ``settings.header_timeout_s`` (:class:`HeaderTimeoutH11`)."""
    protocol = type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout_s": settings.header_timeout_s})
    # proxy_headers off: X-Forwarded-* is believed only from --trusted-proxies (app.forwarded_base_url).
    return uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                                         lifespan="on", proxy_headers=False, http=protocol,
                                         limit_concurrency=settings.max_connections))


def serve(settings: Settings) -> None:
    """Run the server until SIGINT/SIGTERM. On SIGTERM: stop taking jobs, let the running one
    finish within ``shutdown_grace_s`` (or hand it back to the queue), exit cleanly."""
    app, _ = build(settings)
    server = _uvicorn(app, settings)
    role = "API + worker" if settings.worker else "API only"
    log.info("serving", extra={"url": settings.base_url, "data_dir": str(settings.data_dir), "role": role})
    print(f"modelapi ({role}) listening on http://{settings.host}:{settings.port} (public URL {settings.base_url})", flush=True)
    # uvicorn re-raises the signal it caught once it has stopped; by then the lifespan has
    # drained the worker, so the re-raised signal only needs to be swallowed for a clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()


def start_in_thread(settings: Settings) -> tuple[uvicorn.Server, Service, threading.Thread]:
    """Serve in a background thread (for ``modelapi demo``); stop with ``server.should_exit = True``."""
    app, service = build(settings, announce_key=False)
    server = _uvicorn(app, settings)
    # uvicorn installs signal handlers only when run in the main thread, so none are set here.
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, service, thread
