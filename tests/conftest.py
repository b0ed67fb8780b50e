"""Shared fixtures: a real `modelapi serve` process on 127.0.0.1 over a real SQLite file, and a
real local HTTP server for input URLs. Nothing here talks to an address off this machine."""

from __future__ import annotations

import contextlib
import functools
import http.server
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

import httpx
import pytest
import skimage

TESTS = Path(__file__).parent
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`modelapi serve` in a subprocess with the drawing test engine (or another engine)."""

    def __init__(self, data_dir: Path, *, args: list[str] = (), env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELAPI_DATA_DIR": str(data_dir),
                    "MODELAPI_ENGINE": "drawing_engine:make", **(env or {})}
        self.env.pop("MODELAPI_API_KEY", None)
        self.env.pop("MODELAPI_BASE_URL", None)
        self.proc: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    def start(self, timeout_s: float = 60) -> "ServerProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelapi", "serve", "--port", str(self.port), *self.args],
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


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerProcess] = []

    def make(name: str = "data", **kwargs) -> ServerProcess:
        server = ServerProcess(tmp_path / name, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server per test module (allow-private-urls on, so inputs can come from 127.0.0.1)."""
    srv = ServerProcess(tmp_path_factory.mktemp("srv") / "data", args=["--allow-private-urls"]).start()
    yield srv
    srv.stop()


class Listener:
    """A plain TCP listener on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

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
