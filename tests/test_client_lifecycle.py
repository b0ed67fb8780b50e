"""The SDK's deadlines, stops and synchronous waits against httpx.MockTransport (no server, a
fake clock): ``submit(..., cancel_after=)``, ``cancel(id, running=True)``, and ``run()``'s
``Prefer: wait``. Against a real server: tests/server/test_lifecycle.py."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from modelapi import errors
from modelapi.client import AsyncClient
from test_client_unit import (  # noqa: F401 - fixtures
    BASE, RID, Recorder, clock, completed_body, handle_body, make_client, status_body,
)

SEQ = "bytedance/seedream-4-0/sequential"
OURS = {"Modelapi-Features": "status-stream, long-poll, webhooks, idempotency-key, prefer-wait, cancel-after, cancel-running"}
OLDER = {"Modelapi-Features": "long-poll, idempotency-key"}


def submits(rec: Recorder) -> list[httpx.Request]:
    return [r for r in rec.requests if r.method == "POST" and r.url.path.startswith("/v1/models/")]


@pytest.mark.parametrize(("given", "sent"), [(30, "30"), (2.5, "2.5"), ("5m", "5m"), ("1h30m", "1h30m")])
def test_submit_sends_cancel_after(make_client, given, sent):  # noqa: F811 - fixtures of test_client_unit
    client, rec = make_client(lambda r: httpx.Response(200, json=handle_body(), headers=OURS))
    assert client.submit(SEQ, {"text": "x"}, cancel_after=given).request_id == RID
    assert rec.requests[0].headers["Cancel-After"] == sent and "Prefer" not in rec.requests[0].headers


def test_submit_refuses_a_cancel_after_that_is_not_seconds_or_a_string(make_client):  # noqa: F811 - fixtures of test_client_unit
    client, rec = make_client(lambda r: httpx.Response(200, json=handle_body()))
    with pytest.raises(TypeError, match="cancel_after"):
        client.submit(SEQ, {"text": "x"}, cancel_after=True)  # type: ignore[arg-type]
    assert rec.requests == []


def test_a_cancel_after_the_server_refuses_raises_its_validation_error(make_client):  # noqa: F811 - fixtures of test_client_unit
    detail = [{"loc": ["header", "Cancel-After"], "msg": "must be at least 1 s and at most 24 h", "type": "value_error"}]
    client, _ = make_client(lambda r: httpx.Response(422, json={"error_code": 422001, "error_message": "Invalid",
                                                               "detail": detail}))
    with pytest.raises(errors.ValidationError) as caught:
        client.submit(SEQ, {"text": "x"}, cancel_after="25h")
    assert caught.value.detail == detail


def test_cancel_running_sends_the_flag_and_waits_longer_than_the_server_holds_it(make_client):  # noqa: F811 - fixtures of test_client_unit
    answer = {"request_id": RID, "status": "cancelled", "outcome": "cancelled"}
    client, rec = make_client(lambda r: httpx.Response(200, json=answer), timeout_s=5)
    assert client.cancel(RID, running=True) == answer
    assert client.cancel(RID) == answer
    running, plain = rec.requests
    assert running.url.params["running"] == "true" and "running" not in plain.url.params
    assert running.extensions["timeout"]["read"] >= 25 and plain.extensions["timeout"]["read"] == 5


def test_run_asks_the_server_to_wait_and_returns_the_result_it_answers(make_client):  # noqa: F811 - fixtures of test_client_unit
    result = completed_body(f"{BASE}/files/a.png")
    client, rec = make_client(lambda r: httpx.Response(200, json=result, headers=OURS | {"Preference-Applied": "wait=60"}))
    got = client.run(SEQ, {"text": "x"}, timeout_s=600, cancel_after=30)
    assert got == result and got.images == [f"{BASE}/files/a.png"]
    [submit] = rec.requests  # one call: no status, no result read
    assert submit.headers["Prefer"] == "wait=60" and submit.headers["Cancel-After"] == "30"
    assert submit.extensions["timeout"]["read"] >= 75, "the read timeout covers the wait"


@pytest.mark.parametrize(("body", "raised"), [({"request_id": RID, "status": "failed", "error": {"code": "deadline_exceeded"}},
                                               errors.RequestFailed),
                                              ({"request_id": RID, "status": "cancelled"}, errors.RequestCancelled)])
def test_run_raises_for_a_failed_or_cancelled_result_the_wait_answered(make_client, body, raised):  # noqa: F811 - fixtures of test_client_unit
    client, rec = make_client(lambda r: httpx.Response(200, json=body, headers=OURS))
    with pytest.raises(raised):
        client.run(SEQ, {"text": "x"})
    assert len(rec.requests) == 1


def test_run_watches_what_is_left_when_the_wait_answers_early(make_client, clock):  # noqa: F811 - fixtures of test_client_unit
    result = completed_body(f"{BASE}/files/a.png")

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            clock.now += 20  # the server waited 20 s, then answered the usual submit body
            return httpx.Response(200, json=handle_body(), headers=OLDER | {"Preference-Applied": "wait=20"})
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json=status_body("completed"), headers=OLDER)
        return httpx.Response(200, json=result, headers=OLDER)

    client, rec = make_client(server)
    assert client.run(SEQ, {"text": "x"}, timeout_s=20.5) == result
    assert submits(rec)[0].headers["Prefer"] == "wait=20", "the wait is cut to the run's timeout"
    assert rec.paths()[1:] == [f"GET /v1/requests/{RID}/status", f"GET /v1/requests/{RID}/result"]


def test_run_sends_no_prefer_where_the_server_says_it_has_none_or_progress_is_wanted(make_client, clock):  # noqa: F811 - fixtures of test_client_unit
    result = completed_body(f"{BASE}/files/a.png")

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=handle_body(), headers=OLDER)
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json=status_body("completed"), headers=OLDER)
        return httpx.Response(200, json=result, headers=OLDER)

    client, rec = make_client(server)
    client.run(SEQ, {"text": "first"})  # features not known yet: asked (a server without it ignores it)
    client.run(SEQ, {"text": "second"})  # now known: no prefer-wait
    seen: list = []
    make = make_client(lambda r: httpx.Response(200, json=result, headers={"Modelapi-Features": "prefer-wait"}))
    make[0].run(SEQ, {"text": "x"}, on_update=seen.append)
    first, second = submits(rec)
    assert "Prefer" in first.headers and "Prefer" not in second.headers
    assert "Prefer" not in make[1].requests[0].headers, "on_update wants progress: the run watches instead"


def test_async_client_does_the_same(clock):  # noqa: F811 - fixtures of test_client_unit
    result = completed_body(f"{BASE}/files/a.png")
    answers = {"POST /v1/models/" + SEQ: result, f"POST /v1/requests/{RID}/cancel": {
        "request_id": RID, "status": "cancelled", "outcome": "cancelled"}}
    rec = Recorder(lambda r: httpx.Response(200, json=answers[f"{r.method} {r.url.path}"], headers=OURS))

    async def go() -> None:
        async with AsyncClient(BASE, "key-1", transport=httpx.MockTransport(rec)) as client:
            assert await client.run(SEQ, {"text": "x"}, cancel_after="5m") == result
            assert (await client.cancel(RID, running=True))["outcome"] == "cancelled"
            await client.submit(SEQ, {"text": "x"}, cancel_after=90)

    asyncio.run(go())
    run, cancel, submit = rec.requests
    assert (run.headers["Prefer"], run.headers["Cancel-After"]) == ("wait=60", "5m")
    assert cancel.url.params["running"] == "true" and submit.headers["Cancel-After"] == "90"
