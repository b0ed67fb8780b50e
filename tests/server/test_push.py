"""Push instead of polling, over real HTTP on 127.0.0.1: status streams (server-sent events),
long-polls of the result, and listing a key's requests — with the jobs run by another process
(an API-only server and a separate worker), in both configurations."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import pytest
from httpx_sse import connect_sse

from conftest import wait_terminal

SEQ = "bytedance/seedream-4-0/sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"
SLOW = {"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "8"}


@pytest.fixture
def split(make_server):
    """An API-only server and a worker in another process, on one database and store."""
    api = make_server(args=["--no-worker"], env=SLOW).start()
    make_server("data", command="worker", args=["--worker-id", "other"], env=SLOW).start()
    return api


def stream(client: httpx.Client, request_id: str, last_event_id: str | None = None) -> list[tuple[str, dict]]:
    """Every (id, status body) of one connection, until the server closes it."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with connect_sse(client, "GET", f"/v1/requests/{request_id}/status/stream", headers=headers) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(e.id, json.loads(e.data)) for e in source.iter_sse() if e.event == "status"]


def test_a_stream_shows_positions_falling_and_progress_growing_and_ends_at_the_terminal_state(split):
    with split.client() as c:
        ids = [c.post(f"/v1/models/{SEQ}", json={"text": f"one image {i}"}).json()["request_id"] for i in range(3)]
        events = stream(c, ids[2])
        bodies = [b for _, b in events]
        assert all(set(b) <= {"request_id", "status", "queue_position", "progress", "status_url", "result_url"} for b in bodies)
        assert bodies[-1]["status"] == "completed" and all(b["status"] != "completed" for b in bodies[:-1])
        positions = [b["queue_position"] for b in bodies if b["status"] == "in_queue"]
        assert positions and positions == sorted(positions, reverse=True) and len(set(positions)) == len(positions)
        assert positions[0] >= 1 and positions[-1] == 0, positions
        progress = [b["progress"] for b in bodies if b["status"] == "in_progress"]
        assert progress == sorted(progress) and any(0 < p < 1 for p in progress), progress
        event_ids = [int(i) for i, _ in events]
        assert event_ids == sorted(set(event_ids)), "ids grow with every event"
        # The stream closed itself after the terminal event; resuming from it repeats nothing.
        assert stream(c, ids[2], last_event_id=events[-1][0]) == []
        # Resuming from an earlier event gives the newest state once.
        assert stream(c, ids[2], last_event_id=events[0][0]) == [events[-1]]


def test_a_reconnected_stream_repeats_no_event(split):
    with split.client() as c:
        first, watched = (c.post(f"/v1/models/{SEQ}", json={"text": f"image {i}"}).json()["request_id"] for i in range(2))
        with connect_sse(c, "GET", f"/v1/requests/{watched}/status/stream") as source:
            seen = next(e for e in source.iter_sse() if e.event == "status")  # then the connection drops
        rest = stream(c, watched, last_event_id=seen.id)
        assert rest and seen.id not in [i for i, _ in rest]
        assert json.loads(seen.data) != rest[0][1]
        assert rest[-1][1]["status"] == "completed"
        assert wait_terminal(c, first)["status"] == "completed"


def test_a_stream_of_another_key_s_or_an_unknown_request_is_an_error(split):
    with split.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "one image"}).json()["request_id"]
        assert c.get("/v1/requests/req_nope/status/stream").status_code == 404
        assert httpx.get(f"{split.base_url}/v1/requests/{rid}/status/stream").status_code == 401
        assert c.get(f"/v1/requests/{rid}/status").headers["Modelapi-Features"].startswith("status-stream")


def test_long_poll_answers_at_the_terminal_state_or_after_the_wait(split):
    with split.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "one image"}).json()["request_id"]
        early = c.get(f"/v1/requests/{rid}/result", params={"wait": 0.2}).json()
        assert early["status"] in ("in_queue", "in_progress") and "output" not in early
        done = c.get(f"/v1/requests/{rid}/result", params={"wait": 60, "include_cost": "true"}).json()
        assert done["status"] == "completed" and len(done["output"]["images"]) == 1 and done["cost"] > 0
        assert c.get(f"/v1/requests/{rid}/result", params={"wait": 60}).json()["status"] == "completed"  # at once
        for bad in ("61", "-1", "soon"):
            resp = c.get(f"/v1/requests/{rid}/result", params={"wait": bad})
            assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", "wait"], resp.text


def test_listing_pages_cover_every_request_once_while_new_ones_arrive(make_server):
    srv = make_server(args=["--no-worker"]).start()  # nothing runs: every request stays queued
    with srv.client() as c:
        other = srv.cli("keys", "create", "--name", "other").stdout.strip().split()[-1]
        with srv.client(other) as o:
            o.post(f"/v1/models/{SEQ}", json={"text": "not mine"}).raise_for_status()
        mine = [c.post(f"/v1/models/{SEQ}", json={"text": f"n{i}"}).json()["request_id"] for i in range(7)]
        seen, cursor, newer = [], None, []
        while True:
            page = c.get("/v1/requests", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
            seen += [item["request_id"] for item in page["requests"]]
            newer.append(c.post(f"/v1/models/{SEQ}", json={"text": "arrives meanwhile"}).json()["request_id"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen[:len(mine)] == mine[::-1] and len(seen) == len(set(seen))
        assert not set(seen) & set(newer[:-1]) - set(mine)  # nothing newer than the first page slipped in
        item = c.get("/v1/requests", params={"limit": 1}).json()["requests"][0]
        assert set(item) == {"request_id", "status", "queue_position", "status_url", "result_url", "model_id",
                             "created_at", "finished_at"} and item["finished_at"] is None
        c.post(f"/v1/requests/{mine[0]}/cancel").raise_for_status()
        cancelled = c.get("/v1/requests", params={"status": "cancelled"}).json()
        assert [i["request_id"] for i in cancelled["requests"]] == [mine[0]] and cancelled["next_cursor"] is None
        assert c.get("/v1/requests", params={"model": DREAMINA}).json() == {"requests": [], "next_cursor": None}
        for params, field in (({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"status": "done"}, "status"),
                              ({"model": "acme/nope"}, "model"), ({"cursor": "%%%"}, "cursor")):
            resp = c.get("/v1/requests", params=params)
            assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", field], (params, resp.text)


def test_a_series_of_four_publishes_its_first_image_before_it_completes(split):
    with split.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "Generate 4 images of a lighthouse through the seasons",
                                                 "sequential_image_generation_options": 4}).json()["request_id"]
        bodies = [b for _, b in stream(c, rid)]
        partial = [b["partial_output"]["images"] for b in bodies if "partial_output" in b]
        assert bodies[-1]["status"] == "completed" and "partial_output" not in bodies[-1]
        assert partial and all(b["status"] == "in_progress" for b in bodies if "partial_output" in b)
        # How many images the first event seen holds depends on when the stream looked (a loaded
        # machine may store two before the next tick); what must hold: images are only added, in
        # order, each one the request's own output, and the last comes with completed.
        result = c.get(f"/v1/requests/{rid}/result").json()
        final = [urlsplit(u).path for u in result["output"]["images"]]
        for images in partial:
            assert 1 <= len(images) < 4, "the last image is published by completing the request"
            assert [urlsplit(u).path for u in images] == final[:len(images)], "a prefix of the outputs, in order"
        assert [len(p) for p in partial] == sorted(len(p) for p in partial), "images are only added"
        first = httpx.get(partial[0][0])
        assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
        assert len(result["output"]["images"]) == 4 and "partial_output" not in result
