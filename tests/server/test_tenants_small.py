"""One tenant cannot hurt another: what a hostile tenant holding one valid key (or none) can
learn or forge, against real `modelapi serve` and `modelapi worker` processes on 127.0.0.1.

- the data dir is 0700 and everything in it 0600 (stat);
- /healthz without a key says only whether it is healthy; /metrics needs a key or
  --metrics-token (API and worker);
- absolute URLs come only from --public-url or an --allowed-hosts Host (a forged Host never
  reaches output URLs or a webhook payload);
- the first key is written to its file, printed only with --print-key.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from conftest import SKIMAGE_DATA, ServerProcess, wait_terminal
from test_webhooks import Receiver

SEQ = "bytedance/seedream-4-0/sequential"
EVIL = "evil.example"


def modes(root: Path) -> dict[str, str]:
    """Every folder and file under ``root`` (and ``root`` itself): its permission bits, octal."""
    found = {".": oct(root.stat().st_mode & 0o777)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            found[str(path.relative_to(root))] = oct(path.lstat().st_mode & 0o777)
    return found


# -- file modes ----------------------------------------------------------------------------------
def test_the_data_dir_is_0700_and_its_files_0600(tmp_path):
    """A server with its worker, on SQLite and the file store, after an upload and a completed
    request (outputs stored), while it runs (the WAL files exist) and after it stopped. The data
    dir existed with 0755 before (ServerProcess makes it): it is narrowed."""
    srv = ServerProcess(tmp_path / "data")
    srv.data_dir.mkdir(mode=0o755)
    srv.data_dir.chmod(0o755)
    srv.start()
    try:
        with srv.client() as c:
            up = c.post("/v1/files", files={"file": ("a.png", (SKIMAGE_DATA / "astronaut.png").read_bytes(), "image/png")})
            assert up.status_code == 201, up.text
            rid = c.post(f"/v1/models/{SEQ}", json={"text": "two images of a fox"}).json()["request_id"]
            assert wait_terminal(c, rid)["status"] == "completed"
        running = modes(srv.data_dir)
    finally:
        srv.stop()
    stopped = modes(srv.data_dir)
    for seen in (running, stopped):
        assert seen["."] == "0o700"
        assert {"files", "modelapi.sqlite3", "initial_api_key", "secret_key"} <= set(seen)
        assert any(p.startswith("files/outputs/") and p.count("/") >= 4 for p in seen), seen  # an output file
        assert any(p.startswith("files/uploads/") for p in seen), seen
        wrong = {p: m for p, m in seen.items() if m != ("0o700" if (srv.data_dir / p).is_dir() else "0o600")}
        assert wrong == {}, wrong
    assert "modelapi.sqlite3-wal" in running  # SQLite's own files take the database's mode


def test_an_older_install_is_narrowed_and_the_file_store_writes_private_files(tmp_path):
    from modelapi.core.config import Settings
    from modelapi.core.context import prepare_data_dir
    from modelapi.core.storage import FileStorage

    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    older = ("modelapi.sqlite3", "modelapi.sqlite3-wal", "modelapi.sqlite3.lock", "modelapi.sqlite3.worker-ab.lock",
             "initial_api_key", "secret_key")
    for name in older:
        (data / name).write_bytes(b"")
        (data / name).chmod(0o644)
    prepare_data_dir(Settings(data_dir=data))
    assert modes(data) == {".": "0o700", **{name: "0o600" for name in older}}
    fresh = tmp_path / "fresh" / "data"
    prepare_data_dir(Settings(data_dir=fresh))
    assert modes(fresh) == {".": "0o700", "modelapi.sqlite3": "0o600"}  # created private, before SQLite opens it

    store = FileStorage(tmp_path / "store" / "files", b"s" * 32)
    store.put("outputs/r_1/0/0.png", b"png", "image/png")
    assert modes(tmp_path / "store" / "files") == {".": "0o700", "outputs": "0o700", "outputs/r_1": "0o700",
                                                  "outputs/r_1/0": "0o700", "outputs/r_1/0/0.png": "0o600"}


# -- /healthz and /metrics -----------------------------------------------------------------------
def test_healthz_without_a_key_says_only_whether_it_is_healthy(make_server):
    srv = make_server(args=["--metrics-token", "scrape-me"]).start()
    bare = httpx.get(srv.base_url + "/healthz")
    assert bare.status_code == 200 and bare.json() == {"status": "ok"}
    wrong = httpx.get(srv.base_url + "/healthz", headers={"Authorization": "Bearer mapi_not-a-key"})
    assert wrong.json() == {"status": "ok"}
    for token in (srv.key, "scrape-me"):
        full = httpx.get(srv.base_url + "/healthz", headers={"Authorization": f"Bearer {token}"}).json()
        assert full["status"] == "ok" and full["workers"] == 1 and full["engine"]["engine"], full

    for headers in ({}, {"Authorization": "Bearer scrape-me-not"}, {"Authorization": "Bearer mapi_not-a-key"}):
        refused = httpx.get(srv.base_url + "/metrics", headers=headers)
        assert refused.status_code == 401 and refused.json()["error_code"] == 401001, refused.text
        assert refused.headers["www-authenticate"] == "Bearer" and "modelapi_" not in refused.text
    for token in (srv.key, "scrape-me"):
        scraped = httpx.get(srv.base_url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "modelapi_queue_depth" in scraped.text


def test_a_workers_healthz_and_metrics_need_a_key_or_the_metrics_token(make_server):
    api = make_server(args=["--no-worker"]).start()
    worker = make_server(command="worker", args=["--metrics-token", "scrape-me", "--worker-id", "w-small"]).start()
    bare = httpx.get(worker.base_url + "/healthz")
    assert bare.status_code == 200 and bare.json() == {"status": "ok"}
    refused = httpx.get(worker.base_url + "/metrics")
    assert refused.status_code == 401 and refused.json()["error_code"] == 401001
    assert "modelapi_" not in refused.text
    for token in (api.key, "scrape-me"):  # a live key of the deployment, or the token
        headers = {"Authorization": f"Bearer {token}"}
        full = httpx.get(worker.base_url + "/healthz", headers=headers).json()
        assert full["worker_id"] == "w-small" and full["running"] == [] and full["engine"]["engine"], full
        scraped = httpx.get(worker.base_url + "/metrics", headers=headers)
        assert scraped.status_code == 200 and "modelapi_worker_busy" in scraped.text


# -- absolute URLs -------------------------------------------------------------------------------
@pytest.fixture
def receiver():
    r = Receiver([200])
    yield r
    r.server.shutdown()


def test_a_forged_host_never_reaches_output_urls_or_a_webhook(make_server, receiver):
    srv = make_server(args=["--allow-private-urls"]).start()
    forged = {"Host": f"{EVIL}:{srv.port}"}
    with srv.client() as c:
        sub = c.post(f"/v1/models/{SEQ}", params={"webhook": receiver.url}, json={"text": "two images"}, headers=forged)
        assert sub.status_code == 200, sub.text
        rid = sub.json()["request_id"]
        for name in ("status_url", "result_url", "cancel_url"):
            assert sub.json()[name].startswith(srv.base_url + "/v1/requests/"), sub.json()
        wait_terminal(c, rid)
        for path in (f"/v1/requests/{rid}/status", f"/v1/requests/{rid}/result", "/v1/requests", "/v1/models"):
            answer = c.get(path, headers=forged)
            assert answer.status_code == 200 and EVIL not in answer.text, (path, answer.text)
        result = c.get(f"/v1/requests/{rid}/result", headers=forged).json()
        if srv.config == "sqlite":  # outputs served by the API itself
            assert all(u.startswith(srv.base_url + "/files/") for u in result["output"]["images"])
        upload = c.post("/v1/files", files={"file": ("a.png", (SKIMAGE_DATA / "astronaut.png").read_bytes(), "image/png")},
                        headers=forged)
        assert upload.status_code == 201 and EVIL not in upload.text
    receiver.wait(1)
    _, payload = receiver.deliveries[0]
    assert b'"completed"' in payload and EVIL.encode() not in payload
    assert srv.base_url.encode() in payload or srv.config == "fleet"  # fleet: presigned store URLs


def test_a_trusted_proxy_names_only_an_allowed_host(make_server):
    srv = make_server()
    srv.args += ["--trusted-proxies", '["127.0.0.1"]', "--allowed-hosts", '["api.example.test", "Gpu-Box.lan:8000"]']
    srv.start()
    with srv.client() as c:
        def status_url(**headers: str) -> str:
            return c.post(f"/v1/models/{SEQ}", json={"text": "a fox"}, headers=headers).json()["status_url"]

        assert status_url(**{"X-Forwarded-Host": "api.example.test", "X-Forwarded-Proto": "https"}).startswith("https://api.example.test/")
        assert status_url(**{"X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "https"}).startswith(srv.base_url + "/")
        assert status_url(Host="gpu-box.lan:8000").startswith("http://gpu-box.lan:8000/")  # case-insensitive
        assert status_url(Host=EVIL).startswith(srv.base_url + "/")
        # The server's own address is no longer allowed (the list replaces the default): the configured base.
        assert status_url().startswith(srv.base_url + "/")


def test_the_default_allowed_hosts_are_the_loopback_names_and_a_concrete_host():
    from modelapi.core.config import Settings

    assert Settings(port=8123).allowed_hosts == ["127.0.0.1:8123", "localhost:8123", "[::1]:8123"]
    assert Settings(host="0.0.0.0", port=80).allowed_hosts == ["127.0.0.1:80", "localhost:80", "[::1]:80"]
    assert Settings(host="::", port=80).allowed_hosts == ["127.0.0.1:80", "localhost:80", "[::1]:80"]
    assert Settings(host="10.1.2.3", port=80).allowed_hosts[-1] == "10.1.2.3:80"
    assert Settings(host="fd00::5", port=80).allowed_hosts[-1] == "[fd00::5]:80"
    assert Settings(allowed_hosts=["api.example.test"]).allowed_hosts == ["api.example.test"]


# -- the first key -------------------------------------------------------------------------------
def test_the_first_key_is_printed_only_with_print_key(tmp_path):
    """On SQLite (each server its own database, so each creates a first key)."""
    quiet = ServerProcess(tmp_path / "quiet", args=["--no-worker"])
    loud = ServerProcess(tmp_path / "loud", args=["--no-worker", "--print-key"])
    try:
        quiet.start()
        key_file = quiet.data_dir / "initial_api_key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert quiet.key.startswith("mapi_") and quiet.key not in quiet.log()
        assert f"in {key_file} (mode 0600" in quiet.log()
        assert f"Open the playground: {quiet.base_url}/ and paste the key" in quiet.log()
        # The client commands still find it in the local file (MODELAPI_DATA_DIR here).
        models = quiet.cli("models", "--base-url", quiet.base_url)
        assert models.returncode == 0 and SEQ in models.stdout, models.stderr

        loud.start()
        assert f"\n    {loud.key}\n" in loud.log()
        assert f"Open the playground: {loud.base_url}/#key={loud.key}" in loud.log()
    finally:
        quiet.stop()
        loud.stop()
