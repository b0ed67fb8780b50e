"""The real diffusion engine (tiny random-weight FLUX.2 [klein], built in code and loaded through
from_pretrained) behind the real server on 127.0.0.1."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import SKIMAGE_DATA, ServerProcess, wait_terminal
from modelapi.worker.generate import embedded_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def flux_server(tmp_path_factory, tiny_path):
    root = tmp_path_factory.mktemp("flux")
    srv = ServerProcess(root / "data", args=["--model", str(tiny_path)], env={"MODELAPI_ENGINE": "flux2"}).start(timeout_s=180)
    yield srv
    srv.stop()


def small_ref(name: str, size: int = 64) -> str:
    image = Image.open(SKIMAGE_DATA / name).convert("RGB").resize((size, size))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_models_say_random_weights(flux_server):
    with flux_server.client() as c:
        models = c.get("/v1/models").json()["models"]
    assert all(m["random_weights"] is True and m["engine"].startswith("flux2") for m in models)
    assert "RANDOM WEIGHTS" in flux_server.log()


def test_ten_references_and_eight_asked_gives_five(flux_server):
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"] * 2
    body = {"images": [small_ref(n, 16) for n in names], "text": "Generate 8 images of the same scene at different times of day",
            "sequential_image_generation_options": 15, "image_size": "2048:2048 (1:1)", "seed": 7}
    with flux_server.client() as c:
        resp = c.post("/v1/models/bytedance/seedream-4-0/edit-sequential", json=body)
        assert resp.status_code == 200, resp.text
        result = wait_terminal(c, resp.json()["request_id"], timeout_s=300)
    assert result["status"] == "completed", result
    assert len(result["output"]["images"]) == 5  # 15 - 10 references
    meta = result["metadata"]
    assert meta["stated_count"] == 8 and meta["cap"] == 5 and meta["random_weights"] is True
    assert meta["prompts"] == ["the same scene at different times of day"] * 5
    for url in result["output"]["images"]:
        data = httpx.get(url).content
        assert Image.open(io.BytesIO(data)).size == (2048, 2048)
        text = embedded_text(data)  # in the file, whatever --output-format
        assert text["seed"].isdigit()
        assert text["prompt"] == "the same scene at different times of day"  # no instruction


def test_same_seed_same_pixels_through_the_server(flux_server):
    body = {"text": "a lighthouse at dusk", "image_size": "2048:2048 (1:1)"}
    pixels = []
    with flux_server.client() as c:
        for seed in (1234, 1234, 99):
            rid = c.post("/v1/models/bytedance/seedream-4-0/sequential", json={**body, "seed": seed}).json()["request_id"]
            result = wait_terminal(c, rid, timeout_s=120)
            assert result["status"] == "completed", result
            assert result["seed"] == seed
            pixels.append(np.asarray(Image.open(io.BytesIO(httpx.get(result["output"]["image"]).content))))
            assert result["metadata"]["source"] == "none"  # no count stated: one image
    assert np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], pixels[2])


# One request per supported language: the count it states, the per-image prompt it must give.
LANGUAGE_REQUESTS = [
    ("en", "Generate 3 images of a beautiful sunset over a calm ocean.", 3, "a beautiful sunset over a calm ocean"),
    ("it", "Genera 3 immagini di un faro", 3, "un faro"),
    ("ko", "등대 사진 4장을 만들어 줘", 4, "등대 사진"),
    ("pt", "Gere quatro imagens de um barco", 4, "um barco"),
    ("de", "Erstelle zwei Bilder von einem Fuchs", 2, "einem Fuchs"),
    ("zh", "生成3张日落的图片", 3, "日落"),
    ("ja", "夕日の画像を2枚生成してください", 2, "夕日"),
]


@pytest.mark.parametrize(("language", "prompt", "count", "per_image"), LANGUAGE_REQUESTS, ids=[r[0] for r in LANGUAGE_REQUESTS])
def test_each_language_states_its_count_through_the_server(flux_server, language, prompt, count, per_image):
    # dreamina at 1024x1024 (the smallest documented size) keeps the tiny pipeline quick; the
    # planning is the same for every endpoint.
    body = {"prompt": prompt, "image_urls": [small_ref("chelsea.png")], "width×height": "1024x1024(1:1)"}
    with flux_server.client() as c:
        resp = c.post("/v1/models/bytedance/dreamina-4-0/edit", json=body)
        assert resp.status_code == 200, resp.text
        result = wait_terminal(c, resp.json()["request_id"], timeout_s=120)
    assert result["status"] == "completed", result
    meta = result["metadata"]
    assert len(result["output"]["images"]) == count == meta["image_count"] == meta["stated_count"]
    assert (meta["language"], meta["source"]) == (language, "prompt_count")
    assert meta["prompts"] == [per_image] * count
    for url in result["output"]["images"]:
        data = httpx.get(url).content
        assert Image.open(io.BytesIO(data)).size == (1024, 1024) and embedded_text(data)["prompt"] == per_image
