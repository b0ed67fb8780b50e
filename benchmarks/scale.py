"""Scale benchmark: what status polls (with queue_position), submits, listing and /metrics cost on an empty
requests table and on one with ``--rows`` requests (``--queued`` of them in_queue), on SQLite and
on Postgres — figures, not a test.

For each configuration it starts ``modelapi serve --no-worker`` (nothing drains the queue) on a
fresh database, measures the "empty" case (the benchmark's own submits plus 1,000 completed
requests, 20 of them the measured key's, so every listing returns a full page), then inserts the rows straight into the requests table
(one bulk insert, spread over 50 keys; the queue entries of those filler rows are not written,
so DBOS's own tables stay small) and measures again. Each figure is the median and p95 latency
of ``--n`` sequential calls over one keep-alive connection on 127.0.0.1; the polled request is
the LAST queued one (the largest queue_position). Target (issue): loaded <= 1.5 x empty.

Usage::

    python benchmarks/scale.py                       # both configurations, ~1-2 minutes
    python benchmarks/scale.py --configs sqlite --rows 20000 --queued 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # localfleet: the tests' throwaway Postgres

from localfleet import free_port, start_postgres  # noqa: E402
from modelapi.core import db  # noqa: E402
from modelapi.core.queue import EntryId  # noqa: E402

SEQ = "bytedance/seedream-4-0/sequential"
BASELINE_ROWS = 1000


def timed(fn, n: int) -> tuple[float, float]:  # noqa: ANN001
    """(median, p95) of ``n`` calls of ``fn``, ms."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def fill(database_url: str, rows: int, queued: int, key_id: str, prefix: str = "fill") -> None:
    """Insert ``rows`` requests over 50 keys, one of them ``key_id`` (the measured key, so its
    listing pages through thousands of its own requests); ids ``req_<prefix><n>``."""
    engine = db.connect(database_url)
    now = datetime.now(timezone.utc)
    batch = []
    for i in range(rows):
        status = "in_queue" if i >= rows - queued else "completed"
        batch.append(dict(request_id=f"req_{prefix}{i:08d}", owner_key_id=key_id if i % 50 == 0 else f"key_fill{i % 50}", model_id=SEQ, status=status,
                          inputs={"text": "filler"}, input_files=[], seed=i, workflow_id=str(EntryId(f"req_{prefix}{i:08d}", 0)),
                          # queued fillers rank before the polled request: it is the last in line
                          priority=2 + max(0, i - (rows - queued)) // 50, attempts=0, created_at=now,
                          **({"finished_at": now, "billed_units": 3, "cost_usd": 0.09, "progress": 1.0} if status == "completed" else {})))
        if len(batch) == 5000:
            with engine.begin() as conn:
                conn.execute(db.requests.insert(), batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(db.requests.insert(), batch)
    # the planner's statistics and (Postgres) the visibility map, as autovacuum keeps them on a
    # table that grew over time; measuring while autovacuum works through a fresh bulk load would
    # measure the load instead
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("ANALYZE" if engine.dialect.name == "sqlite" else "VACUUM ANALYZE requests"))
    engine.dispose()


def measure(base: str, key: str, n: int) -> dict[str, tuple[float, float]]:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "watched"}).json()["request_id"]
        return {
            "status poll (in_queue, last in line)": timed(lambda: c.get(f"/v1/requests/{rid}/status").raise_for_status(), n),
            "submit": timed(lambda: c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).raise_for_status(), n),
            "/metrics": timed(lambda: c.get("/metrics").raise_for_status(), max(20, n // 10)),
            "listing (first page, 20)": timed(lambda: c.get("/v1/requests").raise_for_status(), n),
            "listing (status=completed)": timed(lambda: c.get("/v1/requests", params={"status": "completed"}).raise_for_status(), n),
            "position": (c.get(f"/v1/requests/{rid}/status").json()["queue_position"], 0),
        }


def run(config: str, args: argparse.Namespace) -> dict[str, dict[str, tuple[float, float]]]:
    tmp = Path(tempfile.mkdtemp(prefix="modelapi-scale-"))
    pg = None
    env = {**os.environ, "MODELAPI_DATA_DIR": str(tmp), "MODELAPI_MAX_QUEUED_PER_KEY": "10000000"}
    if config == "postgres":
        pg = start_postgres()
        env["MODELAPI_DATABASE_URL"] = pg.create_database("scale")
    database_url = env.get("MODELAPI_DATABASE_URL", f"sqlite:///{tmp / 'modelapi.sqlite3'}")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "modelapi", "serve", "--no-worker", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        key = (tmp / "initial_api_key").read_text().strip()
        engine = db.connect(database_url)
        with engine.connect() as conn:
            key_id = conn.execute(sa.select(db.api_keys.c.id)).scalar_one()
        engine.dispose()
        # "empty": one page of completed requests for the measured key (1,000 rows over 50 keys), so
        # both listings return a full page in both cases and only the table's size differs
        fill(database_url, BASELINE_ROWS, 0, key_id, prefix="base")
        empty = measure(base, key, args.n)
        t0 = time.monotonic()
        fill(database_url, args.rows, args.queued, key_id)
        print(f"  [{config}] inserted {args.rows} rows ({args.queued} queued) in {time.monotonic() - t0:.1f} s", flush=True)
        loaded = measure(base, key, args.n)
        return {"empty": empty, "loaded": loaded}
    finally:
        server.terminate()
        server.wait(30)
        if pg is not None:
            pg.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="sqlite,postgres")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=300, help="calls per figure")
    args = parser.parse_args()
    print(f"| figure (median / p95, ms) | config | empty ({BASELINE_ROWS:,} rows) | {args.rows:,} rows ({args.queued:,} queued) | loaded / empty |")
    print("|---|---|---|---|---|")
    for config in args.configs.split(","):
        res = run(config, args)
        for name in ("status poll (in_queue, last in line)", "submit", "/metrics", "listing (first page, 20)",
                     "listing (status=completed)"):
            (e50, e95), (l50, l95) = res["empty"][name], res["loaded"][name]
            print(f"| {name} | {config} | {e50:.2f} / {e95:.2f} | {l50:.2f} / {l95:.2f} | {l50 / e50:.2f}x |", flush=True)
        print(f"| queue_position of the polled request | {config} | {res['empty']['position'][0]} | {res['loaded']['position'][0]} | |")


if __name__ == "__main__":
    main()
