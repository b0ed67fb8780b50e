"""Backends through `modelapi serve`, in both configurations (SQLite + folder, Postgres + S3):
seedream routed to the fake ModelArk (tests/fake_modelark.py, on 127.0.0.1) with `local` (the
drawing engine) as fallback."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from conftest import TESTS, wait_terminal
from fake_modelark import FakeModelArk, colour
from localfleet import free_port
from modelapi.core import db

SEQ = "bytedance/seedream-4-0/sequential"
EDIT = "bytedance/seedream-4-0/edit-sequential"


@pytest.fixture
def fake():
    server = FakeModelArk()
    yield server
    server.close()


def routed(make_server, base_url: str, key: str):
    return make_server(env={
        "MODELAPI_ROUTES": f'{{"{SEQ}": ["modelark", "local"], "{EDIT}": ["modelark", "local"]}}',
        "MODELAPI_MODELARK_API_KEY": key, "MODELAPI_MODELARK_BASE_URL": base_url,
        "MODELAPI_MODELARK_TIMEOUT_S": "20",
    }).start()


def png_data_uri(size: tuple[int, int], rgb: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_seedream_on_modelark_end_to_end_with_fallback_and_refusals(make_server, fake):
    srv = routed(make_server, fake.base_url, fake.api_key)
    with srv.client() as c:
        rid = c.post(f"/v1/models/{SEQ}", json={"text": "Generate 3 images of a heron [hold]", "seed": 99,
                                                "image_size": "1664:2496 (2:3)",
                                                "sequential_image_generation_options": 3}).json()["request_id"]
        deadline = time.monotonic() + 30
        while not (status := c.get(f"/v1/requests/{rid}/status").json()).get("partial_output"):
            assert time.monotonic() < deadline and status["status"] in ("in_queue", "in_progress"), status
            time.sleep(0.02)
        assert status["status"] == "in_progress" and len(status["partial_output"]["images"]) == 1
        fake.release.set()
        result = wait_terminal(c, rid)
        assert result["status"] == "completed", result
        sent = fake.received[0]["body"]
        assert (sent["model"], sent["prompt"], sent["size"], sent["seed"], sent["watermark"], sent["stream"],
                sent["response_format"], sent["sequential_image_generation_options"]) == (
            "seedream-4-0-250828", "Generate 3 images of a heron [hold]", "1664x2496", 99, False, True, "b64_json",
            {"max_images": 3})
        fake_host = urlsplit(fake.base_url).netloc
        for i, url in enumerate(result["output"]["images"]):
            assert fake_host not in url
            image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB")
            assert image.size == (1664, 2496)
            assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel((10, 10)), colour(i)))
        meta = result["metadata"]
        assert meta["backend"] == "modelark" and meta["upstream"]["request_id"] == "0217000000000001"
        with db.connect(srv.database_url).connect() as conn:
            row = conn.execute(sa.select(db.usage).where(db.usage.c.request_id == rid)).mappings().one()
        assert (row["backend"], row["upstream_request_id"], row["upstream_units"], row["billed_units"]) == (
            "modelark", "0217000000000001", 3, 3)

        refs = [png_data_uri((96, 64), (200, 10, 10)), png_data_uri((64, 64), (10, 200, 10))]
        edit = wait_terminal(c, c.post(f"/v1/models/{EDIT}", json={"text": "the two together", "images": refs,
                                                                  "sequential_image_generation_options": 15}).json()["request_id"])
        assert edit["status"] == "completed", edit
        sent = fake.received[-1]["body"]
        assert sent["sequential_image_generation_options"] == {"max_images": 13}  # 2 references + 13 = 15
        got = [Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2]))) for uri in sent["image"]]
        assert [(im.size, im.convert("RGB").getpixel((5, 5))) for im in got] == [((96, 64), (200, 10, 10)),
                                                                                  ((64, 64), (10, 200, 10))]
        assert len(edit["output"]["images"]) == 13

        fell_back = wait_terminal(c, c.post(f"/v1/models/{SEQ}", json={"text": "a heron [429]"}).json()["request_id"])
        assert fell_back["status"] == "completed" and fell_back["metadata"]["backend"] == "local"
        assert fell_back["metadata"]["backends_tried"] == [
            {"backend": "modelark", "outcome": "429 RateLimitExceeded.EndpointRPMExceeded"},
            {"backend": "local", "outcome": "ok"}]

        sent_before = len(fake.received)
        refused = wait_terminal(c, c.post(f"/v1/models/{SEQ}", json={"text": "a heron [policy]"}).json()["request_id"])
        assert refused["status"] == "failed" and refused["error"]["code"] == "content_policy"
        assert "InputTextSensitiveContentDetected" in refused["error"]["message"]
        assert len(fake.received) == sent_before + 1, "a content-policy refusal is neither retried nor sent elsewhere"


def test_a_dead_upstream_falls_back_to_local(make_server):
    srv = routed(make_server, f"http://127.0.0.1:{free_port()}/api/v3", "ark-test-key")
    with srv.client() as c:
        result = wait_terminal(c, c.post(f"/v1/models/{SEQ}", json={"text": "a heron"}).json()["request_id"])
    assert result["status"] == "completed" and result["metadata"]["backend"] == "local"
    assert result["metadata"]["backends_tried"][0] == {"backend": "modelark", "outcome": "connection error: ConnectError"}
    health = httpx.get(f"{srv.base_url}/healthz", headers=srv.headers(), timeout=10).json()
    assert health["backends"]["modelark"]["failures_in_a_row"] == 3 and health["backends"]["modelark"]["circuit"] == "closed"
    assert health["backends"]["local"]["circuit"] == "closed"
    assert httpx.get(f"{srv.base_url}/healthz", timeout=10).json() == {"status": "ok"}, "without a key: the status only"


def test_a_route_without_credentials_stops_serve_naming_the_variable(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MODELAPI_DATA_DIR": str(tmp_path),
           "MODELAPI_ENGINE": "drawing_engine:make", "MODELAPI_ROUTES": f'{{"{SEQ}": ["modelark", "local"]}}'}
    env.pop("MODELAPI_MODELARK_API_KEY", None)
    done = subprocess.run([sys.executable, "-m", "modelapi", "serve", "--port", str(free_port())], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "MODELAPI_MODELARK_API_KEY is not set" in " ".join((done.stdout + done.stderr).split())
