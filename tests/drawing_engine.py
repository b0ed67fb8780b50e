"""A test engine that draws deterministic images (no diffusion), for server tests.

Used as ``--engine drawing_engine:make`` with ``tests/`` on PYTHONPATH. It runs
``MODELAPI_TEST_STEPS`` steps of ``MODELAPI_TEST_STEP_S`` seconds each, reporting progress and
honouring stop requests like the real engine. Never part of the package.
"""

from __future__ import annotations

import hashlib
import os
import time

from PIL import Image, ImageDraw

from modelapi.engine.base import EngineInfo
from modelapi.engine.errors import GenerationStopped
from modelapi.series.params import crop_center


class DrawingEngine:
    def __init__(self, step_s: float, steps: int) -> None:
        self.step_s, self.steps = step_s, steps
        self.info = EngineInfo(engine="drawing (test)", weights="none", random_weights=False, device="cpu")

    def generate(self, spec, progress, should_stop, on_image=None):  # noqa: ANN001, ANN201
        """Image ``i`` of the series is drawn (and handed to ``on_image``) once its share of the
        steps is done, as a series made by reference chaining is."""
        if any("[out of memory]" in prompt for prompt in spec.prompts):  # what a GPU does when it runs out
            raise MemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        images = []

        def draw_until(n: int) -> None:
            while len(images) < n:
                images.append(self._draw(spec, len(images)))
                if on_image is not None:
                    on_image(len(images) - 1, images[-1])

        for step in range(self.steps):
            if should_stop():
                raise GenerationStopped("stop requested")
            time.sleep(self.step_s)
            progress((step + 1) / self.steps)
            draw_until((step + 1) * spec.count // self.steps)
        draw_until(spec.count)  # with no steps at all
        return images

    @staticmethod
    def _draw(spec, i):  # noqa: ANN001, ANN205
        # Draw at a small size then scale: the tests check sizes and counts, not art.
        digest = hashlib.sha256(f"{spec.prompts[i]}|{spec.seed + i}".encode()).digest()
        small = Image.new("RGB", (32, 32), tuple(digest[:3]))
        ImageDraw.Draw(small).rectangle((4, 4, 27, 27), outline=tuple(digest[3:6]))
        return crop_center(small.resize((spec.width, spec.height), Image.NEAREST), spec.requested_size)

    def rewrite_prompts(self, prompts, instruction):  # noqa: ANN001, ANN201
        return prompts


def make(settings) -> DrawingEngine:  # noqa: ANN001
    return DrawingEngine(float(os.environ.get("MODELAPI_TEST_STEP_S", "0.01")), int(os.environ.get("MODELAPI_TEST_STEPS", "4")))
