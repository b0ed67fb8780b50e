"""Retention and DELETE over real HTTP on 127.0.0.1, in both configurations (SQLite + a folder,
Postgres + SeaweedFS S3): outputs downloadable, then 404, and the result 410 (410001) once the
worker's sweeper has run; unused uploads swept by ``modelapi sweep`` while a queued request's
upload and inputs stay; ``DELETE`` of a request in each status."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import SKIMAGE_DATA, wait_status, wait_terminal
from modelapi import Client, ConflictError, GoneError
from modelapi.core.config import Settings
from modelapi.core.storage import open_storage

SEQ = "bytedance/seedream-4-0/sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"


def until(check, timeout_s: float = 30, what: str = "the state"):  # noqa: ANN001, ANN201
    """Poll ``check()`` until it returns a truthy value; that value."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} never came"
        time.sleep(0.05)
    return value


def assert_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_code"] == status * 1000 + 1 and body["error_message"], body
    return body


def metric(srv, name: str) -> float:  # noqa: ANN001
    """A value on the server's /metrics (read with its key)."""
    for line in httpx.get(srv.base_url + "/metrics", headers={"Authorization": f"Bearer {srv.key}"}).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not on /metrics")


def store_of(srv, monkeypatch):  # noqa: ANN001, ANN201
    """The server's own store, opened here (its AWS_* variables for S3)."""
    for name, value in srv.env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)
    return open_storage(Settings(data_dir=srv.data_dir, storage_url=srv.env.get("MODELAPI_STORAGE_URL")).files_url, srv.data_dir)


def test_outputs_downloadable_then_404_and_result_410_after_retention(make_server):
    srv = make_server(args=["--retention-s", "4", "--sweep-interval-s", "0.2"]).start()
    with srv.client() as c:
        refused = assert_error(c.post(f"/v1/models/{SEQ}", params={"retention_s": 5}, json={"text": "a fox"}), 422)
        assert refused["detail"][0]["loc"] == ["query", "retention_s"], "at most the server's --retention-s"
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "Generate 2 images of a fox"}).json()["request_id"]
        result = wait_terminal(c, rid)
        urls = result["output"]["images"]
        assert len(urls) == 2 and all(httpx.get(u).status_code == 200 for u in urls), "downloadable within retention"
        gone = until(lambda: (r := c.get(f"/v1/requests/{rid}/result")).status_code == 410 and r, what="the 410")
        body = assert_error(gone, 410)
        assert body["error_code"] == 410001 and "expired" in body["error_message"]
        assert body["detail"]["request_id"] == rid and body["detail"]["deleted_at"].endswith("Z")
        assert c.get(f"/v1/requests/{rid}/status").json()["status"] == "completed", "the status stays"
        assert [r["request_id"] for r in c.get("/v1/requests").json()["requests"]] == [rid], "and the listing"
        for url in urls:
            assert httpx.get(url).status_code == 404, "output URLs answer 404: the objects are gone"
    with Client(srv.base_url, srv.key, max_retries=0) as client, pytest.raises(GoneError) as exc:
        client.result(rid)
    assert exc.value.error_code == 410001
    assert metric(srv, "modelapi_sweep_objects_deleted_total") >= 2
    assert metric(srv, "modelapi_sweep_requests_expired_total") == 1
    assert metric(srv, 'modelapi_sweep_rows_deleted_total{table="queue"}') == 1, "its queue entry (DBOS) deleted"


def test_unused_uploads_are_swept_and_a_queued_requests_upload_and_inputs_are_not(make_server, monkeypatch):
    srv = make_server(args=["--no-worker"]).start()  # nothing runs: the request stays queued
    store = store_of(srv, monkeypatch)
    png = (SKIMAGE_DATA / "chelsea.png").read_bytes()
    with srv.client() as c:
        unused = c.post("/v1/files", files={"file": ("a.png", png, "image/png")}).json()
        used = c.post("/v1/files", files={"file": ("b.png", png, "image/png")}).json()
        rid = c.post(f"/v1/models/{DREAMINA}", json={"image_urls": [used["url"]], "prompt": "a lion"}).json()["request_id"]
        inputs = store.keys(f"inputs/{rid}/")
        assert inputs

        def sweep_until_unused_is_gone() -> bool:
            swept = srv.cli("sweep", "--upload-retention-s", "1")
            assert swept.returncode == 0, swept.stderr
            return c.get(f"/v1/files/{unused['id']}").status_code == 404

        until(sweep_until_unused_is_gone, what="the unused upload's deletion")
        assert c.get(f"/v1/files/{used['id']}").status_code == 200, "an upload a queued request uses stays"
        assert c.get(f"/v1/requests/{rid}/status").json()["status"] == "in_queue"
        assert store.keys(f"inputs/{rid}/") == inputs, "and so do its inputs"
        deleted = c.delete(f"/v1/requests/{rid}").json()
        assert deleted["status"] == "cancelled" and deleted["deleted_at"]
        assert c.get(f"/v1/files/{used['id']}").status_code == 404, "the upload went with its request"
        assert store.keys(f"inputs/{rid}/") == []
    assert metric(srv, 'modelapi_sweep_rows_deleted_total{table="files"}') == 2


def test_delete_of_each_status(make_server):
    srv = make_server(env={"MODELAPI_TEST_STEP_S": "0.25", "MODELAPI_TEST_STEPS": "16"}).start()  # a job runs 4 s
    other_key = srv.cli("keys", "create", "--name", "other").stdout.strip().splitlines()[-1]
    with srv.client() as c, srv.client(other_key) as other, Client(srv.base_url, srv.key, max_retries=0) as sdk:
        running = c.post(f"/v1/models/{SEQ}", json={"text": "Generate 2 images of a fox"}).json()["request_id"]
        wait_status(c, running, "in_progress")
        queued = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        failing = c.post(f"/v1/models/{SEQ}", json={"text": "a fox [out of memory]"}).json()["request_id"]

        assert_error(other.delete(f"/v1/requests/{queued}"), 404)  # another key's
        conflict = assert_error(c.delete(f"/v1/requests/{running}"), 409)
        assert conflict["error_code"] == 409001 and conflict["detail"]["status"] == "in_progress"
        with pytest.raises(ConflictError):
            sdk.delete(running)

        first = c.delete(f"/v1/requests/{queued}")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["request_id"] == queued and body["status"] == "cancelled" and body["deleted_at"].endswith("Z")
        assert c.delete(f"/v1/requests/{queued}").json()["deleted_at"] == body["deleted_at"], "idempotent"

        result = wait_terminal(c, running)
        assert result["status"] == "completed"
        done = sdk.delete(running)
        assert done["status"] == "completed" and done["deleted_at"]
        for url in result["output"]["images"]:
            assert httpx.get(url).status_code == 404
        assert assert_error(c.get(f"/v1/requests/{running}/result"), 410)["detail"]["deleted_at"] == done["deleted_at"]
        assert c.get(f"/v1/requests/{running}/status").json()["status"] == "completed"

        assert wait_terminal(c, failing)["status"] == "failed"
        printed = srv.cli("delete", failing, "--base-url", srv.base_url, "--api-key", srv.key)
        assert printed.returncode == 0, printed.stderr
        assert json.loads(printed.stdout)["status"] == "failed" and json.loads(printed.stdout)["deleted_at"]

        cancelled = c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}).json()["request_id"]
        assert c.post(f"/v1/requests/{cancelled}/cancel").json()["outcome"] == "cancelled"
        assert c.delete(f"/v1/requests/{cancelled}").json()["status"] == "cancelled"
        assert_error(c.delete("/v1/requests/req_unknown"), 404)
        assert "delete" in c.get("/healthz").headers["modelapi-features"].split(", ")
