"""The SDK (modelapi.client) against a real `modelapi serve` on 127.0.0.1: Client and
AsyncClient end to end (submit, typed statuses, result, run, download, cancel, errors, local
files, idempotency; the status stream, long-poll, listing and webhooks). No mocks; nothing
leaves this machine."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from conftest import SKIMAGE_DATA, ServerProcess, started_in_background
from modelapi import _steps, catalog, errors, webhooks
from modelapi.client import AsyncClient, Cancelled, Client, Completed, InProgress, Queued

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"
SQUARE = "2048:2048 (1:1)"  # the smallest seedream size
DREAMINA_SMALL = "1024x1024(1:1)"
FAST_POLL = {"poll_interval_s": 0.02, "max_interval_s": 0.1, "timeout_s": 60}
# Slower jobs, so that a request can be seen queued and then running: 8 steps of 0.05 s each.
SLOW = {"MODELAPI_TEST_STEP_S": "0.05", "MODELAPI_TEST_STEPS": "8"}


@pytest.fixture(scope="module", autouse=True)
def _slow_server_starting(tmp_path_factory):
    """A second server whose jobs take a while, started in the background while the module's
    first tests run."""
    srv = ServerProcess(tmp_path_factory.mktemp("slow") / "data", args=["--shutdown-grace-s", "0"], env=SLOW)
    with started_in_background(srv) as started:
        yield started


@pytest.fixture
def slow_server(_slow_server_starting):
    """Each test using it waits for its own jobs, so the next one starts with an empty queue."""
    return _slow_server_starting.result()


@pytest.fixture
def chelsea(tmp_path) -> Path:
    """A local PNG file (not served by anyone) to use as an input."""
    path = tmp_path / "chelsea.png"
    shutil.copy(SKIMAGE_DATA / "chelsea.png", path)
    return path


def assert_images(paths: list[Path], request_id: str, size: tuple[int, int]) -> None:
    """Saved as ``<request_id>_<i>.jpg``: the server's default --output-format is JPEG, and the
    SDK names each file by the Content-Type it was served with."""
    assert [p.name for p in paths] == [f"{request_id}_{i}.jpg" for i in range(len(paths))]
    for path in paths:
        assert path.is_file()
        with Image.open(path) as img:
            assert img.format == "JPEG"
            assert img.size == size


def image_paths(output: dict) -> list[str]:
    """The output URLs without their query: presigned URLs (the fleet's S3 store) are signed
    anew for each answer, so two answers about one request differ in their signatures."""
    return [urlsplit(u).path for u in output["images"]]


def assert_status_sequence(updates: list, request_id: str) -> None:
    """Queued* -> InProgress* -> Completed, typed, with sane positions and progress."""
    kinds = [type(u) for u in updates]
    assert kinds[-1] is Completed, updates
    assert Queued in kinds and InProgress in kinds, updates
    last_queued = max(i for i, k in enumerate(kinds) if k is Queued)
    first_running = kinds.index(InProgress)
    assert last_queued < first_running, updates  # never back in the queue once running
    assert all(u.request_id == request_id for u in updates)
    positions = [u.position for u in updates if isinstance(u, Queued)]
    assert all(isinstance(p, int) and p >= 0 for p in positions), positions
    assert positions == sorted(positions, reverse=True), positions  # moves up the queue
    assert positions[0] >= 1, positions  # others were ahead when it was first seen
    progress = [u.progress for u in updates if isinstance(u, InProgress)]
    assert all(p is not None and 0.0 <= p <= 1.0 for p in progress), progress
    assert progress == sorted(progress), progress
    assert any(0.0 < p < 1.0 for p in progress), progress
    done = updates[-1]
    assert done.output["images"] and done.result["status"] == "completed"
    assert done.result["request_id"] == request_id


# --------------------------------------------------------------------------- Client (blocking)


def test_run_returns_completed_result_and_download_writes_images(server, tmp_path):
    seen = []
    with Client(server.base_url, server.key) as client:
        result = client.run(SEQ, {"text": "Generate 2 images of a red fox", "image_size": SQUARE},
                            on_update=seen.append)
        assert result["status"] == "completed"
        assert len(result["output"]["images"]) == 2 and "image" not in result["output"]
        assert result["metadata"]["image_count"] == 2
        assert isinstance(seen[-1], Completed) and seen[-1].result == result
        paths = client.download(result, tmp_path / "out")
        assert_images(paths, result["request_id"], (2048, 2048))
        # result() of a finished request is the same completed body
        again = client.result(result["request_id"])
        assert image_paths(again["output"]) == image_paths(result["output"])
        assert client.result(result["request_id"], include_cost=True)["cost"] > 0
        assert isinstance(client.status(result["request_id"]), Completed)


def test_validation_error_has_a_detail_list(server):
    with Client(server.base_url, server.key) as client:
        bad = {"text": "a cat", "sequential_image_generation_options": 99}
        with pytest.raises(errors.ValidationError) as info:
            client.submit(SEQ, bad)
        exc = info.value
        assert (exc.status_code, exc.error_code) == (422, 422001)
        assert isinstance(exc.detail, list) and exc.detail
        problem = exc.detail[0]
        assert problem["loc"] == ["body", "sequential_image_generation_options"]
        assert isinstance(problem["msg"], str) and problem["msg"]
        with pytest.raises(errors.ValidationError):
            client.run(SEQ, bad, timeout_s=30)  # a refused submit surfaces from run() too
        with pytest.raises(errors.ValidationError) as info:
            client.submit(SEQ, {})  # the required prompt is missing
        assert ["body", "text"] in [d["loc"] for d in info.value.detail]
        with pytest.raises(errors.NotFoundError):
            client.submit("acme/nope/v1", {"text": "x"})


def test_wrong_key_is_an_authentication_error(server):
    with Client(server.base_url, "mapi_wrong") as client:
        with pytest.raises(errors.AuthenticationError) as info:
            client.models()
        assert (info.value.status_code, info.value.error_code) == (401, 401001)
        with pytest.raises(errors.AuthenticationError):
            client.submit(SEQ, {"text": "a cat"})
        with pytest.raises(errors.AuthenticationError):
            client.status("req_whatever")


@pytest.mark.parametrize("mode", ["upload", "data_uri"])
def test_local_file_as_input(server, chelsea, tmp_path, mode):
    with Client(server.base_url, server.key) as client:
        schema = client.model_schema(DREAMINA)
        body = {"image_urls": [str(chelsea)], "prompt": "the cat as a lion", "width×height": DREAMINA_SMALL}
        resolved = client.resolve_files(body, schema=schema, mode=mode)
        assert body["image_urls"] == [str(chelsea)]  # the caller's dict is left alone
        url = resolved["image_urls"][0]
        if mode == "upload":
            assert url.startswith(f"{server.base_url}/v1/files/")
        else:
            assert url.startswith("data:image/png;base64,")
        result = client.run(DREAMINA, resolved, timeout_s=60)
        assert result["status"] == "completed"
        assert_images(client.download(result, tmp_path), result["request_id"], (1024, 1024))
        # without a schema the SDK knows the "images" field of edit-sequential
        seq = client.resolve_files({"images": [str(chelsea)], "text": "one image of the cat",
                                    "image_size": SQUARE}, mode=mode)
        assert client.run(EDIT_SEQ, seq, timeout_s=60)["status"] == "completed"


def test_idempotency_key_returns_the_same_request(server):
    key = f"order-{uuid.uuid4()}"
    body = {"text": "one image of a lighthouse", "image_size": SQUARE}
    with Client(server.base_url, server.key) as client:
        a = client.submit(SEQ, body, idempotency_key=key)
        b = client.submit(SEQ, body, idempotency_key=key)
        assert a == b
        with pytest.raises(errors.ValidationError) as info:
            client.submit(SEQ, {**body, "text": "something else"}, idempotency_key=key)
        assert info.value.detail[0]["loc"] == ["header", "Idempotency-Key"]
        # run() with the same key answers with that same request's result
        assert client.run(SEQ, body, idempotency_key=key, timeout_s=60)["request_id"] == a.request_id
        assert client.submit(SEQ, body).request_id != a.request_id  # no key: a new request


def test_catalogue(server):
    with Client(server.base_url, server.key) as client:
        assert sorted(m["model_id"] for m in client.models()) == sorted(catalog.models())
        for model_id, model in catalog.models().items():
            assert client.model_schema(model_id)["input_schema"] == model.input_schema


def test_submit_then_watch_yields_typed_statuses(slow_server, tmp_path):
    srv = slow_server
    with Client(srv.base_url, srv.key) as client:
        handles = [client.submit(SEQ, {"text": f"one image of a boat, take {i}", "image_size": SQUARE})
                   for i in range(3)]
        last = handles[-1]
        assert last.status_url == f"{srv.base_url}/v1/requests/{last.request_id}/status"
        assert last.result_url == f"{srv.base_url}/v1/requests/{last.request_id}/result"
        assert last.cancel_url == f"{srv.base_url}/v1/requests/{last.request_id}/cancel"
        first = client.status(handles[0].request_id)
        assert isinstance(first, (Queued, InProgress)), first
        updates = list(client.watch(last.request_id, **FAST_POLL))
        assert_status_sequence(updates, last.request_id)
        # the raw result body of the finished request
        body = client.result(last.request_id)
        assert body["status"] == "completed" and body["output"] == updates[-1].output
        assert body["output"]["image"] == body["output"]["images"][0]  # exactly one image
        assert_images(client.download(body, tmp_path), last.request_id, (2048, 2048))
        for handle in handles[:2]:
            assert isinstance(client.status(handle.request_id), Completed)


def test_cancel_a_queued_request(slow_server):
    srv = slow_server
    with Client(srv.base_url, srv.key) as client:
        blocker = client.submit(SEQ, {"text": "one image of a tower", "image_size": SQUARE})
        # a worker may take the next request early (one job ahead); the one after waits its turn
        ahead = client.submit(SEQ, {"text": "one image of a gate", "image_size": SQUARE})
        queued = client.submit(SEQ, {"text": "one image of a bridge", "image_size": SQUARE})
        assert isinstance(client.status(queued.request_id), Queued)
        assert client.cancel(queued.request_id) == {
            "request_id": queued.request_id, "status": "cancelled", "outcome": "cancelled"}
        assert client.cancel(queued.request_id)["outcome"] == "cancelled"  # idempotent
        assert isinstance(client.status(queued.request_id), Cancelled)
        assert [type(u) for u in client.watch(queued.request_id, **FAST_POLL)] == [Cancelled]

        # run() whose request gets cancelled while it waits raises RequestCancelled
        def cancel_when_queued(update):
            if isinstance(update, Queued):
                client.cancel(update.request_id)

        second, third = (client.submit(SEQ, {"text": f"one image of a quay, take {i}", "image_size": SQUARE})
                         for i in range(2))  # keep it queued
        with pytest.raises(errors.RequestCancelled) as info:
            client.run(SEQ, {"text": "one image of a ship", "image_size": SQUARE},
                       on_update=cancel_when_queued, timeout_s=60)
        assert isinstance(client.status(info.value.request_id), Cancelled)

        # running or finished requests are not cancellable (200, not an error)
        with contextlib.closing(client.watch(blocker.request_id)) as updates:
            next(u for u in updates if not isinstance(u, Queued))  # the blocker has started
        outcome = client.cancel(blocker.request_id)
        assert outcome["outcome"] == "not_cancellable" and outcome["status"] in ("in_progress", "completed")
        assert isinstance(list(client.watch(blocker.request_id, **FAST_POLL))[-1], Completed)
        for other in (ahead, second, third):
            assert isinstance(list(client.watch(other.request_id, **FAST_POLL))[-1], Completed)
        outcome = client.cancel(blocker.request_id)
        assert outcome == {"request_id": blocker.request_id, "status": "completed", "outcome": "not_cancellable"}


# --------------------------------------------------------------------------- AsyncClient


def test_async_run_download_result_and_catalogue(server, tmp_path):
    async def main():
        async with AsyncClient(server.base_url, server.key) as client:
            seen = []

            async def on_update(update):  # a coroutine callback is awaited
                seen.append(update)

            result = await client.run(SEQ, {"text": "Generate 2 images of a kite", "image_size": SQUARE},
                                      on_update=on_update)
            paths = await client.download(result, tmp_path / "async")
            body = await client.result(result["request_id"])
            models = await client.models()
            schema = await client.model_schema(SEQ)
            status = await client.status(result["request_id"])
            return result, seen, paths, body, models, schema, status

    result, seen, paths, body, models, schema, status = asyncio.run(main())
    assert result["status"] == "completed" and len(result["output"]["images"]) == 2
    assert isinstance(seen[-1], Completed)
    assert_images(paths, result["request_id"], (2048, 2048))
    assert image_paths(body["output"]) == image_paths(result["output"])
    assert sorted(m["model_id"] for m in models) == sorted(catalog.models())
    assert schema["input_schema"] == catalog.get(SEQ).input_schema
    assert isinstance(status, Completed)


def test_async_statuses_and_cancel(slow_server):
    srv = slow_server

    async def main():
        async with AsyncClient(srv.base_url, srv.key) as client:
            handles = [await client.submit(SEQ, {"text": f"one image of a hill, take {i}", "image_size": SQUARE})
                       for i in range(5)]
            # cancel the third while it waits (the second may be taken one job ahead); the last
            # still has at least one ahead of it in the queue
            cancelled = await client.cancel(handles[2].request_id)
            cancelled_updates = [u async for u in client.watch(handles[2].request_id, **FAST_POLL)]
            updates = [u async for u in client.watch(handles[4].request_id, **FAST_POLL)]

            async def cancel_when_queued(update):
                if isinstance(update, Queued):
                    await client.cancel(update.request_id)

            blocker = await client.submit(SEQ, {"text": "one image of a dune", "image_size": SQUARE})
            await client.submit(SEQ, {"text": "one image of a mesa", "image_size": SQUARE})  # may go one job ahead
            with pytest.raises(errors.RequestCancelled) as info:
                await client.run(SEQ, {"text": "one image of a cliff", "image_size": SQUARE},
                                 on_update=cancel_when_queued, timeout_s=60)
            run_cancelled = await client.status(info.value.request_id)
            async with contextlib.aclosing(client.watch(blocker.request_id)) as blocker_stream:
                async for update in blocker_stream:
                    if not isinstance(update, Queued):  # the blocker has started
                        break
            not_cancellable = await client.cancel(blocker.request_id)  # running (or already done)
            blocker_updates = [u async for u in client.watch(blocker.request_id, **FAST_POLL)]
            return handles, cancelled, cancelled_updates, updates, run_cancelled, not_cancellable, blocker_updates

    handles, cancelled, cancelled_updates, updates, run_cancelled, not_cancellable, blocker_updates = asyncio.run(main())
    assert not_cancellable["outcome"] == "not_cancellable"
    assert not_cancellable["status"] in ("in_progress", "completed")
    assert isinstance(blocker_updates[-1], Completed)
    assert cancelled["outcome"] == "cancelled" and cancelled["status"] == "cancelled"
    assert [type(u) for u in cancelled_updates] == [Cancelled]
    assert_status_sequence(updates, handles[4].request_id)
    assert isinstance(run_cancelled, Cancelled)


def test_async_errors_local_files_and_idempotency(server, chelsea):
    key = f"order-{uuid.uuid4()}"

    async def main():
        async with AsyncClient(server.base_url, "mapi_wrong") as bad_client:
            with pytest.raises(errors.AuthenticationError) as auth:
                await bad_client.submit(SEQ, {"text": "a cat"})
        async with AsyncClient(server.base_url, server.key) as client:
            with pytest.raises(errors.ValidationError) as invalid:
                await client.submit(SEQ, {"text": "a cat", "sequential_image_generation_options": 99})
            schema = await client.model_schema(DREAMINA)
            results = []
            for mode in ("upload", "data_uri"):
                body = await client.resolve_files(
                    {"image_urls": [str(chelsea)], "prompt": "the cat in the snow", "width×height": DREAMINA_SMALL},
                    schema=schema, mode=mode)
                results.append((body["image_urls"][0], await client.run(DREAMINA, body, timeout_s=60)))
            body = {"text": "one image of a windmill", "image_size": SQUARE}
            a = await client.submit(SEQ, body, idempotency_key=key)
            b = await client.submit(SEQ, body, idempotency_key=key)
            return auth.value, invalid.value, results, a, b

    auth, invalid, results, a, b = asyncio.run(main())
    assert auth.status_code == 401
    assert invalid.status_code == 422
    assert invalid.detail[0]["loc"] == ["body", "sequential_image_generation_options"] and invalid.detail[0]["msg"]
    (uploaded, r1), (inline, r2) = results
    assert uploaded.startswith(f"{server.base_url}/v1/files/") and inline.startswith("data:image/png;base64,")
    for result in (r1, r2):
        assert result["status"] == "completed"
        assert (result["metadata"]["width"], result["metadata"]["height"]) == (1024, 1024)
        assert httpx.get(result["output"]["image"]).status_code == 200
    assert a.request_id == b.request_id


# --------------------------------------------------------------------------- push: stream, long-poll, listing, webhooks


def recording_hooks(paths: list[str]) -> dict:
    def record(request: httpx.Request) -> None:
        paths.append(f"{request.method} {request.url.path}")

    return {"request": [record]}


def test_run_uses_the_status_stream_of_our_server(server):
    paths: list[str] = []
    with Client(server.base_url, server.key, event_hooks=recording_hooks(paths)) as client:
        seen: list = []
        result = client.run(SEQ, {"text": "one image of a harbour", "image_size": SQUARE}, on_update=seen.append)
        assert {"status-stream", "long-poll", "webhooks", "idempotency-key"} <= client.features()
    rid = result["request_id"]
    assert result["status"] == "completed" and result["output"]["images"]
    # submit, one stream to the end, the result: no polling
    assert paths == [f"POST /v1/models/{SEQ}", f"GET /v1/requests/{rid}/status/stream", f"GET /v1/requests/{rid}/result"]
    assert isinstance(seen[-1], Completed) and seen[-1].result == result


def recording_hooks_async(paths: list[str]) -> dict:
    async def record(request: httpx.Request) -> None:
        paths.append(f"{request.method} {request.url.path}")

    return {"request": [record]}


def test_async_run_uses_the_status_stream_of_our_server(server):
    paths: list[str] = []

    async def main() -> tuple[dict, dict]:
        async with AsyncClient(server.base_url, server.key, event_hooks=recording_hooks_async(paths)) as client:
            # with on_update (progress wanted) run() follows the stream; without, the submit waits (Prefer: wait)
            followed = await client.run(SEQ, {"text": "one image of a dock", "image_size": SQUARE}, on_update=lambda u: None)
            return followed, await client.run(SEQ, {"text": "one image of a quay", "image_size": SQUARE})

    result, waited = asyncio.run(main())
    rid = result["request_id"]
    assert paths == [f"POST /v1/models/{SEQ}", f"GET /v1/requests/{rid}/status/stream", f"GET /v1/requests/{rid}/result",
                     f"POST /v1/models/{SEQ}"]
    assert waited["status"] == "completed" and waited["request_id"] != rid


def test_stream_of_a_finished_request_is_its_result(server):
    with Client(server.base_url, server.key) as client:
        result = client.run(SEQ, {"text": "one image of a pier", "image_size": SQUARE})
        [update] = client.watch(result["request_id"])
        # the same result (presigned URLs are signed anew for each answer: compare their paths)
        assert isinstance(update, Completed) and update.request_id == result["request_id"]
        assert image_paths(update.output) == image_paths(result["output"])
        with pytest.raises(errors.NotFoundError):
            list(client.watch("req_unknown"))


def test_async_stream_shows_queue_positions_then_progress(slow_server):
    srv = slow_server

    async def main() -> tuple[str, list]:
        async with AsyncClient(srv.base_url, srv.key) as client:
            handles = [await client.submit(SEQ, {"text": f"one image of a reef, take {i}", "image_size": SQUARE})
                       for i in range(3)]
            return handles[-1].request_id, [u async for u in client.watch(handles[-1].request_id)]

    rid, updates = asyncio.run(main())
    assert_status_sequence(updates, rid)
    assert all(a != b for a, b in zip(updates, updates[1:])), updates


class _CutStream(httpx.SyncByteStream):
    """A response stream that breaks (httpx.ReadError) after ``events`` status events went
    through, remembering their ids."""

    def __init__(self, inner: httpx.SyncByteStream, events: int) -> None:
        self.inner, self.events, self.ids = inner, events, []

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self.inner:
            yield chunk
            for line in chunk.decode().splitlines():
                if line.startswith("id:"):
                    self.ids.append(line[3:].strip())
            seen += chunk.count(b"event: status")
            if seen >= self.events:
                raise httpx.ReadError("connection cut by the test")

    def close(self) -> None:
        self.inner.close()


class CutFirstStream(httpx.BaseTransport):
    """Real HTTP, but the first status stream is cut after two events."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.last_event_ids: list[str | None] = []
        self.cut: _CutStream | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/status/stream"):
            return response
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if self.cut is not None:
            return response
        assert isinstance(response.stream, httpx.SyncByteStream)
        self.cut = _CutStream(response.stream, events=2)
        return httpx.Response(response.status_code, headers=response.headers, stream=self.cut,
                              extensions=response.extensions)

    def close(self) -> None:
        self.inner.close()


def test_stream_resumes_after_a_dropped_connection_without_repeating(slow_server, monkeypatch):
    srv = slow_server
    transport = CutFirstStream()
    monkeypatch.setattr(_steps, "sleep", lambda s: None)  # reconnect at once
    with Client(srv.base_url, srv.key, transport=transport) as client:
        handles = [client.submit(SEQ, {"text": f"one image of a lagoon, take {i}", "image_size": SQUARE})
                   for i in range(3)]
        updates = list(client.watch(handles[-1].request_id, timeout_s=60))
    assert transport.cut is not None and len(transport.cut.ids) == 2
    # one reconnect, resuming after the last event received
    assert transport.last_event_ids == [None, transport.cut.ids[-1]]
    assert_status_sequence(updates, handles[-1].request_id)
    assert all(a != b for a, b in zip(updates, updates[1:])), updates


def test_long_poll_answers_when_the_request_ends(slow_server):
    srv = slow_server
    with Client(srv.base_url, srv.key) as client:
        handle = client.submit(SEQ, {"text": "one image of a cove", "image_size": SQUARE})
        body = client.result(handle.request_id, wait_s=30)
        assert body["status"] == "completed" and body["output"]["images"]
        with pytest.raises(errors.ValidationError):
            client.result(handle.request_id, wait_s=61)


def test_list_requests_pages_newest_first(server, chelsea):
    with Client(server.base_url, server.key) as client:
        dreamina = client.resolve_files({"image_urls": [str(chelsea)], "prompt": "a kelp forest",
                                         "width×height": DREAMINA_SMALL}, mode="upload")
        seq = {"text": "one image of a kelp forest", "image_size": SQUARE}
        handles = [client.submit(SEQ, seq) if i % 2 else client.submit(DREAMINA, dreamina) for i in range(5)]
        newest = list(client.list_requests(limit=5, page_size=2))
        assert [r.request_id for r in newest] == [h.request_id for h in reversed(handles)]
        assert [r.model_id for r in newest] == [SEQ if i % 2 else DREAMINA for i in reversed(range(5))]
        assert all(r.created_at is not None for r in newest)
        # every request exactly once across small pages, the same as one big page
        everything = [r.request_id for r in client.list_requests(page_size=3)]
        assert len(everything) == len(set(everything)) >= 5
        assert everything == [r.request_id for r in client.list_requests(page_size=100)]
        for handle in handles:
            client.result(handle.request_id, wait_s=30)
        done = list(client.list_requests(status="completed", model=SEQ))
        assert {h.request_id for h in handles[1::2]} <= {r.request_id for r in done}
        assert all(isinstance(r.update, Completed) and r.model_id == SEQ and r.finished_at is not None for r in done)
        created = [r.created_at for r in done]
        assert created == sorted(created, reverse=True)


class _Receiver(http.server.BaseHTTPRequestHandler):
    deliveries: list[tuple[bytes, dict[str, str]]]
    arrived: threading.Event

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.deliveries.append((body, dict(self.headers.items())))
        self.send_response(204)
        self.end_headers()
        self.arrived.set()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture
def webhook_receiver():
    """A real HTTP server on 127.0.0.1 recording POSTs: yields (url, deliveries, arrived)."""
    handler = type("Receiver", (_Receiver,), {"deliveries": [], "arrived": threading.Event()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", handler.deliveries, handler.arrived
    httpd.shutdown()


def test_webhook_delivery_verifies_with_the_sdk(server, webhook_receiver):
    url, deliveries, arrived = webhook_receiver
    with Client(server.base_url, server.key) as client:
        secret = client.webhook_secret()
        assert secret.startswith("whsec_")
        result = client.run(SEQ, {"text": "one image of a buoy", "image_size": SQUARE}, webhook=url)
        assert arrived.wait(30), "no webhook delivery within 30 s"
    body, headers = deliveries[0]
    delivered = webhooks.verify(body, headers, secret)
    assert delivered["request_id"] == result["request_id"]
    assert image_paths(delivered["output"]) == image_paths(result["output"])
    with pytest.raises(errors.WebhookVerificationError):
        webhooks.verify(body.replace(b"completed", b"failed"), headers, secret)
