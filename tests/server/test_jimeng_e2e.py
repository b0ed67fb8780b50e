"""Dreamina edit on the fake Jimeng (tests/fake_jimeng.py, on 127.0.0.1) through `modelapi serve`,
in both configurations (SQLite + folder, Postgres + S3): the references reach the fake as URLs of
our storage (signed file URLs under the server's URL, or presigned S3 URLs), which the fake
fetches as the provider would; the outputs are served from our storage with the fake's pixels."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from conftest import wait_terminal
from fake_jimeng import FakeJimeng
from fake_modelark import colour
from test_backends_e2e import png_data_uri

DREAMINA = "bytedance/dreamina-4-0/edit"


@pytest.fixture
def fake():
    server = FakeJimeng()
    yield server
    server.close()


def test_dreamina_edit_on_jimeng_fetches_our_references_and_serves_its_pixels_from_our_storage(make_server, fake):
    srv = make_server(env={
        "MODELAPI_ROUTES": f'{{"{DREAMINA}": ["jimeng"]}}',
        "MODELAPI_JIMENG_ACCESS_KEY": fake.access_key, "MODELAPI_JIMENG_SECRET_KEY": fake.secret_key,
        "MODELAPI_JIMENG_BASE_URL": fake.base_url, "MODELAPI_JIMENG_TIMEOUT_S": "30",
    }).start()
    references = [((80, 60), (10, 10, 200)), ((64, 96), (200, 40, 10))]
    with srv.client() as c:
        rid = c.post(f"/v1/models/{DREAMINA}", json={
            "prompt": "the two of them on a boat [n 2]", "image_urls": [png_data_uri(s, rgb) for s, rgb in references],
            "width×height": "2304x1728(4:3)", "scale": 0.7}).json()["request_id"]
        result = wait_terminal(c, rid)
    assert result["status"] == "completed", result

    sent = fake.submits()[0]
    assert (sent["prompt"], sent["width"], sent["height"], sent["scale"], sent["seed"]) == (
        "the two of them on a boat [n 2]", 2304, 1728, 0.7, result["seed"])
    assert len(sent["image_urls"]) == 2
    for url in sent["image_urls"]:
        if srv.config == "fleet":  # presigned URLs of the S3 store
            assert "X-Amz-Signature=" in url and not url.startswith(srv.base_url), url
        else:  # signed file URLs of this server
            assert url.startswith(srv.base_url) and "sig=" in url, url
    fetched = fake.references[0]
    assert [status for status, _ in fetched] == [200, 200]
    for (status, data), (size, rgb) in zip(fetched, references):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        assert image.size == size and all(abs(a - b) <= 3 for a, b in zip(image.getpixel((5, 5)), rgb))

    assert result["metadata"]["backend"] == "jimeng" and result["metadata"]["upstream"]["task_id"]
    assert len(result["output"]["images"]) == 2
    fake_host = urlsplit(fake.base_url).netloc
    for i, url in enumerate(result["output"]["images"]):
        assert fake_host not in url
        if srv.config == "sqlite":
            assert url.startswith(srv.base_url)
        image = Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB")
        assert image.size == (2304, 1728)
        assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel((10, 10)), colour(i)))
