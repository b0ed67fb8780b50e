"""Faults, in each configuration: the server keeps serving and the client gets a clear answer."""

from __future__ import annotations

import io
import re
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

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
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_input_host_that_trickles_or_never_answers_is_a_422_within_the_fetch_timeout(make_server):
    import threading

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
                resp = c.post("/v1/models/bytedance/dreamina-4-0/edit",
                              json={"prompt": "the cat", "image_urls": [f"http://127.0.0.1:{port}/{path}.png"]})
                assert resp.status_code == 422, resp.text
                problem = resp.json()["detail"][0]
                assert problem["loc"] == ["body", "image_urls", 0]
                # the 1-s total timeout is what ended it (not the 10-s read timeout, nor the 30-s
                # default): the whole fetch's deadline, or a read cut short by what was left of it
                assert re.fullmatch(r"could not fetch image: timed out after (1|0\.\d+) s", problem["msg"]), problem
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
        # (NotADirectoryError, or FileExistsError where the store creates its folders one by one)
        assert failed["error"]["message"].startswith(("the outputs could not be stored: NotADirectoryError",
                                                      "the outputs could not be stored: FileExistsError"))
        outputs.unlink()  # the folder is back: nothing else was lost, the next request completes
        assert wait_terminal(c, c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"])["status"] == "completed"
        assert c.get("/v1/models").status_code == 200


def _writer(fleet_services, srv) -> tuple[str, dict[str, str], object, str, str]:
    """A SeaweedFS identity of this test's own, created with no permission yet, and the bucket
    and prefix of ``srv``'s storage (the bucket created by the admin identity when missing).
    Returns (user, its AWS variables, its boto3 client, bucket, prefix)."""
    s3 = fleet_services.s3
    user, access_key, secret_key = f"writer-{secrets.token_hex(4)}", secrets.token_hex(8), secrets.token_hex(16)
    s3.grant(user, ["List"], access_key, secret_key)
    url = urlsplit(srv.env["MODELAPI_STORAGE_URL"])
    bucket, prefix = url.netloc, url.path.strip("/")
    admin = s3.client()
    if bucket not in [b["Name"] for b in admin.list_buckets()["Buckets"]]:
        admin.create_bucket(Bucket=bucket)
    return user, s3.env(access_key, secret_key), s3.client(access_key, secret_key), bucket, prefix


def _until_writes(client, bucket: str, prefix: str, *, allowed: bool) -> None:  # noqa: ANN001
    """Wait until the store has taken a grant or revoke of Write (it reloads identities from
    its filer, a moment after the change)."""
    from botocore.exceptions import ClientError

    for _ in range(200):
        try:
            client.put_object(Bucket=bucket, Key=f"{prefix}/.probe", Body=b"")
            if allowed:
                return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "AccessDenied":
                raise
            if not allowed:
                return
        time.sleep(0.05)
    raise AssertionError(f"writes never became {'allowed' if allowed else 'denied'}")


@pytest.mark.parametrize("make_server", ["fleet"], indirect=True)
def test_an_unwritable_bucket_fails_the_request_with_a_clear_message(make_server, fleet_services):
    """The S3 twin of the folder case: the server and its worker write as an identity of their
    own; the store takes Write away from it while the server runs (as an operator revoking the
    permission would), then gives it back."""
    srv = make_server()
    user, env, own, bucket, prefix = _writer(fleet_services, srv)
    fleet_services.s3.grant(user, ["Read", "List", "Write"])
    _until_writes(own, bucket, prefix, allowed=True)
    srv.env.update(env)
    srv.start()
    with srv.client() as c:
        before = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        done = wait_terminal(c, before)
        assert done["status"] == "completed", done

        fleet_services.s3.revoke(user, ["Write"])
        _until_writes(own, bucket, prefix, allowed=False)
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        failed = wait_terminal(c, rid)
        assert failed["status"] == "failed" and failed["error"]["code"] == "storage_error", failed
        assert failed["error"]["message"] == ("the outputs could not be stored: AccessDenied: An error occurred "
                                              "(AccessDenied) when calling the PutObject operation: Access Denied.")

        # an upload cannot be stored either: 503 with Retry-After, never 500, nothing accepted
        up = c.post("/v1/files", files={"file": ("a.png", _png(), "image/png")})
        assert up.status_code == 503 and up.headers["Retry-After"] and "file store" in up.json()["error_message"], up.text

        # nothing else lost: the API answers, the earlier result and its image are still there
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/v1/models").status_code == 200
        still = c.get(f"/v1/requests/{before}/result").json()["output"]["images"]  # presigned anew
        assert [urlsplit(u).path for u in still] == [urlsplit(u).path for u in done["output"]["images"]]
        image = httpx.get(still[0])
        assert image.status_code == 200, image.status_code
        assert Image.open(io.BytesIO(image.content)).size == (done["metadata"]["width"], done["metadata"]["height"])

        fleet_services.s3.grant(user, ["Write"])  # writable again: the next request completes
        _until_writes(own, bucket, prefix, allowed=True)
        assert wait_terminal(c, c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"])["status"] == "completed"
    assert "request.storage_error" in srv.log()


@pytest.mark.parametrize("make_server", ["fleet"], indirect=True)
def test_credentials_that_cannot_write_the_bucket_keep_the_server_from_starting(make_server, fleet_services):
    """Unwritable from the start: the server says so and exits, rather than failing every request."""
    srv = make_server()
    user, env, own, bucket, prefix = _writer(fleet_services, srv)
    fleet_services.s3.grant(user, ["Read", "List"])
    _until_writes(own, bucket, prefix, allowed=False)
    srv.env.update(env)
    with pytest.raises(RuntimeError, match="server exited early"):
        srv.start()
    assert srv.proc.returncode == 2
    said = " ".join(srv.log().split())  # the console wraps long lines
    assert f"error: storage s3://{bucket}/{prefix} is not writable: An error occurred (AccessDenied)" in said, said[-2000:]
