"""Lifecycle benchmark: do the tables and the store stay bounded with retention, what does the
sweeper cost, and do status polls and submits stay as fast while it sweeps — for each
configuration of ``--configs`` (``sqlite``: SQLite + a folder; ``postgres``: Postgres + SeaweedFS
S3, both started here by ``tests/localfleet.py``; see benchmarks/server.py).

1. Bounded vs growing. ``--jobs`` finished requests are written in chunks of ``--chunk``, as
   if one finished every simulated second (bulk inserts through the real tables and queue client:
   the request row, its queue entry marked finished with its step row, as a worker leaves them;
   one stored input and one output object each), once with retention off (nothing sweeps) and
   once on (``--retention-s`` and ``--keep-requests-s`` in simulated seconds; the real sweeper,
   :meth:`modelapi.core.sweep.Sweeper.sweep_once`, runs after every chunk at the simulated
   time). Printed at each quarter: rows in ``requests`` and in the queue's tables (DBOS
   ``workflow_status``, ``workflow_input``, ``operation_outputs``) and objects in the store; and
   the sweeper's CPU time (this process's thread: the database's and the store's own work is not
   in it) and wall time per request whose files it deleted.
2. Polls and submits while it sweeps. A real ``modelapi serve`` (its own sweeper off) over a
   backlog of ``--jobs`` due requests: median and p95 latency of ``--calls`` status polls of a
   completed request and of ``--calls`` submits, one at a time, at rest (before and after; the
   mean of the two) and while a ``modelapi sweep`` process deletes the backlog (target: median at most 1.2x at rest). The
   sweeper works a quarter of the time (:attr:`Sweeper.DUTY`); part 1 measures it without pauses.

Usage::

    python benchmarks/lifecycle.py                          # both configs, 20,000 jobs
    python benchmarks/lifecycle.py --configs sqlite --jobs 5000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server as bench  # noqa: E402  (benchmarks/server.py: configurations, processes, helpers)

from modelapi.core import db  # noqa: E402
from modelapi.core.config import Settings  # noqa: E402
from modelapi.core.context import Core, open_core  # noqa: E402
from modelapi.core.queue import QUEUE_NAME, EntryId  # noqa: E402
from modelapi.core.sweep import Sweeper  # noqa: E402

SEQ = "bytedance/seedream-4-0/sequential"
QUEUE_TABLES = ("workflow_status", "workflow_input", "operation_outputs")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def dbos_table(engine: sa.Engine, name: str) -> str:
    return name if engine.dialect.name == "sqlite" else f"dbos.{name}"


def fill(core: Core, first: int, n: int, key_id: str, pool: ThreadPoolExecutor) -> None:
    """Requests ``first .. first+n-1``, finished at T0 + i seconds, as a worker leaves them."""
    rows, ids = [], []
    for i in range(first, first + n):
        rid = f"req_{i:024x}"
        at = T0 + timedelta(seconds=i)
        ids.append(rid)
        rows.append(dict(request_id=rid, owner_key_id=key_id, model_id=SEQ, status="completed", inputs={"text": "a fox"},
                         input_files=[f"inputs/{rid}/0.png"], seed=i, workflow_id=str(EntryId(rid, 0)), priority=2,
                         attempts=1, progress=1.0, outputs=[f"outputs/{rid}/1/0.jpg"], metadata={"image_count": 1},
                         billed_units=1, cost_usd=0.03, created_at=at, started_at=at, finished_at=at))
    keys = [k for r in rows for k in (*r["input_files"], *r["outputs"])]
    stored = pool.map(lambda k: core.storage.put(k, b"x" * 64, "image/jpeg"), keys)
    with core.db.begin() as conn:
        conn.execute(db.requests.insert(), rows)
        for rid in ids:
            core.queue.client.enqueue_in_transaction(conn, {"queue_name": QUEUE_NAME, "workflow_name": "modelapi.run_request",
                                                            "workflow_id": f"{rid}.0", "app_version": "modelapi-queue-1"}, rid)
        ws, oo = dbos_table(core.db, "workflow_status"), dbos_table(core.db, "operation_outputs")
        conn.execute(sa.text(f"UPDATE {ws} SET status = 'SUCCESS' WHERE workflow_uuid IN :ids")
                     .bindparams(sa.bindparam("ids", expanding=True)), {"ids": [f"{r}.0" for r in ids]})
        conn.execute(sa.text(f"INSERT INTO {oo} (workflow_uuid, function_id, function_name, output) VALUES (:w, 1, '_run_step', 'null')"),
                     [{"w": f"{r}.0"} for r in ids])
    list(stored)


def census(core: Core) -> dict[str, int]:
    with core.db.connect() as conn:
        out = {"requests": conn.execute(sa.select(sa.func.count()).select_from(db.requests)).scalar_one()}
        out["queue rows"] = sum(conn.execute(sa.text(f"SELECT count(*) FROM {dbos_table(core.db, t)}")).scalar_one()
                                for t in QUEUE_TABLES)
    out["objects"] = len(core.storage.keys("inputs/")) + len(core.storage.keys("outputs/"))
    return out


def open_deployment(cfg: bench.Config, root: Path, name: str, **settings) -> Core:  # noqa: ANN003
    data_dir = root / f"{cfg.name}_{name}"
    data_dir.mkdir(parents=True)
    extra, url = cfg.env(f"{cfg.name}_{name}", data_dir)
    os.environ.update({k: v for k, v in extra.items() if k.startswith("AWS_")})
    return open_core(Settings(data_dir=data_dir, database_url=url, storage_url=extra.get("MODELAPI_STORAGE_URL"), **settings),
                     create_initial_key=True)


def bounded(cfg: bench.Config, root: Path, args: argparse.Namespace) -> None:
    print(f"\n== {cfg.label}: {args.jobs} jobs, one per simulated second; retention {args.retention_s} s, "
          f"rows kept {args.keep_requests_s} s (simulated), sweep after every {args.chunk} jobs", flush=True)
    for mode in ("off", "on"):
        core = open_deployment(cfg, root, f"bounded_{mode}", retention_s=args.retention_s, keep_requests_s=args.keep_requests_s,
                               sweep_batch=args.batch)
        sweeper = Sweeper(core.settings, core.jobs, core.storage, duty=1.0)  # no pauses: its whole cost
        key_id = "key_bench"
        cpu = wall = 0.0
        swept = 0
        with ThreadPoolExecutor(8) as pool:
            for first in range(0, args.jobs, args.chunk):
                fill(core, first, min(args.chunk, args.jobs - first), key_id, pool)
                done = first + args.chunk
                if mode == "on":
                    c0, w0 = time.thread_time(), time.perf_counter()
                    result = sweeper.sweep_once(now=T0 + timedelta(seconds=done))
                    cpu += time.thread_time() - c0
                    wall += time.perf_counter() - w0
                    swept += result.requests_expired
                if done % (args.jobs // 4) == 0 or done >= args.jobs:
                    print(f"   retention {mode:3}  after {min(done, args.jobs):6} jobs: "
                          + ", ".join(f"{k} {v:6}" for k, v in census(core).items()), flush=True)
        if mode == "on":
            print(f"   sweeper: {swept} requests' files deleted (2 objects each + queue entry); "
                  f"{cpu * 1000 / max(1, swept):.2f} ms CPU and {wall * 1000 / max(1, swept):.2f} ms wall per request", flush=True)
        core.close()


def timed(fn, n: int) -> tuple[float, float]:  # noqa: ANN001
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), bench.pct(samples, 0.95)


def while_sweeping(cfg: bench.Config, root: Path, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    print(f"\n== {cfg.label}: status poll and submit, at rest vs while `modelapi sweep` deletes {args.jobs} requests' files",
          flush=True)
    given: dict[str, str] = {}
    make_env = cfg.env

    def env(name: str, data_dir: Path) -> tuple[dict[str, str], str]:
        extra, url = make_env(name, data_dir)
        given.update(extra)  # the server's store and its AWS_* variables, for this process too
        return extra, url

    cfg.env = env
    srv = bench.start_modelapi(root, cfg, "sweeping", stack, step_s=0.0, steps=1, max_queued=10**6,
                               args=("--sweep-interval-s", "0"))
    cfg.env = make_env
    os.environ.update({k: v for k, v in given.items() if k.startswith("AWS_")})
    storage_url = given.get("MODELAPI_STORAGE_URL")
    settings = Settings(data_dir=srv.data_dir, database_url=srv.database_url, storage_url=storage_url)
    core = open_core(settings, create_initial_key=False)
    with ThreadPoolExecutor(8) as pool:
        for first in range(0, args.jobs, args.chunk):
            fill(core, first, min(args.chunk, args.jobs - first), "key_filler", pool)
    core.close()
    env = {**os.environ, "MODELAPI_DATA_DIR": str(srv.data_dir), "MODELAPI_DATABASE_URL": srv.database_url or "",
           **({"MODELAPI_STORAGE_URL": storage_url} if storage_url else {})}
    with bench.client(srv) as c:
        rid = c.post(bench.MODEL_PATH, json=bench.BODY).json()["request_id"]
        while c.get(f"/v1/requests/{rid}/status").json()["status"] not in bench.TERMINAL:
            time.sleep(0.05)

        def measure() -> dict[str, tuple[float, float]]:
            return {"status poll": timed(lambda: c.get(f"/v1/requests/{rid}/status").raise_for_status(), args.calls),
                    "submit": timed(lambda: c.post(bench.MODEL_PATH, json=bench.BODY).raise_for_status(), args.calls)}

        measure()  # warm-up
        rest = measure()
        sweep = subprocess.Popen([sys.executable, "-m", "modelapi", "sweep", "--retention-s", "1",
                                  "--keep-requests-s", str(10**9)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(1.0)  # the sweep's start (imports, connection) is not what is measured
        busy = measure()
        running = sweep.poll() is None
        out, _ = sweep.communicate(timeout=1800)
        after = measure()  # at rest again: drifting background load falls on both alike
        rest = {what: tuple(statistics.mean(pair) for pair in zip(rest[what], after[what])) for what in rest}
    printed = out.decode()
    print(f"   (the sweep was {'still running' if running else 'ALREADY DONE'} when the measurement ended; it deleted "
          f"{json.loads(printed[printed.index('{'):]) if '{' in printed else printed.strip()[-300:]})")
    for what in rest:
        (m0, p0), (m1, p1) = rest[what], busy[what]
        print(f"   {what:12}: at rest median {m0:6.2f} ms p95 {p0:6.2f} ms | sweeping median {m1:6.2f} ms p95 {p1:6.2f} ms"
              f" | {m1 / m0:.2f}x {bench.verdict(m1 / m0 <= 1.2)} (<= 1.2x)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="sqlite,postgres")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--retention-s", type=int, default=2000, help="simulated seconds (one job finishes per second)")
    parser.add_argument("--keep-requests-s", type=int, default=5000, help="simulated seconds")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--skip", choices=("bounded", "sweeping"), help="skip one part")
    args = parser.parse_args()
    print(f"lifecycle benchmark on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="modelapi-lifecycle-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        for name in args.configs.split(","):
            cfg = bench.sqlite_config() if name == "sqlite" else bench.postgres_config(stack, root, keep=False)
            if args.skip != "bounded":
                bounded(cfg, root, args)
            if args.skip != "sweeping":
                while_sweeping(cfg, root, args, stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
