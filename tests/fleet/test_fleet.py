"""The fleet on a real Postgres and a real SeaweedFS (both started by fixtures): API-only
processes and separate workers, crash takeover, a Postgres restart, presigned URLs, fair share,
unique worker ids, the role boundaries and the light client install. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from conftest import TESTS, ServerProcess, assert_refused, tampered, wait_status, wait_terminal
from localfleet import start_postgres

SEQ = "bytedance/seedream-4-0/sequential"
ROOT = TESTS.parent


def events(*servers: ServerProcess, names: tuple[str, ...] = ("request.in_progress", "request.restarted", "request.completed")) -> list[dict]:
    """The JSON log events ``names`` of ``servers``, in time order, each with ``ts`` parsed."""
    found = []
    for srv in servers:
        for line in srv.log().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") in names:
                    entry["ts"] = datetime.fromisoformat(entry["ts"]).timestamp()
                    found.append(entry)
    return sorted(found, key=lambda e: e["ts"])


def fleet(tmp_path: Path, config_env: dict[str, str], *, apis: int, workers: int, worker_args: list[str] = (),
          env: dict[str, str] | None = None) -> tuple[list[ServerProcess], list[ServerProcess]]:
    """``apis`` API-only processes and ``workers`` workers on one database and bucket, started
    at once (so the migrations run concurrently)."""
    api_procs = [ServerProcess(tmp_path / f"api{i}", args=["--no-worker"], config_env=config_env, env=env) for i in range(apis)]
    worker_procs = [ServerProcess(tmp_path / f"w{i}", command="worker", config_env=config_env, env=env,
                                  args=["--worker-id", f"w{i}", *worker_args]) for i in range(workers)]
    for proc in [*api_procs, *worker_procs]:
        proc.data_dir.mkdir(parents=True)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(api_procs) + len(worker_procs)) as pool:
        list(pool.map(lambda p: p.start(), [*api_procs, *worker_procs]))
    keys = [p.data_dir / "initial_api_key" for p in api_procs if (p.data_dir / "initial_api_key").exists()]
    assert len(keys) == 1, "exactly one API process creates the first key"
    for p in api_procs:
        if not (p.data_dir / "initial_api_key").exists():
            (p.data_dir / "initial_api_key").write_text(keys[0].read_text())
    return api_procs, worker_procs


@pytest.fixture
def fleet_env(fleet_services):
    return fleet_services.config_env()


@pytest.fixture
def stop_all():
    procs: list[ServerProcess] = []
    yield procs.extend
    for p in reversed(procs):
        p.stop()


def test_two_apis_three_workers_run_each_job_exactly_once(tmp_path, fleet_env, stop_all):
    apis, workers = fleet(tmp_path, fleet_env, apis=2, workers=3,
                          env={"MODELAPI_TEST_STEP_S": "0.05", "MODELAPI_TEST_STEPS": "3"})
    stop_all(apis + workers)
    clients = [a.client() for a in apis]
    ids = [clients[i % 2].post(f"/v1/models/{SEQ}", json={"text": f"shot {i}"}).json()["request_id"] for i in range(30)]
    finals = [wait_terminal(clients[i % 2], rid, timeout_s=120) for i, rid in enumerate(ids)]
    assert [f["status"] for f in finals] == ["completed"] * 30
    # every output is a presigned URL of the bucket, downloadable
    assert "X-Amz-Signature=" in finals[0]["output"]["images"][0]
    assert httpx.get(finals[0]["output"]["images"][0]).content[:3] == b"\xff\xd8\xff"  # JPEG, --output-format default
    runs = events(*workers)
    completed = [e["request_id"] for e in runs if e["event"] == "request.completed"]
    assert sorted(completed) == sorted(ids), "each job completed exactly once"
    started = [e["request_id"] for e in runs if e["event"] != "request.completed"]
    assert sorted(started) == sorted(ids), "each job ran exactly once"
    by_worker = {w: sum(1 for e in runs if e["event"] == "request.completed" and e["worker"] == w) for w in ("w0", "w1", "w2")}
    assert all(n > 0 for n in by_worker.values()), by_worker
    listed = apis[0].cli("workers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(w["worker_id"] for w in json.loads(listed.stdout)) == ["w0", "w1", "w2"]
    metrics = clients[0].get("/metrics").text
    assert 'modelapi_requests{model="bytedance/seedream-4-0/sequential",status="completed"} 30.0' in metrics
    assert "modelapi_workers_live 3.0" in metrics
    worker_metrics = httpx.get(workers[0].base_url + "/metrics", headers=apis[0].headers()).text
    assert "modelapi_job_duration_seconds_count" in worker_metrics and "modelapi_worker_busy" in worker_metrics
    assert 'modelapi_stage_seconds_count{stage="inference"}' in worker_metrics
    for c in clients:
        c.close()


def test_a_killed_worker_s_job_is_taken_over_and_never_runs_twice_at_once(tmp_path, fleet_env, stop_all):
    apis, workers = fleet(tmp_path, fleet_env, apis=1, workers=2, worker_args=["--worker-timeout-s", "2"],
                          env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "20"})
    stop_all(apis + workers)
    with apis[0].client() as c:
        ids = [c.post(f"/v1/models/{SEQ}", json={"text": f"long {i}"}).json()["request_id"] for i in range(4)]
        deadline = time.monotonic() + 30
        while not (running := httpx.get(workers[0].base_url + "/healthz", headers=apis[0].headers()).json()["running"]):
            assert time.monotonic() < deadline, "w0 never took a job"
            time.sleep(0.02)
        victim = running[0]
        workers[0].kill9()
        killed_at = time.time()
        finals = {rid: wait_terminal(c, rid, timeout_s=120) for rid in ids}
    assert all(f["status"] == "completed" for f in finals.values()), finals
    runs = events(*workers)
    takeover = [e for e in runs if e["request_id"] == victim and e["worker"] == "w1"]
    assert takeover and takeover[0]["event"] == "request.restarted" and takeover[0]["ts"] >= killed_at + 1
    assert takeover[-1]["event"] == "request.completed"
    for rid in ids:  # no run of a job overlaps another run of the same job
        mine = [e for e in runs if e["request_id"] == rid]
        open_run = None
        for e in mine:
            if e["event"] == "request.completed":
                assert open_run is not None
                open_run = None
            else:
                assert open_run is None or (open_run["worker"] == "w0" and e["ts"] > killed_at), (rid, mine)
                open_run = e
    assert "went back on the queue" in workers[1].log()


def test_postgres_restart_mid_run_answers_503_then_every_job_completes(tmp_path, fleet_services, stop_all):
    pg = start_postgres()
    try:
        config_env = {**fleet_services.config_env(), "MODELAPI_DATABASE_URL": pg.create_database("outage")}
        srv = ServerProcess(tmp_path / "data", config_env=config_env, args=["--worker-timeout-s", "2"],
                            env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "10"}).start()
        stop_all([srv])
        with srv.client() as c:
            ids = [c.post(f"/v1/models/{SEQ}", json={"text": f"s {i}"}).json()["request_id"] for i in range(3)]
            wait_status(c, ids[0], "in_progress")
            pg.stop()
            for resp in (c.get(f"/v1/requests/{ids[1]}/status"), c.post(f"/v1/models/{SEQ}", json={"text": "x"}),
                         c.get("/v1/models"), c.get(f"/v1/requests/{ids[0]}/result")):
                assert resp.status_code == 503, resp.text
                assert resp.json()["error_code"] == 503001 and resp.headers["Retry-After"] == "5"
            assert httpx.get(srv.base_url + "/healthz").status_code == 503
            time.sleep(1.5)  # the running job reaches its end while the database is down
            pg.start()
            finals = [wait_terminal(c, rid, timeout_s=120) for rid in ids]
        assert [f["status"] for f in finals] == ["completed"] * 3
        assert srv.proc.poll() is None and "another worker took the id" not in srv.log()  # its worker lived on
        srv.stop()  # while its database is still there
    finally:
        pg.destroy()


def test_a_worker_restarted_under_its_id_while_another_is_idle_loses_nothing(tmp_path, fleet_env, stop_all):
    apis, workers = fleet(tmp_path, fleet_env, apis=1, workers=2, worker_args=["--worker-timeout-s", "2"],
                          env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "10"})
    stop_all(apis + workers)
    with apis[0].client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "restarted"}).json()["request_id"]
        wait_status(c, rid, "in_progress")
        runner = next(w for w in workers if rid in httpx.get(w.base_url + "/healthz", headers=apis[0].headers()).json()["running"])
        runner.kill9()
        runner.start()  # the same --worker-id, at once
        result = wait_terminal(c, rid, timeout_s=60)
    assert result["status"] == "completed"
    runs = [e for e in events(*workers) if e["request_id"] == rid]
    assert [e["event"] for e in runs] == ["request.in_progress", "request.restarted", "request.completed"], runs


def test_output_urls_expire_and_refuse_tampering(make_server):
    srv = make_server(args=["--url-ttl-s", "3"]).start()
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "one image"}).json()["request_id"]
        result = wait_terminal(c, rid)
    url = result["output"]["images"][0]
    assert httpx.get(url).status_code == 200  # before expiry
    assert_refused(tampered(url))
    expires_at = datetime.fromisoformat(result["finished_at"].replace("Z", "+00:00")).timestamp() + 3
    time.sleep(max(0.0, expires_at + 1.5 - time.time()))
    assert_refused(url)


def test_fair_share_a_single_job_waits_behind_at_most_one(make_server):
    srv = make_server(env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "4"}).start()
    created = srv.cli("keys", "create", "--name", "b")
    key_b = created.stdout.strip().splitlines()[-1]
    with srv.client() as a, srv.client(key_b) as b:
        a_ids = [a.post(f"/v1/models/{SEQ}", json={"text": f"a{i}"}).json()["request_id"] for i in range(20)]
        b_id = b.post(f"/v1/models/{SEQ}", json={"text": "b"}).json()["request_id"]
        assert b.get(f"/v1/requests/{b_id}/status").json()["queue_position"] <= 1
        # A's jobs that had started by then (on a loaded machine, some start while A submits)
        started = sum(a.get(f"/v1/requests/{rid}/status").json()["status"] != "in_queue" for rid in a_ids)
        wait_terminal(b, b_id, timeout_s=60)
        for rid in a_ids:
            wait_terminal(a, rid, timeout_s=60)
    order = [e["request_id"] for e in events(srv, names=("request.in_progress",))]
    # B waits behind at most one more of A's: the one a worker already holds (one job ahead)
    assert order.index(b_id) <= started + 1, f"B started {order.index(b_id)}th, {started} of A's had started"
    assert [r for r in order if r != b_id] == a_ids, "one key's jobs keep their order"


def test_a_second_live_worker_with_the_same_id_refuses_to_start(make_server):
    first = make_server("w", command="worker", args=["--worker-id", "gpu0"]).start()
    second = make_server("w", command="worker", args=["--worker-id", "gpu0"])
    with pytest.raises(RuntimeError, match="worker id 'gpu0' is in use by another live worker"):
        second.start()
    assert second.proc.returncode == 2
    first.kill9()
    second.start()  # the id is free again at once after its holder died


@pytest.mark.parametrize(("modules", "forbidden"), [
    ("modelapi.api.app, modelapi.api.service, modelapi.api.run", ("torch", "diffusers", "modelapi.worker", "modelapi.engine")),
    ("modelapi.worker.main, modelapi.worker.runtime", ("modelapi.api", "fastapi")),
])
def test_roles_import_only_their_side(modules, forbidden):
    code = (f"import sys, {modules}\n"
            f"bad = [m for m in sys.modules if m == {forbidden!r} or m.startswith(tuple(f + '.' for f in {forbidden!r})) or m in {forbidden!r}]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_api_only_process_never_loads_torch(make_server):
    srv = make_server(args=["--no-worker"]).start()
    assert "torch" not in Path(f"/proc/{srv.proc.pid}/maps").read_text(), "API-only must not load torch"
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "waits for a worker"}).json()["request_id"]
        assert c.get(f"/v1/requests/{rid}/status").json()["status"] == "in_queue"
        assert c.get("/healthz").json()["workers"] == 0
    worker = make_server("data", command="worker", args=["--worker-id", "late"]).start()
    with srv.client() as c:
        assert wait_terminal(c, rid)["status"] == "completed"
    assert "request.completed" in worker.log()


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_client_only_install_pulls_no_server_dependency(tmp_path, server):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True, timeout=600,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    script = (
        "import importlib.util, sys\n"
        "missing = [m for m in ('torch', 'fastapi', 'dbos', 'sqlalchemy', 'diffusers') if importlib.util.find_spec(m)]\n"
        "assert not missing, missing\n"
        "from modelapi import Client\n"
        "with Client(sys.argv[1], sys.argv[2]) as client:\n"
        "    result = client.run('bytedance/seedream-4-0/sequential', {'text': 'Generate 2 images of a boat'}, timeout_s=60)\n"
        "print(len(result['output']['images']))\n"
    )
    out = subprocess.run([str(py), "-c", script, server.base_url, server.key], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
    cli = subprocess.run([str(venv / "bin" / "modelapi"), "serve"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and 'pip install "modelapi[server,engine]"' in cli.stderr


def test_max_running_per_key_caps_one_key_across_workers(tmp_path, fleet_env, stop_all):
    apis, workers = fleet(tmp_path, fleet_env, apis=1, workers=2, worker_args=["--max-running-per-key", "1"],
                          env={"MODELAPI_TEST_STEP_S": "0.05", "MODELAPI_TEST_STEPS": "4"})
    stop_all(apis + workers)
    created = apis[0].cli("keys", "create", "--name", "b")
    key_b = created.stdout.strip().splitlines()[-1]
    with apis[0].client() as a, apis[0].client(key_b) as b:
        a_ids = [a.post(f"/v1/models/{SEQ}", json={"text": f"a{i}"}).json()["request_id"] for i in range(4)]
        b_ids = [b.post(f"/v1/models/{SEQ}", json={"text": f"b{i}"}).json()["request_id"] for i in range(4)]
        for client, rid in [*((a, r) for r in a_ids), *((b, r) for r in b_ids)]:
            assert wait_terminal(client, rid, timeout_s=60)["status"] == "completed"
    for ids in (a_ids, b_ids):  # one key's runs never overlap, though two workers were free
        runs = [e for e in events(*workers) if e["request_id"] in ids]
        running = 0
        for e in runs:
            running += 1 if e["event"] == "request.in_progress" else -1
            assert running <= 1, runs
    both = events(*workers, names=("request.in_progress",))
    assert {e["worker"] for e in both} == {"w0", "w1"}, "the two keys ran side by side"
