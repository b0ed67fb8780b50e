"""Request -> GenerationSpec (modelapi.series.params), against the real catalogue specs."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from modelapi.catalog import Model, models
from modelapi.engine.flux2 import text_weight
from modelapi.series.params import (
    SIZE_MULTIPLE,
    crop_box,
    crop_center,
    generation_size,
    parse_size,
    prepare,
)

SEQ = "bytedance/seedream-4-0/sequential"
EDIT_SEQ = "bytedance/seedream-4-0/edit-sequential"
DREAMINA = "bytedance/dreamina-4-0/edit"


def _inputs(model: Model, **overrides: Any) -> dict[str, Any]:
    """The model's schema defaults (what validation applies), then ``overrides``."""
    props = model.input_schema["properties"]
    out = {
        k: p["default"]
        for k, p in props.items()
        if "default" in p and p.get("format") != "image_uri"
    }
    out.update(overrides)
    return out


def _refs(n: int) -> list[Image.Image]:
    return [Image.new("RGBA" if i % 2 else "RGB", (64, 48), (i, 0, 0)) for i in range(n)]


def _size_values() -> list[tuple[str, str]]:
    return [
        (m.model_id, value)
        for m in models().values()
        for value in m.input_schema["properties"][m.task.size_field]["enum"]
    ]


@pytest.mark.parametrize(("model_id", "value"), _size_values())
def test_every_size_enum_value_parses_and_is_generated_at_or_above(model_id: str, value: str) -> None:
    w, h = parse_size(value)
    assert value.replace(" ", "").startswith((f"{w}:{h}(", f"{w}x{h}("))
    gw, gh = generation_size(w, h)
    assert gw % SIZE_MULTIPLE == 0 and gh % SIZE_MULTIPLE == 0
    assert 0 <= gw - w < SIZE_MULTIPLE and 0 <= gh - h < SIZE_MULTIPLE
    model = models()[model_id]
    spec = prepare(model, _inputs(model, **{model.task.size_field: value}), _refs(1), seed=1)
    assert spec.requested_size == (w, h) and (spec.width, spec.height) == (gw, gh)
    assert spec.plan["output_size"] == [w, h] and spec.plan["generated_size"] == [gw, gh]


def test_all_three_specs_have_size_enums() -> None:
    assert {m for m, _ in _size_values()} == {SEQ, EDIT_SEQ, DREAMINA}


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("2560:1440 (16:9)", (2560, 1440)),
        ("2048x2048(1:1)", (2048, 2048)),
        ("1440:2560 (9:16)", (1440, 2560)),
    ],
)
def test_parse_size(value: str, size: tuple[int, int]) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["", "16:9:4", "big", "0x512(1:1)", "2048x(1:1)", None, 2048])
def test_parse_size_rejects_naming_the_value(value: Any) -> None:
    with pytest.raises(ValueError, match="cannot parse image size") as info:
        parse_size(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("size", "generated"),
    [
        ((5404, 3040), (5408, 3040)),
        ((6198, 2656), (6208, 2656)),
        ((4694, 3520), (4704, 3520)),
        ((8, 8), (16, 16)),
        ((1, 24), (16, 32)),
        ((2048, 2048), (2048, 2048)),
        ((2049, 17), (2064, 32)),
    ],
)
def test_generation_size_is_the_nearest_multiple_at_or_above(size: tuple[int, int], generated: tuple[int, int]) -> None:
    assert generation_size(*size) == generated


@pytest.mark.parametrize("size", [(0, 16), (16, -1)])
def test_generation_size_rejects_empty_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        generation_size(*size)


@pytest.mark.parametrize(
    ("generated", "output", "box"),
    [
        ((6208, 2656), (6198, 2656), (5, 0, 6203, 2656)),
        ((5408, 3040), (5404, 3040), (2, 0, 5406, 3040)),
        ((4704, 3520), (4694, 3520), (5, 0, 4699, 3520)),
        ((32, 32), (17, 31), (7, 0, 24, 31)),  # odd margins: the extra pixel on the right/bottom
        ((64, 64), (64, 64), (0, 0, 64, 64)),
    ],
)
def test_crop_box_is_central(generated, output, box) -> None:
    assert crop_box(generated, output) == box


def test_crop_center_cuts_the_middle_without_resampling() -> None:
    image = Image.new("RGB", (32, 16))
    image.putpixel((5, 0), (255, 0, 0))  # first column kept for a 22-px-wide crop: left = 5
    image.putpixel((26, 15), (0, 255, 0))  # last column kept
    cropped = crop_center(image, (22, 16))
    assert cropped.size == (22, 16)
    assert cropped.getpixel((0, 0)) == (255, 0, 0) and cropped.getpixel((21, 15)) == (0, 255, 0)
    assert crop_center(image, (32, 16)) is image
    with pytest.raises(ValueError, match="cannot crop 33x16 out of 32x16"):
        crop_center(image, (33, 16))


def test_seedream_defaults() -> None:
    model = models()[SEQ]
    spec = prepare(model, _inputs(model), [], seed=7)
    assert spec.model_id == SEQ
    assert spec.count == 3 and spec.prompts == ["a beautiful sunset over a calm ocean"] * 3
    assert model.example_request["text"] == "Generate 3 images of a beautiful sunset over a calm ocean."
    assert (spec.width, spec.height, spec.requested_size) == (2560, 1440, (2560, 1440))
    assert spec.seed == 7
    assert spec.scale is None and spec.guidance_scale is None and spec.num_inference_steps is None
    assert spec.plan["optimize_prompt"] == "fast" and spec.plan["rewritten"] is False
    assert spec.plan["requested_size"] == [2560, 1440] and spec.plan["output_size"] == [2560, 1440]
    assert spec.plan["generated_size"] == [2560, 1440] and spec.plan["language"] == "en"
    assert (spec.plan["count"], spec.plan["cap"], spec.plan["source"]) == (3, 3, "prompt_count")


def test_seed_from_inputs_beats_argument() -> None:
    model = models()[SEQ]
    assert prepare(model, _inputs(model, seed=42), [], seed=7).seed == 42
    assert prepare(model, _inputs(model, seed=0), [], seed=7).seed == 0


def test_seed_random_when_absent() -> None:
    model = models()[SEQ]
    seeds = {prepare(model, _inputs(model), []).seed for _ in range(5)}
    assert all(0 <= s < 2**31 for s in seeds) and len(seeds) > 1


def test_edit_sequential_caps_by_references_and_converts_to_rgb() -> None:
    model = models()[EDIT_SEQ]
    inputs = _inputs(
        model, text="Generate 8 images of a cat", sequential_image_generation_options=15
    )
    spec = prepare(model, inputs, _refs(10), seed=1)
    assert spec.count == 5 and spec.plan["cap"] == 5 and spec.plan["stated_count"] == 8
    assert len(spec.references) == 10 and all(im.mode == "RGB" for im in spec.references)


def test_sequential_disabled() -> None:
    model = models()[EDIT_SEQ]
    spec = prepare(model, _inputs(model, sequential_image_generation="disabled"), _refs(1), seed=1)
    assert spec.count == 1 and spec.plan["source"] == "disabled"


def test_unknown_sequential_mode_raises() -> None:
    model = models()[SEQ]
    with pytest.raises(ValueError, match="sequential_image_generation"):
        prepare(model, _inputs(model, sequential_image_generation="sometimes"), [], seed=1)


def test_dreamina_scale_mapping_and_exact_size() -> None:
    model = models()[DREAMINA]
    inputs = _inputs(model, **{"width×height": "5404x3040(16:9)", "scale": 0.25})
    spec = prepare(model, inputs, _refs(2), seed=3)
    assert spec.scale == 0.25 and spec.guidance_scale is None  # the engine maps scale
    assert (spec.width, spec.height, spec.requested_size) == (5408, 3040, (5404, 3040))
    assert spec.plan["output_size"] == [5404, 3040] and spec.plan["requested_size"] == [5404, 3040]
    assert spec.plan["generated_size"] == [5408, 3040]
    assert spec.count == 1 and spec.plan["source"] == "none" and spec.plan["cap"] == 13


@pytest.mark.parametrize(("scale", "weight"), [(None, 1.0), (0.0, 0.5), (0.25, 2**-0.5), (0.5, 1.0), (0.75, 2**0.5), (1.0, 2.0)])
def test_scale_has_one_mapping_text_weight(scale: float | None, weight: float) -> None:
    # 2 ** (2 * scale - 1): dreamina's default 0.5 keeps the engine's defaults.
    assert text_weight(scale) == pytest.approx(weight)


@pytest.mark.parametrize("scale", [-0.1, 1.01])
def test_text_weight_refuses_a_scale_outside_0_1(scale: float) -> None:
    with pytest.raises(ValueError, match="within 0..1"):
        text_weight(scale)


def test_dreamina_default_scale_and_counts() -> None:
    model = models()[DREAMINA]
    inputs = _inputs(model, prompt="4 photos of the girl on the boat")
    spec = prepare(model, inputs, _refs(2), seed=1)
    assert spec.scale == 0.5 and spec.guidance_scale is None and spec.count == 4
    single = prepare(
        model, _inputs(model, prompt="4 photos of the girl", force_single=True), _refs(2), seed=1
    )
    assert single.count == 1 and single.plan["source"] == "force_single"


def test_standard_rewrite_applied() -> None:
    model = models()[SEQ]
    calls: list[tuple[list[str], str]] = []

    def rewrite(prompts: list[str], instruction: str) -> list[str]:
        calls.append((prompts, instruction))
        return [f"detailed {i}: {p}" for i, p in enumerate(prompts)]

    inputs = _inputs(model, optimize_prompt_options="standard")
    spec = prepare(model, inputs, [], rewrite=rewrite, seed=1)
    assert len(calls) == 1 and "exactly 3 prompts" in calls[0][1] and "Write in English" in calls[0][1]
    assert calls[0][0] == ["a beautiful sunset over a calm ocean"] * 3  # the rules' prompts
    assert spec.prompts[0] == "detailed 0: a beautiful sunset over a calm ocean" and spec.count == 3
    assert spec.plan["rewritten"] is True and spec.plan["optimize_prompt"] == "standard"
    assert spec.plan["prompts"] == spec.prompts


def test_standard_rewrite_wrong_count_falls_back() -> None:
    model = models()[SEQ]
    inputs = _inputs(model, optimize_prompt_options="standard")
    spec = prepare(model, inputs, [], rewrite=lambda prompts, _: prompts[:1], seed=1)
    assert spec.prompts == ["a beautiful sunset over a calm ocean"] * 3
    assert spec.plan["rewritten"] is False and spec.plan["optimize_prompt"] == "standard"


def test_fast_never_calls_rewrite() -> None:
    model = models()[SEQ]

    def rewrite(prompts: list[str], instruction: str) -> list[str]:
        raise AssertionError("rewrite called in fast mode")

    inputs = _inputs(model, optimize_prompt_options="fast")
    spec = prepare(model, inputs, [], rewrite=rewrite, seed=1)
    assert spec.plan["optimize_prompt"] == "fast" and spec.plan["rewritten"] is False


def test_standard_without_rewriter_uses_rules() -> None:
    model = models()[SEQ]
    spec = prepare(model, _inputs(model, optimize_prompt_options="standard"), [], seed=1)
    assert spec.plan["rewritten"] is False and spec.count == 3


def test_standard_rewrite_is_asked_in_the_prompts_language() -> None:
    model = models()[SEQ]
    seen: list[str] = []

    def rewrite(prompts: list[str], instruction: str) -> list[str]:
        seen.append(instruction)
        return [f"{p}, luce dorata, grandangolo" for p in prompts]

    inputs = _inputs(model, text="Genera 2 immagini di un faro", optimize_prompt_options="standard")
    spec = prepare(model, inputs, [], rewrite=rewrite, seed=1)
    assert "Write in Italian" in seen[0] and "do not translate" in seen[0]
    assert spec.prompts == ["un faro, luce dorata, grandangolo"] * 2 and spec.plan["language"] == "it"


def test_a_count_written_back_by_the_rewriter_is_removed() -> None:
    model = models()[SEQ]
    inputs = _inputs(model, optimize_prompt_options="standard")
    spec = prepare(model, inputs, [], rewrite=lambda ps, _: [f"Generate 3 images of {p}, golden hour" for p in ps], seed=1)
    assert spec.prompts == ["a beautiful sunset over a calm ocean, golden hour"] * 3
