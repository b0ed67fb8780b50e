"""One tenant cannot hurt another through connections, streams, bodies and uploads — over real
HTTP on 127.0.0.1, against a real `modelapi serve` process: status streams and long-polls capped
per key and ended at once when the key is revoked; connections that trickle their headers closed
and connections over the cap answered 503; a JSON body's parsing cost bounded before it is
parsed; an upload's key checked before its body is read, the upload decoded whole and held to a
per-key quota. Where the database or the store matters, in both configurations."""

from __future__ import annotations

import io
import json
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from conftest import ServerProcess
from modelapi.core import auth, db

SEQ = "bytedance/seedream-4-0/sequential"


def new_key(server: ServerProcess, name: str) -> tuple[str, str]:
    """A new key on ``server``'s database: (its id, its secret)."""
    engine = db.connect(server.database_url)
    try:
        record, secret = auth.create_key(engine, name)
    finally:
        engine.dispose()
    return record.id, secret


def revoke(server: ServerProcess, key_id: str) -> None:
    engine = db.connect(server.database_url)
    try:
        assert auth.revoke_key(engine, key_id)
    finally:
        engine.dispose()


@contextmanager
def open_stream(client: httpx.Client, request_id: str, headers: dict | None = None) -> Iterator[httpx.Response]:
    with client.stream("GET", f"/v1/requests/{request_id}/status/stream", headers=headers or {}) as response:
        yield response


def events(response: httpx.Response) -> Iterator[dict]:
    """Each ``status`` event's body, as it arrives, until the server ends the stream. Keep the
    iterator while the stream should stay open: httpx closes the connection with it."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "status":
            yield json.loads(line[5:])


def until(check, timeout_s: float = 10, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


# -- streams and long-polls --------------------------------------------------------------------
def stream_opens(client: httpx.Client, request_id: str, headers: dict | None = None) -> bool:
    """Whether a stream opens (200, its first event read), or is refused with 429."""
    with open_stream(client, request_id, headers) as s:
        assert s.status_code in (200, 429), s.status_code
        return s.status_code == 200 and next(events(s))["status"] == "in_queue"


def test_streams_and_long_polls_are_capped_per_key_and_a_bad_last_event_id_is_ignored(make_server):
    api = make_server(args=["--no-worker", "--max-streams-per-key", "2"]).start()  # no worker: requests stay queued
    _, other_key = new_key(api, "other")
    with api.client() as c, api.client(other_key) as other, ExitStack() as held:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        other_rid = other.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        first = held.enter_context(open_stream(c, rid))
        first_events = events(first)  # kept: the stream closes with its reader
        assert first.status_code == 200 and next(first_events)["status"] == "in_queue"

        # One place left, two long-polls at once: one waits its 3 s, the other is refused at once.
        polls: list[tuple[float, httpx.Response]] = []

        def long_poll() -> None:
            t = time.monotonic()
            answer = c.get(f"/v1/requests/{rid}/result", params={"wait": 3})
            polls.append((time.monotonic() - t, answer))
        threads = [threading.Thread(target=long_poll) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        (refused_s, refused), (waited_s, waited) = sorted(polls, key=lambda p: p[0])
        assert refused.status_code == 429 and refused.json()["error_code"] == 429001 and refused_s < 1, (refused_s, refused.text)
        assert "--max-streams-per-key" in refused.json()["error_message"] and refused.headers["Retry-After"] == "5"
        assert waited.status_code == 200 and waited.json()["status"] == "in_queue" and waited_s >= 3

        second = held.enter_context(open_stream(c, rid))  # the long-poll gave its place back as it answered
        assert second.status_code == 200
        assert not stream_opens(c, rid), "a third stream of the key is refused"
        assert c.get(f"/v1/requests/{rid}/result", params={"wait": 1}).status_code == 429
        assert c.get(f"/v1/requests/{rid}/result").status_code == 200, "no wait: no long-poll, not counted"
        assert stream_opens(other, other_rid), "another key has its own count"
        held.close()  # the two streams end: their places are given back
        until(lambda: stream_opens(c, rid), 3, "a stream opens once the others closed")

        # Last-Event-ID: anything but a plain event id is ignored (the stream starts afresh), never a 500.
        for value in (b"\xb2", "\u0663".encode(), b"9" * 5000, b"-1", b"1e9", b"7 8", b"0x10"):
            until(lambda: stream_opens(c, rid, {"Last-Event-ID": value}), 3, f"Last-Event-ID {value[:20]!r}")
    assert "Exception in ASGI application" not in api.log() and "unexpected error" not in api.log()


def test_a_revoked_key_s_streams_end_and_its_long_polls_answer_401_within_a_tick(make_server):
    api = make_server(env={"MODELAPI_TEST_STEP_S": "0.1", "MODELAPI_TEST_STEPS": "30"}).start()  # a 3 s job
    key_id, secret = new_key(api, "hostile")
    with api.client(secret) as c:
        running, queued = (c.post(f"/v1/models/{SEQ}", json={"text": f"a fox {i}"}).json()["request_id"] for i in range(2))
        polled: list[tuple[float, httpx.Response]] = []
        with open_stream(c, running) as s:
            stream = events(s)
            assert next(b for b in stream if b["status"] == "in_progress"), "events flow: progress every 0.1 s"
            poll = threading.Thread(target=lambda: polled.append((time.monotonic(), c.get(f"/v1/requests/{queued}/result",
                                                                                             params={"wait": 30}))))
            poll.start()
            for _ in range(5):  # let the long-poll reach its wait (its 401's message tells which check answered)
                assert next(stream)["status"] == "in_progress"
            revoke(api, key_id)
            revoked_at = time.monotonic()
            after = list(stream)  # until the server ends the stream
            ended_at = time.monotonic()
        poll.join(10)
        assert not poll.is_alive()
        assert ended_at - revoked_at < 1.5, ended_at - revoked_at
        assert len(after) <= 1 and all(b["status"] == "in_progress" for b in after), after  # a tick under way
        [(answered_at, answer)] = polled
        assert answer.status_code == 401 and answer.json()["error_code"] == 401001
        assert answer.json()["error_message"] == "the API key was revoked", "ended while waiting, by the watcher"
        assert answered_at - revoked_at < 1.5, answered_at - revoked_at
        assert c.get(f"/v1/requests/{running}/status/stream").status_code == 401
    assert "Exception in ASGI application" not in api.log()


# -- uploads -------------------------------------------------------------------------------------
def noise_png(seed: int, side: int = 128) -> bytes:
    """A PNG of random pixels (incompressible: ~``3 * side**2`` bytes)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_an_upload_is_authenticated_before_its_body_decoded_whole_and_held_to_a_quota(make_server):
    png = noise_png(0)
    quota = int(2.5 * len(png))
    api = make_server(args=["--no-worker", "--max-upload-bytes-per-key", str(quota)]).start()
    stored = db.connect(api.database_url)

    def uploads() -> list[tuple[str, int]]:
        with stored.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(db.files.c.owner_key_id, db.files.c.bytes))]

    try:
        # No key: the 401 comes back while the 20 MB body is still unsent.
        head = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 20000000\r\n\r\n"
                '--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n')
        with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
            sock.sendall(head.encode() + png[:65536])
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                assert chunk, f"closed without an answer: {answer!r}"
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]

        with api.client() as c:
            # Junk behind a PNG signature is not an image: refused, nothing stored.
            junk = c.post("/v1/files", files={"file": ("a.png", b"\x89PNG\r\n\x1a\n" + os.urandom(5000), "image/png")})
            assert junk.status_code == 422
            assert junk.json()["detail"][0] | {"msg": None} == {"loc": ["body", "file"], "msg": None, "type": "image_corrupt"}
            truncated = c.post("/v1/files", files={"file": ("a.png", png[: len(png) // 2], "image/png")})
            assert truncated.status_code == 422 and truncated.json()["detail"][0]["type"] == "image_corrupt"
            assert c.post("/v1/files", files={"other": ("a.png", png, "image/png")}).json()["detail"][0]["loc"] == ["body", "file"]
            assert uploads() == []

            # The quota: two fit, the third is refused (413 naming the quota); another key has its own.
            first = c.post("/v1/files", files={"file": ("a.png", png, "image/png")})
            assert first.status_code == 201, first.text
            assert c.get(f"/v1/files/{first.json()['id']}").content == png, "served back as uploaded"
            assert c.post("/v1/files", files={"file": ("b.png", noise_png(1), "image/png")}).status_code == 201
            over = c.post("/v1/files", files={"file": ("c.png", noise_png(2), "image/png")})
            assert over.status_code == 413 and over.json()["error_code"] == 413001, over.text
            assert f"{quota}-byte quota (--max-upload-bytes-per-key)" in over.json()["error_message"]
        _, other_key = new_key(api, "other")
        with api.client(other_key) as other:
            assert other.post("/v1/files", files={"file": ("c.png", noise_png(2), "image/png")}).status_code == 201
        by_key: dict[str, int] = {}
        for owner, size in uploads():
            by_key[owner] = by_key.get(owner, 0) + size
        assert sorted(by_key.values()) == sorted([len(png) + len(noise_png(1)), len(noise_png(2))])
        assert max(by_key.values()) <= quota
    finally:
        stored.dispose()
    assert "Exception in ASGI application" not in api.log()


# -- connections and bodies (neither the database nor the store matters: SQLite only) ------------
@pytest.fixture
def lone_server(tmp_path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", args=["--no-worker", "--header-timeout-s", "2", "--max-connections", "40"])
    yield server.start()
    server.stop()


def test_connections_that_trickle_headers_are_closed_and_connections_over_the_cap_answered_503(lone_server):
    api = lone_server
    with api.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
    long_poll: list[httpx.Response] = []
    poll = threading.Thread(target=lambda: long_poll.append(httpx.get(f"{api.base_url}/v1/requests/{rid}/result",
                                                                      params={"wait": 4}, headers=api.headers(), timeout=30)))
    poll.start()  # a request in progress for longer than the header timeout

    sel = selectors.DefaultSelector()
    opened = time.monotonic()
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", api.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ)
    closed_after: list[float] = []
    normal: list[float] = []
    while sel.get_map() and time.monotonic() - opened < 10:
        for key, _ in sel.select(timeout=0.25):
            try:
                data = key.fileobj.recv(4096)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
            assert data == b"", f"an answer to incomplete headers: {data!r}"
            closed_after.append(time.monotonic() - opened)
            sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        for key in list(sel.get_map().values()):
            try:
                key.fileobj.send(b"X")  # type: ignore[union-attr]  # one more byte of a header name
            except OSError:
                pass
        if len(normal) < 3:  # meanwhile, a normal request is answered
            t = time.monotonic()
            assert httpx.get(api.base_url + "/healthz", timeout=5).status_code == 200
            normal.append(time.monotonic() - t)
    assert len(closed_after) == 30, f"still open after 10 s: {30 - len(closed_after)}"
    assert 2 - 0.3 < min(closed_after) and max(closed_after) < 2 + 1.5, closed_after
    assert max(normal) < 1.0, normal
    poll.join(10)
    assert long_poll[0].status_code == 200 and long_poll[0].json()["status"] == "in_queue", "not cut by the header timeout"

    # Over --max-connections 40: 40 idle connections held, a new request is answered 503;
    # once the header timeout has closed them, it is served again.
    idle = [socket.create_connection(("127.0.0.1", api.port), timeout=5) for _ in range(40)]
    try:
        over = httpx.get(api.base_url + "/healthz", timeout=5)
        assert over.status_code == 503, over.text
        t = time.monotonic()
        until(lambda: httpx.get(api.base_url + "/healthz", timeout=5).status_code == 200, 5, "served again")
        assert time.monotonic() - t < 2 + 1.5
        assert all(s.recv(1) == b"" for s in idle), "each idle connection was closed by the server"
    finally:
        for s in idle:
            s.close()


def test_a_json_body_s_cost_is_bounded_before_it_is_parsed(lone_server):
    api = lone_server

    def memory_kb(field: str) -> int:
        assert api.proc is not None
        status = open(f"/proc/{api.proc.pid}/status").read()
        return int(status.split(field + ":")[1].split()[0])

    url = f"{api.base_url}/v1/models/{SEQ}"
    wide = b"[" + b"{}," * (17_000_000 // 3) + b"{}]"  # json.loads of it alone: +430 MB
    with api.client() as c:
        c.headers["Content-Type"] = "application/json"
        before = memory_kb("VmRSS")
        refused = c.post(url, content=wide)
        peak_growth_mb = (memory_kb("VmHWM") - before) / 1024
        assert refused.status_code == 400 and refused.json()["error_code"] == 400001
        assert refused.json()["error_message"] == "JSON body has more than 10000 values (arrays, objects, strings and list items)"
        assert peak_growth_mb < 120, f"the server grew by {peak_growth_mb:.0f} MB for a {len(wide) >> 20} MB body"
        deep = c.post(url, content=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400 and deep.json()["error_message"] == "JSON body is nested deeper than 64 levels"
        deep_in_object = c.post(url, content=b'{"text": "a fox", "x": ' + b'{"a": ' * 70 + b"1" + b"}" * 71)
        assert deep_in_object.status_code == 400 and "nested deeper than 64" in deep_in_object.json()["error_message"]
        # Brackets and commas inside strings are text: a body with 15000 of them is a normal request.
        ok = c.post(url, content=json.dumps({"text": "a fox", "note": "a, [{" * 5000}).encode())
        assert ok.status_code == 200 and ok.json()["ignored_fields"] == ["note"], ok.text
    assert "Exception in ASGI application" not in api.log() and "unexpected error" not in api.log()
