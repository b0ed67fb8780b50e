"""Hostile and broken inputs through the real server: refused with 422 before any connection
is made. End-to-end cases target only loopback — a listener on 127.0.0.1 that must see no
connection. Private and metadata ranges are tested on the address check itself (test_fetch.py)."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from PIL import Image

from conftest import SKIMAGE_DATA, wait_terminal

DREAMINA = "bytedance/dreamina-4-0/edit"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with the SSRF guard on (the default: no --allow-private-urls)."""
    from conftest import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp("guarded") / "data").start()
    yield srv
    srv.stop()


def hostile_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/a.png",
        f"http://localhost:{port}/a.png",
        f"http://[::1]:{port}/a.png",
        f"http://[::ffff:127.0.0.1]:{port}/a.png",
        f"http://0.0.0.0:{port}/a.png",
        f"http://2130706433:{port}/a.png",
        f"http://0x7f000001:{port}/a.png",
        f"http://017700000001:{port}/a.png",
        f"http://127.1:{port}/a.png",
        f"http://127.0.0.1.:{port}/a.png",
        f"http://example.com@127.0.0.1:{port}/a.png",
        f"http://example.com:80@127.0.0.1:{port}/a.png",
        f"https://127.0.0.1:{port}/a.png",
        f"HTTP://LOCALHOST:{port}/a.png",
        "file:///etc/passwd",
        f"ftp://127.0.0.1:{port}/a.png",
        f"gopher://127.0.0.1:{port}/_a",
        f"dict://127.0.0.1:{port}/",
        "http:///a.png",
        "not a url",
    ]


def test_hostile_urls_are_422_and_never_connect(guarded, listener):
    urls = hostile_urls(listener.port)
    assert len(urls) >= 15
    with guarded.client() as c:
        for i, url in enumerate(urls):
            resp = c.post(f"/v1/models/{DREAMINA}", json={"image_urls": [url], "prompt": "p"})
            assert resp.status_code == 422, (url, resp.text)
            detail = resp.json()["detail"]
            assert detail[0]["loc"] == ["body", "image_urls", 0], (url, detail)
            assert "Traceback" not in resp.text
    assert listener.connections() == 0


def test_each_bad_image_is_reported_at_its_index(guarded, listener):
    with guarded.client() as c:
        resp = c.post(f"/v1/models/{EDIT_SEQ}", json={"images": [
            data_uri((SKIMAGE_DATA / "astronaut.png").read_bytes()),
            f"http://127.0.0.1:{listener.port}/x.png",
            "file:///etc/passwd",
        ], "text": "Generate 2 images"})
        assert resp.status_code == 422
        assert [d["loc"] for d in resp.json()["detail"]] == [["body", "images", 1], ["body", "images", 2]]
    assert listener.connections() == 0


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def test_decompression_bomb_gif_and_truncated_jpeg_are_422(guarded):
    bomb = png(20000, 20000, "1")  # a few KB that would decode to 400 megapixels
    assert len(bomb) < 200_000
    gif = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(gif, format="GIF")
    jpeg = (SKIMAGE_DATA / "rocket.jpg").read_bytes()
    cases = {
        "image_too_large": data_uri(bomb),
        "image_format": data_uri(gif.getvalue(), "image/png"),  # a GIF renamed .png
        "image_corrupt": data_uri(jpeg[: len(jpeg) // 2], "image/jpeg"),
    }
    with guarded.client() as c:
        for kind, uri in cases.items():
            resp = c.post(f"/v1/models/{DREAMINA}", json={"image_urls": [uri], "prompt": "p"})
            assert resp.status_code == 422, (kind, resp.text)
            assert resp.json()["detail"][0]["type"] == kind
        assert c.get("/healthz").status_code == 200  # still alive after the bomb


@pytest.mark.parametrize("size,ok,msg", [
    ((15, 15), True, None),
    ((14, 15), False, "The uploaded image width and height must exceed 14 pixels."),
    ((331, 1000), True, None),
    ((330, 1000), False, "The aspect ratio range should be 1:3 to 3:1."),
])
def test_pixel_rules_end_to_end(guarded, size, ok, msg):
    with guarded.client() as c:
        resp = c.post(f"/v1/models/{EDIT_SEQ}", json={"images": [data_uri(png(*size))], "text": "one image", "image_size": "2048:2048 (1:1)"})
        if ok:
            assert resp.status_code == 200, resp.text
            assert wait_terminal(c, resp.json()["request_id"])["status"] == "completed"
        else:
            assert resp.status_code == 422
            assert resp.json()["detail"] == [{"loc": ["body", "images", 0], "msg": msg, "type": "image_rule"}]


def test_redirect_to_loopback_is_refused(make_server, listener):
    """An allowed test host (exempted by address) redirects to a loopback port that is not:
    the hop is re-checked and the loopback listener sees nothing."""
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{listener.port}/a.png")
            self.end_headers()

        def log_message(self, *a) -> None:  # noqa: ANN002
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    allowed = f"127.0.0.1:{httpd.server_address[1]}"
    srv = make_server(env={"MODELAPI_ALLOWED_INPUT_HOSTS": f'["{allowed}"]'}).start()
    try:
        with srv.client() as c:
            resp = c.post(f"/v1/models/{DREAMINA}", json={"image_urls": [f"http://{allowed}/start.png"], "prompt": "p"})
            assert resp.status_code == 422, resp.text
            assert resp.json()["detail"][0]["loc"] == ["body", "image_urls", 0]
    finally:
        httpd.shutdown()
    assert listener.connections() == 0
