"""Every documented output size comes out exactly (11 dreamina sizes, 8 seedream sizes), through
prepare() and the FLUX.2 engine on the tiny random-weight pipeline (its images are noise).

6198x2656, 5404x3040 and 4694x3520 are not multiples of 16: they are generated at the nearest
size the pipeline accepts at or above (6208x2656, 5408x3040, 4704x3520) and cropped centrally.
One denoising step per image: the size does not depend on the step count. Sizes over 2048x2048
(the five ~16 MP dreamina sizes, ~20 s each on 2 CPU cores) are marked slow; they are above the
engine's default ``vae_tiling_pixels`` and decode tile by tile, the others in one piece."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from modelapi.catalog import models
from modelapi.engine.flux2 import DEFAULT_VAE_TILING_PIXELS, Flux2Engine
from modelapi.series.params import SIZE_MULTIPLE, parse_size, prepare

DREAMINA = "bytedance/dreamina-4-0/edit"
SEQ = "bytedance/seedream-4-0/sequential"
LARGE_PX = 2048 * 2048


@pytest.fixture(scope="module")
def engine(tiny_path: Path) -> Flux2Engine:
    return Flux2Engine.from_pretrained(str(tiny_path), device="cpu")


def _sizes(model_id: str) -> list[str]:
    model = models()[model_id]
    return model.input_schema["properties"][model.task.size_field]["enum"]


def _cases() -> list:
    cases = []
    for model_id in (DREAMINA, SEQ):
        for value in _sizes(model_id):
            w, h = parse_size(value)
            marks = [pytest.mark.slow] if w * h > LARGE_PX else []
            cases.append(pytest.param(model_id, value, marks=marks, id=f"{model_id.split('/')[1]}-{w}x{h}"))
    return cases


def test_the_documented_sizes_are_19() -> None:
    assert (len(_sizes(DREAMINA)), len(_sizes(SEQ))) == (11, 8)
    odd = sorted(parse_size(v) for v in _sizes(DREAMINA) if any(s % SIZE_MULTIPLE for s in parse_size(v)))
    assert odd == [(4694, 3520), (5404, 3040), (6198, 2656)]


@pytest.mark.parametrize(("model_id", "value"), _cases())
def test_each_documented_size_is_produced_exactly(
    engine: Flux2Engine, model_id: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiled: list[tuple[int, ...]] = []
    tiled_decode = engine.pipe.vae.tiled_decode
    monkeypatch.setattr(engine.pipe.vae, "tiled_decode", lambda z, **kw: tiled.append(tuple(z.shape)) or tiled_decode(z, **kw))
    model = models()[model_id]
    inputs = {
        k: p["default"] for k, p in model.input_schema["properties"].items()
        if "default" in p and p.get("format") != "image_uri"
    }
    inputs[model.task.prompt_field] = "a lighthouse at dusk"
    inputs[model.task.size_field] = value
    references = [Image.new("RGB", (64, 64), (200, 120, 40))] if model_id == DREAMINA else []
    spec = dataclasses.replace(prepare(model, inputs, references, seed=7), num_inference_steps=1)
    (image,) = engine.generate(spec, lambda fraction: None, lambda: False)
    assert image.size == parse_size(value) == spec.requested_size
    assert image.mode == "RGB"
    assert spec.plan["output_size"] == list(image.size)
    assert bool(tiled) == (spec.width * spec.height > DEFAULT_VAE_TILING_PIXELS)
