"""Turn a validated request into a :class:`~modelapi.engine.base.GenerationSpec`.

Inputs arrive already checked against the model's schema, with defaults applied; field names
come from the model's :class:`~modelapi.catalog.Task`. Source of the semantics: the specs' field
descriptions (``src/modelapi/catalog/specs/*.json``) and the README's "How many images, and how
they stay coherent".
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Callable

from PIL import Image

from modelapi.catalog import Model
from modelapi.engine.base import GenerationSpec
from modelapi.series.planner import (
    MAX_TOTAL_IMAGES,
    apply_rewrites,
    plan_series,
    rewrite_instruction,
)

SIZE_MULTIPLE = 16
"""The pipelines accept width and height only in multiples of this, px (FLUX.2: VAE factor 8 x
patch 2; diffusers' ``Flux2KleinPipeline`` floors other sizes with a warning)."""

Rewriter = Callable[[list[str], str], list[str]]
"""``(prompts, instruction) -> rewritten prompts``, e.g. ``Engine.rewrite_prompts``."""

# "2560:1440 (16:9)" (seedream image_size) or "2048x2048(1:1)" (dreamina width×height).
_SIZE_RE = re.compile(
    r"\s*(\d+)\s*[:x×]\s*(\d+)\s*(?:\(\s*\d+\s*:\s*\d+\s*\))?\s*", re.IGNORECASE
)


def parse_size(value: str) -> tuple[int, int]:
    """``(width, height)`` in px from a size enum value.

    ``"2560:1440 (16:9)"`` -> ``(2560, 1440)``; ``"2048x2048(1:1)"`` -> ``(2048, 2048)``.

    Raises:
        ValueError: ``value`` is not such a string, or a side is 0.
    """
    m = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m[1]) == 0 or int(m[2]) == 0:
        raise ValueError(f"cannot parse image size {value!r}; expected 'W:H (a:b)' or 'WxH(a:b)'")
    return int(m[1]), int(m[2])


def generation_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The nearest size the pipeline accepts at or above ``(width, height)``: each side rounded
    up to a multiple of ``multiple`` px.

    The engine generates at this size and crops centrally to ``(width, height)``
    (:func:`crop_center`), so every documented size comes out exactly, neither distorted nor
    padded. ``(6198, 2656)`` -> ``(6208, 2656)``; ``(5404, 3040)`` -> ``(5408, 3040)``;
    ``(4694, 3520)`` -> ``(4704, 3520)``; ``(2048, 2048)`` -> unchanged.

    Raises:
        ValueError: a side or ``multiple`` is < 1.
    """
    if width < 1 or height < 1 or multiple < 1:
        raise ValueError(f"sizes must be >= 1 px, got {width}x{height} (multiple {multiple})")
    return -(-width // multiple) * multiple, -(-height // multiple) * multiple


def crop_box(generated: tuple[int, int], output: tuple[int, int]) -> tuple[int, int, int, int]:
    """The central ``(left, top, right, bottom)`` box, px, that cuts ``output`` (w, h) out of
    ``generated`` (w, h); an odd margin leaves the extra pixel on the right/bottom.

    Raises:
        ValueError: ``output`` is larger than ``generated`` on a side, or a side is < 1.
    """
    (gw, gh), (w, h) = generated, output
    if not (0 < w <= gw and 0 < h <= gh):
        raise ValueError(f"cannot crop {w}x{h} out of {gw}x{gh}")
    left, top = (gw - w) // 2, (gh - h) // 2
    return left, top, left + w, top + h


def crop_center(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` cropped centrally to ``size`` (w, h) px (:func:`crop_box`); the same object
    when it already has that size.

    Raises:
        ValueError: ``size`` is larger than the image on a side.
    """
    if image.size == tuple(size):
        return image
    return image.crop(crop_box(image.size, size))


def prepare(
    model: Model,
    inputs: dict[str, Any],
    references: list[Image.Image],
    *,
    rewrite: Rewriter | None = None,
    seed: int | None = None,
) -> GenerationSpec:
    """Plan one request.

    Args:
        model: the endpoint (its ``task`` names the prompt, size and cap fields).
        inputs (`dict`): validated input JSON with defaults applied.
        references (`list[PIL.Image.Image]`): the decoded reference images, in request order;
            converted to RGB here.
        rewrite: the LLM prompt rewriter, used only when ``optimize_prompt_options`` is
            ``"standard"``: it rewrites the rule-based per-image prompts (count instruction
            already removed) in the prompt's own language
            (:func:`~modelapi.series.planner.rewrite_instruction` says why); its exceptions
            propagate. None = rules only.
        seed (`int | None`): used when the inputs carry no ``seed``; None = a random 31-bit int.

    Returns:
        GenerationSpec: ``width``/``height`` = :func:`generation_size` of the requested size,
        ``requested_size`` = the output size (the engine crops centrally to it). ``plan`` holds
        :meth:`SeriesPlan.to_dict` plus ``"optimize_prompt"`` (``"fast"`` | ``"standard"``),
        ``"requested_size"``, ``"generated_size"`` and ``"output_size"`` (``[w, h]`` px;
        output == requested). ``scale`` (dreamina) is passed through as is, with
        ``guidance_scale`` None: the engine alone maps it
        (:func:`~modelapi.engine.flux2.text_weight`).
        Counting: the cap is ``inputs[task.max_images_field]`` (15 when the task has none),
        ``sequential_image_generation`` (default ``"auto"``) and ``force_single`` (default
        False) as in :func:`~modelapi.series.planner.plan_series`.

    Raises:
        ValueError: the size is unparseable, or ``sequential_image_generation`` is neither
            ``"auto"`` nor ``"disabled"`` (the schema leaves that field free-form).
    """
    task = model.task
    requested = parse_size(inputs[task.size_field])
    width, height = generation_size(*requested)

    plan = plan_series(
        inputs[task.prompt_field],
        max_images=inputs[task.max_images_field] if task.max_images_field else MAX_TOTAL_IMAGES,
        n_references=len(references),
        sequential=inputs.get("sequential_image_generation", "auto"),
        force_single=bool(inputs.get("force_single", False)),
    )
    optimize = inputs.get("optimize_prompt_options", "fast")
    if optimize == "standard" and rewrite is not None:
        plan = apply_rewrites(plan, rewrite(list(plan.prompts), rewrite_instruction(plan)))

    if inputs.get("seed") is not None:
        seed = inputs["seed"]
    elif seed is None:
        seed = secrets.randbelow(2**31)

    # dreamina only; the engine maps it (one mapping: modelapi.engine.flux2.text_weight)
    scale = float(inputs["scale"]) if "scale" in inputs else None
    return GenerationSpec(
        model_id=model.model_id,
        prompts=list(plan.prompts),
        width=width,
        height=height,
        requested_size=requested,
        seed=seed,
        references=[im if im.mode == "RGB" else im.convert("RGB") for im in references],
        scale=scale,
        guidance_scale=None,
        num_inference_steps=None,
        plan={
            **plan.to_dict(),
            "optimize_prompt": optimize,
            "requested_size": list(requested),
            "generated_size": [width, height],
            "output_size": list(requested),
        },
    )
