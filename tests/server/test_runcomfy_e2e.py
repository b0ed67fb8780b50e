"""The `runcomfy` backend against a second real `modelapi serve` as the upstream (the same
contract as the hosted service): the front server in both configurations, the upstream on its
own SQLite database (with --allow-private-urls, so it can fetch our storage's reference URLs on
127.0.0.1)."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from httpx_sse import connect_sse
from PIL import Image

from conftest import ServerProcess, wait_terminal
from modelapi._models import Queued, parse_status
from test_backends_e2e import png_data_uri

SEQ = "bytedance/seedream-4-0/sequential"
EDIT = "bytedance/seedream-4-0/edit-sequential"


@pytest.fixture
def upstream(tmp_path):
    srv = ServerProcess(tmp_path / "upstream", args=["--allow-private-urls"]).start()
    yield srv
    srv.stop()


def pixels(url: str) -> tuple[tuple[int, int], tuple[int, int, int]]:
    image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB")
    return image.size, image.getpixel((image.width // 2, image.height // 2))


def test_seed_bodies_in_the_same_outputs_out(make_server, upstream):
    front = make_server(env={
        "MODELAPI_ROUTES": f'{{"{SEQ}": ["runcomfy"], "{EDIT}": ["runcomfy"]}}',
        "MODELAPI_RUNCOMFY_API_KEY": upstream.key, "MODELAPI_RUNCOMFY_BASE_URL": upstream.base_url,
    }).start()
    body = {"text": "Generate 2 images of a lighthouse", "seed": 4242, "image_size": "2048:2048 (1:1)",
            "sequential_image_generation_options": 2}
    with front.client() as c, upstream.client() as u:
        ours = wait_terminal(c, c.post(f"/v1/models/{SEQ}", json=body).json()["request_id"])
        direct = wait_terminal(u, u.post(f"/v1/models/{SEQ}", json=body).json()["request_id"])
        assert ours["status"] == "completed", ours
        assert ours["metadata"]["backend"] == "runcomfy" and ours["metadata"]["upstream"]["request_id"].startswith("req_")
        assert u.get(f"/v1/requests/{ours['metadata']['upstream']['request_id']}/status").json()["status"] == "completed"
        assert all(upstream.base_url not in url for url in ours["output"]["images"])
        assert [pixels(x) for x in ours["output"]["images"]] == [pixels(x) for x in direct["output"]["images"]]

        edit = wait_terminal(c, c.post(f"/v1/models/{EDIT}", json={
            "text": "the same boat at night", "images": [png_data_uri((80, 60), (10, 10, 200))],
            "sequential_image_generation_options": 1}).json()["request_id"])
        assert edit["status"] == "completed", edit
        assert len(edit["output"]["images"]) == 1


def test_an_upstream_refusal_is_not_retried_and_names_the_upstream_message(make_server, tmp_path):
    strict = ServerProcess(tmp_path / "strict", args=["--allow-private-urls"],
                           env={"MODELAPI_MAX_INPUT_PIXELS": "1000"}).start()  # refuses what we accept
    try:
        front = make_server(env={
            "MODELAPI_ROUTES": f'{{"{EDIT}": ["runcomfy", "local"]}}',
            "MODELAPI_RUNCOMFY_API_KEY": strict.key, "MODELAPI_RUNCOMFY_BASE_URL": strict.base_url,
        }).start()
        with front.client() as c:
            result = wait_terminal(c, c.post(f"/v1/models/{EDIT}", json={
                "text": "a boat", "images": [png_data_uri((80, 60), (10, 10, 200))]}).json()["request_id"])
    finally:
        strict.stop()
    assert result["status"] == "failed" and result["error"]["code"] == "upstream_rejected", result
    assert "RunComfy 422" in result["error"]["message"]


def test_a_clients_cancel_is_forwarded_while_the_upstream_queues_it(make_server, tmp_path):
    """The upstream has no worker: its requests stay queued. Ours runs on the runcomfy backend,
    in_progress, with the upstream's side (queue position included) recorded and shown; our cancel goes to
    the upstream's cancel_url, and both ends are cancelled."""
    import sqlalchemy as sa

    from modelapi.core import db

    queued = ServerProcess(tmp_path / "queued", args=["--allow-private-urls", "--no-worker"]).start()
    try:
        front = make_server(env={
            "MODELAPI_ROUTES": f'{{"{SEQ}": ["runcomfy", "local"]}}',
            "MODELAPI_RUNCOMFY_API_KEY": queued.key, "MODELAPI_RUNCOMFY_BASE_URL": queued.base_url,
        }).start()
        body = {"text": "a lighthouse", "seed": 7, "sequential_image_generation_options": 1}
        engine = db.connect(front.database_url)
        with front.client() as c, queued.client() as u:
            ahead = u.post(f"/v1/models/{SEQ}", json=body).json()["request_id"]  # ours will be second upstream
            rid = c.post(f"/v1/models/{SEQ}", json=body).json()["request_id"]
            deadline = time.monotonic() + 30
            record = None
            while record is None or record.get("queue_position") is None:
                assert time.monotonic() < deadline, f"no upstream record: {c.get(f'/v1/requests/{rid}/status').json()}"
                time.sleep(0.05)
                with engine.connect() as conn:
                    record = conn.execute(sa.select(db.requests.c.upstream).where(db.requests.c.request_id == rid)).scalar()
            assert (record["backend"], record["status"], record["queue_position"]) == ("runcomfy", "in_queue", 1), record
            assert record["cancel_url"] == f"{queued.base_url}/v1/requests/{record['request_id']}/cancel"
            status = c.get(f"/v1/requests/{rid}/status").json()
            assert (status["status"], status["queue_position"]) == ("in_queue", 1), status  # the upstream's position

            answer = c.post(f"/v1/requests/{rid}/cancel").json()
            assert (answer["status"], answer["outcome"]) == ("cancelled", "cancelled"), answer
            assert u.get(f"/v1/requests/{record['request_id']}/status").json()["status"] == "cancelled"
            assert u.get(f"/v1/requests/{ahead}/status").json()["status"] == "in_queue"  # only ours
            # the worker sees the upstream cancelled: its run is outdated, ours stays cancelled (no fallback to local)
            deadline = time.monotonic() + 30
            while "request.outdated_run" not in front.log():
                assert time.monotonic() < deadline, front.log()[-3000:]
                time.sleep(0.05)
            result = c.get(f"/v1/requests/{rid}/result").json()
            assert result["status"] == "cancelled" and "output" not in result, result
            assert c.post(f"/v1/requests/{rid}/cancel").json()["outcome"] == "cancelled"  # idempotent
        engine.dispose()
    finally:
        queued.stop()


def wait_status(client: httpx.Client, request_id: str, until: Callable[[dict], bool], timeout_s: float = 30) -> dict:
    """The request's status body once ``until`` holds of it."""
    deadline = time.monotonic() + timeout_s
    while not until(status := client.get(f"/v1/requests/{request_id}/status").json()):
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_our_status_shows_the_upstreams_queue_position_then_its_progress(make_server, tmp_path):
    """The upstream has no worker at first and a request ahead of ours. While it queues ours, our
    status is in_queue at the upstream's position (GET /status, the listing, a long-poll, the
    status stream): 1, then 0 once the one ahead is cancelled there; then in_progress once a
    worker of the upstream runs it; then completed. The stream's event ids grow throughout."""
    queued = ServerProcess(tmp_path / "queued", args=["--no-worker"]).start()
    upstream_worker = ServerProcess(tmp_path / "queued", command="worker",  # the same SQLite database
                                    env={"MODELAPI_TEST_STEP_S": "0.3", "MODELAPI_TEST_STEPS": "10"})  # 3 s a request
    events: list[tuple[int, dict]] = []
    try:
        front = make_server(env={
            "MODELAPI_ROUTES": f'{{"{SEQ}": ["runcomfy"]}}',
            "MODELAPI_RUNCOMFY_API_KEY": queued.key, "MODELAPI_RUNCOMFY_BASE_URL": queued.base_url,
        }).start()
        body = {"text": "a lighthouse", "seed": 7, "sequential_image_generation_options": 1}
        with front.client() as c, queued.client() as u:
            ahead = u.post(f"/v1/models/{SEQ}", json=body).json()["request_id"]
            rid = c.post(f"/v1/models/{SEQ}", json=body).json()["request_id"]
            # alone in our queue, ours is at 0 there: 1 is the upstream's position
            status = wait_status(c, rid, lambda s: s.get("queue_position") == 1)
            assert status == {"request_id": rid, "status": "in_queue", "queue_position": 1,
                              "status_url": f"{front.base_url}/v1/requests/{rid}/status",
                              "result_url": f"{front.base_url}/v1/requests/{rid}/result"}
            typed = parse_status(status)
            assert isinstance(typed, Queued) and typed.position == 1
            listed = {r["request_id"]: r for r in c.get("/v1/requests").json()["requests"]}[rid]
            assert (listed["status"], listed["queue_position"]) == ("in_queue", 1), listed
            polled = c.get(f"/v1/requests/{rid}/result", params={"wait": 0.2}).json()
            assert (polled["status"], polled["queue_position"]) == ("in_queue", 1), polled

            def follow() -> None:
                with httpx.Client(base_url=front.base_url, headers=front.headers(), timeout=120) as s, \
                        connect_sse(s, "GET", f"/v1/requests/{rid}/status/stream") as source:
                    events.extend((int(e.id), json.loads(e.data)) for e in source.iter_sse() if e.event == "status")

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            deadline = time.monotonic() + 30
            while not events:
                assert time.monotonic() < deadline, "no stream event"
                time.sleep(0.05)

            assert u.post(f"/v1/requests/{ahead}/cancel").json()["outcome"] == "cancelled"
            status = wait_status(c, rid, lambda s: s.get("queue_position") == 0)
            assert status["status"] == "in_queue", status
            upstream_worker.start()
            status = wait_status(c, rid, lambda s: s["status"] != "in_queue", timeout_s=60)
            assert status["status"] == "in_progress" and "queue_position" not in status, status
            result = wait_terminal(c, rid)
            assert result["status"] == "completed", result
            reader.join(30)
            assert not reader.is_alive(), "the stream did not end at the terminal state"
    finally:
        upstream_worker.stop()
        queued.stop()
    ids, bodies = [i for i, _ in events], [b for _, b in events]
    assert ids == sorted(set(ids)), events  # strictly growing
    order = {"in_queue": 0, "in_progress": 1, "completed": 2}
    assert [order[b["status"]] for b in bodies] == sorted(order[b["status"]] for b in bodies), bodies
    assert bodies[-1]["status"] == "completed" and "in_progress" in [b["status"] for b in bodies], bodies
    positions = [b["queue_position"] for b in bodies if b["status"] == "in_queue"]
    assert positions[0] == 1 and positions[-1] == 0 and positions == sorted(positions, reverse=True), bodies
