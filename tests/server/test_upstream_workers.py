"""Upstream workers as processes on one Postgres (and one S3 store): `modelapi serve --no-worker`,
a GPU worker (`modelapi worker`, the drawing engine) and upstream workers (`modelapi worker
--backends modelark`) on the fake ModelArk (tests/fake_modelark.py, 127.0.0.1). Each takes only
its own queue's jobs; a request that falls back from modelark to local moves to the GPU worker;
an upstream worker killed with SIGKILL mid-job is taken over by another upstream worker."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from conftest import wait_terminal
from fake_modelark import FakeModelArk
from modelapi.core import db

SEQ = "bytedance/seedream-4-0/sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"


@pytest.fixture
def fake():
    server = FakeModelArk()
    yield server
    server.close()


def run_by(srv, request_id: str) -> tuple[str | None, int]:
    with db.connect(srv.database_url).connect() as conn:
        row = conn.execute(sa.select(db.requests.c.run_by, db.requests.c.attempts)
                           .where(db.requests.c.request_id == request_id)).one()
    return (row.run_by.rpartition("#")[0] if row.run_by else None), row.attempts


def png_data_uri() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("make_server", ["fleet"], indirect=True)
def test_gpu_and_upstream_workers_take_only_their_own_jobs_and_survive_a_kill(make_server, fake):
    env = {"MODELAPI_ROUTES": f'{{"{SEQ}": ["modelark", "local"]}}', "MODELAPI_MODELARK_API_KEY": fake.api_key,
           "MODELAPI_MODELARK_BASE_URL": fake.base_url, "MODELAPI_WORKER_TIMEOUT_S": "4",
           "MODELAPI_TEST_STEP_S": "0.01"}
    api = make_server(args=["--no-worker"], env=env).start()
    gpu = make_server(command="worker", args=["--worker-id", "gpu-1"], env=env).start()
    up1 = make_server(command="worker", args=["--worker-id", "up-1", "--backends", "modelark"], env=env).start()
    health = httpx.get(f"{up1.base_url}/healthz", headers=api.headers(), timeout=10).json()
    assert health["engine"] == {"engine": "upstream", "device": "none", "backends": ["modelark"]}
    assert health["backends"]["modelark"]["circuit"] == "closed" and "local" not in health["backends"]
    assert "libtorch" not in mapped_libraries(up1.proc.pid), "an upstream worker loads no torch"
    with api.client() as c:
        seq = c.post(f"/v1/models/{SEQ}", json={"text": "a heron", "sequential_image_generation_options": 2}).json()
        local = c.post(f"/v1/models/{DREAMINA}", json={"prompt": "a boat", "image_urls": [
            png_data_uri()]}).json()
        fell = c.post(f"/v1/models/{SEQ}", json={"text": "a heron [429]"}).json()
        results = {rid: wait_terminal(c, rid) for rid in (seq["request_id"], local["request_id"], fell["request_id"])}
        assert all(r["status"] == "completed" for r in results.values()), results
        assert results[seq["request_id"]]["metadata"]["backend"] == "modelark"
        assert run_by(api, seq["request_id"])[0] == "up-1"
        assert results[local["request_id"]]["metadata"]["backend"] == "local"
        assert run_by(api, local["request_id"])[0] == "gpu-1"
        moved = results[fell["request_id"]]["metadata"]
        assert moved["backend"] == "local" and run_by(api, fell["request_id"])[0] == "gpu-1"
        assert moved["backends_tried"] == [{"backend": "modelark", "outcome": "429 RateLimitExceeded.EndpointRPMExceeded"},
                                           {"backend": "local", "outcome": "ok"}]

        held = c.post(f"/v1/models/{SEQ}", json={"text": "three herons [hold]",
                                                 "sequential_image_generation_options": 3}).json()["request_id"]
        deadline = time.monotonic() + 30
        while not c.get(f"/v1/requests/{held}/status").json().get("partial_output"):
            assert time.monotonic() < deadline, "the upstream worker never showed the first image"
            time.sleep(0.02)
        assert run_by(api, held) == ("up-1", 1)
        up1.kill9()
        fake.release.set()  # the next run of the request is not held
        up2 = make_server(command="worker", args=["--worker-id", "up-2", "--backends", "modelark"], env=env).start()
        result = wait_terminal(c, held, timeout_s=90)
        assert result["status"] == "completed", result
        assert run_by(api, held) == ("up-2", 2), "the dead worker's job was taken over by the other upstream worker"
        assert len(result["output"]["images"]) == 3 and result["metadata"]["backend"] == "modelark"
        assert up2.proc.poll() is None and gpu.proc.poll() is None
