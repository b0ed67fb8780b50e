"""Accounts benchmark: submit throughput of a key with limits and a budget (``rpm``,
``max_queued``, a model allow-list and ``budget_usd`` per month, all high enough never to refuse)
vs a key with none, on the same ``modelapi serve`` process, in each configuration of
``--configs`` (SQLite + folder; Postgres + S3 on a throwaway Postgres and SeaweedFS), reusing
``benchmarks/server.py``'s processes and load generator. Target: limits on >= 90 % of off.

Each submit of either key takes the key's row and counts its queue in the submit's transaction
(:mod:`modelapi.core.accounts`); "on" adds the rate window's count (in the same statement) and the
budget's reservation (one more UPDATE). The two keys are measured in the order off, on, on, off
(``--submits`` / (2 x ``--rounds``) each run, ``--rounds`` times) so that drifting background load falls on both alike; each run is
``server.py``'s submit phase (``--threads`` keep-alive clients, a one-image sequential request,
a near-instant engine draining the queue meanwhile).

Usage::

    python benchmarks/accounts.py                      # both configs, about 60 s on two cores
    python benchmarks/accounts.py --configs sqlite --submits 400
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server as bench  # noqa: E402  (benchmarks/server.py: processes, configurations, the submit phase)

TARGET = 0.90
SEQ = "bytedance/seedream-4-0/sequential"


def create_key(srv: bench.Proc, **fields: object) -> str:
    resp = httpx.post(srv.base_url + "/v1/admin/keys", json=fields, headers={"Authorization": f"Bearer {srv.key}"}, timeout=30)
    resp.raise_for_status()
    return resp.json()["key"]


def measure(cfg: bench.Config, root: Path, stack: contextlib.ExitStack, submits: int, threads: int, rounds: int) -> dict:
    srv = bench.start_modelapi(root, cfg, "accounts", stack, step_s=0.0, steps=1, max_queued=1_000_000)
    keys = {
        "off": create_key(srv, name="no limits"),
        "on": create_key(srv, name="limits", models=[SEQ], rpm=1_000_000, max_queued=1_000_000,
                         budget_usd=1e9, budget_period="month"),
    }
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for which in ("off", "on", "on", "off") * rounds:
        srv.key = keys[which]
        result = bench.bench_submit(srv, submits // (2 * rounds), threads)
        if result["errors"]:
            raise RuntimeError(f"{which}: {len(result['errors'])} submits failed, e.g. {result['errors'][0]}")
        runs[which].append(result)
    out = {}
    for which, results in runs.items():
        n = sum(r["ok"] for r in results)
        wall = sum(r["wall_s"] for r in results)
        out[which] = {"rps": n / wall, "p50_ms": sum(r["p50_ms"] for r in results) / len(results),
                      "server_cpu_ms": sum(r["server_cpu_ms"] for r in results) / len(results)}
    out["ratio"] = out["on"]["rps"] / out["off"]["rps"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--submits", type=int, default=400, help="submits per key, over all its runs")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of off, on, on, off")
    args = parser.parse_args()
    print(f"# accounts benchmark, {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)

    def on_sigterm(*_: object) -> None:  # unwind: every server, Postgres and SeaweedFS stopped
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    results = {}
    with tempfile.TemporaryDirectory(prefix="modelapi-bench-accounts-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        for name in args.configs.split(","):
            t0 = time.perf_counter()
            cfg = bench.sqlite_config() if name == "sqlite" else bench.postgres_config(stack, root, False)
            with contextlib.ExitStack() as per_config:
                results[name] = measure(cfg, root, per_config, args.submits, args.threads, args.rounds)
            print(f"    ({name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\n| figure ({args.submits} submits per key, {args.threads} clients) | "
          + " | ".join(results) + " | target |")
    print("|---|" + "---|" * len(results) + "---|")
    for which, label in (("off", "submit throughput, key without limits"), ("on", "submit throughput, key with limits and a budget")):
        print(f"| {label} | " + " | ".join(f"{r[which]['rps']:.1f} req/s" for r in results.values()) + " | - |")
    for which in ("off", "on"):
        print(f"| server CPU per submit, {which} | " + " | ".join(f"{r[which]['server_cpu_ms']:.2f} ms" for r in results.values()) + " | - |")
    print("| limits on / off (throughput) | " + " | ".join(
        f"{r['ratio']:.1%} {'PASS' if r['ratio'] >= TARGET else 'FAIL'}" for r in results.values()) + f" | >= {TARGET:.0%} |")


if __name__ == "__main__":
    main()
