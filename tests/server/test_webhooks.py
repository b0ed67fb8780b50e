"""Webhooks over real HTTP: a real receiver on 127.0.0.1 (servers run with --allow-private-urls
to reach it), signatures checked with the standardwebhooks library and the secret from
GET /v1/webhooks/default/secret, retries with one webhook-id, delivery after kill -9, and the
address check at submit (no connection made)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from standardwebhooks import Webhook

from conftest import wait_terminal
from modelapi.core.queue import WEBHOOK_QUEUE, TaskQueue

SEQ = "bytedance/seedream-4-0/sequential"


class Receiver:
    """A webhook receiver: answers each POST with the next of ``statuses`` (the last repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[tuple[float, float]] = []
        """``(time.monotonic(), time.time())`` when each delivery's body was read."""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.append((time.monotonic(), time.time()))
                receiver.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/modelapi"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"{len(self.deliveries)} of {count} deliveries"
            time.sleep(0.05)


def webhook_entries(srv, request_id: str) -> dict[str, str]:  # noqa: ANN001
    """The request's entries in the server's durable webhook queue (one per attempt, made or
    still to come: ``<request id>.webhook.<n>``), each with its DBOS status."""
    queue = TaskQueue(srv.database_url)
    try:
        found = queue.client.list_workflows(queue_name=WEBHOOK_QUEUE, workflow_id_prefix=f"{request_id}.webhook.",
                                            load_input=False, load_output=False)
        return {w.workflow_id: w.status for w in found}
    finally:
        queue.destroy()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([200])
    yield r
    r.server.shutdown()


def test_a_delivery_is_signed_and_retried_with_one_webhook_id(make_server, receiver):
    receiver.statuses = [500, 500, 200]
    srv = make_server(args=["--allow-private-urls"]).start()
    with srv.client() as c:
        secret = c.get("/v1/webhooks/default/secret").json()["key"]
        assert secret.startswith("whsec_") and c.get("/v1/webhooks/default/secret").json()["key"] == secret
        rid = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url}, json={"text": "one image"}).json()["request_id"]
        receiver.wait(3)
        for _ in range(100):  # the third attempt's outcome is recorded just after it is answered
            result = c.get(f"/v1/requests/{rid}/result", params={"include_cost": "true"}).json()
            if result["webhook"]["delivered_at"]:
                break
            time.sleep(0.05)
    assert result["webhook"]["url"] == receiver.url and result["webhook"]["attempts"] == 3
    assert result["webhook"]["last_status_code"] == 200
    ids = {headers["webhook-id"] for headers, _ in receiver.deliveries}
    assert ids == {f"msg_{rid}"}
    for headers, body in receiver.deliveries:
        assert Webhook(secret).verify(body, headers) == json.loads(body)  # raises on a bad signature
    payload = json.loads(receiver.deliveries[-1][1])
    signed_at_delivery = payload["output"].pop("images"), result["output"].pop("images")  # presigned per answer
    assert [urlsplit(u).path for u in signed_at_delivery[0]] == [urlsplit(u).path for u in signed_at_delivery[1]]
    assert payload == {k: v for k, v in result.items() if k != "webhook"}
    assert payload["status"] == "completed" and payload["cost"] > 0 and len(signed_at_delivery[0]) == 1
    forged = {**receiver.deliveries[0][0], "webhook-signature": "v1,AAAA"}
    with pytest.raises(Exception):
        Webhook(secret).verify(receiver.deliveries[0][1], forged)
    # A delivered webhook is not sent again: once the third attempt's entry has ended, the queue
    # holds no later attempt (every attempt is an entry, enqueued by the one before it).
    for _ in range(200):
        entries = webhook_entries(srv, rid)
        if entries.get(f"{rid}.webhook.3") == "SUCCESS":
            break
        time.sleep(0.05)
    assert entries == {f"{rid}.webhook.{n}": "SUCCESS" for n in (1, 2, 3)}
    assert len(receiver.deliveries) == 3


def test_a_cancelled_request_s_webhook_is_delivered_too(make_server, receiver):
    srv = make_server(args=["--allow-private-urls"], env={"MODELAPI_TEST_STEP_S": "0.2", "MODELAPI_TEST_STEPS": "10"}).start()
    with srv.client() as c:
        first = c.post(f"/v1/models/{SEQ}", json={"text": "one image"}).json()["request_id"]
        rid = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url}, json={"text": "one image"}).json()["request_id"]
        assert c.post(f"/v1/requests/{rid}/cancel").json()["outcome"] == "cancelled"
        receiver.wait(1)
        assert json.loads(receiver.deliveries[0][1])["status"] == "cancelled"
        wait_terminal(c, first)


def test_kill9_before_the_delivery_succeeds_then_it_is_delivered_after_restart(make_server, receiver):
    receiver.statuses = [503]
    srv = make_server(args=["--allow-private-urls"]).start()
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url}, json={"text": "one image"}).json()["request_id"]
        assert wait_terminal(c, rid)["status"] == "completed"
        receiver.wait(1)
        # killed once the failed attempt is on record (a kill between the POST and its record
        # would rightly count that attempt as never made)
        for _ in range(200):
            if c.get(f"/v1/requests/{rid}/result").json()["webhook"]["attempts"] >= 1:
                break
            time.sleep(0.05)
    srv.kill9()
    attempts = len(receiver.deliveries)
    receiver.statuses = [200]
    srv.start()
    receiver.wait(attempts + 1)
    with srv.client() as c:
        for _ in range(100):
            hook = c.get(f"/v1/requests/{rid}/result").json()["webhook"]
            if hook["delivered_at"]:
                break
            time.sleep(0.05)
    assert hook["last_status_code"] == 200 and hook["attempts"] >= 2
    assert {h["webhook-id"] for h, _ in receiver.deliveries} == {f"msg_{rid}"}


def test_a_webhook_to_a_private_address_or_a_bad_url_is_refused_at_submit(make_server, listener):
    srv = make_server().start()  # without --allow-private-urls
    with srv.client() as c:
        for url in ("http://169.254.169.254/latest/meta-data/", f"http://127.0.0.1:{listener.port}/hook",
                    f"http://[::ffff:127.0.0.1]:{listener.port}/", "ftp://example.com/hook", "hooks/relative"):
            resp = c.post(f"/v1/models/{SEQ}", params={"webhook": url}, json={"text": "one image"})
            assert resp.status_code == 422, (url, resp.text)
            assert [d["loc"] for d in resp.json()["detail"]] == [["query", "webhook"]], url
        assert c.get("/v1/requests").json()["requests"] == [], "nothing was accepted"
    assert listener.connections() == 0
