"""The `runcomfy` backend against a second real `modelapi serve` as the upstream (the same
contract as the hosted service): the front server in both configurations, the upstream on its
own SQLite database (with --allow-private-urls, so it can fetch our storage's reference URLs on
127.0.0.1)."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from conftest import ServerProcess, wait_terminal
from test_backends_e2e import png_data_uri

SEQ = "bytedance/seedream-4-0/sequential"
EDIT = "bytedance/seedream-4-0/edit-sequential"


@pytest.fixture
def upstream(tmp_path):
    srv = ServerProcess(tmp_path / "upstream", args=["--allow-private-urls"]).start()
    yield srv
    srv.stop()


def pixels(url: str) -> tuple[tuple[int, int], tuple[int, int, int]]:
    image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB")
    return image.size, image.getpixel((image.width // 2, image.height // 2))


def test_seed_bodies_in_the_same_outputs_out(make_server, upstream):
    front = make_server(env={
        "MODELAPI_ROUTES": f'{{"{SEQ}": ["runcomfy"], "{EDIT}": ["runcomfy"]}}',
        "MODELAPI_RUNCOMFY_API_KEY": upstream.key, "MODELAPI_RUNCOMFY_BASE_URL": upstream.base_url,
    }).start()
    body = {"text": "Generate 2 images of a lighthouse", "seed": 4242, "image_size": "2048:2048 (1:1)",
            "sequential_image_generation_options": 2}
    with front.client() as c, upstream.client() as u:
        ours = wait_terminal(c, c.post(f"/v1/models/{SEQ}", json=body).json()["request_id"])
        direct = wait_terminal(u, u.post(f"/v1/models/{SEQ}", json=body).json()["request_id"])
        assert ours["status"] == "completed", ours
        assert ours["metadata"]["backend"] == "runcomfy" and ours["metadata"]["upstream"]["request_id"].startswith("req_")
        assert u.get(f"/v1/requests/{ours['metadata']['upstream']['request_id']}/status").json()["status"] == "completed"
        assert all(upstream.base_url not in url for url in ours["output"]["images"])
        assert [pixels(x) for x in ours["output"]["images"]] == [pixels(x) for x in direct["output"]["images"]]

        edit = wait_terminal(c, c.post(f"/v1/models/{EDIT}", json={
            "text": "the same boat at night", "images": [png_data_uri((80, 60), (10, 10, 200))],
            "sequential_image_generation_options": 1}).json()["request_id"])
        assert edit["status"] == "completed", edit
        assert len(edit["output"]["images"]) == 1


def test_an_upstream_refusal_is_not_retried_and_names_the_upstream_message(make_server, tmp_path):
    strict = ServerProcess(tmp_path / "strict", args=["--allow-private-urls"],
                           env={"MODELAPI_MAX_INPUT_PIXELS": "1000"}).start()  # refuses what we accept
    try:
        front = make_server(env={
            "MODELAPI_ROUTES": f'{{"{EDIT}": ["runcomfy", "local"]}}',
            "MODELAPI_RUNCOMFY_API_KEY": strict.key, "MODELAPI_RUNCOMFY_BASE_URL": strict.base_url,
        }).start()
        with front.client() as c:
            result = wait_terminal(c, c.post(f"/v1/models/{EDIT}", json={
                "text": "a boat", "images": [png_data_uri((80, 60), (10, 10, 200))]}).json()["request_id"])
    finally:
        strict.stop()
    assert result["status"] == "failed" and result["error"]["code"] == "upstream_rejected", result
    assert "RunComfy 422" in result["error"]["message"]
