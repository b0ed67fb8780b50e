"""Faults, in each configuration: the server keeps serving and the client gets a clear answer."""

from __future__ import annotations

import socket

import pytest

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


def test_an_input_host_that_trickles_or_never_answers_is_a_422_within_the_fetch_timeout(make_server):
    import threading
    import time

    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    port = listener.getsockname()[1]

    def serve() -> None:  # /drip sends a byte every 0.2 s; /silent never answers
        conns = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            request = conn.recv(4096)
            if b"/drip" in request:
                threading.Thread(target=_drip, args=(conn, stop), daemon=True).start()
        for conn in conns:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    srv = make_server(args=["--allow-private-urls", "--fetch-timeout-s", "1"]).start()
    try:
        with srv.client() as c:
            for path in ("drip", "silent"):
                t0 = time.monotonic()
                resp = c.post("/v1/models/bytedance/dreamina-4-0/edit",
                              json={"prompt": "the cat", "image_urls": [f"http://127.0.0.1:{port}/{path}.png"]})
                elapsed = time.monotonic() - t0
                assert resp.status_code == 422, resp.text
                assert resp.json()["detail"][0]["loc"] == ["body", "image_urls", 0]
                # the 1-s total timeout is what ended it (not the 30-s default, nor never)
                assert elapsed < 10, f"{path}: answered after {elapsed:.1f} s"
            assert c.get("/healthz").json()["status"] == "ok"
    finally:
        stop.set()
        thread.join()
        listener.close()


def _drip(conn: socket.socket, stop) -> None:  # noqa: ANN001
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.2):
            conn.sendall(b"\x89")
    except OSError:
        pass


@pytest.mark.parametrize("make_server", ["sqlite"], indirect=True)
def test_an_unwritable_output_folder_fails_the_request_with_a_clear_message(make_server):
    srv = make_server().start()
    outputs = srv.data_dir / "files" / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    outputs.rmdir()
    outputs.write_bytes(b"")  # a file where the folder must be: unwritable even for root
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        failed = wait_terminal(c, rid)
        assert failed["status"] == "failed" and failed["error"]["code"] == "storage_error"
        assert failed["error"]["message"].startswith("the outputs could not be stored: NotADirectoryError")
        outputs.unlink()  # the folder is back: nothing else was lost, the next request completes
        assert wait_terminal(c, c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"])["status"] == "completed"
        assert c.get("/v1/models").status_code == 200
