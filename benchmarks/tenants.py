"""Tenant-isolation benchmark: what one hostile key's attacks cost another tenant — figures, not
a test (PASS/FAIL against the target of the tenant-isolation issue: the victim's p99 within 2x of
its p99 at rest).

A real ``modelapi serve`` (API + in-process worker, the drawing test engine from ``tests/``,
``--fetch-timeout-s 3 --webhook-timeout-s 3``, every other limit at its default) serves two keys.
The **victim** runs, one after another, ``--jobs`` one-image requests, each with a webhook to a
prompt receiver on 127.0.0.1, and times:

- submit: the ``POST`` of each request, ms;
- status: ``--polls`` status polls of each request, ms;
- webhook: the request's ``finished_at`` (written by the worker) -> the webhook's arrival, ms.

It does so first **at rest**, then while the **attacker** key runs three attacks at once:

- slow host: ``--fetchers`` clients submit edit requests, again and again, whose reference image
  is on a host (127.0.0.1, admitted with ``--allowed-input-hosts``) that sends its response
  headers one byte every 0.5 s;
- slow receivers: ``--hooks`` requests every ``--hook-every-s`` with a webhook to a receiver that
  trickles its answer the same way (so every attempt lasts until the server's deadline, and is
  retried); the first round goes in before the slow-host submits start, since a submit with a
  webhook takes one of the key's ``--max-fetching-per-key`` slots too;
- many streams: ``--streams`` status streams opened at once on the attacker's requests (those
  over the server's per-key cap are refused with 429; the rest are held open).

Each configuration of ``--configs`` runs on a fresh server: ``sqlite`` (SQLite + folder) and
``postgres`` (Postgres + S3 on SeaweedFS, started by this script, as in benchmarks/server.py).

Usage::

    python benchmarks/tenants.py                       # both configs, about 3 minutes on two cores
    python benchmarks/tenants.py --configs sqlite --jobs 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
from httpx_sse import aconnect_sse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import push  # noqa: E402  (benchmarks/push.py: the webhook receiver)
import server as bench  # noqa: E402  (benchmarks/server.py: processes, configurations)

SEQ = "/v1/models/bytedance/seedream-4-0/sequential"
EDIT = "/v1/models/bytedance/seedream-4-0/edit-sequential"
TARGET_RATIO = 2.0
CONFIGS = ("sqlite", "postgres")


class Trickler:
    """A TCP server on 127.0.0.1 that reads a request, then sends ``HTTP/1.1 200 OK`` ... one byte
    every ``interval_s`` seconds and never finishes: a slow image host, or a slow webhook
    receiver. Counts the connections it was sent."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            with contextlib.suppress(OSError):
                conn.settimeout(1)
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" * 100:
                    if self.stop.wait(self.interval_s):
                        return
                    conn.send(bytes([byte]))

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def victim_round(srv: bench.Proc, key: str, receiver: push.Receiver, jobs: int, polls: int,
                 timeout_s: float = 30.0) -> dict[str, list[float]]:
    """``jobs`` one-image requests of the victim, one after another: submit, status and webhook
    latencies, ms; a call or delivery that did not come within ``timeout_s`` counts as
    ``timeout_s`` (and in ``"timeouts"``)."""
    out: dict[str, list[float]] = {"submit": [], "status": [], "result": [], "webhook": [], "timeouts": []}

    def timed(what: str, call: Callable[[], httpx.Response]) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            r = call()
            r.raise_for_status()
        except httpx.HTTPError:
            out[what].append(timeout_s * 1e3)
            out["timeouts"].append(1.0)
            return None
        out[what].append((time.perf_counter() - t0) * 1e3)
        return r

    with httpx.Client(base_url=srv.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s) as c:
        for i in range(jobs):
            r = timed("submit", lambda: c.post(SEQ, params={"webhook": receiver.url}, json={"text": f"victim {i}"}))
            if r is None:
                continue
            rid = r.json()["request_id"]
            for _ in range(polls):
                timed("status", lambda: c.get(f"/v1/requests/{rid}/status"))
            deadline = time.monotonic() + timeout_s
            while rid not in receiver.arrived and time.monotonic() < deadline:
                time.sleep(0.005)
            result = timed("result", lambda: c.get(f"/v1/requests/{rid}/result"))
            if rid not in receiver.arrived or result is None or not result.json().get("finished_at"):
                out["webhook"].append(timeout_s * 1e3)
                out["timeouts"].append(1.0)
                continue
            out["webhook"].append((receiver.arrived[rid] - push.epoch(result.json()["finished_at"])) * 1e3)
    return out


class Attack:
    """The attacker key's three attacks, run in background threads until :meth:`stop`."""

    def __init__(self, srv: bench.Proc, key: str, slow_host: Trickler, slow_receiver: Trickler, args: argparse.Namespace) -> None:
        self.srv, self.key, self.args = srv, key, args
        self.image_url = f"http://127.0.0.1:{slow_host.port}/image.png"
        self.hook_url = f"http://127.0.0.1:{slow_receiver.port}/hook"
        self.done = threading.Event()
        self.answers: dict[str, int] = {}
        self.streams_open = 0
        self.lock = threading.Lock()
        self.hooked = threading.Event()  # the first round of slow-receiver requests is in
        self.threads = [threading.Thread(target=self._hooks, daemon=True)]
        self.threads += [threading.Thread(target=self._fetcher, daemon=True) for _ in range(args.fetchers)]
        self.threads.append(threading.Thread(target=lambda: asyncio.run(self._streams()), daemon=True))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.srv.base_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60)

    def count(self, what: str) -> None:
        with self.lock:
            self.answers[what] = self.answers.get(what, 0) + 1

    def _fetcher(self) -> None:
        # A submit with a webhook takes one of the key's fetch slots too: the slow-host submits
        # start once the first slow-receiver round is in, or they would keep it out.
        self.hooked.wait(30)
        body = {"images": [self.image_url], "text": "slow host"}
        with self.client() as c:
            while not self.done.is_set():
                try:
                    r = c.post(EDIT, json=body)
                    self.count(f"slow-host submit {r.status_code}")
                    if r.status_code == 429:
                        self.done.wait(float(r.headers.get("retry-after", "1")))
                except httpx.HTTPError as exc:
                    self.count(f"slow-host submit {type(exc).__name__}")

    def _hooks(self) -> None:
        with self.client() as c:
            while not self.done.is_set():
                accepted = 0
                while accepted < self.args.hooks and not self.done.is_set():  # until the key's fetch share lets it in
                    try:
                        r = c.post(SEQ, params={"webhook": self.hook_url}, json={"text": "slow receiver"})
                        self.count(f"slow-receiver submit {r.status_code}")
                        accepted += r.status_code == 200
                        if r.status_code == 429:
                            self.done.wait(float(r.headers.get("retry-after", "1")))
                    except httpx.HTTPError as exc:
                        self.count(f"slow-receiver submit {type(exc).__name__}")
                self.hooked.set()
                self.done.wait(self.args.hook_every_s)

    async def _streams(self) -> None:
        ids = []
        with self.client() as c:
            for i in range(self.args.streams):
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    ids.append(c.post(SEQ, json={"text": f"streamed {i}"}).json()["request_id"])
        limits = httpx.Limits(max_connections=len(ids) + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.srv.base_url, headers={"Authorization": f"Bearer {self.key}"},
                                     limits=limits, timeout=httpx.Timeout(30, read=None)) as client:

            async def one(rid: str) -> None:
                try:
                    async with aconnect_sse(client, "GET", f"/v1/requests/{rid}/status/stream") as source:
                        if source.response.status_code != 200:
                            self.count(f"stream {source.response.status_code}")
                            return
                        self.count("stream 200")
                        async for _ in source.aiter_sse():
                            if self.done.is_set():
                                return
                except httpx.HTTPError as exc:
                    self.count(f"stream {type(exc).__name__}")

            async def until_done() -> None:
                while not self.done.is_set():
                    await asyncio.sleep(0.1)

            tasks = [asyncio.create_task(one(rid)) for rid in ids]
            await until_done()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> Attack:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(30)


def pct(values: list[float], q: float) -> float:
    return bench.pct(values, q) if values else float("nan")


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 0.5):7.1f}  p99 {pct(values, 0.99):7.1f}"


def measure(cfg: bench.Config, root: Path, stack: contextlib.ExitStack, args: argparse.Namespace) -> dict:
    slow_host, slow_receiver = Trickler(), Trickler()
    stack.callback(slow_host.close)
    stack.callback(slow_receiver.close)
    receiver = push.Receiver()
    stack.callback(receiver.server.shutdown)
    hosts = json.dumps([f"127.0.0.1:{slow_host.port}", f"127.0.0.1:{slow_receiver.port}",
                        f"127.0.0.1:{receiver.server.server_port}"])
    srv = bench.start_modelapi(root, cfg, "tenants", stack, step_s=0.0, steps=1, max_queued=100_000,
                               args=("--fetch-timeout-s", "3", "--webhook-timeout-s", "3", "--allowed-input-hosts", hosts))
    from modelapi.core import db
    from modelapi.core.auth import create_key

    engine = db.connect(srv.database_url or "")
    victim = create_key(engine, "victim")[1]
    engine.dispose()
    attacker = srv.key or ""
    victim_round(srv, victim, receiver, 3, 1)  # warm-up: connections, first webhook secret
    cpu0, t0 = srv.cpu(), time.perf_counter()
    rest = victim_round(srv, victim, receiver, args.jobs, args.polls)
    cpu_rest = (srv.cpu() - cpu0) / (time.perf_counter() - t0)
    with Attack(srv, attacker, slow_host, slow_receiver, args) as attack:
        time.sleep(args.ramp_s)  # let the attacks reach their steady state before timing
        cpu0, t0 = srv.cpu(), time.perf_counter()
        under = victim_round(srv, victim, receiver, args.jobs, args.polls)
        cpu_under = (srv.cpu() - cpu0) / (time.perf_counter() - t0)
        answers = dict(sorted(attack.answers.items()))
    return {"config": cfg.label, "rest": rest, "under": under, "attacker": answers,
            "server_cpu": (cpu_rest, cpu_under),
            "slow_host_connections": slow_host.connections, "slow_receiver_connections": slow_receiver.connections}


def report(result: dict) -> bool:
    ok = True
    print(f"\n{result['config']}: victim latency, ms (at rest | under attack | p99 ratio, target <= {TARGET_RATIO:.0f}x)")
    for what in ("submit", "status", "webhook"):
        rest, under = result["rest"][what], result["under"][what]
        ratio = pct(under, 0.99) / max(pct(rest, 0.99), 1e-9)
        ok &= ratio <= TARGET_RATIO  # False for nan: no figure is no pass
        print(f"  {what:8} {summary(rest)} | {summary(under)} | {ratio:5.2f}x {bench.verdict(ratio <= TARGET_RATIO)}")
    timeouts = len(result["rest"]["timeouts"]), len(result["under"]["timeouts"])
    print(f"  victim calls that timed out (counted as the timeout): at rest {timeouts[0]}, under attack {timeouts[1]}")
    print(f"  server CPU while the victim was timed: at rest {result['server_cpu'][0]:.0%}, under attack "
          f"{result['server_cpu'][1]:.0%} of one core")
    print(f"  attacker's answers: {result['attacker']}")
    print(f"  connections to the slow host: {result['slow_host_connections']}, to the slow receiver: "
          f"{result['slow_receiver_connections']}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: sqlite, postgres (default both)")
    parser.add_argument("--jobs", type=int, default=30, help="victim requests per phase (default 30)")
    parser.add_argument("--polls", type=int, default=5, help="status polls per victim request (default 5)")
    parser.add_argument("--fetchers", type=int, default=45, help="attacker clients submitting slow-host requests (default 45)")
    parser.add_argument("--hooks", type=int, default=8, help="attacker requests with a slow receiver per round (default 8)")
    parser.add_argument("--hook-every-s", type=float, default=2.0, help="seconds between those rounds (default 2)")
    parser.add_argument("--streams", type=int, default=150, help="status streams the attacker opens (default 150)")
    parser.add_argument("--ramp-s", type=float, default=5.0, help="seconds of attack before the victim is timed (default 5)")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or set(configs) - set(CONFIGS):
        parser.error(f"--configs: a comma-separated list of {', '.join(CONFIGS)}")
    print(f"modelapi tenant-isolation benchmark: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs; load average before start {os.getloadavg()[0]:.2f}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="modelapi-tenants-"))
    ok = True
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: shutil.rmtree(root, ignore_errors=True))
        for name in configs:
            print(f"\n== {name} ==", flush=True)
            cfg = bench.sqlite_config() if name == "sqlite" else bench.postgres_config(stack, root, False)
            with contextlib.ExitStack() as inner:
                ok &= report(measure(cfg, root, inner, args))
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
