"""Server benchmark: submit throughput, submit -> in_progress latency, and status-poll
throughput against a bare FastAPI endpoint, all on this machine over 127.0.0.1 — for each
configuration of ``--configs``, side by side in one run:

- ``sqlite``: SQLite + a local folder (the one-machine default; a fresh data dir per server);
- ``postgres``: Postgres + S3 — a throwaway Postgres cluster and a SeaweedFS S3 store started by
  this script (``tests/localfleet.py``, both on 127.0.0.1; Postgres runs with ``fsync=off``),
  one database and one S3 prefix per server (``MODELAPI_DATABASE_URL``, ``MODELAPI_STORAGE_URL``
  and the ``AWS_*`` variables of the store).

Each configuration runs the same real ``modelapi serve`` process (API + in-process worker, the
drawing test engine from ``tests/``). For the comparison, a bare FastAPI app runs under uvicorn
with the same uvicorn settings as ``modelapi serve`` (one process, ``log_level="warning"``,
default loop and HTTP implementation). This process is the load generator (httpx, keep-alive, one
``Client`` per thread); the servers are separate processes. On a 2-core machine the load
generator, the server and (``postgres``) Postgres and SeaweedFS share the CPUs, so client thread
counts are kept small, and the server's own CPU time per request is printed next to each
throughput (read from ``/proc/<pid>/stat``), plus, for ``postgres``, the CPU time of Postgres and
SeaweedFS per request.

What it prints per configuration (figures, not a test; PASS/FAIL is against the targets):

1. submit throughput, requests/s: ``--submits`` POSTs of a one-image sequential request from
   ``--submit-threads`` concurrent clients, to a server with a near-instant engine
   (``MODELAPI_TEST_STEP_S=0``, 1 step) and ``--max-queued-per-key 100000``. The worker drains
   the queue at the same time (it shares the CPU with the routes, as it does in production).
2. submit -> in_progress, ms (median, p99; target median <= 100 ms on SQLite, <= 150 ms on
   Postgres): ``--samples`` jobs, one at a time to an idle server (each waits for the previous
   job to finish), the status polled every ``--poll-interval-s``; a job counts as started at
   the first poll that answers in_progress or completed, timed from just before the POST is sent
   to when that poll's answer arrives, so the resolution is the poll interval plus one poll
   round trip. The server-side figure (``created_at`` -> ``started_at`` from the database) is
   printed too.
3. status-poll throughput, requests/s, vs ``GET /ping`` of a bare FastAPI app (target: >= 50 %),
   same load generator: ``--poll-threads`` keep-alive clients, ``--duration-s`` seconds on each
   target (after a one-second warm-up), interleaved bare, status, status, bare in halves so that
   drifting background load falls on both alike; the status polled is a completed request's.

Every process it starts (servers, Postgres, SeaweedFS) is stopped and its files removed at the
end, also on an error, Ctrl-C or SIGTERM (``--keep`` keeps the data dirs and logs).

Usage::

    python benchmarks/server.py                      # both configs, about 70 s on two cores
    python benchmarks/server.py --configs sqlite     # SQLite + folder only, about 35 s
    python benchmarks/server.py --submits 500 --samples 100 --duration-s 10
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import httpx

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))  # localfleet: the tests' throwaway Postgres and SeaweedFS

from localfleet import free_port  # noqa: E402

MODEL_PATH = "/v1/models/bytedance/seedream-4-0/sequential"
BODY = {"text": "one image", "image_size": "2048:2048 (1:1)"}
TERMINAL = ("completed", "failed", "cancelled")
TARGET_STATUS_RATIO = 0.50
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUCKET = "modelapi-bench"

BARE_APP = textwrap.dedent(
    """
    import sys

    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()


    @app.get("/ping")
    async def ping():
        return {"status": "ok"}


    # The same uvicorn settings as `modelapi serve` (src/modelapi/api/run.py).
    config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="on")
    uvicorn.Server(config).run()
    """
)


# -- processes ------------------------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process (all its threads), seconds."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process, of its live children, and of the children it has reaped
    (``cutime``/``cstime``): e.g. a Postmaster and its backends, seconds."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    total = sum(int(f) for f in fields[11:15])
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                child = _stat(int(entry.name))
                if int(child[1]) == pid:  # field 4, ppid
                    total += int(child[11]) + int(child[12])
    return total / CLK_TCK


class Proc:
    """A server subprocess on 127.0.0.1, its output in a log file; waits for ``ready_path``.
    It runs in a session of its own, so a Ctrl-C in the terminal reaches only this script,
    which then stops it in order (servers before the database they use)."""

    def __init__(self, name: str, port: int, argv: list[str], env: dict[str, str], log_path: Path, ready_path: str) -> None:
        self.name, self.port = name, port
        self.data_dir: Path | None = None
        self.database_url: str | None = None
        self.key: str | None = None
        self.aux_cpu: Callable[[], float] = lambda: 0.0
        """CPU seconds of the services this server uses (Postgres, SeaweedFS), 0 when none."""
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.ready_path = ready_path

    def wait_ready(self, timeout_s: float = 60) -> "Proc":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start in {timeout_s} s:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- configurations -------------------------------------------------------------------------
@dataclass
class Config:
    """Where a server keeps its requests and files. ``env(name, data_dir)`` gives the extra
    variables of a new server called ``name`` and its database URL; ``aux_cpu`` the CPU seconds
    used so far by the services behind it (none for SQLite)."""

    name: str
    label: str
    target_start_median_ms: float
    env: Callable[[str, Path], tuple[dict[str, str], str]]
    aux_cpu: Callable[[], float] = field(default=lambda: 0.0)
    aux_label: str = ""


def sqlite_config() -> Config:
    def env(_: str, data_dir: Path) -> tuple[dict[str, str], str]:
        return {}, f"sqlite:///{data_dir / 'modelapi.sqlite3'}"

    return Config("sqlite", "SQLite + folder", 100.0, env)


def postgres_config(stack: contextlib.ExitStack, root: Path, keep: bool) -> Config:
    """Start a Postgres cluster and a SeaweedFS S3 store (each stopped and removed by ``stack``)."""
    from localfleet import start_postgres, start_seaweedfs

    if shutil.which("weed") is None:  # run as .venv/bin/python without activating: `weed` is beside it
        os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    t0 = time.perf_counter()
    pg = start_postgres()
    stack.callback(pg.destroy)
    if keep:
        stack.callback(lambda: shutil.copy(pg.root / "log", root / "postgres.log"))
    s3 = start_seaweedfs()
    stack.callback(s3.stop)
    if keep:
        stack.callback(lambda: shutil.copy(s3.root / "weed.log", root / "seaweedfs.log"))
    postmaster = int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
    print(f"    (Postgres on 127.0.0.1:{pg.port}, SeaweedFS S3 on {s3.endpoint}; started in {time.perf_counter() - t0:.1f} s)", flush=True)

    def env(name: str, _: Path) -> tuple[dict[str, str], str]:
        url = pg.create_database(name)
        return {"MODELAPI_DATABASE_URL": url, "MODELAPI_STORAGE_URL": f"s3://{BUCKET}/{name}", **s3.env()}, url

    def aux_cpu() -> float:
        return tree_cpu_seconds(postmaster) + cpu_seconds(s3.proc.pid)

    return Config("postgres", "Postgres + S3 (SeaweedFS)", 150.0, env, aux_cpu, "Postgres+SeaweedFS")


def start_modelapi(root: Path, cfg: Config, name: str, stack: contextlib.ExitStack, *,
                   step_s: float, steps: int, max_queued: int, args: tuple[str, ...] = ()) -> Proc:
    """``modelapi serve`` (API + worker) on configuration ``cfg``, with the extra flags ``args``;
    stopped by ``stack`` at the latest."""
    name = f"{cfg.name}_{name}"
    data_dir = root / name
    data_dir.mkdir(parents=True)
    extra, database_url = cfg.env(name, data_dir)
    env = {k: v for k, v in os.environ.items() if k not in (
        "MODELAPI_API_KEY", "MODELAPI_BASE_URL", "MODELAPI_DATABASE_URL", "MODELAPI_STORAGE_URL")}
    env.update({"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
                "MODELAPI_DATA_DIR": str(data_dir), "MODELAPI_ENGINE": "drawing_engine:make",
                "MODELAPI_TEST_STEP_S": str(step_s), "MODELAPI_TEST_STEPS": str(steps), **extra})
    port = free_port()
    proc = Proc(name, port, [sys.executable, "-m", "modelapi", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--max-queued-per-key", str(max_queued), *args],
                env, root / f"{name}.log", "/healthz")
    stack.callback(proc.stop)
    proc.data_dir, proc.database_url, proc.aux_cpu = data_dir, database_url, cfg.aux_cpu
    proc.wait_ready()
    proc.key = (data_dir / "initial_api_key").read_text().strip()
    return proc


def start_bare(root: Path) -> Proc:
    script = root / "bare_app.py"
    script.write_text(BARE_APP)
    port = free_port()
    return Proc("bare-fastapi", port, [sys.executable, str(script), str(port)], dict(os.environ),
                root / "bare.log", "/ping")


def client(proc: Proc) -> httpx.Client:
    headers = {"Authorization": f"Bearer {proc.key}"} if proc.key else {}
    return httpx.Client(base_url=proc.base_url, headers=headers, timeout=30)


# -- figures --------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def bench_submit(srv: Proc, n: int, threads: int) -> dict:
    clients = [client(srv) for _ in range(threads)]
    for c in clients:  # one warm-up submit per client: opens its connection, not counted
        c.post(MODEL_PATH, json=BODY).raise_for_status()
    lock = threading.Lock()
    left = [n]
    latencies: list[float] = []
    errors: list[str] = []

    def run(c: httpx.Client) -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                r = c.post(MODEL_PATH, json=BODY)
                ok = r.status_code == 200
                if not ok:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as exc:
                ok = False
                errors.append(repr(exc))
            if ok:
                with lock:
                    latencies.append(time.perf_counter() - t0)

    cpu0, acpu0, ccpu0, t0 = srv.cpu(), srv.aux_cpu(), time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=run, args=(c,), daemon=True) for c in clients]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    wall = time.perf_counter() - t0
    cpu, acpu, ccpu = srv.cpu() - cpu0, srv.aux_cpu() - acpu0, time.process_time() - ccpu0
    for c in clients:
        c.close()
    return {"ok": len(latencies), "errors": errors, "wall_s": wall, "rps": len(latencies) / wall,
            "p50_ms": pct(latencies, 0.5) * 1e3 if latencies else float("nan"),
            "p99_ms": pct(latencies, 0.99) * 1e3 if latencies else float("nan"),
            "server_cpu_ms": cpu * 1e3 / max(1, n), "server_cpu_util": cpu / wall, "client_cpu_util": ccpu / wall,
            "aux_cpu_ms": acpu * 1e3 / max(1, n), "aux_cpu_util": acpu / wall}


def server_side_ms(srv: Proc, ids: list[str]) -> list[float]:
    """created_at (row stored, just before the queue entry) -> started_at, from the database."""
    query = "SELECT created_at, started_at FROM requests WHERE request_id = {}"
    if srv.database_url and srv.database_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(srv.database_url) as con:
            rows = [con.execute(query.format("%s"), (rid,)).fetchone() for rid in ids]
    else:
        con = sqlite3.connect(f"file:{srv.data_dir / 'modelapi.sqlite3'}?mode=ro", uri=True)
        try:
            rows = [con.execute(query.format("?"), (rid,)).fetchone() for rid in ids]
        finally:
            con.close()

    def when(value: datetime | str) -> datetime:  # SQLite hands back ISO text, Postgres datetimes
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)

    return [(when(r[1]) - when(r[0])).total_seconds() * 1e3 for r in rows if r and r[0] and r[1]]


def bench_start_latency(srv: Proc, samples: int, poll_interval_s: float) -> dict:
    c = client(srv)
    c.post(MODEL_PATH, json=BODY).raise_for_status()  # warm-up job, not counted
    lat_ms: list[float] = []
    submit_ms: list[float] = []
    first_seen = {"in_progress": 0, "completed": 0, "other": 0}
    ids: list[str] = []
    deadline = time.monotonic() + 120
    rid = c.post(MODEL_PATH, json=BODY).json()["request_id"]  # settle: wait for both warm-ups
    for i in range(samples + 1):
        # Wait for the previous job to finish, so the queue is empty and the worker idle.
        while c.get(f"/v1/requests/{rid}/status").json()["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise RuntimeError("start-latency phase over its 120 s bound")
            time.sleep(0.01)
        if i == samples:
            break
        time.sleep(0.05)
        t0 = time.perf_counter()
        r = c.post(MODEL_PATH, json=BODY)
        t_sub = time.perf_counter()
        r.raise_for_status()
        rid = r.json()["request_id"]
        ids.append(rid)
        submit_ms.append((t_sub - t0) * 1e3)
        while True:
            status = c.get(f"/v1/requests/{rid}/status").json()["status"]
            if status != "in_queue":
                lat_ms.append((time.perf_counter() - t0) * 1e3)
                first_seen[status if status in first_seen else "other"] += 1
                break
            if time.monotonic() > deadline:
                raise RuntimeError("start-latency phase over its 120 s bound")
            time.sleep(poll_interval_s)
    c.close()
    server_ms = server_side_ms(srv, ids)
    return {"n": len(lat_ms), "median_ms": statistics.median(lat_ms), "p99_ms": pct(lat_ms, 0.99),
            "min_ms": min(lat_ms), "max_ms": max(lat_ms), "first_seen": first_seen,
            "submit_median_ms": statistics.median(submit_ms),
            "server_median_ms": statistics.median(server_ms) if server_ms else float("nan"),
            "server_p99_ms": pct(server_ms, 0.99) if server_ms else float("nan")}


def hammer(proc: Proc, path: str, threads: int, duration_s: float, warmup_s: float = 0.0) -> dict:
    """GET ``path`` from ``threads`` keep-alive clients; count 200s over ``duration_s`` after a warm-up."""
    stop = threading.Event()
    counts = [0] * threads
    errors = [0] * threads

    def run(i: int) -> None:
        with client(proc) as c:
            while not stop.is_set():
                try:
                    if c.get(path).status_code == 200:
                        counts[i] += 1
                    else:
                        errors[i] += 1
                except httpx.HTTPError:
                    errors[i] += 1

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    time.sleep(warmup_s + 0.2)  # 0.2 s: let every client connect before counting
    n0, e0, cpu0, acpu0, ccpu0, t0 = sum(counts), sum(errors), proc.cpu(), proc.aux_cpu(), time.process_time(), time.perf_counter()
    time.sleep(duration_s)
    n1, e1, cpu1, acpu1, ccpu1, t1 = sum(counts), sum(errors), proc.cpu(), proc.aux_cpu(), time.process_time(), time.perf_counter()
    stop.set()
    for w in workers:
        w.join(30)
    return {"n": n1 - n0, "errors": e1 - e0, "wall_s": t1 - t0, "server_cpu_s": cpu1 - cpu0,
            "aux_cpu_s": acpu1 - acpu0, "client_cpu_s": ccpu1 - ccpu0}


def compare(a: tuple[Proc, str], b: tuple[Proc, str], threads: int, duration_s: float) -> tuple[dict, dict]:
    """``duration_s`` of load on each of a and b, in the order a, b, b, a (half each), so that a
    drift in background load over the run falls on both alike; one second of warm-up each first."""
    hammer(*a, threads, 0.0, warmup_s=1.0)
    hammer(*b, threads, 0.0, warmup_s=1.0)
    runs: dict[int, list[dict]] = {0: [], 1: []}
    for which in (0, 1, 1, 0):
        runs[which].append(hammer(*(a, b)[which], threads, duration_s / 2))
    out = []
    for which in (0, 1):
        total = {k: sum(r[k] for r in runs[which]) for k in runs[which][0]}
        wall = total["wall_s"]
        out.append({"n": total["n"], "errors": total["errors"], "rps": total["n"] / wall,
                    "halves_rps": [r["n"] / r["wall_s"] for r in runs[which]],
                    "server_cpu_us": total["server_cpu_s"] * 1e6 / max(1, total["n"]),
                    "aux_cpu_us": total["aux_cpu_s"] * 1e6 / max(1, total["n"]),
                    "server_cpu_util": total["server_cpu_s"] / wall, "client_cpu_util": total["client_cpu_s"] / wall})
    return out[0], out[1]


# -- one configuration ----------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def measure(cfg: Config, root: Path, bare: Proc, stack: contextlib.ExitStack, args: argparse.Namespace) -> dict:
    """The three figures on one configuration; prints them as they come."""
    # 1. submit throughput ------------------------------------------------------------------
    fast = start_modelapi(root, cfg, "fast", stack, step_s=0.0, steps=1, max_queued=100_000)
    sub = bench_submit(fast, args.submits, args.submit_threads)
    fast.stop()
    aux_sub = f" + {sub['aux_cpu_ms']:.1f} ms {cfg.aux_label} (util {sub['aux_cpu_util']:.2f})" if cfg.aux_label else ""
    print(f"\n[{cfg.name} 1] submit throughput: {sub['rps']:.1f} req/s  ({sub['ok']}/{args.submits} ok in {sub['wall_s']:.2f} s, "
          f"{args.submit_threads} clients; latency p50 {sub['p50_ms']:.1f} ms, p99 {sub['p99_ms']:.1f} ms; "
          f"server CPU {sub['server_cpu_ms']:.1f} ms/submit incl. worker, util {sub['server_cpu_util']:.2f} cores{aux_sub}; "
          f"client util {sub['client_cpu_util']:.2f})  (no target)", flush=True)
    for e in sub["errors"][:3]:
        print(f"    error: {e}")

    # 2. submit -> in_progress, and 3. status polls, on a server with a slower job ------------
    slow = start_modelapi(root, cfg, "slow", stack, step_s=0.05, steps=2, max_queued=100_000)
    lat = bench_start_latency(slow, args.samples, args.poll_interval_s)
    ok_lat = lat["median_ms"] <= cfg.target_start_median_ms
    print(f"\n[{cfg.name} 2] submit -> in_progress: median {lat['median_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms "
          f"(min {lat['min_ms']:.1f}, max {lat['max_ms']:.1f}; n={lat['n']}, poll every {args.poll_interval_s * 1e3:g} ms; "
          f"first seen {lat['first_seen']})  target median <= {cfg.target_start_median_ms:.0f} ms: {verdict(ok_lat)}")
    print(f"    submit response median {lat['submit_median_ms']:.1f} ms; server-side created_at -> started_at "
          f"median {lat['server_median_ms']:.1f} ms, p99 {lat['server_p99_ms']:.1f} ms", flush=True)

    with client(slow) as c:
        rid = c.post(MODEL_PATH, json=BODY).json()["request_id"]
        deadline = time.monotonic() + 30
        while c.get(f"/v1/requests/{rid}/status").json()["status"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.02)
        polled = c.get(f"/v1/requests/{rid}/status").json()["status"]
    # The server's CPU while idle (its worker polling the queue, heartbeats): counted in its CPU
    # per request below, though no poll causes it; printed so the poll's own cost can be read off.
    cpu0, t0 = slow.cpu(), time.perf_counter()
    time.sleep(2.0)
    idle_ms_s = (slow.cpu() - cpu0) * 1e3 / (time.perf_counter() - t0)
    # Same load generator, threads and duration for both, interleaved bare, status, status, bare.
    b, s = compare((bare, "/ping"), (slow, f"/v1/requests/{rid}/status"), args.poll_threads, args.duration_s)
    s["net_cpu_us"] = s["server_cpu_us"] - idle_ms_s * 1e3 / s["rps"]
    slow.stop()
    ratio = s["rps"] / b["rps"] if b["rps"] else float("nan")
    ok_ratio = ratio >= TARGET_STATUS_RATIO
    aux_poll = f" + {s['aux_cpu_us']:.0f} us {cfg.aux_label}" if cfg.aux_label else ""
    print(f"\n[{cfg.name} 3] bare FastAPI GET /ping:  {b['rps']:.0f} req/s  (n={b['n']}, halves {b['halves_rps'][0]:.0f}/{b['halves_rps'][1]:.0f}, errors {b['errors']}; "
          f"server CPU {b['server_cpu_us']:.0f} us/req, util {b['server_cpu_util']:.2f}; client util {b['client_cpu_util']:.2f})")
    print(f"    GET /v1/requests/{{id}}/status ({polled}): {s['rps']:.0f} req/s  (n={s['n']}, halves {s['halves_rps'][0]:.0f}/{s['halves_rps'][1]:.0f}, errors {s['errors']}; "
          f"server CPU {s['server_cpu_us']:.0f} us/req{aux_poll}, util {s['server_cpu_util']:.2f}; client util {s['client_cpu_util']:.2f})")
    print(f"    the server idle: {idle_ms_s:.0f} ms/s of CPU (its worker's queue polling): {idle_ms_s * 1e3 / s['rps']:.0f} us of each "
          f"poll's figure; the poll's own {s['net_cpu_us']:.0f} us/req = {b['server_cpu_us'] / s['net_cpu_us']:.1%} of bare")
    cpu_ratio = b["server_cpu_us"] / s["server_cpu_us"] if s["server_cpu_us"] else float("nan")
    print(f"    status / bare = {ratio:.1%} of throughput ({cpu_ratio:.1%} by server CPU per request{', ' + cfg.aux_label + ' not counted' if cfg.aux_label else ''})  "
          f"target >= {TARGET_STATUS_RATIO:.0%}: {verdict(ok_ratio)}", flush=True)
    return {"cfg": cfg, "sub": sub, "lat": lat, "ok_lat": ok_lat, "bare": b, "status": s,
            "ratio": ratio, "cpu_ratio": cpu_ratio, "ok_ratio": ok_ratio}


def table(results: list[dict], args: argparse.Namespace) -> str:
    """The markdown table: one column per configuration."""
    def row(figure: str, cell: Callable[[dict], str], target: str = "-") -> str:
        return f"| {figure} | " + " | ".join(cell(r) for r in results) + f" | {target} |"

    targets = " / ".join(f"<= {r['cfg'].target_start_median_ms:.0f} ms" for r in results)
    lines = [
        "| figure | " + " | ".join(r["cfg"].label for r in results) + " | target |",
        "|---|" + "---|" * len(results) + "---|",
        row(f"submit throughput ({args.submits} submits, {args.submit_threads} clients)", lambda r: f"{r['sub']['rps']:.1f} req/s"),
        row(f"submit -> in_progress, median (n={args.samples})",
            lambda r: f"{r['lat']['median_ms']:.1f} ms {verdict(r['ok_lat'])}", targets),
        row("submit -> in_progress, p99", lambda r: f"{r['lat']['p99_ms']:.1f} ms"),
        row(f"bare FastAPI `/ping` ({args.poll_threads} clients, {args.duration_s:g} s)", lambda r: f"{r['bare']['rps']:.0f} req/s"),
        row(f"status poll `/v1/requests/{{id}}/status` ({args.poll_threads} clients, {args.duration_s:g} s)",
            lambda r: f"{r['status']['rps']:.0f} req/s"),
        row("status poll / bare endpoint (throughput)", lambda r: f"{r['ratio']:.1%} {verdict(r['ok_ratio'])}",
            f">= {TARGET_STATUS_RATIO:.0%}"),
        row("status poll / bare endpoint (server CPU per request)", lambda r: f"{r['cpu_ratio']:.1%}"),
    ]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------
CONFIGS = ("sqlite", "postgres")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated configurations, measured in the order given: sqlite (SQLite + folder), "
                             "postgres (Postgres + S3 on SeaweedFS, started here) (default sqlite,postgres)")
    parser.add_argument("--submits", type=int, default=200, help="submits timed for throughput (default 200)")
    parser.add_argument("--submit-threads", type=int, default=8, help="concurrent submit clients (default 8)")
    parser.add_argument("--samples", type=int, default=50, help="jobs timed submit -> in_progress (default 50)")
    parser.add_argument("--poll-interval-s", type=float, default=0.002, help="status poll interval while timing a start (default 0.002)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="seconds of load per poll-throughput run (default 5)")
    parser.add_argument("--poll-threads", type=int, default=4, help="load-generator threads for poll throughput (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dirs and server logs (and the Postgres and SeaweedFS logs)")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs or len(set(configs)) != len(configs):
        parser.error(f"--configs: a comma-separated list of {', '.join(CONFIGS)}, each at most once (got {args.configs!r})")

    import fastapi
    import starlette
    import uvicorn

    print(f"modelapi server benchmark: {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, fastapi {fastapi.__version__}, starlette {starlette.__version__}, "
          f"uvicorn {uvicorn.__version__}, httpx {httpx.__version__}; configs {', '.join(configs)}; load average before start "
          f"{os.getloadavg()[0]:.2f} (other work on this machine skews every figure)", flush=True)
    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="modelapi-bench-"))
    results: list[dict] = []

    def on_sigterm(*_: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = {sig: signal.signal(sig, on_sigterm) for sig in (signal.SIGTERM, signal.SIGHUP)}
    stack = contextlib.ExitStack()
    try:
        with stack:
            # Unwound last to first: servers stop before the Postgres and SeaweedFS they use.
            stack.callback(lambda: shutil.rmtree(root, ignore_errors=True) if not args.keep else print(f"\n(kept {root})"))
            bare = start_bare(root)
            stack.callback(bare.stop)
            bare.wait_ready()
            try:
                for name in configs:
                    print(f"\n== {name} ==", flush=True)
                    cfg = sqlite_config() if name == "sqlite" else postgres_config(stack, root, args.keep)
                    results.append(measure(cfg, root, bare, stack, args))
            finally:
                # A second Ctrl-C must not cut the clean-up short.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                for sig in previous:
                    signal.signal(sig, signal.SIG_IGN)
                print("\n(stopping servers" + (", Postgres and SeaweedFS" if "postgres" in configs else "") + ")", flush=True)
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}); every process stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    print()
    print(table(results, args))
    print(f"\n(total {time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
