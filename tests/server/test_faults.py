"""Faults, in each configuration: the server keeps serving and the client gets a clear answer."""

from __future__ import annotations

import socket

from conftest import wait_terminal

SEQ = "bytedance/seedream-4-0/sequential"


def test_the_engine_running_out_of_memory_fails_that_request_only(server):
    with server.client() as c:
        doomed = c.post(f"/v1/models/{SEQ}", json={"text": "a fox [out of memory]"}).json()["request_id"]
        after = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        failed = wait_terminal(c, doomed)
        assert failed["status"] == "failed"
        assert failed["error"] == {"code": "generation_error", "message": "MemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"}
        assert wait_terminal(c, after)["status"] == "completed", "the worker goes on with the next request"


def test_a_client_that_disconnects_mid_upload_leaves_the_server_serving(server):
    head = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {server.key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n')
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(head.encode() + b"\x89PNG\r\n\x1a\n" + b"\0" * 65536)  # then hang up
    with server.client() as c:
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.post(f"/v1/models/{SEQ}", json={"text": "still here"}).status_code == 200
        uploaded = c.post("/v1/files", files={"file": ("a.png", _png(), "image/png")})
        assert uploaded.status_code == 201, uploaded.text
    log = server.log()
    assert "Exception in ASGI application" not in log and "unexpected error" not in log


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()
