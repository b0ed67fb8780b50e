"""Request -> GenerationSpec (modelapi.engine.params), against the real catalogue specs."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from modelapi.catalog import Model, models
from modelapi.engine.params import (
    SIZE_MULTIPLE,
    guidance_from_scale,
    parse_size,
    prepare,
    round_size,
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
def test_every_size_enum_value_parses_and_rounds(model_id: str, value: str) -> None:
    w, h = parse_size(value)
    assert value.replace(" ", "").startswith((f"{w}:{h}(", f"{w}x{h}("))
    rw, rh = round_size(w, h)
    assert rw % SIZE_MULTIPLE == 0 and rh % SIZE_MULTIPLE == 0
    assert abs(rw - w) <= 8 and abs(rh - h) <= 8


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
    ("size", "rounded"),
    [
        ((5404, 3040), (5408, 3040)),
        ((6198, 2656), (6192, 2656)),
        ((4694, 3520), (4688, 3520)),
        ((8, 8), (16, 16)),
        ((1, 24), (16, 32)),
        ((2048, 2048), (2048, 2048)),
    ],
)
def test_round_size(size: tuple[int, int], rounded: tuple[int, int]) -> None:
    assert round_size(*size) == rounded


def test_seedream_defaults() -> None:
    model = models()[SEQ]
    spec = prepare(model, _inputs(model), [], seed=7)
    assert spec.model_id == SEQ
    assert spec.count == 3 and spec.prompts == [model.example_request["text"]] * 3
    assert (spec.width, spec.height, spec.requested_size) == (2560, 1440, (2560, 1440))
    assert spec.seed == 7
    assert spec.scale is None and spec.guidance_scale is None and spec.num_inference_steps is None
    assert spec.plan["optimize_prompt"] == "fast" and spec.plan["rewritten"] is False
    assert spec.plan["requested_size"] == [2560, 1440] and spec.plan["output_size"] == [2560, 1440]
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


def test_dreamina_scale_mapping_and_rounded_size() -> None:
    model = models()[DREAMINA]
    inputs = _inputs(model, **{"width×height": "5404x3040(16:9)", "scale": 0.25})
    spec = prepare(model, inputs, _refs(2), seed=3)
    assert spec.scale == 0.25 and spec.guidance_scale == pytest.approx(1.0 + 7.0 * 0.25)
    assert (spec.width, spec.height, spec.requested_size) == (5408, 3040, (5404, 3040))
    assert spec.plan["output_size"] == [5408, 3040] and spec.plan["requested_size"] == [5404, 3040]
    assert spec.count == 1 and spec.plan["source"] == "none" and spec.plan["cap"] == 13


@pytest.mark.parametrize(("scale", "guidance"), [(0.0, 1.0), (0.5, 4.5), (1.0, 8.0)])
def test_guidance_from_scale(scale: float, guidance: float) -> None:
    assert guidance_from_scale(scale) == pytest.approx(guidance)


def test_dreamina_default_scale_and_counts() -> None:
    model = models()[DREAMINA]
    inputs = _inputs(model, prompt="4 photos of the girl on the boat")
    spec = prepare(model, inputs, _refs(2), seed=1)
    assert spec.scale == 0.5 and spec.guidance_scale == pytest.approx(4.5) and spec.count == 4
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
    assert len(calls) == 1 and len(calls[0][0]) == 3 and "exactly 3 prompts" in calls[0][1]
    assert spec.prompts[0].startswith("detailed 0: ") and spec.count == 3
    assert spec.plan["rewritten"] is True and spec.plan["optimize_prompt"] == "standard"
    assert spec.plan["prompts"] == spec.prompts


def test_standard_rewrite_wrong_count_falls_back() -> None:
    model = models()[SEQ]
    inputs = _inputs(model, optimize_prompt_options="standard")
    spec = prepare(model, inputs, [], rewrite=lambda prompts, _: prompts[:1], seed=1)
    assert spec.prompts == [inputs["text"]] * 3
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
