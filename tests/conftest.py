"""Shared fixtures: a real `modelapi serve` process on 127.0.0.1 in each configuration —
``sqlite`` (a SQLite file + a local folder) and ``fleet`` (a real Postgres + a real SeaweedFS S3
store, both started here) — and a real local HTTP server for input URLs. Nothing here talks to
an address off this machine."""

from __future__ import annotations

import contextlib
import functools
import http.server
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import skimage

from localfleet import free_port, start_postgres, start_seaweedfs

TESTS = Path(__file__).parent
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


CONFIGS = ("sqlite", "fleet")


# -- which tests are `slow` ---------------------------------------------------------------------
# A test is `slow` when it starts a `modelapi serve` process, Postgres, SeaweedFS, Chromium or the
# diffusion pipeline; `python -m pytest -m "not slow"` runs the rest (the unit suite, seconds),
# and .ci/run runs everything.
SLOW_MODULES = ("server/", "fleet/", "web/", "test_cli.py", "test_client_integration.py", "test_demo.py",
                "test_migrations.py", "engine/test_engine_e2e.py", "engine/test_flux2.py")
"""Modules (or folders, ending in /) under tests/ whose own fixtures start one of those for every test."""
PROCESS_FIXTURES = frozenset({"make_server", "server", "fleet_services"})
"""This file's fixtures that start them; a module's own fixture of the same name (test_fetch.py's
local HTTP ``server``) does not count."""
PIPELINE_FIXTURES = frozenset({"engine"})
"""Fixtures of tests/engine/ modules that load the FLUX.2 engine on the tiny pipeline."""


def _is_slow(item: pytest.Item) -> bool:
    where = Path(item.path).relative_to(TESTS).as_posix()
    if any(where.startswith(m) if m.endswith("/") else where == m for m in SLOW_MODULES):
        return True
    for name, defs in getattr(item, "_fixtureinfo").name2fixturedefs.items():
        source = Path(inspect.getfile(defs[-1].func))  # the definition this test gets
        if name in PROCESS_FIXTURES and source == Path(__file__):
            return True
        if name in PIPELINE_FIXTURES and source.parent == TESTS / "engine":
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)


class FleetServices:
    """One Postgres and one SeaweedFS for the whole session, started on first use; each server
    gets its own database and its own key prefix in one bucket."""

    def __init__(self) -> None:
        self.pg = None
        self.s3 = None
        self._n = 0

    def config_env(self) -> dict[str, str]:
        if self.pg is None:
            self.pg = start_postgres()
            self.s3 = start_seaweedfs()
        self._n += 1
        name = f"t{self._n}_{os.getpid()}"
        return {"MODELAPI_DATABASE_URL": self.pg.create_database(name),
                "MODELAPI_STORAGE_URL": f"s3://modelapi-tests/{name}", **self.s3.env()}

    def close(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self.pg is not None:
            self.pg.destroy()


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight FLUX.2 [klein] pipeline folder (save_pretrained layout), made once per
    test process; tests only read it."""
    from modelapi.engine.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("weights") / "tiny-flux2-klein")


@pytest.fixture(scope="session")
def fleet_services():
    services = FleetServices()
    yield services
    services.close()


class ServerProcess:
    """`modelapi serve` in a subprocess with the drawing test engine (or another engine), on
    ``config_env``'s database and storage (default: SQLite + a folder in ``data_dir``)."""

    def __init__(self, data_dir: Path, *, args: list[str] = (), env: dict[str, str] | None = None,
                 config_env: dict[str, str] | None = None, command: str = "serve") -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.command = command
        self.config = "fleet" if config_env else "sqlite"
        self.env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELAPI_DATA_DIR": str(data_dir),
                    "MODELAPI_ENGINE": "drawing_engine:make", **(config_env or {}), **(env or {})}
        self.env.pop("MODELAPI_API_KEY", None)
        self.env.pop("MODELAPI_BASE_URL", None)
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-{command}-{self.port}.log"

    def start(self, timeout_s: float = 60) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        port_flag = "--port" if self.command == "serve" else "--metrics-port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelapi", self.command, port_flag, str(self.port), *self.args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    @property
    def key(self) -> str:
        return (self.data_dir / "initial_api_key").read_text().strip()

    @property
    def database_url(self) -> str:
        """The database of this server (its ``MODELAPI_DATABASE_URL``, or the SQLite file in its data dir)."""
        from modelapi.core.config import Settings

        return Settings(data_dir=self.data_dir, database_url=self.env.get("MODELAPI_DATABASE_URL")).db_url

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers(key), timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
        """Run the `modelapi` CLI against this server's data dir."""
        return subprocess.run(
            [sys.executable, "-m", "modelapi", *args], env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout_s,
        )


@pytest.fixture(params=CONFIGS)
def make_server(request, tmp_path, fleet_services):
    """Makes servers (not started) in each configuration; in ``fleet``, the servers of one test
    share one database and store (in ``sqlite``, servers with the same data dir name do)."""
    started: list[ServerProcess] = []
    config_env = fleet_services.config_env() if request.param == "fleet" else None

    def make(name: str = "data", **kwargs) -> ServerProcess:
        server = ServerProcess(tmp_path / name, config_env=config_env, **kwargs)
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="module", params=CONFIGS)
def server(request, tmp_path_factory, fleet_services):
    """One server per test module and configuration (allow-private-urls on, so inputs can come
    from 127.0.0.1)."""
    config_env = fleet_services.config_env() if request.param == "fleet" else None
    srv = ServerProcess(tmp_path_factory.mktemp("srv") / "data", args=["--allow-private-urls"], config_env=config_env).start()
    yield srv
    srv.stop()


class Listener:
    """A plain TCP listener on 127.0.0.1 that counts the connections made to it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[str, int]] = []
        """The peer address of each connection accepted, in the order they were made."""
        self._probes: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(peer)
            conn.close()

    def connections(self, timeout_s: float = 10) -> int:
        """The connections made to this listener before this call — also those it has not
        accepted yet: it connects once itself (a probe, never counted) and waits until that
        connection is accepted; the kernel hands connections over in the order they were made,
        so by then every earlier one is in ``accepted``."""
        with socket.create_connection(("127.0.0.1", self.port)) as probe:
            me = probe.getsockname()
            self._probes.add(me)
            deadline = time.monotonic() + timeout_s
            while me not in self.accepted:
                assert time.monotonic() < deadline, "the listener never accepted its own probe"
                time.sleep(0.01)
        return sum(1 for peer in self.accepted[: self.accepted.index(me)] if peer not in self._probes)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A loopback listener that must usually see no connection (SSRF tests)."""
    lst = Listener()
    yield lst
    lst.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture(scope="session")
def image_host(tmp_path_factory):
    """A real HTTP server on 127.0.0.1 serving scikit-image's bundled photos plus ``extra/``
    (a folder tests may write to). Yields (base_url, extra_dir)."""
    root = tmp_path_factory.mktemp("images")
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"):
        (root / name).write_bytes((SKIMAGE_DATA / name).read_bytes())
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def tampered(url: str) -> str:
    """``url`` with the last character of its signature (``sig=`` of a file-storage URL,
    ``X-Amz-Signature=`` of a presigned S3 URL) changed."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    name = "sig" if "sig" in query else "X-Amz-Signature"
    sig = query[name][0]
    query[name] = [sig[:-1] + ("0" if sig[-1] != "0" else "1")]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))


def assert_refused(url: str) -> None:
    """An output URL that must not serve: our 404 error body (file storage), or the S3
    store's 403 (presigned URLs)."""
    resp = httpx.get(url)
    assert resp.status_code in (403, 404), resp.status_code
    if resp.status_code == 404:
        assert resp.json()["error_code"] == 404001


def wait_terminal(client: httpx.Client, request_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/requests/{request_id}/status").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return client.get(f"/v1/requests/{request_id}/result").json()
        time.sleep(0.05)
    raise AssertionError(f"{request_id} not terminal after {timeout_s}s: {body}")


def wait_status(client: httpx.Client, request_id: str, status: str, timeout_s: float = 30) -> None:
    """Poll until the request reaches ``status``."""
    deadline = time.monotonic() + timeout_s
    while client.get(f"/v1/requests/{request_id}/status").json()["status"] != status:
        assert time.monotonic() < deadline, f"{request_id} never reached {status}"
        time.sleep(0.01)


@contextlib.contextmanager
def started_in_background(server: ServerProcess) -> Iterator["Future[ServerProcess]"]:
    """Start ``server`` in a thread while other tests run; yields the Future of its start and
    stops the server on exit."""
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(server.start)
        try:
            yield started
        finally:
            wait([started])
            server.stop()


@pytest.fixture
def jobs(tmp_path):
    """The request state machine on a temporary SQLite database with the real queue tables
    (no server, no DBOS runtime): max 2 attempts, 0.03 USD per sequential image."""
    from modelapi.core import db
    from modelapi.core.jobs import JobStore
    from modelapi.core.queue import TaskQueue
    from modelapi.core.workers import WorkerRegistry

    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    engine = db.connect(url)
    db.migrate(engine, url)
    queue = TaskQueue(url)
    queue.ensure(0.05)
    yield JobStore(engine, queue, WorkerRegistry(engine, timeout_s=60), max_attempts=2,
                   prices_usd={"bytedance/seedream-4-0/sequential": 0.03})
    queue.destroy()
    engine.dispose()

