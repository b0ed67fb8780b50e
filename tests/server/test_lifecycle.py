"""Deadlines (``Cancel-After``), stopping a running request (``POST /cancel?running=true``) and
a synchronous wait on submit (``Prefer: wait``), over real HTTP on 127.0.0.1 in both
configurations, with the jobs run by a worker in another process than the API (the fleet's
shape); the SDK and the CLI against the same servers."""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import pytest
import sqlalchemy as sa

from conftest import wait_status, wait_terminal
from modelapi import Client, errors
from modelapi.core import db
from modelapi.core.queue import TaskQueue

SEQ = "bytedance/seedream-4-0/sequential"
SLOW = {"MODELAPI_TEST_STEP_S": "0.3", "MODELAPI_TEST_STEPS": "10"}
"""3 s a request; a series of 5 hands over an image every 2 steps (0.6 s)."""
FIVE = {"text": "Generate 5 images of a lighthouse", "sequential_image_generation_options": 5}


@pytest.fixture
def split(make_server):
    """An API-only server and a worker in another process, on one database and store."""
    api = make_server(args=["--no-worker"], env=SLOW).start()
    make_server("data", command="worker", args=["--worker-id", "other"], env=SLOW).start()
    return api


def seconds(body: dict) -> float:
    """From a result body's created_at to its finished_at."""
    parse = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00"))  # noqa: E731
    return (parse(body["finished_at"]) - parse(body["created_at"])).total_seconds()


def ledger(server, request_id: str) -> list[int]:
    """The billed units of the request's usage rows (none: not billed)."""
    engine = db.connect(server.database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(db.usage.c.billed_units).where(db.usage.c.request_id == request_id)).scalars())
    finally:
        engine.dispose()


def queue_entry(server, workflow_id: str) -> str:
    """The DBOS status of a queue entry."""
    queue = TaskQueue(server.database_url)
    try:
        [found] = queue.client.list_workflows(workflow_ids=[workflow_id], load_input=False, load_output=False)
        return found.status
    finally:
        queue.destroy()


def test_cancel_after_cancels_a_queued_request_at_its_deadline_unbilled_with_no_worker_free(make_server):
    api = make_server(args=["--no-worker", "--deadline-check-s", "0.2"]).start()  # no worker at all: the API sweeps
    with api.client() as c:
        for bad, rule in (("0.5", "at least 1 s"), ("25h", "at most 24 h"), ("soon", "a duration like")):
            resp = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Cancel-After": bad})
            assert resp.status_code == 422 and resp.json()["error_code"] == 422001
            [problem] = resp.json()["detail"]
            assert problem["loc"] == ["header", "Cancel-After"] and rule in problem["msg"]
        assert c.get("/v1/requests").json()["requests"] == [], "a refused header stores nothing"
        keeps = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        assert "cancel-after" in c.get("/v1/models").headers["Modelapi-Features"]
    with Client(api.base_url, api.key) as client:
        late = client.submit(SEQ, {"text": "a fox"}, cancel_after="1s").request_id
        with pytest.raises(errors.ValidationError):
            client.submit(SEQ, {"text": "a fox"}, cancel_after=86_401)
    with api.client() as c:
        wait_status(c, late, "cancelled", timeout_s=10)
        body = c.get(f"/v1/requests/{late}/result", params={"include_cost": "true"}).json()
        assert body["status"] == "cancelled" and body["error"]["code"] == "deadline" and "1 s" in body["error"]["message"]
        assert body["cost"] == 0.0 and "output" not in body
        assert 1.0 <= seconds(body) < 1.0 + 0.2 + 2.0, "cancelled at the deadline, within a sweep interval (and slack)"
        assert c.get(f"/v1/requests/{keeps}/status").json()["status"] == "in_queue"
        assert c.post(f"/v1/requests/{late}/cancel").json() == {"request_id": late, "status": "cancelled", "outcome": "cancelled"}
        # ?running=true on a queued request cancels it as plain cancel does; unknown is 404, a bad flag 422
        for _ in range(2):
            assert c.post(f"/v1/requests/{keeps}/cancel", params={"running": "true"}).json()["outcome"] == "cancelled"
        assert c.post("/v1/requests/req_nope/cancel", params={"running": "true"}).status_code == 404
        assert c.post(f"/v1/requests/{keeps}/cancel", params={"running": "maybe"}).status_code == 422
    assert ledger(api, late) == [] and queue_entry(api, f"{late}.0") == "CANCELLED", "not billed, and off the queue"


def test_cancel_after_stops_a_running_request_and_fails_it_unbilled(split):
    with split.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json=FIVE, headers={"Cancel-After": "2s"}).json()["request_id"]
        wait_status(c, rid, "in_progress")
        body = wait_terminal(c, rid)
        assert body["status"] == "failed" and body["error"]["code"] == "deadline_exceeded", body
        assert 2.0 <= seconds(body) < 3.0, "stopped at its deadline, before the 3 s run would have ended"
        assert c.get(f"/v1/requests/{rid}/result", params={"include_cost": "true"}).json()["cost"] == 0.0
    assert ledger(split, rid) == []


def test_cancel_running_stops_a_series_mid_way_keeping_and_billing_the_finished_images(split):
    with split.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json=FIVE).json()["request_id"]
        deadline = time.monotonic() + 30
        while len((status := c.get(f"/v1/requests/{rid}/status").json()).get("partial_output", {}).get("images", [])) < 2:
            assert status["status"] in ("in_queue", "in_progress") and time.monotonic() < deadline, status
            time.sleep(0.02)
        assert c.post(f"/v1/requests/{rid}/cancel").json() == {
            "request_id": rid, "status": "in_progress", "outcome": "not_cancellable"}, "without the flag: the contract's answer"
        assert "cancel-running" in c.get("/v1/models").headers["Modelapi-Features"]
    with Client(split.base_url, split.key) as client:
        t0 = time.monotonic()
        answer = client.cancel(rid, running=True)
        took = time.monotonic() - t0
    assert answer == {"request_id": rid, "status": "cancelled", "outcome": "cancelled"}
    assert took < 2.0, f"stopped within a step (0.3 s) and a little: {took:.2f} s"
    with split.client() as c:
        body = c.get(f"/v1/requests/{rid}/result", params={"include_cost": "true"}).json()
        images = body["output"]["images"]
        assert body["status"] == "cancelled" and 2 <= len(images) < 5, body
        assert body["cost"] == pytest.approx(0.03 * len(images)) and isinstance(body["seed"], int) and "error" not in body
        for url in images:
            got = httpx.get(url)
            assert got.status_code == 200 and got.content[:2] == b"\xff\xd8", "a stored JPEG"
    assert ledger(split, rid) == [len(images)], "billed per finished image, not the cap of 5"
    proc = split.cli("cancel", "--running", rid, "--base-url", split.base_url, "--api-key", split.key)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outcome"] == "cancelled", "idempotent"


def test_prefer_wait_answers_the_result_when_it_ends_within_the_wait_else_the_submit_answer_after_it(split):
    with split.client() as c:
        for bad in ("wait=61", "wait=0", "wait=soon"):
            resp = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Prefer": bad})
            assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["header", "Prefer"]
        assert c.get("/v1/requests").json()["requests"] == [], "a refused header stores nothing"
        t0 = time.monotonic()
        done = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Prefer": "wait=30"})
        took = time.monotonic() - t0
        assert done.status_code == 200 and done.headers["Preference-Applied"] == "wait=30"
        body = done.json()
        assert body["status"] == "completed" and len(body["output"]["images"]) == 1 and body["seed"] is not None
        assert body == c.get(f"/v1/requests/{body['request_id']}/result").json(), "the result body itself"
        assert took < 30, "answered when it ended, not after the wait"
        t0 = time.monotonic()
        early = c.post(f"/v1/models/{SEQ}", json=FIVE, headers={"Prefer": "wait=1"})
        took = time.monotonic() - t0
        assert early.status_code == 200 and early.headers["Preference-Applied"] == "wait=1"
        assert set(early.json()) == {"request_id", "status_url", "result_url", "cancel_url"}, "the usual answer"
        assert 1.0 <= took < 2.5, took
        assert wait_terminal(c, early.json()["request_id"])["status"] == "completed", "it kept running"
        assert "prefer-wait" in done.headers["Modelapi-Features"]
    # The SDK's run(): the result comes in the submit's answer, in one call.
    sent: list[httpx.Request] = []
    with Client(split.base_url, split.key, event_hooks={"request": [sent.append]}) as client:
        client.features()
        sent.clear()
        result = client.run(SEQ, {"text": "a fox"}, cancel_after=60)
    assert result.update.status_value == "completed" and len(result.images) == 1
    [submit] = sent
    assert submit.headers["Prefer"] == "wait=60" and submit.headers["Cancel-After"] == "60"
