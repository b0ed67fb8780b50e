"""Intermediate webhooks (``?webhook=URL&webhook_intermediate_status=true``) over real HTTP, in
both configurations: a real receiver on 127.0.0.1 gets, for a series of 3 drawn one image at a
time (the drawing test engine), in_progress, then each new partial_output, then completed — in
order, each a message of its own (webhook-id), each signature valid (modelapi.webhooks.verify
with the key's secret); a failed event holds the later ones back, and the whole sequence
survives kill -9."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import wait_terminal
from modelapi import webhooks
from test_webhooks import Receiver, webhook_entries

SEQ = "bytedance/seedream-4-0/sequential"
SERIES_OF_3 = {"text": "Generate 3 images of a red fox crossing a snowy field", "seed": 11}
DRAWN_ONE_BY_ONE = {"MODELAPI_TEST_STEPS": "6", "MODELAPI_TEST_STEP_S": "0.3"}
"""Image i of 3 is stored after step 2(i + 1) of 6 (0.3 s apart): a partial_output each time."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([200])
    yield r
    r.server.shutdown()


def received(r: Receiver, secret: str) -> list[tuple[str, dict]]:
    """Each delivery so far as ``(webhook-id, body)``, its signature checked."""
    return [(h["webhook-id"], webhooks.verify(body, h, secret)) for h, body in r.deliveries]


def assert_the_series_sequence(events: list[tuple[str, dict]], rid: str) -> None:
    """in_progress (no images yet), in_progress with 1 then 2 images, completed with 3: each its
    own id, the images of each event those of the one before plus one (the same files)."""
    assert [i for i, _ in events] == [f"msg_{rid}_1", f"msg_{rid}_2", f"msg_{rid}_3", f"msg_{rid}"]
    bodies = [b for _, b in events]
    assert [b["status"] for b in bodies] == ["in_progress"] * 3 + ["completed"]
    assert all(b["request_id"] == rid for b in bodies)
    images = [[urlsplit(u).path for u in (b.get("partial_output") or b.get("output") or {}).get("images", [])] for b in bodies]
    assert [len(i) for i in images] == [0, 1, 2, 3]
    assert images[1] == images[2][:1] and images[2] == images[3][:2]
    progress = [b["progress"] for b in bodies[:3]]
    assert progress[0] == 0.0 and progress == sorted(progress)
    assert bodies[0]["status_url"].endswith(f"/v1/requests/{rid}/status")


def test_a_series_of_3_sends_in_progress_each_partial_output_then_completed_in_order(make_server, receiver):
    srv = make_server(args=["--allow-private-urls"], env=DRAWN_ONE_BY_ONE).start()
    with srv.client() as c:
        secret = c.get("/v1/webhooks/default/secret").json()["key"]
        for params, rule in (({"webhook_intermediate_status": "true"}, "missing_webhook"),
                             ({"webhook": receiver.url, "webhook_intermediate_status": "maybe"}, "bool_parsing")):
            resp = c.post(f"/v1/models/{SEQ}", params=params, json=SERIES_OF_3)
            assert resp.status_code == 422 and resp.json()["error_code"] == 422001, resp.text
            assert [(d["loc"], d["type"]) for d in resp.json()["detail"]] == [(["query", "webhook_intermediate_status"], rule)]
        rid = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url, "webhook_intermediate_status": "true"},
                     json=SERIES_OF_3).json()["request_id"]
        receiver.wait(4)
        events = received(receiver, secret)
        assert_the_series_sequence(events, rid)
        for url in events[2][1]["partial_output"]["images"]:  # signed at delivery, served as any output
            assert httpx.get(url).status_code == 200
        result = wait_terminal(c, rid)
        assert [urlsplit(u).path for u in result["output"]["images"]] == \
            [urlsplit(u).path for u in events[3][1]["output"]["images"]]
        # every delivery is an entry of the durable queue, each enqueued once the one before ended
        deadline = time.monotonic() + 30
        while (entries := webhook_entries(srv, rid)).get(f"{rid}.webhook.1") != "SUCCESS":
            assert time.monotonic() < deadline, entries
            time.sleep(0.05)
        assert entries == {**{f"{rid}.webhook.e{k}.1": "SUCCESS" for k in (1, 2, 3)}, f"{rid}.webhook.1": "SUCCESS"}
        hook = c.get(f"/v1/requests/{rid}/result").json()["webhook"]
        assert [(e["attempts"], e["last_status_code"]) for e in hook["events"]] == [(1, 200)] * 3
        assert all(e["delivered_at"] for e in hook["events"]) and hook["attempts"] == 1
        plain = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url}, json=SERIES_OF_3).json()["request_id"]
        receiver.wait(5)
        wait_terminal(c, plain)
        assert "events" not in c.get(f"/v1/requests/{plain}/result").json()["webhook"]
    assert [h["webhook-id"] for h, _ in receiver.deliveries[4:]] == [f"msg_{plain}"], "without the flag: the result only"


def test_a_failing_receiver_never_holds_the_end_back_and_it_survives_kill9(make_server, receiver):
    """The receiver fails every delivery while the series runs to its end: the intermediate
    events are tried in order, each given up as stale at its first failure once the request has
    moved on (never retried ahead of the end); the terminal delivery is retried, and after kill
    -9 and a restart it is delivered once the receiver answers."""
    receiver.statuses = [503]
    srv = make_server(args=["--allow-private-urls"], env=DRAWN_ONE_BY_ONE).start()
    with srv.client() as c:
        secret = c.get("/v1/webhooks/default/secret").json()["key"]
        rid = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url, "webhook_intermediate_status": "true"},
                     json=SERIES_OF_3).json()["request_id"]
        assert wait_terminal(c, rid)["status"] == "completed"
        deadline = time.monotonic() + 30  # killed once the terminal delivery has failed once
        while (c.get(f"/v1/requests/{rid}/result").json()["webhook"]["attempts"] or 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    order = [int(h["webhook-id"].rsplit("_", 1)[1]) if h["webhook-id"] != f"msg_{rid}" else 99
             for h, _ in receiver.deliveries]
    assert order == sorted(order) and order[-1] == 99, f"in order, the end last: {order}"
    assert len(order) <= 2 * 3 + 1, "an event is retried only while it is the latest state"
    srv.kill9()
    before = len(receiver.deliveries)
    receiver.statuses = [200]
    srv.start()
    deadline = time.monotonic() + 60
    while f"msg_{rid}" not in {h["webhook-id"] for h, _ in receiver.deliveries[before:]}:
        assert time.monotonic() < deadline, [h["webhook-id"] for h, _ in receiver.deliveries]
        time.sleep(0.05)
    events = received(receiver, secret)[before:]
    assert events[-1][0] == f"msg_{rid}" and events[-1][1]["status"] == "completed"
    assert all(i == f"msg_{rid}" for i, _ in events), "no stale intermediate event after the end"
    with srv.client() as c:
        hook = c.get(f"/v1/requests/{rid}/result").json()["webhook"]
    assert hook["delivered_at"] and hook["attempts"] >= 2
    assert all(1 <= e["attempts"] <= 2 and not e["delivered_at"] for e in hook["events"])
