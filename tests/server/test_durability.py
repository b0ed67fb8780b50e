"""The durable queue: kill -9 and restart, SIGTERM, cancel, and per-key isolation."""

from __future__ import annotations

import json
import time

import httpx

from conftest import wait_status, wait_terminal

SEQ = "bytedance/seedream-4-0/sequential"


def completed_events(server) -> list[str]:
    ids = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "request.completed":
                ids.append(entry["request_id"])
    return ids


def test_kill9_while_running_then_restart_loses_nothing(make_server):
    env = {"MODELAPI_TEST_STEP_S": "0.05", "MODELAPI_TEST_STEPS": "4"}
    srv = make_server(env=env).start()
    with srv.client() as c:
        ids = [c.post(f"/v1/models/{SEQ}", json={"text": f"shot {i}"}).json()["request_id"] for i in range(20)]
        # wait until some job is in progress, past the first one
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [c.get(f"/v1/requests/{r}/status").json()["status"] for r in ids]
            if "in_progress" in states and states.count("completed") >= 2:
                break
            time.sleep(0.01)
        assert "in_progress" in states, states
    started = [json.loads(line)["request_id"] for line in srv.log().splitlines()
               if line.startswith("{") and '"request.in_progress"' in line]
    assert started == ids[: len(started)], "jobs must start in submission order"
    srv.kill9()
    srv.start()  # same data dir, same port
    with srv.client() as c:
        finals = [wait_terminal(c, r, timeout_s=60) for r in ids]
    assert all(f["status"] == "completed" for f in finals), [f["status"] for f in finals]
    events = completed_events(srv)
    assert sorted(set(events)) == sorted(ids)
    assert len(events) == len(set(events)), "a request was completed twice"
    # every output exists once per image
    for f in finals:
        assert len(f["output"]["images"]) == 1


def test_sigterm_lets_the_running_job_finish_and_exits_cleanly(make_server):
    srv = make_server(env={"MODELAPI_TEST_STEP_S": "0.2", "MODELAPI_TEST_STEPS": "5"}).start()
    with srv.client() as c:
        first = c.post(f"/v1/models/{SEQ}", json={"text": "a"}).json()["request_id"]
        second = c.post(f"/v1/models/{SEQ}", json={"text": "b"}).json()["request_id"]
        wait_status(c, first, "in_progress")
    assert srv.terminate() == 0
    srv.start()
    with srv.client() as c:
        assert c.get(f"/v1/requests/{first}/result").json()["status"] == "completed"  # finished before exit
        assert wait_terminal(c, second)["status"] == "completed"  # kept in the queue, run after restart


def test_sigterm_past_the_grace_period_hands_the_job_back(make_server):
    srv = make_server(args=["--shutdown-grace-s", "0.3"], env={"MODELAPI_TEST_STEP_S": "0.5", "MODELAPI_TEST_STEPS": "20"}).start()
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "long"}).json()["request_id"]
        wait_status(c, rid, "in_progress")
    assert srv.terminate() == 0
    assert "request.handed_back" in srv.log()
    srv.env["MODELAPI_TEST_STEP_S"] = "0.01"
    srv.start()
    with srv.client() as c:
        assert wait_terminal(c, rid)["status"] == "completed"


def test_cancel_queued_in_progress_and_twice(make_server):
    srv = make_server(env={"MODELAPI_TEST_STEP_S": "0.2", "MODELAPI_TEST_STEPS": "5"}).start()
    with srv.client() as c:
        running = c.post(f"/v1/models/{SEQ}", json={"text": "a"}).json()["request_id"]
        queued = c.post(f"/v1/models/{SEQ}", json={"text": "b"}).json()["request_id"]
        later = c.post(f"/v1/models/{SEQ}", json={"text": "c"}).json()["request_id"]  # queued behind it
        wait_status(c, running, "in_progress")
        first = c.post(f"/v1/requests/{queued}/cancel").json()
        assert first == {"request_id": queued, "status": "cancelled", "outcome": "cancelled"}
        assert c.post(f"/v1/requests/{queued}/cancel").json() == first  # idempotent
        busy = c.post(f"/v1/requests/{running}/cancel").json()
        assert busy == {"request_id": running, "status": "in_progress", "outcome": "not_cancellable"}
        assert wait_terminal(c, running)["status"] == "completed"
        done = c.post(f"/v1/requests/{running}/cancel").json()
        assert done["outcome"] == "not_cancellable" and done["status"] == "completed"
        # The queue runs in order: once the request queued behind the cancelled one has run, the
        # cancelled one's turn is past.
        assert wait_terminal(c, later)["status"] == "completed"
        result = c.get(f"/v1/requests/{queued}/result").json()
        assert result["status"] == "cancelled" and "output" not in result
    started = [json.loads(line)["request_id"] for line in srv.log().splitlines()
               if line.startswith("{") and '"request.in_progress"' in line]
    assert started == [running, later], "the cancelled request never started"


def test_keys_isolation_and_revocation(make_server):
    srv = make_server().start()
    created = srv.cli("keys", "create", "--name", "tenant-b")
    assert created.returncode == 0, created.stderr
    key_b = created.stdout.strip().splitlines()[-1]
    assert key_b.startswith("mapi_")
    with srv.client() as a, srv.client(key_b) as b:
        rid = a.post(f"/v1/models/{SEQ}", json={"text": "mine"}).json()["request_id"]
        for path in ("status", "result"):
            r = b.get(f"/v1/requests/{rid}/{path}")
            assert r.status_code == 404 and r.json()["error_code"] == 404001
        assert b.post(f"/v1/requests/{rid}/cancel").status_code == 404
        assert a.get(f"/v1/requests/{rid}/status").status_code == 200
        listed = srv.cli("keys", "list")
        assert "tenant-b" in listed.stdout and key_b not in listed.stdout  # only a prefix is shown
        key_id = next(line.split()[1] for line in listed.stdout.splitlines() if "tenant-b" in line)
        assert srv.cli("keys", "revoke", key_id).returncode == 0
        r = b.get("/v1/models")
        assert r.status_code == 401 and r.json()["error_code"] == 401001
        wait_terminal(a, rid)
    usage = srv.cli("usage")
    assert usage.returncode == 0 and "initial" in usage.stdout and "0.0900" in usage.stdout


def test_initial_key_file_is_private(make_server):
    srv = make_server().start()
    path = srv.data_dir / "initial_api_key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert srv.key.startswith("mapi_")
    assert srv.key not in srv.log() and str(path) in srv.log()  # where it is, said once at first start
    srv.stop()
    srv.start()
    assert srv.log().count("Created the first API key") == 1
    assert httpx.get(srv.base_url + "/v1/models", headers=srv.headers()).status_code == 200


def test_a_request_interrupted_max_attempts_times_fails_with_a_clear_error(make_server):
    srv = make_server(args=["--max-attempts", "2"], env={"MODELAPI_TEST_STEP_S": "0.2", "MODELAPI_TEST_STEPS": "50"}).start()
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "never finishes"}).json()["request_id"]
        after = c.post(f"/v1/models/{SEQ}", json={"text": "runs after"}).json()["request_id"]
    for _ in range(2):  # two runs, each killed mid-way
        with srv.client() as c:
            wait_status(c, rid, "in_progress")
        srv.kill9()
        srv.start()
    srv.env["MODELAPI_TEST_STEP_S"] = "0.01"
    srv.kill9()
    srv.start()
    with srv.client() as c:
        failed = wait_terminal(c, rid)
        assert failed["status"] == "failed"
        assert failed["error"] == {"code": "interrupted", "message": "the worker stopped 2 times while running this request"}
        assert wait_terminal(c, after)["status"] == "completed"
