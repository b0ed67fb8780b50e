"""One tenant cannot hurt another through the submit path: a hostile key with slow image hosts,
huge-but-small images, thousands of unknown fields or an oversized Idempotency-Key. Over real
HTTP on 127.0.0.1 in each configuration, except the no-decoding proof, which spies on Pillow in
this process (the app driven by Starlette's test client)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFile

from conftest import ServerProcess

DREAMINA = "bytedance/dreamina-4-0/edit"
SEQ = "bytedance/seedream-4-0/sequential"


class SlowHost:
    """An image host on 127.0.0.1 that sends its response headers one byte every 0.5 s and
    never finishes them. Counts the connections it has accepted; :meth:`close` hangs up on all."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/slow.png"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)
            self.accepted += 1
            thread = threading.Thread(target=self._drip, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drip(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: "
        i = 0
        while not self._stop.wait(0.5):
            try:
                conn.sendall(head[i:i + 1] if i < len(head) else b"a")
            except OSError:
                return
            i += 1

    def wait_for(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.accepted < n:
            assert time.monotonic() < deadline, f"only {self.accepted} of {n} fetches reached the host"
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def slow_host():
    host = SlowHost()
    yield host
    host.close()


def second_key(srv: ServerProcess) -> str:
    created = srv.cli("keys", "create", "--name", "tenant-b")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def timed(call) -> tuple[httpx.Response, float]:  # noqa: ANN001
    start = time.monotonic()
    resp = call()
    return resp, time.monotonic() - start


def test_slow_response_headers_are_cut_at_the_fetch_timeout(make_server, slow_host):
    """The total deadline covers the response headers: a host trickling them one byte each
    0.5 s (never idle for the 10-s read timeout) is cut at --fetch-timeout-s."""
    srv = make_server(args=["--allow-private-urls", "--fetch-timeout-s", "2"]).start()
    with srv.client() as c:
        resp, elapsed = timed(lambda: c.post(f"/v1/models/{DREAMINA}", json={"prompt": "p", "image_urls": [slow_host.url]}))
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == [{"loc": ["body", "image_urls", 0], "type": "url_unreachable",
                                      "msg": "could not fetch image: timed out after 2 s"}]
    assert 1.9 <= elapsed < 2 + 1.5, elapsed
    assert slow_host.accepted == 1


def test_a_key_fetching_from_slow_hosts_does_not_hold_the_server(make_server, slow_host):
    """45 submits of one key hang on a slow host — more than the 40 threads of the pool that
    serves every route — and another key's calls still answer at once; the key's next submit
    with an image is refused (429) by --max-fetching-per-key."""
    hanging = 45
    srv = make_server(args=["--allow-private-urls", "--fetch-timeout-s", "30",
                            "--max-fetching-per-key", str(hanging)]).start()
    key_b = second_key(srv)
    body = {"prompt": "p", "image_urls": [slow_host.url]}
    with srv.client(key_b) as b, srv.client() as a, ThreadPoolExecutor(hanging) as pool:
        theirs = b.post(f"/v1/models/{SEQ}", json={"text": "mine"}).json()["request_id"]
        clients = [srv.client() for _ in range(hanging)]
        try:
            stuck = [pool.submit(cl.post, f"/v1/models/{DREAMINA}", json=body) for cl in clients]
            slow_host.wait_for(hanging, timeout_s=20)  # every fetch is in flight, none answered
            assert not any(f.done() for f in stuck)
            for name, call in {
                "GET /v1/models": lambda: b.get("/v1/models"),
                "POST cancel": lambda: b.post(f"/v1/requests/{theirs}/cancel"),
                "GET /healthz": lambda: b.get("/healthz"),
                "GET status": lambda: b.get(f"/v1/requests/{theirs}/status"),
            }.items():
                resp, elapsed = timed(call)
                assert resp.status_code == 200, (name, resp.text)
                assert elapsed < 1.0, f"{name} took {elapsed:.2f} s while one key's fetches hung"
            over, elapsed = timed(lambda: a.post(f"/v1/models/{DREAMINA}", json=body))
            assert over.status_code == 429 and elapsed < 1.0, over.text
            assert int(over.headers["Retry-After"]) >= 1
            assert f"{hanging} submits fetching" in over.json()["error_message"]
            assert "--max-fetching-per-key" in over.json()["error_message"]
            assert a.post(f"/v1/models/{SEQ}", json={"text": "no images"}).status_code == 200  # needs no slot
            assert slow_host.accepted == hanging  # the refused submit never fetched
            slow_host.close()  # hang up: every stuck submit ends now, a 422 naming its input
            for f in stuck:
                resp = f.result(timeout=20)
                assert resp.status_code == 422, resp.text
                assert resp.json()["detail"][0]["loc"] == ["body", "image_urls", 0]
        finally:
            for cl in clients:
                cl.close()
        # the slots are free again: the same key may fetch
        again = a.post(f"/v1/models/{DREAMINA}", json={"prompt": "p", "image_urls": [png_uri(64, 64)]})
        assert again.status_code == 200, again.text


def test_default_fetch_cap_is_four_per_key(make_server, slow_host):
    srv = make_server(args=["--allow-private-urls", "--fetch-timeout-s", "30"]).start()
    key_b = second_key(srv)
    body = {"prompt": "p", "image_urls": [slow_host.url]}
    clients = [srv.client() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool, srv.client() as a, srv.client(key_b) as b:
        try:
            stuck = [pool.submit(cl.post, f"/v1/models/{DREAMINA}", json=body) for cl in clients]
            slow_host.wait_for(4, timeout_s=20)
            assert a.post(f"/v1/models/{DREAMINA}", json=body).status_code == 429
            assert a.post(f"/v1/models/{DREAMINA}", json={**body, "image_urls": [png_uri(64, 64)]}).status_code == 429
            # another key has slots of its own
            assert b.post(f"/v1/models/{DREAMINA}", json={**body, "image_urls": [png_uri(64, 64)]}).status_code == 200
            slow_host.close()
            assert all(f.result(timeout=20).status_code == 422 for f in stuck)
        finally:
            for cl in clients:
                cl.close()


def png_uri(w: int, h: int, mode: str = "RGB") -> str:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_idempotency_key_over_200_characters_is_a_422(make_server):
    srv = make_server().start()
    with srv.client() as c:
        resp = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Idempotency-Key": "k" * 201})
        assert resp.status_code == 422, resp.text
        body = resp.json()
        assert body["error_code"] == 422001
        assert [(d["loc"], d["type"]) for d in body["detail"]] == [(["header", "Idempotency-Key"], "string_too_long")]
        assert "200" in body["detail"][0]["msg"]
        first = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Idempotency-Key": "k" * 200})
        again = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers={"Idempotency-Key": "k" * 200})
        assert first.status_code == again.status_code == 200
        assert first.json()["request_id"] == again.json()["request_id"]


def test_ignored_fields_are_capped_in_the_answer_and_the_log(make_server):
    srv = make_server().start()
    unknown = {f"f{i:04d}": i for i in range(1000)} | {"z" * 5000: 1}
    with srv.client() as c:
        resp = c.post(f"/v1/models/{SEQ}", json={"text": "a fox", **unknown})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["ignored_fields"] == [f"f{i:04d}" for i in range(20)]
    assert answer["ignored_fields_count"] == 1001
    lines = [json.loads(ln) for ln in srv.log().splitlines() if '"request.ignored_fields"' in ln]
    assert len(lines) == 1 and lines[0]["request_id"] == answer["request_id"]
    assert lines[0]["fields"] == answer["ignored_fields"] and lines[0]["count"] == 1001
    assert len(json.dumps(lines[0])) < 2000  # not the 1,001 names, nor the 5,000-character one
    with srv.client() as c:  # a long name is cut when listed
        resp = c.post(f"/v1/models/{SEQ}", json={"text": "a fox", "z" * 5000: 1})
    assert resp.json()["ignored_fields"] == ["z" * 100 + "…"] and resp.json()["ignored_fields_count"] == 1


@pytest.fixture
def app_client(tmp_path):
    """The API app in this process (--no-worker, SQLite, a local folder) with its key."""
    from modelapi.api.run import build
    from modelapi.core.config import Settings

    app, _ = build(Settings(data_dir=tmp_path, worker=False), announce_key=False)
    key = (tmp_path / "initial_api_key").read_text().strip()
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def test_oversized_images_are_refused_from_their_header_without_decoding(app_client, monkeypatch):
    """Ten 6300x6300 PNGs (under the 40-MP --max-input-pixels, over dreamina's 4096-px rule)
    are refused by the schema's rule, read from their headers: Pillow decodes no pixel."""
    loads: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(self):  # noqa: ANN001, ANN202
        loads.append(self.size)
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    huge = png_uri(6300, 6300, "L")
    assert len(huge) < 300_000
    loads.clear()
    start = time.monotonic()
    resp = app_client.post(f"/v1/models/{DREAMINA}", json={"prompt": "p", "image_urls": [huge] * 10})
    elapsed = time.monotonic() - start
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == [{"loc": ["body", "image_urls", i], "msg": "Maximum resolution is 4096x4096.",
                                      "type": "image_rule"} for i in range(10)]
    assert loads == [], "a refused image was decoded"
    assert elapsed < 2.0, elapsed
    # one bad image among good ones: none is decoded either
    resp = app_client.post(f"/v1/models/{DREAMINA}", json={"prompt": "p", "image_urls": [png_uri(64, 64), huge]})
    assert resp.status_code == 422 and loads == []
    # the spy does see decoding: images that pass the rules are decoded (a corrupt one is refused)
    resp = app_client.post(f"/v1/models/{DREAMINA}", json={"prompt": "p", "image_urls": [png_uri(64, 64)]})
    assert resp.status_code == 200, resp.text
    assert loads == [(64, 64)]
