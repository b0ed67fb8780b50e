"""Push benchmark: how soon a job's completion reaches a client by each push channel, and how
many open status streams one API process holds while its status polls stay fast — figures,
not a test (PASS/FAIL against the targets of the push issue).

1. Completion -> client, ms (median and p99 over ``--jobs`` jobs; target median <= 100 ms each):
   for every job, one at a time, a status stream (httpx-sse), a long-poll
   (``GET /result?wait=60``) and a webhook receiver on 127.0.0.1 wait at once; each arrival is
   timed against the job's ``finished_at`` (written by the worker in the completing
   transaction; same machine, same clock).
2. Open streams: ``--streams`` status streams held open on queued requests (one asyncio client
   in this process), then status-poll throughput against a bare FastAPI endpoint, as in
   benchmarks/server.py (target: >= 50 % of the bare endpoint with 500 streams open); the
   same figure with no stream open is printed for comparison.

Both run ``modelapi serve`` (API + in-process worker, the drawing test engine from tests/, SQLite
+ folder). Usage::

    python benchmarks/push.py                     # about a minute on two cores
    python benchmarks/push.py --jobs 20 --streams 200
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse, connect_sse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server as bench  # noqa: E402  (benchmarks/server.py: processes, load generator)

SEQ = "/v1/models/bytedance/seedream-4-0/sequential"
TARGET_MS = 100.0


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Receiver:
    """Webhook receiver on 127.0.0.1: records when each request's delivery arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                at = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.arrived[body["request_id"]] = at
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def latencies(srv: bench.Proc, jobs: int) -> dict[str, list[float]]:
    receiver = Receiver()
    out: dict[str, list[float]] = {"stream": [], "long-poll": [], "webhook": []}
    with bench.client(srv) as c, bench.client(srv) as s, bench.client(srv) as lp:
        for _ in range(jobs):
            rid = c.post(SEQ, params={"webhook": receiver.url}, json={"text": "one image"}).json()["request_id"]
            at: dict[str, float] = {}

            def stream() -> None:
                with connect_sse(s, "GET", f"/v1/requests/{rid}/status/stream") as source:
                    for event in source.iter_sse():
                        if json.loads(event.data)["status"] == "completed":
                            at["stream"] = time.time()

            def long_poll() -> None:
                body = lp.get(f"/v1/requests/{rid}/result", params={"wait": 60}).json()
                assert body["status"] == "completed", body
                at["long-poll"] = time.time()

            threads = [threading.Thread(target=stream), threading.Thread(target=long_poll)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            deadline = time.monotonic() + 30
            while rid not in receiver.arrived and time.monotonic() < deadline:
                time.sleep(0.005)
            finished = epoch(c.get(f"/v1/requests/{rid}/result").json()["finished_at"])
            at["webhook"] = receiver.arrived[rid]
            for channel, when in at.items():
                out[channel].append((when - finished) * 1000)
    receiver.server.shutdown()
    return out


async def hold_streams(base_url: str, key: str, ids: list[str], opened: threading.Event, stop: threading.Event) -> int:
    """Open one status stream per id and keep them open until ``stop``; returns how many opened."""
    count = 0
    limits = httpx.Limits(max_connections=len(ids) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                                 timeout=httpx.Timeout(30, read=None)) as client:

        async def one(rid: str) -> None:
            nonlocal count
            async with aconnect_sse(client, "GET", f"/v1/requests/{rid}/status/stream") as source:
                async for _ in source.aiter_sse():
                    count += 1
                    if count == len(ids):
                        opened.set()
                    while not stop.is_set():
                        await asyncio.sleep(0.2)
                    return

        await asyncio.gather(*(one(rid) for rid in ids), return_exceptions=True)
    return count


def open_streams(srv: bench.Proc, bare: bench.Proc, n: int, threads: int, duration_s: float) -> dict:
    with bench.client(srv) as c:
        running = c.post(SEQ, json={"text": "runs for the whole benchmark"}).json()["request_id"]
        ids = [c.post(SEQ, json={"text": f"queued {i}"}).json()["request_id"] for i in range(n)]
    path = f"/v1/requests/{running}/status"
    before = bench.compare((bare, "/ping"), (srv, path), threads, duration_s)
    opened, stop = threading.Event(), threading.Event()
    result: list[int] = []
    holder = threading.Thread(target=lambda: result.append(asyncio.run(hold_streams(srv.base_url, srv.key or "", ids, opened, stop))))
    holder.start()
    if not opened.wait(120):
        raise RuntimeError("the streams did not all open")
    during = bench.compare((bare, "/ping"), (srv, path), threads, duration_s)
    stop.set()
    holder.join(60)
    return {"streams": n, "before": before[1]["rps"] / before[0]["rps"], "during": during[1]["rps"] / during[0]["rps"],
            "bare_rps": during[0]["rps"], "status_rps": during[1]["rps"], "errors": during[1]["errors"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--poll-threads", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=6.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="modelapi-push-"))
    cfg = bench.sqlite_config()
    os.environ["MODELAPI_ALLOW_PRIVATE_URLS"] = "true"  # the webhook receiver is on 127.0.0.1
    with contextlib.ExitStack() as stack:
        fast = bench.start_modelapi(root, cfg, "latency", stack, step_s=0.02, steps=2, max_queued=100_000)
        print(f"completion -> client over {args.jobs} jobs (SQLite + folder, 127.0.0.1):", flush=True)
        lat = latencies(fast, args.jobs)
        for channel, values in lat.items():
            med = statistics.median(values)
            print(f"  {channel:10s} median {med:6.1f} ms   p99 {bench.pct(values, 0.99):6.1f} ms   "
                  f"target median <= {TARGET_MS:.0f} ms: {bench.verdict(med <= TARGET_MS)}")
        fast.stop()
        slow = bench.start_modelapi(root, cfg, "streams", stack, step_s=60, steps=100, max_queued=100_000)
        bare = bench.start_bare(root)
        stack.callback(bare.stop)
        bare.wait_ready()
        held = open_streams(slow, bare, args.streams, args.poll_threads, args.duration_s)
        print(f"status polls vs the bare endpoint, {args.poll_threads} clients:")
        print(f"  no stream open:        {held['before']:.1%}")
        print(f"  {held['streams']} streams open:     {held['during']:.1%} ({held['status_rps']:.0f} vs {held['bare_rps']:.0f} req/s, "
              f"{held['errors']} errors)   target >= 50%: {bench.verdict(held['during'] >= 0.5)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
