"""Backends in this process: the worker's run of a request routed to the fake ModelArk
(tests/fake_modelark.py, real HTTP on 127.0.0.1) and to the local drawing engine, on a temporary
SQLite database with the real queue tables. The same paths through `modelapi serve`, in both
configurations, are in tests/server/test_backends_e2e.py."""

from __future__ import annotations

import base64
import io
import threading

import pytest
import sqlalchemy as sa
from PIL import Image

from drawing_engine import DrawingEngine
from fake_modelark import FakeModelArk, colour
from localfleet import free_port
from modelapi import catalog
from modelapi.backends import check_routes, modelark
from modelapi.backends.modelark import request_body
from modelapi.core import db
from modelapi.core.config import Settings
from modelapi.core.storage import FileStorage
from modelapi.types import Status
from modelapi.validation import check_input
from modelapi.worker.generate import embedded_text
from modelapi.worker.runtime import WorkerRuntime

SEQ = "bytedance/seedream-4-0/sequential"
EDIT = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"


@pytest.fixture
def fake():
    server = FakeModelArk()
    yield server
    server.close()


@pytest.fixture
def storage(tmp_path):
    return FileStorage(tmp_path / "files", b"k" * 32)


@pytest.fixture
def worker(jobs, storage, tmp_path, fake, monkeypatch):
    """Makes a worker routing every model to ``route`` (default modelark, then local)."""
    made = []

    def make(route=("modelark", "local"), base_url=None, **env):
        monkeypatch.setenv("MODELAPI_MODELARK_API_KEY", fake.api_key)
        monkeypatch.setenv("MODELAPI_MODELARK_BASE_URL", base_url or fake.base_url)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = Settings(data_dir=tmp_path, routes={m: list(route) for m in (SEQ, EDIT, DREAMINA)})
        runtime = WorkerRuntime(settings, jobs, storage, DrawingEngine(step_s=0.0, steps=2))
        runtime.router.backoff_s = 0.01
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime._post.shutdown(wait=True)


def submit(jobs, model_id, body, input_files=(), seed=1234, request_id="req_1"):
    """A request on the upstream queue (every route here starts with modelark)."""
    inputs, problems = check_input(catalog.get(model_id).input_schema, body)
    assert not problems
    return jobs.create(request_id=request_id, owner_key_id="key_a", model_id=model_id, inputs=inputs,
                       input_files=list(input_files), seed=seed, idempotency_key=None, body_hash=None, upstream=True)


def run(runtime, req):
    runtime.execute(req.request_id, req.workflow_id)
    return runtime.jobs.get(req.request_id)


def ledger(jobs, request_id):
    with jobs.db.connect() as conn:
        return conn.execute(sa.select(db.usage).where(db.usage.c.request_id == request_id)).mappings().one()


# -- the request ModelArk gets --------------------------------------------------------------------
def test_each_endpoint_maps_onto_the_documented_modelark_request():
    seq = check_input(catalog.get(SEQ).input_schema, {"text": "three foxes", "image_size": "2560:1440 (16:9)",
                                                       "sequential_image_generation_options": 4,
                                                       "optimize_prompt_options": "standard"})[0]
    body, unsupported = request_body(SEQ, seq, [], 77, "seedream-4-0-250828")
    assert body == {"model": "seedream-4-0-250828", "prompt": "three foxes", "size": "2560x1440",
                    "sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 4},
                    "response_format": "b64_json", "watermark": False, "stream": True, "seed": 77,
                    "optimize_prompt_options": {"mode": "standard"}}
    assert unsupported == []
    refs = [f"data:image/png;base64,{i}" for i in range(10)]
    edit = check_input(catalog.get(EDIT).input_schema, {"text": "t", "images": ["https://x/a.png"] * 10,
                                                         "sequential_image_generation_options": 15})[0]
    body, _ = request_body(EDIT, edit, refs, 2**40, "ep-123")
    assert body["image"] == refs and body["sequential_image_generation_options"] == {"max_images": 5}  # 10 + 5 = 15
    assert body["seed"] == 2**40 % 2**31 and body["model"] == "ep-123"
    one = check_input(catalog.get(EDIT).input_schema, {"text": "t", "images": ["https://x/a.png"]})[0]
    assert request_body(EDIT, one, refs[:1], 1, "m")[0]["image"] == refs[0]  # one reference: a string
    dreamina = check_input(catalog.get(DREAMINA).input_schema, {"prompt": "p", "image_urls": ["https://x/a.png"] * 2,
                                                                 "width×height": "6198x2656(21:9)", "force_single": True,
                                                                 "scale": 0.8})[0]
    body, unsupported = request_body(DREAMINA, dreamina, refs[:2], 5, "m")
    assert (body["size"], body["sequential_image_generation"], body["prompt"]) == ("6198x2656", "disabled", "p")
    assert body["sequential_image_generation_options"] == {"max_images": 13} and unsupported == ["scale"]


def test_routes_are_checked_at_start_naming_the_missing_variable():
    with pytest.raises(ValueError, match="MODELAPI_MODELARK_API_KEY is not set"):
        check_routes({SEQ: ["modelark", "local"]}, env={})
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        check_routes({SEQ: ["gpu"]}, env={})
    with pytest.raises(ValueError, match="unknown model id 'nope/x/y'"):
        check_routes({"nope/x/y": ["local"]}, env={})
    with pytest.raises(ValueError, match="non-empty list"):
        check_routes({SEQ: []}, env={})
    check_routes({SEQ: ["modelark"]}, env={"MODELAPI_MODELARK_API_KEY": "k"})
    check_routes({SEQ: ["local"]}, env={})


# -- runs ---------------------------------------------------------------------------------------
def test_a_streamed_series_is_stored_as_ours_published_early_and_billed_with_the_provider_s_ids(jobs, worker, fake, storage):
    runtime = worker()
    req = submit(jobs, SEQ, {"text": "Generate 3 images of a fox [hold]", "image_size": "2304:1728 (4:3)",
                             "sequential_image_generation_options": 3})
    thread = threading.Thread(target=run, args=(runtime, req))
    thread.start()
    try:  # the first image is shown while the provider still holds the others
        seen = None
        for _ in range(400):
            seen = jobs.get(req.request_id)
            if seen.partial_outputs:
                break
            threading.Event().wait(0.025)
        assert seen.status is Status.IN_PROGRESS and seen.partial_outputs == [f"outputs/{req.request_id}/1/0.jpg"]
    finally:
        fake.release.set()
        thread.join(30)
    done = jobs.get(req.request_id)
    assert done.status is Status.COMPLETED, done.error
    sent = fake.received[0]
    assert sent["authorization"] == f"Bearer {fake.api_key}"
    assert {k: sent["body"][k] for k in ("model", "prompt", "size", "seed", "watermark", "stream", "response_format",
                                         "sequential_image_generation_options")} == {
        "model": "seedream-4-0-250828", "prompt": "Generate 3 images of a fox [hold]", "size": "2304x1728",
        "seed": 1234, "watermark": False, "stream": True, "response_format": "b64_json",
        "sequential_image_generation_options": {"max_images": 3}}
    assert done.outputs == [f"outputs/{req.request_id}/1/{i}.jpg" for i in range(3)]
    for i, key in enumerate(done.outputs):
        data = storage.get(key)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        assert image.size == (2304, 1728)
        assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel((100, 100)), colour(i)))
        assert embedded_text(data)["backend"] == "modelark"
    meta = done.metadata
    assert meta["backend"] == "modelark" and meta["backends_tried"] == [{"backend": "modelark", "outcome": "ok"}]
    assert meta["upstream"] == {"model": "seedream-4-0-250828", "request_id": "0217000000000001"}
    row = ledger(jobs, req.request_id)
    assert (row["backend"], row["upstream_request_id"], row["upstream_units"], row["billed_units"]) == (
        "modelark", "0217000000000001", 3, 3)


def test_references_reach_modelark_as_data_uris_and_dreamina_lists_scale_unsupported(jobs, worker, fake, storage):
    runtime = worker()
    pngs = []
    for i in range(2):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (i * 100, 50, 50)).save(buf, format="PNG")
        storage.put(f"inputs/ref{i}.png", buf.getvalue(), "image/png")
        pngs.append(buf.getvalue())
    req = submit(jobs, DREAMINA, {"prompt": "the two of them on a boat", "image_urls": ["https://x/a.png"] * 2,
                                  "width×height": "1024x1024(1:1)", "scale": 0.7},
                 input_files=["inputs/ref0.png", "inputs/ref1.png"])
    done = run(runtime, req)
    assert done.status is Status.COMPLETED, done.error
    sent = fake.received[0]["body"]
    assert sent["image"] == ["data:image/png;base64," + base64.b64encode(p).decode() for p in pngs]
    assert sent["sequential_image_generation_options"] == {"max_images": 13} and sent["size"] == "1024x1024"
    assert done.metadata["unsupported"] == ["scale"] and len(done.outputs) == 13


def test_a_plain_answer_works_like_a_stream(jobs, worker, fake):
    done = run(worker(), submit(jobs, SEQ, {"text": "a fox [plain]", "sequential_image_generation_options": 2}))
    assert done.status is Status.COMPLETED and len(done.outputs) == 2 and done.metadata["backend"] == "modelark"


def test_one_refused_image_leaves_the_others_and_all_refused_fails_content_policy(jobs, worker, fake):
    runtime = worker()
    done = run(runtime, submit(jobs, SEQ, {"text": "foxes [refuse 1]", "sequential_image_generation_options": 3}))
    assert done.status is Status.COMPLETED
    assert done.outputs == [f"outputs/req_1/1/{i}.jpg" for i in (0, 2)]
    assert [r["index"] for r in done.metadata["refused"]] == [1]
    assert done.metadata["refused"][0]["code"] == "OutputImageSensitiveContentDetected"
    failed = run(runtime, submit(jobs, SEQ, {"text": "foxes [refuse all]", "sequential_image_generation_options": 2},
                                 request_id="req_2"))
    assert failed.status is Status.FAILED and failed.error["code"] == "content_policy"
    assert len(fake.received) == 2, "no fallback on content policy"


@pytest.mark.parametrize("marker,code,message", [
    ("[policy]", "content_policy", "ModelArk InputTextSensitiveContentDetected: The request failed because"),
    ("[invalid]", "upstream_rejected", "ModelArk InvalidParameter: the parameter `size`"),
])
def test_a_refusal_fails_the_request_with_the_provider_s_message_and_no_fallback(jobs, worker, fake, marker, code, message):
    done = run(worker(), submit(jobs, SEQ, {"text": f"a fox {marker}"}))
    assert done.status is Status.FAILED and done.error["code"] == code
    assert done.error["message"].startswith(message)
    assert len(fake.received) == 1


@pytest.mark.parametrize("marker,tries,outcome", [
    ("[429]", 3, "429 RateLimitExceeded.EndpointRPMExceeded"),
    ("[500]", 3, "500 InternalServiceError"),
    ("[cut]", 3, "stream ended before image_generation.completed"),
])
def test_an_unavailable_upstream_is_retried_then_falls_back_to_local(jobs, worker, fake, marker, tries, outcome):
    done = run(worker(), submit(jobs, SEQ, {"text": f"a fox {marker}", "sequential_image_generation_options": 2}))
    assert done.status is Status.COMPLETED, done.error
    assert len(fake.received) == tries
    assert done.metadata["backend"] == "local" and done.metadata["engine"] == "drawing (test)"
    assert done.metadata["backends_tried"] == [{"backend": "modelark", "outcome": outcome}, {"backend": "local", "outcome": "ok"}]


def test_a_dead_a_slow_and_a_misconfigured_upstream_fall_back(jobs, worker, fake):
    dead = run(worker(base_url=f"http://127.0.0.1:{free_port()}/api/v3"), submit(jobs, SEQ, {"text": "a fox"}))
    assert dead.metadata["backend"] == "local"
    assert dead.metadata["backends_tried"][0]["outcome"] == "connection error: ConnectError"
    fake.slow_s = 3.0
    slow = run(worker(MODELAPI_MODELARK_TIMEOUT_S="0.5"), submit(jobs, SEQ, {"text": "a fox [slow]"}, request_id="req_2"))
    assert slow.metadata["backend"] == "local" and slow.metadata["backends_tried"][0]["outcome"] == "timeout"
    stale = worker()  # its key is the fake's old one
    fake.api_key = "rotated"
    before = len(fake.received)
    unauthorised = run(stale, submit(jobs, SEQ, {"text": "a fox"}, request_id="req_3"))
    assert unauthorised.metadata["backends_tried"][0]["outcome"] == "401 AuthenticationError"
    assert len(fake.received) == before + 1, "401 is not retried"


def test_a_passing_failure_is_retried_on_the_same_backend(jobs, worker, fake):
    fake.fail_next = [429, 503]
    done = run(worker(), submit(jobs, SEQ, {"text": "a fox"}))
    assert done.metadata["backend"] == "modelark" and len(fake.received) == 3


def test_without_fallback_an_unavailable_upstream_fails_naming_each_outcome(jobs, worker, fake):
    done = run(worker(route=("modelark",)), submit(jobs, SEQ, {"text": "a fox [429]"}))
    assert done.status is Status.FAILED and done.error["code"] == "upstream_unavailable"
    assert "modelark: 429 RateLimitExceeded.EndpointRPMExceeded" in done.error["message"]


def test_a_backend_failing_repeatedly_is_skipped_for_a_while(jobs, worker, fake):
    runtime = worker()
    runtime.router.breakers["modelark"].threshold = 3
    first = run(runtime, submit(jobs, SEQ, {"text": "a fox [500]"}))
    assert first.metadata["backend"] == "local" and len(fake.received) == 3
    second = run(runtime, submit(jobs, SEQ, {"text": "a fox"}, request_id="req_2"))
    assert second.metadata["backends_tried"][0] == {"backend": "modelark", "outcome": "skipped: circuit open"}
    assert len(fake.received) == 3, "an open circuit sends nothing"
    assert runtime.router.health()["modelark"]["circuit"] == "open"
    runtime.router.breakers["modelark"].cooldown_s = 0.0  # cooled down: one try closes it again
    third = run(runtime, submit(jobs, SEQ, {"text": "a fox"}, request_id="req_3"))
    assert third.metadata["backend"] == "modelark" and runtime.router.health()["modelark"]["circuit"] == "closed"


def test_an_answer_above_the_size_bound_is_refused_not_read(jobs, worker, fake, monkeypatch):
    monkeypatch.setattr(modelark, "MAX_EVENT_BYTES", 4096)
    done = run(worker(), submit(jobs, SEQ, {"text": "a fox", "image_size": "2048:2048 (1:1)"}))
    assert done.metadata["backend"] == "local"
    assert done.metadata["backends_tried"][0]["outcome"] == "event larger than 4096 bytes"


# -- queues: a GPU worker, an upstream worker, and the move between them ----------------------------
def test_the_route_decides_the_queue_at_submit_and_each_role_runs_only_its_backends(jobs, worker, fake, tmp_path, storage):
    from modelapi.backends import entry_kind

    routes = {SEQ: ["modelark", "local"]}
    assert (entry_kind(routes, SEQ), entry_kind(routes, DREAMINA)) == ("upstream", "run")
    upstream = worker()
    gpu = WorkerRuntime(upstream.settings, jobs, storage, DrawingEngine(step_s=0.0, steps=2), role="gpu")
    only_up = WorkerRuntime(upstream.settings, jobs, storage, None, role="upstream", backends=["modelark"])
    assert set(gpu.router.backends) == {"local"} and set(only_up.router.backends) == {"modelark"}
    assert only_up.info == {"engine": "upstream", "device": "none", "backends": ["modelark"]}
    req = submit(jobs, SEQ, {"text": "a fox [429]"})
    assert req.workflow_id == "req_1.upstream.0"
    moved = run(only_up, req)  # modelark unavailable; local is not this process's: the request moves
    assert moved.status is Status.IN_QUEUE and moved.workflow_id == "req_1.1" and moved.attempts == 0
    assert moved.metadata == {"backends_tried": [{"backend": "modelark", "outcome": "429 RateLimitExceeded.EndpointRPMExceeded"}]}
    assert jobs.queue.live([moved.workflow_id]) == {moved.workflow_id}
    done = run(gpu, moved)
    assert done.status is Status.COMPLETED and done.metadata["backend"] == "local"
    assert done.metadata["backends_tried"] == [{"backend": "modelark", "outcome": "429 RateLimitExceeded.EndpointRPMExceeded"},
                                               {"backend": "local", "outcome": "ok"}]
    assert len(fake.received) == 3, "the GPU worker did not try modelark again"


def test_overflow_sends_a_local_first_request_upstream_when_the_estimated_wait_is_long(jobs, worker, fake):
    from modelapi.backends.placement import Placement

    runtime = worker(route=("local", "modelark"))
    routes = {SEQ: ["local", "modelark"]}
    assert Placement(jobs, routes, None).place(SEQ) == (False, [])
    assert Placement(jobs, {SEQ: ["local"]}, 0.0).place(SEQ) == (False, []), "nowhere to overflow to"
    no_gpu = Placement(jobs, routes, 60.0).place(SEQ)
    assert no_gpu == (True, [{"backend": "local", "outcome": "overflow: estimated wait no GPU worker > 60 s"}])
    jobs.workers.register("gpu-1", "i1", {"engine": "drawing (test)", "device": "cpu"})
    assert Placement(jobs, routes, 60.0).place(SEQ) == (False, []), "an empty local queue: no wait"
    for i in range(3):  # three local requests ahead, 30 s each (no history yet), one GPU worker: 90 s
        jobs.create(request_id=f"req_q{i}", owner_key_id="key_a", model_id=SEQ, inputs={"text": "x"}, input_files=[],
                    seed=1, idempotency_key=None, body_hash=None)
    assert Placement(jobs, routes, 120.0).place(SEQ) == (False, [])
    upstream, tried = Placement(jobs, routes, 60.0).place(SEQ)
    assert upstream and tried == [{"backend": "local", "outcome": "overflow: estimated wait 90 s > 60 s"}]
    inputs = check_input(catalog.get(SEQ).input_schema, {"text": "a fox"})[0]
    req = jobs.create(request_id="req_o", owner_key_id="key_a", model_id=SEQ, inputs=inputs, input_files=[], seed=5,
                      idempotency_key=None, body_hash=None, upstream=upstream, tried=tried)
    done = run(runtime, req)
    assert done.status is Status.COMPLETED and done.metadata["backend"] == "modelark"
    assert done.metadata["backends_tried"] == [*tried, {"backend": "modelark", "outcome": "ok"}]
    failed_over = run(runtime, jobs.create(request_id="req_p", owner_key_id="key_a", model_id=SEQ,
                                           inputs={**inputs, "text": "a fox [500]"}, input_files=[], seed=5,
                                           idempotency_key=None, body_hash=None, upstream=True, tried=tried))
    assert failed_over.metadata["backend"] == "local", "an overflowed request whose upstream fails comes back to local"


def test_an_upstream_worker_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; import modelapi.worker.main, modelapi.cli, modelapi.api.run; "
            "from modelapi.backends import modelark, jimeng, runcomfy, placement; "
            "assert not {'torch', 'diffusers', 'transformers'} & set(sys.modules), sorted(sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
