"""Upstream worker benchmark: figures, not a test.

One real upstream worker process (``modelapi worker --backends modelark``) runs seedream
requests routed to the fake ModelArk of ``tests/fake_modelark.py`` (its own process, on
127.0.0.1), on SQLite (a file) or Postgres (a throwaway cluster from ``tests/localfleet.py``),
outputs in a folder. Requests are put on the queue directly (``JobStore.create``, as the API's
submit does), so the figures are the worker's, not the API's.

1. **Throughput** with a fake answering at once (one 2048x2048 image per request, streamed as
   b64): requests completed per second end to end (first enqueue to last completed), and the
   worker's CPU seconds per request (``/proc/<pid>/stat``: user + system), which includes
   decoding the provider's image and re-encoding it as our JPEG.
2. **In flight** with a fake whose first byte comes after ``--slow-s`` (10) seconds: the most
   requests one worker process holds at once (``--concurrency``, default 256), and the worker's
   CPU while it holds them (cores = CPU seconds / wall seconds over the holding window; target
   >= 200 in flight at under one core).

Usage::

    python benchmarks/upstream.py                     # both databases, 200 + 250 requests
    python benchmarks/upstream.py --configs sqlite --jobs 100 --inflight 220
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from localfleet import free_port, start_postgres  # noqa: E402
from modelapi import catalog  # noqa: E402
from modelapi.core import db  # noqa: E402
from modelapi.core.config import Settings  # noqa: E402
from modelapi.core.context import open_core  # noqa: E402
from modelapi.types import Status  # noqa: E402
from modelapi.validation import check_input  # noqa: E402

SEQ = "bytedance/seedream-4-0/sequential"
FAKE = """
import sys, threading
from fake_modelark import FakeModelArk
fake = FakeModelArk()
fake.slow_s = float(sys.argv[1])
print(fake.base_url, flush=True)
threading.Event().wait()
"""
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.requests.c.status, sa.func.count()).group_by(db.requests.c.status)).all()
    return {s: n for s, n in rows}


def wait_for(predicate, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def scenario(db_url: str, tmp: Path, n: int, slow_s: float, concurrency: int) -> dict[str, float]:
    """Run ``n`` requests through one upstream worker on a fake whose first byte comes after
    ``slow_s`` seconds (0: at once)."""
    fake = subprocess.Popen([sys.executable, "-c", FAKE, str(slow_s)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "tests")})
    assert fake.stdout is not None
    base_url = fake.stdout.readline().strip()
    env = {**os.environ, "MODELAPI_DATA_DIR": str(tmp), "MODELAPI_DATABASE_URL": db_url,
           "MODELAPI_ROUTES": f'{{"{SEQ}": ["modelark"]}}', "MODELAPI_MODELARK_API_KEY": "ark-test-key",
           "MODELAPI_MODELARK_BASE_URL": base_url, "MODELAPI_LOG_LEVEL": "WARNING"}
    port = free_port()
    worker = subprocess.Popen([sys.executable, "-m", "modelapi", "worker", "--backends", "modelark", "--worker-id",
                               f"bench-{port}", "--metrics-port", str(port), "--concurrency", str(concurrency)],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"worker-{port}.log", "wb"))
    settings = Settings(data_dir=tmp, database_url=db_url, routes={SEQ: ["modelark"]})
    core = open_core(settings, create_initial_key=False)
    try:
        import httpx

        wait_for(lambda: _up(httpx, port), 60, "the worker")
        inputs = check_input(catalog.models()[SEQ].input_schema, {
            "text": "a heron" + (" [slow]" if slow_s else ""), "image_size": "2048:2048 (1:1)",
            "sequential_image_generation_options": 1})[0]
        cpu0, t0 = cpu_s(worker.pid), time.monotonic()
        for i in range(n):
            core.jobs.create(request_id=f"req_{port}_{i:05d}", owner_key_id=f"key_{i % 8}", model_id=SEQ, inputs=inputs,
                             input_files=[], seed=i, idempotency_key=None, body_hash=None, upstream=True)
        out: dict[str, float] = {}
        if slow_s:
            peak, held_at = 0, None
            while time.monotonic() - t0 < slow_s - 0.5:
                running = counts(core.db).get(Status.IN_PROGRESS.value, 0)
                if running > peak:
                    peak, held_at = running, (time.monotonic(), cpu_s(worker.pid))
                time.sleep(0.1)
            t1, cpu1 = time.monotonic(), cpu_s(worker.pid)
            assert held_at is not None
            out["in_flight_peak"] = peak
            out["holding_cores"] = (cpu1 - held_at[1]) / max(1e-6, t1 - held_at[0])
            out["ramp_s"] = held_at[0] - t0
        wait_for(lambda: counts(core.db).get(Status.COMPLETED.value, 0) + counts(core.db).get(Status.FAILED.value, 0) >= n,
                 600, "every request")
        wall, cpu = time.monotonic() - t0, cpu_s(worker.pid) - cpu0
        failed = counts(core.db).get(Status.FAILED.value, 0)
        out.update({"jobs": n, "failed": failed, "wall_s": wall, "jobs_per_s": n / wall, "cpu_ms_per_job": 1000 * cpu / n})
        return out
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        fake.kill()
        fake.wait()
        core.close()


def _up(httpx, port: int) -> bool:  # noqa: ANN001
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="sqlite,postgres")
    parser.add_argument("--jobs", type=int, default=200, help="requests of the throughput run")
    parser.add_argument("--inflight", type=int, default=250, help="requests of the in-flight run")
    parser.add_argument("--slow-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} cores", flush=True)
    rows = []
    pg = None
    try:
        for config in args.configs.split(","):
            tmp = Path(tempfile.mkdtemp(prefix=f"modelapi-upstream-{config}-"))
            if config == "postgres":
                pg = pg or start_postgres()
                url = lambda name: pg.create_database(name)  # noqa: E731
            else:
                url = lambda name: f"sqlite:///{tmp / (name + '.sqlite3')}"  # noqa: E731
            fast = scenario(url("fast"), tmp, args.jobs, 0.0, args.concurrency)
            print(config, "at once:", {k: round(v, 3) for k, v in fast.items()}, flush=True)
            slow = scenario(url("slow"), tmp, args.inflight, args.slow_s, args.concurrency)
            print(config, f"after {args.slow_s:g} s:", {k: round(v, 3) for k, v in slow.items()}, flush=True)
            rows.append((config, fast, slow))
    finally:
        if pg is not None:
            pg.destroy()
    print("\n| | " + " | ".join(c for c, _, _ in rows) + " |\n|---|" + "---|" * len(rows))
    print("| jobs/s, fake answering at once | " + " | ".join(f"{f['jobs_per_s']:.1f}" for _, f, _ in rows) + " |")
    print("| worker CPU per job, ms | " + " | ".join(f"{f['cpu_ms_per_job']:.0f}" for _, f, _ in rows) + " |")
    print(f"| in flight at once (fake answering after {args.slow_s:g} s) | "
          + " | ".join(f"{s['in_flight_peak']:.0f}" for _, _, s in rows) + " |")
    print("| worker cores while holding them | " + " | ".join(f"{s['holding_cores']:.2f}" for _, _, s in rows) + " |")
    for config, _, s in rows:
        verdict = "PASS" if s["in_flight_peak"] >= 200 and s["holding_cores"] < 1.0 else "FAIL"
        print(f"{config}: >= 200 in flight at under one core: {verdict}")


if __name__ == "__main__":
    main()
