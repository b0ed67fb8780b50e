"""Unit tests of the SDK (modelapi.client) against httpx.MockTransport: no server, no sleeping
(a fake clock records every wait)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from modelapi import errors
from modelapi.client import (
    AsyncClient,
    Cancelled,
    Client,
    Completed,
    Failed,
    InProgress,
    Queued,
    RequestHandle,
    parse_status,
)

BASE = "http://127.0.0.1:8000"
RID = "req-1"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32
GIF = b"GIF89a" + b"\x00" * 32


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
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(clock: FakeClock) -> Callable[..., tuple[Client, Recorder]]:
    clients: list[Client] = []

    def make(answer: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> tuple[Client, Recorder]:
        recorder = Recorder(answer)
        kwargs.setdefault("base_url", BASE)
        kwargs.setdefault("api_key", "key-1")
        client = Client(transport=httpx.MockTransport(recorder), sleep=clock.sleep, clock=clock, **kwargs)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def make_async(answer: Callable[[httpx.Request], httpx.Response], clock: FakeClock,
               **kwargs: Any) -> tuple[AsyncClient, Recorder]:
    recorder = Recorder(answer)
    client = AsyncClient(BASE, "key-1", transport=httpx.MockTransport(recorder), sleep=clock.asleep,
                         clock=clock, **kwargs)
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
    assert "idempotency-key" not in request.headers
    assert json.loads(request.content) == {"text": "Generate 3 images of a fox"}


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
    assert update.is_terminal == (body["status"] in ("completed", "failed", "cancelled"))
    assert rec.paths() == [f"GET /v1/requests/{RID}/status"]


def test_unknown_status_raises_value_error(make_client):
    client, _ = make_client(sequence(httpx.Response(200, json=status_body("paused"))))
    with pytest.raises(ValueError):
        client.status(RID)
    with pytest.raises(ValueError):
        parse_status({"request_id": RID})


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


def test_submit_without_idempotency_key_not_retried_on_connection_error(make_client):
    client, rec = make_client(sequence(httpx.ConnectError("reset"), httpx.Response(200, json=handle_body())))
    with pytest.raises(errors.APIConnectionError):
        client.submit("bytedance/seedream-4-0/sequential", {"text": "x"})
    assert len(rec.requests) == 1


def test_submit_with_idempotency_key_is_retried_with_the_same_key(make_client):
    client, rec = make_client(sequence(error_response(503), httpx.Response(200, json=handle_body())))
    handle = client.submit("bytedance/seedream-4-0/sequential", {"text": "x"}, idempotency_key="idem-42")
    assert handle.request_id == RID
    assert len(rec.requests) == 2
    assert [r.headers["idempotency-key"] for r in rec.requests] == ["idem-42", "idem-42"]
    assert rec.requests[0].content == rec.requests[1].content


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


# --------------------------------------------------------------------------- run / iter_status


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


def test_iter_status_interval_is_capped(make_client, clock):
    statuses = [status_body("in_queue", queue_position=0)] * 8 + [status_body("cancelled")]
    client, _ = make_client(polling_server(statuses, status_body("cancelled")))
    updates = list(client.iter_status(RID, poll_interval_s=1.0, max_interval_s=2.0))
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


def test_iter_status_slows_down_when_rate_limit_retries_are_spent(make_client, clock):
    answers = sequence(error_response(429, **{"Retry-After": "6"}), httpx.Response(200, json=status_body("cancelled")))
    client, _ = make_client(answers, max_retries=0)
    assert list(client.iter_status(RID)) == [Cancelled(RID)]
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


def test_async_iter_status_and_failures(clock):
    error = {"code": "engine_error", "message": "boom"}
    server = polling_server([status_body("in_progress"), status_body("failed")],
                            {"request_id": RID, "status": "failed", "error": error})

    async def main() -> list[Any]:
        client, _ = make_async(server, clock)
        async with client:
            updates = [u async for u in client.iter_status(RID)]
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
                async for _ in client.iter_status(RID, timeout_s=2):
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
