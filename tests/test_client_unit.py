"""Unit tests of the SDK (modelapi.client) against httpx.MockTransport: no server, no sleeping
(a fake clock, put in place of the SDK's clock and sleeps, records every wait)."""

from __future__ import annotations

import asyncio
import inspect
import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from modelapi import Status, _steps, errors
from modelapi.client import (
    AsyncClient,
    Cancelled,
    Client,
    Completed,
    Failed,
    InProgress,
    Queued,
    RequestHandle,
    RequestSummary,
    Unknown,
    parse_result,
    parse_status,
)

BASE = "http://127.0.0.1:8000"
RID = "req-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 32
FEATURES = {"Modelapi-Features": "status-stream, long-poll, webhooks, idempotency-key"}


class FakeClock:
    """time.monotonic + time.sleep replacement: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Recorder:
    """A MockTransport handler that records requests and answers from a callable."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def sequence(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """Answer with each response in turn (the last one repeats); exceptions are raised."""
    queue = list(responses)

    def answer(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return answer


def status_body(status: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": RID, "status": status, "status_url": f"{BASE}/v1/requests/{RID}/status",
            "result_url": f"{BASE}/v1/requests/{RID}/result", **extra}


def handle_body() -> dict[str, Any]:
    return {"request_id": RID, "status_url": f"{BASE}/v1/requests/{RID}/status",
            "result_url": f"{BASE}/v1/requests/{RID}/result", "cancel_url": f"{BASE}/v1/requests/{RID}/cancel"}


def completed_body(*urls: str) -> dict[str, Any]:
    output: dict[str, Any] = {"images": list(urls)}
    if len(urls) == 1:
        output["image"] = urls[0]
    return {"request_id": RID, "status": "completed", "output": output,
            "created_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:00:05Z"}


def error_response(status: int, message: str = "nope", detail: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error_code": status * 1000 + 1, "error_message": message,
                                        "detail": detail}, headers=headers)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(_steps, "monotonic", fake)
    monkeypatch.setattr(_steps, "sleep", fake.sleep)
    monkeypatch.setattr(_steps, "async_sleep", fake.asleep)
    return fake


@pytest.fixture
def make_client(clock: FakeClock) -> Callable[..., tuple[Client, Recorder]]:
    clients: list[Client] = []

    def make(answer: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> tuple[Client, Recorder]:
        recorder = Recorder(answer)
        kwargs.setdefault("base_url", BASE)
        kwargs.setdefault("api_key", "key-1")
        client = Client(transport=httpx.MockTransport(recorder), **kwargs)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def make_async(answer: Callable[[httpx.Request], httpx.Response], clock: FakeClock,  # the fake clock in place
               **kwargs: Any) -> tuple[AsyncClient, Recorder]:
    recorder = Recorder(answer)
    client = AsyncClient(BASE, "key-1", transport=httpx.MockTransport(recorder), **kwargs)
    return client, recorder


def polling_server(statuses: list[dict[str, Any]], result: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    """submit -> handle; status -> each of ``statuses`` in turn (the last repeats); result -> ``result``."""
    remaining = list(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.startswith("/v1/models/"):
            return httpx.Response(200, json=handle_body())
        if path.endswith("/status"):
            return httpx.Response(200, json=remaining.pop(0) if len(remaining) > 1 else remaining[0])
        if path.endswith("/result"):
            return httpx.Response(200, json=result)
        return httpx.Response(404, json={"error_code": 404001, "error_message": "no route", "detail": None})

    return answer


# --------------------------------------------------------------------------- calls and parsing


def test_submit_posts_input_with_bearer_key(make_client):
    client, rec = make_client(sequence(httpx.Response(200, json=handle_body())))
    handle = client.submit("bytedance/seedream-4-0/sequential", {"text": "Generate 3 images of a fox"})
    assert handle == RequestHandle(**handle_body())
    [request] = rec.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/v1/models/bytedance/seedream-4-0/sequential"
    assert request.headers["authorization"] == "Bearer key-1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"text": "Generate 3 images of a fox"}
    # a server not heard from yet gets a generated key (so a cut-off submit could be retried);
    # one known not to honour keys (no Modelapi-Features header) gets none
    assert request.headers["idempotency-key"].startswith("modelapi-python-")
    client.submit("bytedance/seedream-4-0/sequential", {"text": "Generate 3 images of a fox"})
    assert "idempotency-key" not in rec.requests[1].headers


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (status_body("in_queue", queue_position=2), Queued(RID, 2)),
        (status_body("in_progress", progress=0.25), InProgress(RID, 0.25)),
        (status_body("in_progress"), InProgress(RID, None)),
        (status_body("completed"), Completed(RID, {})),
        (status_body("failed"), Failed(RID, {})),
        (status_body("cancelled"), Cancelled(RID)),
    ],
)
def test_status_is_typed(make_client, body, expected):
    client, rec = make_client(sequence(httpx.Response(200, json=body)))
    update = client.status(RID)
    assert update == expected and type(update) is type(expected)
    assert update.status.value == body["status"]
    assert update.body == body, "the body as sent (what `modelapi status` prints)"
    assert update.is_terminal == (body["status"] in ("completed", "failed", "cancelled"))
    assert rec.paths() == [f"GET /v1/requests/{RID}/status"]


def test_unknown_status_is_an_unknown_update(make_client):
    client, _ = make_client(sequence(httpx.Response(200, json=status_body("paused"))))
    update = client.status(RID)
    assert update == Unknown(RID, "paused") and not update.is_terminal
    assert update.status is None and update.status_value == "paused"
    assert update.body["status"] == "paused"
    assert parse_status({"request_id": RID}) == Unknown(RID, "")
    assert parse_status({"status": "in_queue", "queue_position": "n/a"}) == Queued("", None)


def test_parse_status_of_result_bodies_carries_output_and_error():
    done = parse_status(completed_body("https://x/a.png"))
    assert isinstance(done, Completed) and done.output["images"] == ["https://x/a.png"]
    assert done.result is not None and done.result["finished_at"]
    failed = parse_status({"request_id": RID, "status": "failed", "error": {"code": "oom", "message": "out of memory"}})
    assert isinstance(failed, Failed) and failed.error == {"code": "oom", "message": "out of memory"}


@pytest.mark.parametrize(
    "body",
    [
        completed_body("https://x/a.png"),
        {"request_id": RID, "status": "failed", "error": {"code": "engine_error", "message": "boom"}},
        status_body("in_queue", queue_position=0),
    ],
    ids=["completed", "failed", "not-finished"],
)
def test_result_returns_the_raw_body(make_client, body):
    client, rec = make_client(sequence(httpx.Response(200, json=body)))
    assert client.result(RID) == body
    assert rec.requests[0].url.path == f"/v1/requests/{RID}/result"
    assert "include_cost" not in rec.requests[0].url.params


def test_result_include_cost(make_client):
    client, rec = make_client(sequence(httpx.Response(200, json={**completed_body("u"), "cost": 0.09})))
    assert client.result(RID, include_cost=True)["cost"] == 0.09
    assert rec.requests[0].url.params["include_cost"] == "true"


def test_cancel(make_client):
    body = {"request_id": RID, "status": "cancelled", "outcome": "cancelled"}
    client, rec = make_client(sequence(httpx.Response(200, json=body)))
    assert client.cancel(RID) == body
    assert rec.paths() == [f"POST /v1/requests/{RID}/cancel"]


def test_delete_is_retried_like_a_read(make_client):
    body = {"request_id": RID, "status": "completed", "deleted_at": "2026-01-01T00:00:00.000000Z"}
    client, rec = make_client(sequence(error_response(503), httpx.Response(200, json=body)))
    assert client.delete(RID) == body
    assert rec.paths() == [f"DELETE /v1/requests/{RID}"] * 2


def test_models_and_schema(make_client):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"models": [{"model_id": "bytedance/dreamina-4-0/edit"}]})
        return httpx.Response(200, json={"input_schema": {"type": "object"}, "output_schema": {}})

    client, rec = make_client(answer)
    assert client.models() == [{"model_id": "bytedance/dreamina-4-0/edit"}]
    assert client.model_schema("bytedance/dreamina-4-0/edit")["input_schema"] == {"type": "object"}
    assert rec.paths() == ["GET /v1/models", "GET /v1/models/bytedance/dreamina-4-0/edit/schema"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.APIStatusError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (410, errors.GoneError),
        (422, errors.ValidationError),
        (429, errors.RateLimitError),
        (500, errors.APIStatusError),
    ],
)
def test_error_bodies_map_to_exceptions(make_client, status, cls):
    detail = [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}] if status == 422 else None
    headers = {"Retry-After": "7"} if status == 429 else {}
    client, rec = make_client(sequence(error_response(status, "went wrong", detail, **headers)), max_retries=0)
    with pytest.raises(errors.APIStatusError) as info:
        client.status(RID)
    exc = info.value
    assert type(exc) is cls
    assert (exc.status_code, exc.error_code, exc.error_message) == (status, status * 1000 + 1, "went wrong")
    assert exc.request_id == RID
    assert exc.detail == detail
    if status == 429:
        assert exc.retry_after_s == 7.0
    assert len(rec.requests) == 1


def test_non_json_error_body(make_client):
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    client, _ = make_client(sequence(httpx.Response(502, text=html)), max_retries=0)
    with pytest.raises(errors.APIStatusError) as info:
        client.models()
    assert info.value.status_code == 502
    assert info.value.error_code == 502001
    assert "502 Bad Gateway" in info.value.error_message


def test_error_body_without_our_shape(make_client):
    client, _ = make_client(sequence(httpx.Response(405, json={"detail": "Method Not Allowed"})))
    with pytest.raises(errors.APIStatusError) as info:
        client.models()
    assert (info.value.status_code, info.value.error_code) == (405, 405001)
    assert info.value.error_message == "Method Not Allowed"


# --------------------------------------------------------------------------- retries


def test_get_retried_on_503_then_ok(make_client, clock):
    client, rec = make_client(sequence(error_response(503), httpx.Response(200, json=status_body("in_queue"))))
    assert client.status(RID) == Queued(RID, None)
    assert len(rec.requests) == 2
    assert len(clock.sleeps) == 1 and 0.25 <= clock.sleeps[0] <= 0.5  # jittered 0.5 s base


def test_get_retried_on_connection_error(make_client, clock):
    client, rec = make_client(sequence(httpx.ConnectError("refused"), httpx.ConnectError("refused"),
                                       httpx.Response(200, json={"models": []})))
    assert client.models() == []
    assert len(rec.requests) == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[1] > 0.5 * 0.5  # second backoff is larger


def test_get_gives_up_after_max_retries(make_client, clock):
    client, rec = make_client(sequence(error_response(503)), max_retries=3)
    with pytest.raises(errors.APIStatusError) as info:
        client.status(RID)
    assert info.value.status_code == 503
    assert len(rec.requests) == 4 and len(clock.sleeps) == 3
    assert all(s <= 8.0 for s in clock.sleeps)


def test_connection_error_surfaces_after_max_retries(make_client):
    client, rec = make_client(sequence(httpx.ConnectError("refused")), max_retries=2)
    with pytest.raises(errors.APIConnectionError) as info:
        client.models()
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(rec.requests) == 3


def test_client_errors_are_not_retried(make_client):
    client, rec = make_client(sequence(error_response(404)))
    with pytest.raises(errors.NotFoundError):
        client.status(RID)
    assert len(rec.requests) == 1


def test_cancel_is_retried(make_client):
    body = {"request_id": RID, "status": "in_progress", "outcome": "not_cancellable"}
    client, rec = make_client(sequence(error_response(503), httpx.Response(200, json=body)))
    assert client.cancel(RID)["outcome"] == "not_cancellable"
    assert len(rec.requests) == 2


def test_submit_without_idempotency_key_is_never_retried(make_client, clock):
    client, rec = make_client(sequence(error_response(503), httpx.Response(200, json=handle_body())))
    with pytest.raises(errors.APIStatusError) as info:
        client.submit("bytedance/seedream-4-0/sequential", {"text": "x"})
    assert info.value.status_code == 503
    assert len(rec.requests) == 1 and clock.sleeps == []


def test_submit_not_retried_on_connection_error_when_the_server_does_not_dedupe(make_client):
    """The hosted service (no Modelapi-Features header) does not honour Idempotency-Key: a
    submit cut off by a connection error may have been queued, so it is not sent again."""
    client, rec = make_client(sequence(httpx.ConnectError("reset"), httpx.Response(200, json={"models": []}),
                                       httpx.Response(200, json=handle_body())))
    with pytest.raises(errors.APIConnectionError) as info:
        client.submit("bytedance/seedream-4-0/sequential", {"text": "x"}, idempotency_key="idem-1")
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    # one cheap GET learnt the server's features; the submit was sent once
    assert rec.paths() == ["POST /v1/models/bytedance/seedream-4-0/sequential", "GET /v1/models"]


def test_submit_with_idempotency_key_is_retried_only_against_a_deduping_server(make_client):
    client, rec = make_client(sequence(error_response(503, **FEATURES),
                                       httpx.Response(200, json=handle_body(), headers=FEATURES)))
    handle = client.submit("bytedance/seedream-4-0/sequential", {"text": "x"}, idempotency_key="idem-42")
    assert handle.request_id == RID
    assert len(rec.requests) == 2
    assert [r.headers["idempotency-key"] for r in rec.requests] == ["idem-42", "idem-42"]
    assert rec.requests[0].content == rec.requests[1].content
    # the same 503 from a server that does not say it dedupes: not retried, even with a key
    hosted, hosted_rec = make_client(sequence(error_response(503), httpx.Response(200, json=handle_body())))
    with pytest.raises(errors.APIStatusError):
        hosted.submit("bytedance/seedream-4-0/sequential", {"text": "x"}, idempotency_key="idem-42")
    assert len(hosted_rec.requests) == 1


def test_retry_after_is_honoured(make_client, clock):
    client, rec = make_client(sequence(error_response(429, **{"Retry-After": "3"}),
                                       httpx.Response(200, json=status_body("in_queue", queue_position=0))))
    assert client.status(RID) == Queued(RID, 0)
    assert clock.sleeps == [3.0]
    assert len(rec.requests) == 2


def test_upload_is_not_retried(make_client, tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    client, rec = make_client(sequence(error_response(503)))
    with pytest.raises(errors.APIStatusError):
        client.upload(tmp_path / "a.png")
    assert len(rec.requests) == 1


# --------------------------------------------------------------------------- run / watch (polling)


def test_run_polls_until_completed_and_returns_the_result(make_client, clock):
    result = completed_body("http://127.0.0.1:8000/files/a.png", "http://127.0.0.1:8000/files/b.png")
    server = polling_server(
        [status_body("in_queue", queue_position=1), status_body("in_queue", queue_position=1),
         status_body("in_progress", progress=0.5), status_body("completed")],
        result,
    )
    client, rec = make_client(server)
    seen: list[Any] = []
    assert client.run("bytedance/seedream-4-0/sequential", {"text": "Generate 2 images"}, on_update=seen.append) == result
    assert [type(u) for u in seen] == [Queued, InProgress, Completed]  # the repeated Queued is deduped
    assert seen[-1].output == result["output"]
    assert rec.paths()[0] == "POST /v1/models/bytedance/seedream-4-0/sequential"
    assert rec.paths()[-1] == f"GET /v1/requests/{RID}/result"
    assert clock.sleeps == [0.5, 0.75, 1.125]  # interval grows x1.5


def test_polling_interval_is_capped(make_client, clock):
    statuses = [status_body("in_queue", queue_position=0)] * 8 + [status_body("cancelled")]
    client, _ = make_client(polling_server(statuses, status_body("cancelled")))
    updates = list(client.watch(RID, poll_interval_s=1.0, max_interval_s=2.0))
    assert updates == [Queued(RID, 0), Cancelled(RID)]
    assert max(clock.sleeps) == 2.0


def test_run_failed_raises_request_failed(make_client):
    error = {"code": "engine_error", "message": "out of memory"}
    server = polling_server([status_body("in_progress"), status_body("failed")],
                            {"request_id": RID, "status": "failed", "error": error})
    client, _ = make_client(server)
    with pytest.raises(errors.RequestFailed) as info:
        client.run("bytedance/seedream-4-0/sequential", {"text": "x"})
    assert info.value.request_id == RID and info.value.error == error


def test_run_cancelled_raises_request_cancelled(make_client):
    client, _ = make_client(polling_server([status_body("cancelled")], status_body("cancelled")))
    with pytest.raises(errors.RequestCancelled) as info:
        client.run("bytedance/seedream-4-0/sequential", {"text": "x"})
    assert info.value.request_id == RID


def test_run_deadline_raises_request_timeout(make_client, clock):
    client, rec = make_client(polling_server([status_body("in_queue", queue_position=3)], {}))
    with pytest.raises(errors.RequestTimeout) as info:
        client.run("bytedance/seedream-4-0/sequential", {"text": "x"}, timeout_s=5)
    assert isinstance(info.value, TimeoutError)
    assert RID in str(info.value)
    assert clock.now == pytest.approx(5.0)  # the last wait is cut to the deadline, then one last poll
    assert rec.paths().count(f"GET /v1/requests/{RID}/status") == len(clock.sleeps) + 1


def test_run_honours_retry_after_while_polling(make_client, clock):
    calls = {"status": 0}

    def server(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json=handle_body())
        if request.url.path.endswith("/status"):
            calls["status"] += 1
            if calls["status"] == 1:
                return error_response(429, "slow down", **{"Retry-After": "4"})
            return httpx.Response(200, json=status_body("completed"))
        return httpx.Response(200, json=completed_body("http://127.0.0.1:8000/files/a.png"))

    client, _ = make_client(server)
    assert client.run("bytedance/seedream-4-0/sequential", {"text": "x"})["status"] == "completed"
    assert clock.sleeps == [4.0]


def test_polling_slows_down_when_rate_limit_retries_are_spent(make_client, clock):
    answers = sequence(httpx.Response(200, json={"models": []}),  # no features: watch polls
                       error_response(429, **{"Retry-After": "6"}), httpx.Response(200, json=status_body("cancelled")))
    client, _ = make_client(answers, max_retries=0)
    assert list(client.watch(RID)) == [Cancelled(RID)]
    assert clock.sleeps == [6.0]


# --------------------------------------------------------------------------- download


def test_download_names_files_by_content_type_and_keeps_the_key_home(make_client, tmp_path):
    result = completed_body("http://127.0.0.1:8000/files/x?sig=1", "https://bucket.s3.example.com/out/y?X-Amz-Signature=2",
                            "https://bucket.s3.example.com/out/z.webp?sig=3")

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1":
            return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})
        if request.url.path.endswith("/y"):
            return httpx.Response(200, content=JPEG, headers={"Content-Type": "image/jpeg; charset=binary"})
        return httpx.Response(200, content=b"RIFF", headers={"Content-Type": "application/octet-stream"})

    client, rec = make_client(server)
    paths = client.download(result, tmp_path / "out")
    assert [p.name for p in paths] == [f"{RID}_0.png", f"{RID}_1.jpg", f"{RID}_2.webp"]
    assert paths[0].read_bytes() == PNG and paths[1].read_bytes() == JPEG
    own, presigned, _ = rec.requests
    assert own.headers["authorization"] == "Bearer key-1"
    assert "authorization" not in presigned.headers


def test_download_single_image_field(make_client, tmp_path):
    result = {"request_id": RID, "status": "completed", "output": {"image": "http://127.0.0.1:8000/files/a"}}
    client, _ = make_client(lambda r: httpx.Response(200, content=JPEG, headers={"Content-Type": "image/jpeg"}))
    assert [p.name for p in client.download(result, tmp_path)] == [f"{RID}_0.jpg"]


def test_download_of_an_expired_url_raises(make_client, tmp_path):
    client, _ = make_client(sequence(httpx.Response(403, text="<Error>AccessDenied</Error>")))
    with pytest.raises(errors.PermissionDeniedError):
        client.download(completed_body("https://bucket.example.com/a.png"), tmp_path)


# --------------------------------------------------------------------------- local files


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {"png": tmp_path / "a.png", "jpg": tmp_path / "b.jpg", "gif": tmp_path / "c.png",
             "big": tmp_path / "big.jpg"}
    files["png"].write_bytes(PNG)
    files["jpg"].write_bytes(JPEG)
    files["gif"].write_bytes(GIF)  # named .png, but a GIF by content
    files["big"].write_bytes(JPEG + b"\x00" * 2048)
    return files


def upload_server(request: httpx.Request) -> httpx.Response:
    name = request.content.split(b'filename="')[1].split(b'"')[0].decode()
    return httpx.Response(201, json={"id": f"f-{name}", "url": f"{BASE}/v1/files/f-{name}/content",
                                     "bytes": 40, "content_type": "image/png"})


def test_resolve_files_upload_mode(make_client, images):
    client, rec = make_client(upload_server)
    input = {"images": [str(images["png"]), "https://example.com/x.jpg", str(images["jpg"])], "text": "t"}
    out = client.resolve_files(input, mode="upload")
    assert out == {"images": [f"{BASE}/v1/files/f-a.png/content", "https://example.com/x.jpg",
                              f"{BASE}/v1/files/f-b.jpg/content"], "text": "t"}
    assert input["images"][0] == str(images["png"])  # the caller's dict is left alone
    assert rec.paths() == ["POST /v1/files", "POST /v1/files"]
    first = rec.requests[0]
    assert first.headers["content-type"].startswith("multipart/form-data")
    assert b'name="file"' in first.content and PNG in first.content
    assert b"Content-Type: image/png" in first.content


def test_resolve_files_data_uri_mode(make_client, images):
    client, rec = make_client(upload_server)
    out = client.resolve_files({"image_urls": [str(images["png"]), str(images["jpg"])], "prompt": "p"}, mode="data_uri")
    assert out["image_urls"][0] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert out["image_urls"][1].startswith("data:image/jpeg;base64,")
    assert rec.requests == []


def test_resolve_files_auto_mode(make_client, images):
    local, local_rec = make_client(upload_server)
    assert local.resolve_files({"images": [str(images["png"])]})["images"][0].startswith(BASE)
    assert len(local_rec.requests) == 1
    hosted, hosted_rec = make_client(upload_server, base_url="https://model-api.runcomfy.net")
    assert hosted.resolve_files({"images": [str(images["png"])]})["images"][0].startswith("data:image/png;base64,")
    assert hosted_rec.requests == []


def test_resolve_files_uses_the_schema_image_fields(make_client, images):
    schema = {"input_schema": {"properties": {
        "refs": {"type": "array", "items": {"type": "string", "format": "image_uri"}},
        "images": {"type": "array", "items": {"type": "string"}},
    }}}
    client, _ = make_client(upload_server)
    out = client.resolve_files({"refs": [str(images["png"])], "images": ["not/a/file.png"]}, schema=schema,
                               mode="data_uri")
    assert out["refs"][0].startswith("data:image/png")
    assert out["images"] == ["not/a/file.png"]  # not an image field in this schema


@pytest.mark.parametrize(
    ("key", "kind", "rule"),
    [("big", "file_too_large", "over the 1024-byte limit"), ("gif", "unsupported_image_type", "only JPEG and PNG")],
)
def test_bad_local_files_are_refused_before_any_request(make_client, images, key, kind, rule):
    client, rec = make_client(upload_server, max_upload_bytes=1024)
    with pytest.raises(errors.InputError) as info:
        client.resolve_files({"images": [str(images["png"]), str(images[key])]}, mode="upload")
    assert str(images[key]) in info.value.msg and rule in info.value.msg
    assert info.value.type == kind and info.value.loc == ["body", "images", 1]
    assert rec.requests == []  # the good first file was not uploaded either


def test_missing_local_path_is_refused(make_client, tmp_path):
    client, rec = make_client(upload_server)
    with pytest.raises(errors.InputError) as info:
        client.resolve_files({"image_urls": [str(tmp_path / "nope.jpg")]}, mode="upload")
    assert "no such file" in info.value.msg and info.value.type == "file_not_found"
    assert rec.requests == []


def test_default_upload_limit_is_15_mb(make_client):
    client, _ = make_client(upload_server)
    assert client.max_upload_bytes == 15 * 1024 * 1024


# --------------------------------------------------------------------------- configuration


def test_api_key_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELAPI_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MODELAPI_API_KEY", raising=False)
    monkeypatch.delenv("MODELAPI_BASE_URL", raising=False)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"models": []}))

    def key_sent(**kwargs: Any) -> str:
        seen: list[str] = []

        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers["authorization"])
            return httpx.Response(200, json={"models": []})

        with Client(transport=httpx.MockTransport(answer), **kwargs) as client:
            client.models()
        return seen[0]

    # nothing anywhere: a clear AuthenticationError
    with pytest.raises(errors.AuthenticationError) as info:
        Client(BASE, transport=transport)
    assert "MODELAPI_API_KEY" in str(info.value) and "initial_api_key" in str(info.value)

    (tmp_path / "initial_api_key").write_text("  file-key\n")
    assert key_sent(base_url=BASE) == "Bearer file-key"
    assert key_sent(base_url="http://localhost:9000") == "Bearer file-key"
    assert key_sent(base_url="http://[::1]:8000") == "Bearer file-key"
    # the local file is never used for a remote server
    with pytest.raises(errors.AuthenticationError) as info:
        Client("https://model-api.runcomfy.net", transport=transport)
    assert "initial_api_key" not in str(info.value)

    monkeypatch.setenv("MODELAPI_API_KEY", "env-key")
    assert key_sent(base_url=BASE) == "Bearer env-key"
    assert key_sent(base_url=BASE, api_key="arg-key") == "Bearer arg-key"


def test_base_url_resolution(monkeypatch):
    def base_url(*args: Any) -> str:
        with Client(*args, api_key="k") as client:
            return client.base_url

    monkeypatch.delenv("MODELAPI_BASE_URL", raising=False)
    assert base_url() == "https://model-api.runcomfy.net"
    monkeypatch.setenv("MODELAPI_BASE_URL", "http://10.0.0.5:8000/")
    assert base_url() == "http://10.0.0.5:8000"
    assert base_url("http://127.0.0.1:1") == "http://127.0.0.1:1"


def test_repr_hides_the_key():
    with Client(BASE, api_key="secret") as client:
        assert "secret" not in repr(client)


# --------------------------------------------------------------------------- AsyncClient


def test_async_submit_and_errors(clock):
    async def main() -> None:
        client, rec = make_async(sequence(httpx.Response(200, json=handle_body()), error_response(404)), clock)
        async with client:
            handle = await client.submit("bytedance/dreamina-4-0/edit", {"prompt": "p"}, idempotency_key="k1")
            assert handle.request_id == RID
            with pytest.raises(errors.NotFoundError):
                await client.status(RID)
        assert rec.requests[0].headers["idempotency-key"] == "k1"

    asyncio.run(main())


def test_async_run_polls_until_completed(clock):
    result = completed_body("http://127.0.0.1:8000/files/a.png")
    server = polling_server([status_body("in_queue", queue_position=0), status_body("in_progress", progress=0.5),
                             status_body("completed")], result)
    seen: list[Any] = []

    async def on_update(update: Any) -> None:
        seen.append(update)

    async def main() -> dict[str, Any]:
        client, _ = make_async(server, clock)
        async with client:
            return await client.run("bytedance/seedream-4-0/sequential", {"text": "x"}, on_update=on_update)

    assert asyncio.run(main()) == result
    assert seen == [Queued(RID, 0), InProgress(RID, 0.5), Completed(RID, result["output"])]
    assert clock.sleeps == [0.5, 0.75]


def test_async_watch_and_failures(clock):
    error = {"code": "engine_error", "message": "boom"}
    server = polling_server([status_body("in_progress"), status_body("failed")],
                            {"request_id": RID, "status": "failed", "error": error})

    async def main() -> list[Any]:
        client, _ = make_async(server, clock)
        async with client:
            updates = [u async for u in client.watch(RID)]
            with pytest.raises(errors.RequestFailed):
                await client.run("bytedance/seedream-4-0/sequential", {"text": "x"})
        return updates

    assert asyncio.run(main()) == [InProgress(RID, None), Failed(RID, error)]


def test_async_deadline_and_retries(clock):
    async def main() -> None:
        client, rec = make_async(sequence(error_response(503), httpx.ConnectError("x"),
                                          httpx.Response(200, json=status_body("in_queue", queue_position=0))), clock)
        async with client:
            assert await client.status(RID) == Queued(RID, 0)
            assert len(rec.requests) == 3
            with pytest.raises(errors.RequestTimeout):
                async for _ in client.watch(RID, timeout_s=2):
                    pass
        submit_client, submit_rec = make_async(sequence(error_response(503)), clock)
        async with submit_client:
            with pytest.raises(errors.APIStatusError):
                await submit_client.submit("bytedance/seedream-4-0/sequential", {"text": "x"})
        assert len(submit_rec.requests) == 1

    asyncio.run(main())


def test_async_download_and_files(clock, tmp_path, images):
    async def main() -> None:
        def server(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/files":
                return upload_server(request)
            return httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"})

        client, rec = make_async(server, clock)
        async with client:
            out = await client.resolve_files({"images": [str(images["png"])]})
            assert out["images"][0].startswith(f"{BASE}/v1/files/")
            paths = await client.download(completed_body("https://cdn.example.com/a"), tmp_path)
            assert [p.name for p in paths] == [f"{RID}_0.png"]
            assert "authorization" not in rec.requests[-1].headers

    asyncio.run(main())


# --------------------------------------------------------------------------- the hosted service's shapes


def test_run_polls_a_server_without_features_in_the_hosted_shapes(make_client, clock):
    """The hosted service: a base URL ending in /v1, no Modelapi-Features header, a submit answer
    with only request_id, a status string this SDK does not know. run() polls and succeeds."""
    result = completed_body("https://cdn.example.com/a.png")
    statuses = [{"request_id": RID, "status": "in_queue"}, {"request_id": RID, "status": "in_review"},
                {"request_id": RID, "status": "in_progress"}, {"request_id": RID, "status": "completed"}]

    def hosted(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/v1/models/bytedance/seedream-4-0/sequential":
            return httpx.Response(200, json={"request_id": RID})
        if path == f"/v1/requests/{RID}/status":
            return httpx.Response(200, json=statuses.pop(0) if len(statuses) > 1 else statuses[0])
        if path == f"/v1/requests/{RID}/result":
            return httpx.Response(200, json=result)
        return httpx.Response(404, json={"detail": "Not Found"})

    for base_url in ("https://model-api.runcomfy.net/v1", "https://model-api.runcomfy.net/v1/"):
        statuses[:] = [{"request_id": RID, "status": "in_queue"}, {"request_id": RID, "status": "in_review"},
                       {"request_id": RID, "status": "in_progress"}, {"request_id": RID, "status": "completed"}]
        client, rec = make_client(hosted, base_url=base_url)
        assert client.base_url == "https://model-api.runcomfy.net"
        seen: list[Any] = []
        assert client.run("bytedance/seedream-4-0/sequential", {"text": "x"}, on_update=seen.append) == result
        assert seen == [Queued(RID, None), Unknown(RID, "in_review"), InProgress(RID, None),
                        Completed(RID, result["output"])]
        assert not any("/status/stream" in p for p in rec.paths()), rec.paths()
        assert rec.paths().count(f"GET /v1/requests/{RID}/status") == 4
        assert client.features() == frozenset()
        handle = client.submit("bytedance/seedream-4-0/sequential", {"text": "x"})
        assert handle == RequestHandle(RID, f"https://model-api.runcomfy.net/v1/requests/{RID}/status",
                                       f"https://model-api.runcomfy.net/v1/requests/{RID}/result",
                                       f"https://model-api.runcomfy.net/v1/requests/{RID}/cancel")


def test_a_submit_answer_without_request_id_is_a_clear_error(make_client):
    client, _ = make_client(sequence(httpx.Response(200, json={"status": "queued"})))
    with pytest.raises(errors.ModelAPIError, match="no request_id"):
        client.submit("bytedance/seedream-4-0/sequential", {"text": "x"})


def test_features_come_from_any_answer_of_the_server(make_client, tmp_path):
    client, rec = make_client(sequence(httpx.Response(200, json={"models": []}, headers=FEATURES)))
    assert client.features() == {"status-stream", "long-poll", "webhooks", "idempotency-key"}
    assert client.features() == client.features() and len(rec.requests) == 1  # learnt once
    # answers from another origin (a presigned URL) say nothing about the server
    other, other_rec = make_client(sequence(httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"}),
                                            httpx.Response(200, json={"models": []}, headers=FEATURES)))
    other.download(completed_body("https://bucket.example.com/a.png"), tmp_path)
    assert other.features() == {"status-stream", "long-poll", "webhooks", "idempotency-key"}
    assert other_rec.paths() == ["GET /a.png", "GET /v1/models"]
    # a header-less answer of the server's origin (a proxy's error page) does not erase them
    other._note(httpx.Response(502, request=httpx.Request("GET", f"{BASE}/v1/models")))
    assert "status-stream" in other.features()


def test_submit_cut_off_is_retried_with_a_generated_key_against_a_deduping_server(make_client):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and len([r for r in rec.requests if r.method == "POST"]) == 1:
            raise httpx.ReadError("connection reset after the body was sent")
        if request.method == "POST":
            return httpx.Response(200, json=handle_body(), headers=FEATURES)
        return httpx.Response(200, json={"models": []}, headers=FEATURES)

    client, rec = make_client(answer)
    assert client.submit("bytedance/seedream-4-0/sequential", {"text": "x"}).request_id == RID
    assert rec.paths() == ["POST /v1/models/bytedance/seedream-4-0/sequential", "GET /v1/models",
                           "POST /v1/models/bytedance/seedream-4-0/sequential"]
    first, second = rec.requests[0], rec.requests[2]
    assert first.headers["idempotency-key"].startswith("modelapi-python-")
    assert second.headers["idempotency-key"] == first.headers["idempotency-key"]
    assert first.content == second.content


def test_submit_webhook_is_a_query_parameter_and_the_secret_route(make_client):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/webhooks/default/secret":
            return httpx.Response(200, json={"key": "whsec_c2VjcmV0"})
        return httpx.Response(200, json=handle_body())

    client, rec = make_client(answer)
    client.submit("bytedance/seedream-4-0/sequential", {"text": "x"}, webhook="https://hooks.example.com/a?b=1")
    assert rec.requests[0].url.params["webhook"] == "https://hooks.example.com/a?b=1"
    assert json.loads(rec.requests[0].content) == {"text": "x"}  # the body stays the documented schema
    assert client.webhook_secret() == "whsec_c2VjcmV0"
    assert rec.paths()[-1] == "GET /v1/webhooks/default/secret"


def test_result_long_poll(make_client):
    client, rec = make_client(sequence(httpx.Response(200, json=completed_body("u"))))
    assert client.result(RID, wait_s=30)["status"] == "completed"
    assert client.result(RID, wait_s=2.5, include_cost=True)["status"] == "completed"
    assert rec.requests[0].url.params["wait"] == "30"
    assert rec.requests[1].url.params["wait"] == "2.5" and rec.requests[1].url.params["include_cost"] == "true"
    assert rec.requests[0].extensions["timeout"]["read"] >= 45  # the call outlasts the wait


def test_download_names_are_safe_file_names(make_client, tmp_path):
    client, _ = make_client(lambda r: httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"}))
    body = {"request_id": "../../etc/x", "status": "completed", "output": {"images": [f"{BASE}/f/a"]}}
    [path] = client.download(body, tmp_path)
    assert path.parent == tmp_path and path.name == ".._.._etc_x_0.png"


# --------------------------------------------------------------------------- the status stream


def sse_event(event_id: int, body: dict[str, Any]) -> bytes:
    return f"event: status\nid: {event_id}\ndata: {json.dumps(body)}\n\n".encode()


PING = b": ping\n\n"


def sse_response(*chunks: bytes | Exception, clock: FakeClock | None = None, tick_s: float = 0.0) -> httpx.Response:
    """A text/event-stream answer sending ``chunks`` (an exception drops the connection there);
    each chunk advances ``clock`` by ``tick_s``."""

    def body() -> Iterator[bytes]:
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            if clock is not None:
                clock.now += tick_s
            yield chunk

    return httpx.Response(200, headers={"Content-Type": "text/event-stream; charset=utf-8", **FEATURES},
                          content=body())


def async_sse_response(*chunks: bytes | Exception) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            if isinstance(chunk, Exception):
                raise chunk
            yield chunk

    return httpx.Response(200, headers={"Content-Type": "text/event-stream", **FEATURES}, content=body())


def streaming_server(connections: list[Callable[[], httpx.Response]], result: dict[str, Any],
                     status: dict[str, Any] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    """Our server: every answer advertises the features; each /status/stream connection is the
    next of ``connections``; /status answers ``status`` (None: 500, not expected)."""
    remaining = list(connections)

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.startswith("/v1/models/"):
            return httpx.Response(200, json=handle_body(), headers=FEATURES)
        if path.endswith("/status/stream"):
            return remaining.pop(0)()
        if path.endswith("/status") and status is not None:
            return httpx.Response(200, json=status, headers=FEATURES)
        if path.endswith("/result"):
            return httpx.Response(200, json=result, headers=FEATURES)
        if path == "/v1/models":
            return httpx.Response(200, json={"models": []}, headers=FEATURES)
        return error_response(500, "not expected", **FEATURES)

    return answer


def stream_requests(rec: Recorder) -> list[httpx.Request]:
    return [r for r in rec.requests if r.url.path.endswith("/status/stream")]


def test_status_stream_yields_typed_updates_skipping_keep_alives(make_client):
    result = completed_body(f"{BASE}/files/a.png")
    partial = {"images": [f"{BASE}/files/early.png"]}
    body = (PING, sse_event(1, status_body("in_queue", queue_position=2)), PING,
            sse_event(2, status_body("in_queue", queue_position=1)),
            sse_event(3, status_body("in_progress", progress=0.5)), PING,
            sse_event(4, status_body("in_progress", progress=0.75, partial_output=partial)),
            b"event: other\ndata: {}\n\n", sse_event(5, status_body("completed")))
    client, rec = make_client(streaming_server([lambda: sse_response(*body)], result))
    updates = list(client.watch(RID))
    assert updates == [Queued(RID, 2), Queued(RID, 1), InProgress(RID, 0.5),
                       InProgress(RID, 0.75, partial_output=partial), Completed(RID, result["output"])]
    assert updates[-1].result == result  # the terminal update is completed from /result
    [request] = stream_requests(rec)
    assert request.url.path == f"/v1/requests/{RID}/status/stream"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == "Bearer key-1"
    assert "last-event-id" not in request.headers
    assert rec.paths()[-1] == f"GET /v1/requests/{RID}/result"


def test_status_stream_resumes_with_last_event_id_after_a_dropped_connection(make_client, clock):
    result = completed_body(f"{BASE}/files/a.png")
    connections = [
        lambda: sse_response(sse_event(1, status_body("in_queue", queue_position=0)), PING,
                             sse_event(2, status_body("in_progress", progress=0.25)),
                             httpx.RemoteProtocolError("peer closed connection without sending complete message body")),
        lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),  # the reconnect fails once
        lambda: sse_response(sse_event(3, status_body("in_progress", progress=0.75))),  # ends, not terminal
        lambda: sse_response(PING, sse_event(4, status_body("completed"))),
    ]
    client, rec = make_client(streaming_server(connections, result, status=status_body("in_progress", progress=0.75)))
    updates = list(client.watch(RID))
    assert updates == [Queued(RID, 0), InProgress(RID, 0.25), InProgress(RID, 0.75), Completed(RID, result["output"])]
    resumed = [r.headers.get("last-event-id") for r in stream_requests(rec)]
    assert resumed == [None, "2", "2", "3"]
    assert rec.paths().count(f"GET /v1/requests/{RID}/status") == 1  # after the stream that ended early
    # backoff: 0.5 s base doubling while failures follow each other, reset by a new event
    assert len(clock.sleeps) == 3
    assert 0.25 <= clock.sleeps[0] <= 0.5 and 0.5 <= clock.sleeps[1] <= 1.0 and 0.25 <= clock.sleeps[2] <= 0.5


def test_status_stream_that_ends_early_on_a_finished_request_yields_the_result(make_client, clock):
    """The server closes at once (e.g. resumed after its last event): one /status call shows the
    request ended, and the stream ends with the result instead of reconnecting."""
    result = completed_body(f"{BASE}/files/a.png")
    client, rec = make_client(streaming_server([lambda: sse_response(PING)], result, status=status_body("completed")))
    assert list(client.watch(RID)) == [Completed(RID, result["output"])]
    assert rec.paths() == ["GET /v1/models", f"GET /v1/requests/{RID}/status/stream", f"GET /v1/requests/{RID}/status",
                           f"GET /v1/requests/{RID}/result"]
    assert clock.sleeps == []


def test_status_stream_gives_up_after_max_retries_drops_in_a_row(make_client, clock):
    def refused() -> httpx.Response:
        raise httpx.ConnectError("refused")

    client, rec = make_client(streaming_server([refused] * 10, {}), max_retries=3)
    with pytest.raises(errors.APIConnectionError) as info:
        list(client.watch(RID))
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(stream_requests(rec)) == 4 and len(clock.sleeps) == 3
    assert RID in str(info.value)


def test_status_stream_errors(make_client, clock):
    client, rec = make_client(streaming_server([lambda: error_response(404, "unknown request", **FEATURES)], {}))
    with pytest.raises(errors.NotFoundError) as info:
        list(client.watch(RID))
    assert info.value.request_id == RID and len(stream_requests(rec)) == 1 and clock.sleeps == []
    # 503 with Retry-After: wait, then reconnect
    client, rec = make_client(streaming_server(
        [lambda: error_response(503, "busy", **{"Retry-After": "2", **FEATURES}),
         lambda: sse_response(sse_event(1, status_body("cancelled")))], status_body("cancelled")))
    assert list(client.watch(RID)) == [Cancelled(RID)]
    assert clock.sleeps == [2.0]
    # a 200 that is not an event stream
    client, _ = make_client(streaming_server([lambda: httpx.Response(200, json=status_body("in_queue"))], {}))
    with pytest.raises(errors.ModelAPIError, match="not an event stream"):
        list(client.watch(RID))


def test_status_stream_deadline(make_client, clock):
    events = [sse_event(i, status_body("in_queue", queue_position=9 - i)) for i in range(1, 9)]
    client, _ = make_client(streaming_server([lambda: sse_response(*events, clock=clock, tick_s=1.0)], {}))
    seen = []
    with pytest.raises(errors.RequestTimeout):
        for update in client.watch(RID, timeout_s=2.5):
            seen.append(update)
    assert [u.position for u in seen] == [8, 7, 6]  # the third event came at t=3 s, past the deadline


def test_run_uses_the_stream_when_the_server_has_one(make_client, clock):
    result = completed_body(f"{BASE}/files/a.png")
    body = (sse_event(1, status_body("in_queue", queue_position=1)), sse_event(2, status_body("in_queue", queue_position=0)),
            sse_event(3, status_body("in_progress", progress=0.5)), sse_event(4, status_body("completed")))
    client, rec = make_client(streaming_server([lambda: sse_response(*body)], result))
    seen: list[Any] = []
    assert client.run("bytedance/seedream-4-0/sequential", {"text": "x"}, on_update=seen.append) == result
    assert seen == [Queued(RID, 1), Queued(RID, 0), InProgress(RID, 0.5), Completed(RID, result["output"])]
    assert rec.paths() == ["POST /v1/models/bytedance/seedream-4-0/sequential",
                           f"GET /v1/requests/{RID}/status/stream", f"GET /v1/requests/{RID}/result"]
    assert clock.sleeps == []  # no polling


def test_watch_learns_the_features_first(make_client):
    body = (sse_event(1, status_body("cancelled")),)
    client, rec = make_client(streaming_server([lambda: sse_response(*body)], status_body("cancelled")))
    assert list(client.watch(RID)) == [Cancelled(RID)]
    assert rec.paths() == ["GET /v1/models", f"GET /v1/requests/{RID}/status/stream"]


def test_async_stream_resumes_and_run_streams(clock):
    result = completed_body(f"{BASE}/files/a.png")
    connections = [
        lambda: async_sse_response(sse_event(1, status_body("in_queue", queue_position=0)),
                                   httpx.ReadError("reset")),
        lambda: async_sse_response(PING),  # ends early; the request is still running
        lambda: async_sse_response(PING, sse_event(2, status_body("in_progress", progress=0.5)),
                                   sse_event(3, status_body("completed"))),
        lambda: async_sse_response(sse_event(1, status_body("in_progress", progress=0.5)),
                                   sse_event(2, status_body("completed"))),
    ]

    async def main() -> tuple[list[Any], dict[str, Any], list[Any]]:
        client, rec = make_async(streaming_server(connections, result, status=status_body("in_queue")), clock)
        async with client:
            updates = [u async for u in client.watch(RID)]
            seen: list[Any] = []
            done = await client.run("bytedance/seedream-4-0/sequential", {"text": "x"}, on_update=seen.append)
        return updates, done, [r.headers.get("last-event-id") for r in stream_requests(rec)], seen

    updates, done, resumed, seen = asyncio.run(main())
    assert updates == [Queued(RID, 0), InProgress(RID, 0.5), Completed(RID, result["output"])]
    assert resumed == [None, "1", "1", None]
    assert done == result and seen == [InProgress(RID, 0.5), Completed(RID, result["output"])]
    assert len(clock.sleeps) == 2


def test_async_run_polls_without_features(clock):
    result = completed_body(f"{BASE}/files/a.png")

    async def main() -> tuple[dict[str, Any], list[str]]:
        client, rec = make_async(polling_server([status_body("in_progress"), status_body("completed")], result), clock)
        async with client:
            return await client.run("bytedance/seedream-4-0/sequential", {"text": "x"}), rec.paths()

    done, paths = asyncio.run(main())
    assert done == result and not any(p.endswith("/status/stream") for p in paths)


# --------------------------------------------------------------------------- listing


def listing_server(items: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """GET /v1/requests over ``items`` (newest first) with an opaque cursor (the next index)."""

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/requests"
        params = request.url.params
        start = int(params["cursor"].removeprefix("c")) if "cursor" in params else 0
        limit = int(params.get("limit", 20))
        chosen = [i for i in items if params.get("status", i["status"]) == i["status"]
                  and params.get("model", i["model_id"]) == i["model_id"]]
        page = chosen[start:start + limit]
        more = start + limit < len(chosen)
        return httpx.Response(200, json={"requests": page, "next_cursor": f"c{start + limit}" if more else None},
                              headers=FEATURES)

    return answer


def listed(n: int) -> list[dict[str, Any]]:
    models = ["bytedance/seedream-4-0/sequential", "bytedance/dreamina-4-0/edit"]
    return [{"request_id": f"req-{i}", "status": "completed" if i % 3 else "in_queue", "model_id": models[i % 2],
             "created_at": f"2025-01-01T00:00:{59 - i:02d}Z",
             "finished_at": f"2025-01-01T00:01:{59 - i:02d}Z" if i % 3 else None,
             "status_url": f"{BASE}/v1/requests/req-{i}/status", "result_url": f"{BASE}/v1/requests/req-{i}/result",
             **({"queue_position": i} if i % 3 == 0 else {})} for i in range(n)]


def test_list_requests_iterates_every_page(make_client):
    items = listed(7)
    client, rec = make_client(listing_server(items))
    got = list(client.list_requests(page_size=3))
    assert [r.request_id for r in got] == [i["request_id"] for i in items]
    assert [r.url.params.get("cursor") for r in rec.requests] == [None, "c3", "c6"]
    assert all(r.url.params["limit"] == "3" for r in rec.requests)
    first = got[0]
    assert isinstance(first, RequestSummary)
    assert first.update == Queued("req-0", 0) and first.model_id == "bytedance/seedream-4-0/sequential"
    assert first.created_at == datetime(2025, 1, 1, 0, 0, 59, tzinfo=timezone.utc) and first.finished_at is None
    assert isinstance(got[1].update, Completed) and got[1].finished_at is not None


def test_list_requests_filters_and_limit(make_client):
    items = listed(20)
    client, rec = make_client(listing_server(items))
    got = list(client.list_requests(status="completed", model="bytedance/dreamina-4-0/edit", limit=4, page_size=3))
    expected = [i["request_id"] for i in items if i["status"] == "completed" and i["model_id"].endswith("edit")][:4]
    assert [r.request_id for r in got] == expected
    assert [r.url.params["limit"] for r in rec.requests] == ["3", "1"]  # never more than asked for
    assert rec.requests[0].url.params["status"] == "completed"
    assert rec.requests[0].url.params["model"] == "bytedance/dreamina-4-0/edit"
    assert [r.request_id for r in client.list_requests(status=Status.IN_QUEUE)] == [
        i["request_id"] for i in items if i["status"] == "in_queue"]
    with pytest.raises(ValueError):
        list(client.list_requests(page_size=101))


def test_async_list_requests(clock):
    items = listed(5)

    async def main() -> list[str]:
        client, _ = make_async(listing_server(items), clock)
        async with client:
            return [r.request_id async for r in client.list_requests(page_size=2)]

    assert asyncio.run(main()) == [i["request_id"] for i in items]


# --------------------------------------------------------------------------- the surface


def test_result_is_typed_and_reads_as_the_body(make_client):
    body = {**completed_body(f"{BASE}/files/a.png", f"{BASE}/files/b.png"), "seed": 7, "cost": 0.09,
            "metadata": {"prompts": ["a", "b"]}}
    client, _ = make_client(sequence(httpx.Response(200, json=body)))
    result = client.result(RID, include_cost=True)
    assert result.request_id == RID and result.update == Completed(RID, body["output"])
    assert result.images == [f"{BASE}/files/a.png", f"{BASE}/files/b.png"] and result.output == body["output"]
    assert (result.seed, result.cost, result.metadata, result.error) == (7, 0.09, {"prompts": ["a", "b"]}, None)
    assert result.created_at == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert result == body and dict(result) == body and result.body == body and result["seed"] == 7
    queued = parse_result(status_body("in_queue", queue_position=1))  # a request not finished yet
    assert queued.update == Queued(RID, 1) and queued.images == [] and queued.output is None and queued.metadata == {}


def test_one_way_to_follow_a_request_and_no_test_seams_in_the_constructors():
    for cls in (Client, AsyncClient):
        assert not hasattr(cls, "iter_status") and not hasattr(cls, "stream")
        assert not {"sleep", "clock"} & set(inspect.signature(cls).parameters)


def test_stopping_a_watch_early_closes_the_stream(make_client):
    closed: list[bool] = []

    class Events(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield sse_event(1, status_body("in_queue", queue_position=3))
            yield sse_event(2, status_body("in_queue", queue_position=2))

        def close(self) -> None:
            closed.append(True)

    def events() -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "text/event-stream", **FEATURES}, stream=Events())

    client, _ = make_client(streaming_server([events], {}))
    updates = client.watch(RID)
    assert next(updates) == Queued(RID, 3) and not closed
    updates.close()
    assert closed
