"""The OpenAI Images API, driven by the official ``openai`` Python package against a real
``modelapi serve`` over HTTP on 127.0.0.1, in both configurations (SQLite + a folder, Postgres +
S3): generations in both response formats, edits with two image files, the SDK's typed errors,
``client.models.list()``, and the wait bound's 504 — each call an ordinary request of our API."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from conftest import SKIMAGE_DATA, wait_terminal

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"


def sdk(server, key: str | None = None, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key or server.key, **kwargs)


def our_result(server, request_id: str) -> dict:
    with server.client() as c:
        return c.get(f"/v1/requests/{request_id}/result", params={"include_cost": "true"}).json()


def test_generate_two_images_as_urls_is_an_ordinary_billed_request(server):
    with sdk(server) as client:
        answer = client.images.generate(model=SEQ, prompt="a red fox in the snow", n=2, size="1536x1024")
    assert len(answer.data) == 2 and all(d.url and not d.b64_json for d in answer.data)
    assert answer.output_format == "jpeg" and answer.created > 0
    for item in answer.data:
        image = Image.open(io.BytesIO(httpx.get(item.url).raise_for_status().content))
        assert image.size == (2496, 1664)  # 1536x1024 is 3:2: the documented 3:2 size
    request_id = answer._request_id
    result = our_result(server, request_id)
    assert result["status"] == "completed" and len(result["output"]["images"]) == 2
    assert result["cost"] == pytest.approx(0.06)  # seedream bills its cap, n
    with server.client() as c:
        listed = [r["request_id"] for r in c.get("/v1/requests", params={"model": SEQ, "limit": 100}).json()["requests"]]
    assert request_id in listed


def test_generate_b64_json_n_alone_sets_the_count_and_seed_is_kept(server):
    with sdk(server) as client:
        answer = client.images.generate(prompt="Generate 3 images of a lighthouse at dusk", n=2, size="1024x1024",
                                        response_format="b64_json", extra_body={"seed": 77, "user": "ignored"})
    assert len(answer.data) == 2 and all(d.b64_json and not d.url for d in answer.data)
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in answer.data]
    assert [im.format for im in images] == ["JPEG", "JPEG"] and {im.size for im in images} == {(2048, 2048)}
    assert images[0].tobytes() != images[1].tobytes()  # two images of a series, seeds 77 and 78
    result = our_result(server, answer._request_id)
    assert result["seed"] == 77 and len(result["output"]["images"]) == 2
    with sdk(server) as client:
        one = client.images.generate(prompt="Generate 4 images of a heron", n=1, response_format="b64_json")
    assert len(one.data) == 1
    assert Image.open(io.BytesIO(base64.b64decode(one.data[0].b64_json))).size == (2560, 1440)  # the model's default


def test_edit_with_two_image_files(server):
    with sdk(server) as client, open(SKIMAGE_DATA / "astronaut.png", "rb") as a, open(SKIMAGE_DATA / "chelsea.png", "rb") as b:
        answer = client.images.edit(image=[a, b], prompt="the astronaut holding the cat", n=2, size="1024x1536")
    assert len(answer.data) == 2
    assert {Image.open(io.BytesIO(httpx.get(d.url).content)).size for d in answer.data} == {(1664, 2496)}
    result = our_result(server, answer._request_id)
    assert result["status"] == "completed"
    with server.client() as c:
        item = next(r for r in c.get("/v1/requests", params={"limit": 100}).json()["requests"] if r["request_id"] == answer._request_id)
    assert item["model_id"] == EDIT_SEQ
    with sdk(server) as client, open(SKIMAGE_DATA / "astronaut.png", "rb") as a:
        single = client.images.edit(model=DREAMINA, image=a, prompt="as a watercolor", size="2048x2048", response_format="b64_json")
    assert len(single.data) == 1
    assert Image.open(io.BytesIO(base64.b64decode(single.data[0].b64_json))).size == (2048, 2048)


def test_bad_size_and_bad_key_are_the_sdk_s_typed_errors(server):
    with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.generate(prompt="a fox", size="1792x1024")
        with pytest.raises(openai.BadRequestError) as bad_n:
            client.images.generate(prompt="a fox", n=16)
        with pytest.raises(openai.NotFoundError) as unknown:
            client.images.generate(model="dall-e-3", prompt="a fox")
    assert bad.value.status_code == 400 and bad.value.param == "size"
    assert "1792x1024" in bad.value.message and "2560x1440" in bad.value.message and "16:9" in bad.value.message
    assert bad.value.response.json()["error"].keys() == {"message", "type", "param", "code"}
    assert bad_n.value.param == "n" and unknown.value.code == "model_not_found"
    with sdk(server, key="mk_not_a_key") as client, pytest.raises(openai.AuthenticationError) as denied:
        client.images.generate(prompt="a fox")
    assert denied.value.status_code == 401 and denied.value.code == "invalid_api_key"
    bare = httpx.post(f"{server.base_url}/v1/images/generations", json={"prompt": "a fox"})
    assert bare.status_code == 401 and bare.json()["error"]["type"] == "invalid_request_error"
    with sdk(server, key="mk_not_a_key") as client, pytest.raises(openai.AuthenticationError):
        client.models.list()
    with sdk(server) as client, pytest.raises(openai.UnprocessableEntityError) as rules:
        client.images.edit(image=("tiny.png", _png(8, 8)), prompt="x", model=EDIT_SEQ)  # edit-sequential: > 14 px a side
    assert rules.value.param == "image" and "14 pixels" in rules.value.message


def test_models_list(server):
    with sdk(server) as client:
        ids = [m.id for m in client.models.list()]
    assert ids == [DREAMINA, EDIT_SEQ, SEQ]
    with server.client() as c:
        body = c.get("/v1/models").json()
    assert [m["model_id"] for m in body["models"]] == ids  # today's shape is still there
    assert body["object"] == "list" and {m["owned_by"] for m in body["data"]} == {"bytedance"}


def test_past_the_wait_bound_a_504_names_the_request_which_keeps_running(make_server):
    srv = make_server(args=["--sync-timeout-s", "0.5"], env={"MODELAPI_TEST_STEP_S": "0.2", "MODELAPI_TEST_STEPS": "10"}).start()
    with sdk(srv) as client, pytest.raises(openai.InternalServerError) as late:
        client.images.generate(prompt="a slow fox")
    assert late.value.status_code == 504 and late.value.code == "timeout"
    request_id = late.value.response.headers["x-request-id"]
    assert request_id in late.value.message
    with srv.client() as c:
        assert [r["request_id"] for r in c.get("/v1/requests").json()["requests"]] == [request_id]  # the SDK did not retry
        assert wait_terminal(c, request_id)["status"] == "completed"


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()
