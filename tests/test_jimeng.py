"""The ``jimeng`` backend in this process: dreamina edit run on the fake Jimeng 4.0 visual API
(tests/fake_jimeng.py, real HTTP on 127.0.0.1, every call's signature verified by the fake from
the documented algorithm), on a temporary SQLite database with the real queue tables. The same
through `modelapi serve` with reference images, in both configurations, is in
tests/server/test_backends_e2e.py."""

from __future__ import annotations

import io
import threading

import pytest
import sqlalchemy as sa
from PIL import Image

from drawing_engine import DrawingEngine
from fake_jimeng import FakeJimeng
from fake_modelark import colour
from modelapi import catalog
from modelapi.backends import check_routes, effective_routes
from modelapi.backends.jimeng import request_body
from modelapi.core import db
from modelapi.core.config import Settings
from modelapi.core.storage import FileStorage
from modelapi.types import Status
from modelapi.validation import check_input
from modelapi.core.images import embedded_text
from modelapi.worker.runtime import WorkerRuntime

DREAMINA = "bytedance/dreamina-4-0/edit"
SEQ = "bytedance/seedream-4-0/sequential"


@pytest.fixture
def fake():
    server = FakeJimeng()
    yield server
    server.close()


@pytest.fixture
def storage(tmp_path):
    return FileStorage(tmp_path / "files", b"k" * 32)


@pytest.fixture
def worker(jobs, storage, tmp_path, fake, monkeypatch):
    """Makes a worker routing dreamina edit to ``route`` (default jimeng, then local)."""
    made = []

    def make(route=("jimeng", "local"), secret_key=None):
        monkeypatch.setenv("MODELAPI_JIMENG_ACCESS_KEY", fake.access_key)
        monkeypatch.setenv("MODELAPI_JIMENG_SECRET_KEY", secret_key or fake.secret_key)
        monkeypatch.setenv("MODELAPI_JIMENG_BASE_URL", fake.base_url)
        runtime = WorkerRuntime(Settings(data_dir=tmp_path, routes={DREAMINA: list(route)}), jobs, storage,
                                DrawingEngine(step_s=0.0, steps=2))
        runtime.router.backoff_s = 0.01
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime._post.shutdown(wait=True)


def submit(jobs, body, seed=1234, request_id="req_1"):
    inputs, problems = check_input(catalog.get(DREAMINA).input_schema, {"image_urls": ["https://x/a.png"], **body})
    assert not problems
    return jobs.create(request_id=request_id, owner_key_id="key_a", model_id=DREAMINA, inputs=inputs,
                       input_files=[], seed=seed, idempotency_key=None, body_hash=None, upstream=True)


def run(runtime, req):
    runtime.execute(req.request_id, req.workflow_id)
    return runtime.jobs.get(req.request_id)


def test_dreamina_edit_maps_onto_the_documented_jimeng_request():
    inputs = check_input(catalog.get(DREAMINA).input_schema, {
        "prompt": "the two of them on a boat", "image_urls": ["https://x/a.png"] * 2,
        "width×height": "5404x3040(16:9)", "scale": 0.8, "force_single": True})[0]
    assert request_body(inputs, ["https://ours/1", "https://ours/2"], 2**40) == {
        "req_key": "jimeng_t2i_v40", "prompt": "the two of them on a boat",
        "image_urls": ["https://ours/1", "https://ours/2"], "width": 5404, "height": 3040, "scale": 0.8,
        "force_single": True, "seed": 2**40 % 2**31}
    defaults = check_input(catalog.get(DREAMINA).input_schema, {"prompt": "p", "image_urls": ["https://x/a.png"]})[0]
    body = request_body(defaults, [], 7)
    assert (body["width"], body["height"], body["scale"], body["force_single"]) == (2048, 2048, 0.5, False)


def test_routes_name_jimeng_only_for_dreamina_and_need_both_keys():
    keys = {"MODELAPI_JIMENG_ACCESS_KEY": "ak", "MODELAPI_JIMENG_SECRET_KEY": "sk"}
    check_routes({DREAMINA: ["jimeng", "local"]}, env=keys)
    with pytest.raises(ValueError, match="MODELAPI_JIMENG_SECRET_KEY is not set"):
        check_routes({DREAMINA: ["jimeng"]}, env={"MODELAPI_JIMENG_ACCESS_KEY": "ak"})
    with pytest.raises(ValueError, match="jimeng backend serves only"):
        check_routes({SEQ: ["jimeng"]}, env=keys)
    # dreamina edit uses jimeng when its credentials are set, else modelark
    routes = {DREAMINA: ["modelark", "local"], SEQ: ["modelark"]}
    assert effective_routes(routes, env=keys) == {DREAMINA: ["jimeng", "local"], SEQ: ["modelark"]}
    assert effective_routes(routes, env={}) == routes


def test_a_dreamina_edit_is_submitted_signed_polled_and_stored_as_ours(jobs, worker, fake, storage):
    runtime = worker()
    req = submit(jobs, {"prompt": "a red boat [n 3]", "width×height": "2304x1728(4:3)", "scale": 0.7})
    done = run(runtime, req)
    assert done.status is Status.COMPLETED, done.error
    submits = fake.submits()
    assert submits == [{"req_key": "jimeng_t2i_v40", "prompt": "a red boat [n 3]", "image_urls": [], "width": 2304,
                        "height": 1728, "scale": 0.7, "force_single": False, "seed": 1234}]
    polls = [r for r in fake.received if r["action"] == "CVSync2AsyncGetResult"]
    assert len(polls) == 3  # in_queue, generating, done
    assert all(p["body"]["req_json"] == '{"return_url": false, "logo_info": {"add_logo": false}}' for p in polls)
    assert fake.received[0]["headers"]["Authorization"].startswith(f"HMAC-SHA256 Credential={fake.access_key}/")
    assert done.outputs == [f"outputs/{req.request_id}/1/{i}.jpg" for i in range(3)]
    for i, key in enumerate(done.outputs):
        data = storage.get(key)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        assert image.size == (2304, 1728)
        assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel((50, 50)), colour(i)))
        assert embedded_text(data)["backend"] == "jimeng"
    meta = done.metadata
    assert meta["backend"] == "jimeng" and meta["backends_tried"] == [{"backend": "jimeng", "outcome": "ok"}]
    assert meta["upstream"]["model"] == "jimeng_t2i_v40" and meta["upstream"]["task_id"] in fake.tasks
    assert "upstream_units" not in meta and "unsupported" not in meta
    with jobs.db.connect() as conn:
        row = conn.execute(sa.select(db.usage).where(db.usage.c.request_id == req.request_id)).mappings().one()
    assert (row["backend"], row["upstream_units"]) == ("jimeng", 3)
    assert row["upstream_request_id"] == meta["upstream"]["request_id"]


def test_force_single_makes_one_image(jobs, worker, fake):
    done = run(worker(), submit(jobs, {"prompt": "a boat [n 4]", "force_single": True}))
    assert done.status is Status.COMPLETED and len(done.outputs) == 1
    assert fake.submits()[0]["force_single"] is True


def test_a_wrong_secret_key_is_refused_by_the_signature_check_and_falls_back_at_once(jobs, worker, fake):
    done = run(worker(secret_key="not-the-secret"), submit(jobs, {"prompt": "a boat"}))
    assert done.status is Status.COMPLETED and done.metadata["backend"] == "local"
    assert done.metadata["backends_tried"][0] == {"backend": "jimeng", "outcome": "401 SignatureDoesNotMatch"}
    assert len(fake.received) == 1, "401 is not retried"


@pytest.mark.parametrize("marker,outcome", [("[429]", "429 50429"), ("[500]", "500 50500"),
                                            ("[expire]", "task expired")])
def test_an_unavailable_jimeng_is_retried_then_falls_back_to_local(jobs, worker, fake, marker, outcome):
    done = run(worker(), submit(jobs, {"prompt": f"a boat {marker}"}))
    assert done.status is Status.COMPLETED, done.error
    assert len(fake.submits()) == 3
    assert done.metadata["backends_tried"] == [{"backend": "jimeng", "outcome": outcome},
                                               {"backend": "local", "outcome": "ok"}]


@pytest.mark.parametrize("marker,message", [("[policy]", "Jimeng 50412: Text Risk Not Pass"),
                                            ("[policy-out]", "Jimeng 50511: Post Img Risk Not Pass")])
def test_a_moderation_refusal_fails_content_policy_without_fallback(jobs, worker, fake, marker, message):
    done = run(worker(), submit(jobs, {"prompt": f"a boat {marker}"}))
    assert done.status is Status.FAILED
    assert done.error == {"code": "content_policy", "message": message}
    assert len(fake.submits()) == 1


def test_a_stopping_worker_stops_polling_and_hands_the_request_back(jobs, worker, fake):
    runtime = worker()
    req = submit(jobs, {"prompt": "a boat [hold]"})
    thread = threading.Thread(target=run, args=(runtime, req))
    thread.start()
    try:
        for _ in range(400):
            if any(r["action"] == "CVSync2AsyncGetResult" for r in fake.received[1:]):
                break
            threading.Event().wait(0.025)
        runtime.stop_now.set()
        thread.join(30)
    finally:
        fake.release.set()
    back = jobs.get(req.request_id)
    assert back.status is Status.IN_QUEUE and back.attempts == 0
