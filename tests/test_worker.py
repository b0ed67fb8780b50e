"""The worker's run of a request, in this process on a temporary SQLite database with the real
queue tables: output formats with their metadata, and post-processing off the critical path
(the next job's inference starts before the last job's outputs are stored)."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, PngImagePlugin

from drawing_engine import DrawingEngine
from modelapi import catalog
from modelapi.core.config import Settings
from modelapi.core.storage import FileStorage
from modelapi.series.params import prepare
from modelapi.types import Status
from modelapi.validation import check_input
from modelapi.worker.generate import FORMATS, Outputs, embedded_text, encode
from modelapi.worker.runtime import WorkerRuntime

SEQ = "bytedance/seedream-4-0/sequential"
TEXT = {"prompt": "a lighthouse at dusk, 灯塔", "seed": "7", "model_id": SEQ, "random_weights": "true"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_output_format_decodes_at_its_size_with_the_metadata_inside(fmt):
    image = Image.effect_mandelbrot((96, 64), (-2, -1, 1, 1), 50).convert("RGB")
    data = encode(image, fmt, TEXT)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    assert decoded.size == (96, 64) and decoded.convert("RGB").load() is not None
    assert embedded_text(data) == TEXT
    if fmt == "png":
        assert isinstance(decoded, PngImagePlugin.PngImageFile) and decoded.text["prompt"] == TEXT["prompt"]
    with pytest.raises(ValueError, match="unknown output format"):
        encode(image, "gif", TEXT)


def test_images_stored_so_far_are_published_in_index_order_all_but_the_last(jobs, tmp_path):
    inputs = check_input(catalog.get(SEQ).input_schema, {"text": "Generate 3 images of a fox", "sequential_image_generation_options": 3})[0]
    req = jobs.create(request_id="req_series", owner_key_id="key_a", model_id=SEQ, inputs=inputs, input_files=[],
                      seed=1, idempotency_key=None, body_hash=None)
    spec = prepare(catalog.get(SEQ), inputs, [], seed=1)
    assert spec.count == 3
    published: list[list[str]] = []
    storage = FileStorage(tmp_path / "files", b"k" * 32)
    with ThreadPoolExecutor(1) as pool:  # one thread: images are stored in the order they are added
        outputs = Outputs(pool, storage, req, 1, spec, "png", True, published.append)
        for index in (2, 0, 1):
            outputs.add(index, Image.new("RGB", (8, 8)))
        keys = outputs.wait()
    assert keys == [f"outputs/req_series/1/{i}.png" for i in range(3)]
    assert published == [[keys[2]], [keys[0], keys[2]]], "the last is published by completing the request"


class GatedStorage(FileStorage):
    """File storage whose writes of one request wait until ``release`` is set."""

    def __init__(self, *args, gated: str, release: threading.Event) -> None:  # noqa: ANN002
        super().__init__(*args)
        self.gated, self.release, self.stored = gated, release, []

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        if f"/{self.gated}/" in key:
            assert self.release.wait(10), "the gated request's outputs were never released"
        super().put(key, data, content_type)
        self.stored.append(key)


class SignallingEngine(DrawingEngine):
    """Sets ``started[prompt]`` when inference of a request with that prompt begins."""

    def __init__(self) -> None:
        super().__init__(step_s=0.0, steps=2)
        self.started: dict[str, threading.Event] = {"first": threading.Event(), "second": threading.Event()}

    def generate(self, spec, progress, should_stop, on_image=None):  # noqa: ANN001, ANN201
        self.started[spec.prompts[0]].set()
        return super().generate(spec, progress, should_stop, on_image)


def test_the_next_job_s_inference_starts_before_the_last_job_s_outputs_are_stored(jobs, tmp_path):
    reqs = [jobs.create(request_id=f"req_{name}", owner_key_id="key_a", model_id=SEQ,
                        inputs=check_input(catalog.get(SEQ).input_schema, {"text": name, "image_size": "1024:1024 (1:1)"})[0],
                        input_files=[], seed=1, idempotency_key=None, body_hash=None) for name in ("first", "second")]
    engine = SignallingEngine()
    storage = GatedStorage(tmp_path / "files", b"k" * 32, gated="req_first", release=engine.started["second"])
    runtime = WorkerRuntime(Settings(data_dir=tmp_path, worker_concurrency=1), jobs, storage, engine)
    threads = [threading.Thread(target=runtime.execute, args=(r.request_id, r.workflow_id)) for r in reqs]
    threads[0].start()
    assert engine.started["first"].wait(30)
    threads[1].start()  # the queue gives a worker one job more than it infers at once
    for t in threads:
        t.join(60)
    # The first job's outputs can only be stored once the second job's inference has begun: had
    # the worker waited for them before starting the second, the gate would never open and the
    # first job would fail with a storage error.
    done = [jobs.get(r.request_id) for r in reqs]
    assert [r.status for r in done] == [Status.COMPLETED, Status.COMPLETED], [r.error for r in done]
    # (which job's outputs land first after the gate opens is a race: the second's may)
    assert sorted(k for k in storage.stored if k.startswith("outputs/req_first/")) == sorted(done[0].outputs)
    assert all(k.endswith(".jpg") for r in done for k in r.outputs)
    timings = done[0].metadata["timings"]
    assert timings["postprocess_s"] > 0 and timings["total_s"] >= timings["inference_s"]
