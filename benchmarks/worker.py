"""Worker benchmark: what the worker adds around inference — figures, not a test.

An engine that "infers" by sleeping ``--inference-s`` per image (as a GPU would keep the
process idle) and returns noisy 2560x1440 images (the worst case for encoders) runs queued
jobs through the real :class:`~modelapi.worker.runtime.WorkerRuntime` on a temporary SQLite
database and folder, in this process, as the queue would hand them over (one job ahead).

It prints, per ``--output-format``:
- the critical path per image: time the inference thread spends handing an image over
  (``on_image``), target <= 50 ms (5% of a GPU's ~1 s per 2K image);
- the tail after a job's inference until its last output is stored (``postprocess_s``), which
  the next job's inference overlaps;
- the idle gap between two queued jobs: end of one job's inference to the start of the next's,
  target <= 20 ms plus the queue's polling interval (the queue's own wait is not part of this
  in-process run).

Usage::

    python benchmarks/worker.py                 # jpeg and png, 6 jobs of 4 images each
    python benchmarks/worker.py --formats jpeg --jobs 4 --images 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from drawing_engine import DrawingEngine  # noqa: E402
from modelapi import catalog  # noqa: E402
from modelapi.core.config import Settings  # noqa: E402
from modelapi.core.context import open_core  # noqa: E402
from modelapi.validation import check_input  # noqa: E402
from modelapi.worker.runtime import WorkerRuntime  # noqa: E402

SEQ = "bytedance/seedream-4-0/sequential"


class SleepingEngine(DrawingEngine):
    """Inference = sleeping; records when each job's inference starts and ends and how long
    each hand-over took."""

    def __init__(self, inference_s: float) -> None:
        super().__init__(step_s=0.0, steps=1)
        self.inference_s = inference_s
        self.spans: list[tuple[float, float]] = []
        self.handovers: list[float] = []
        noise = np.random.default_rng(0).integers(0, 256, (1440, 2560, 3), dtype=np.uint8)
        self.image = Image.fromarray(noise)

    def generate(self, spec, progress, should_stop, on_image=None):  # noqa: ANN001, ANN201
        start = time.perf_counter()
        images = []
        for i in range(spec.count):
            time.sleep(self.inference_s)
            images.append(self.image)
            if on_image is not None:
                t0 = time.perf_counter()
                on_image(i, self.image)
                self.handovers.append(time.perf_counter() - t0)
        self.spans.append((start, time.perf_counter()))
        return images


def run(fmt: str, jobs_n: int, images: int, inference_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="modelapi-worker-bench-"))
    settings = Settings(data_dir=tmp, worker_concurrency=1, output_format=fmt)
    core = open_core(settings, create_initial_key=False)
    jobs = core.jobs
    inputs = check_input(catalog.models()[SEQ].input_schema, {
        "text": f"Generate {images} images of a lighthouse", "sequential_image_generation_options": images,
        "image_size": "2560:1440 (16:9)"})[0]
    reqs = [jobs.create(request_id=f"req_{i}", owner_key_id="key_a", model_id=SEQ, inputs=inputs, input_files=[], seed=i,
                        idempotency_key=None, body_hash=None) for i in range(jobs_n)]
    sleeper = SleepingEngine(inference_s)
    runtime = WorkerRuntime(settings, jobs, core.storage, sleeper)
    # As the queue hands them over: one job ahead of the one inferring.
    threads = []
    for req in reqs:
        while len([t for t in threads if t.is_alive()]) >= 2:
            time.sleep(0.001)
        t = threading.Thread(target=runtime.execute, args=(req.request_id, req.workflow_id))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    done = [jobs.get(r.request_id) for r in reqs]
    assert all(r.status.value == "completed" for r in done), [r.error for r in done]
    spans = sorted(sleeper.spans)
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    runtime._post.shutdown()
    core.close()
    return {"handover_ms": statistics.median(sleeper.handovers) * 1000, "handover_max_ms": max(sleeper.handovers) * 1000,
            "tail_ms": statistics.median(r.metadata["timings"]["postprocess_s"] for r in done) * 1000,
            "gap_ms": statistics.median(gaps) * 1000, "gap_max_ms": max(gaps) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", default="jpeg,png")
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--inference-s", type=float, default=1.0, help="seconds of 'inference' per image")
    args = parser.parse_args()
    print(f"{args.jobs} jobs x {args.images} images of 2560x1440 (noise), {args.inference_s} s inference per image\n")
    print("| format | hand-over per image, median / max (target <= 50 ms) | tail after inference (overlapped) | idle gap between jobs, median / max (target <= 20 ms) |")
    print("|---|---|---|---|")
    for fmt in args.formats.split(","):
        r = run(fmt, args.jobs, args.images, args.inference_s)
        print(f"| {fmt} | {r['handover_ms']:.2f} / {r['handover_max_ms']:.2f} ms {'PASS' if r['handover_max_ms'] <= 50 else 'FAIL'} "
              f"| {r['tail_ms']:.0f} ms | {r['gap_ms']:.1f} / {r['gap_max_ms']:.1f} ms {'PASS' if r['gap_max_ms'] <= 20 else 'FAIL'} |",
              flush=True)


if __name__ == "__main__":
    main()
