"""Turn a validated request into a :class:`~modelapi.engine.base.GenerationSpec`.

Inputs arrive already checked against the model's schema, with defaults applied; field names
come from the model's :class:`~modelapi.catalog.Task`. Source of the semantics: API.md
"Semantics" and the specs' field descriptions.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Callable

from PIL import Image

from modelapi.catalog import Model
from modelapi.engine.base import GenerationSpec
from modelapi.engine.planner import (
    MAX_TOTAL_IMAGES,
    apply_rewrites,
    plan_series,
    rewrite_instruction,
)

SIZE_MULTIPLE = 16
"""Output width and height are multiples of this (FLUX.2 pipelines floor to it otherwise)."""

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


def round_size(width: int, height: int) -> tuple[int, int]:
    """Each side rounded to the nearest multiple of :data:`SIZE_MULTIPLE` (halves up, min 16).

    ``(5404, 3040)`` -> ``(5408, 3040)``; ``(6198, 2656)`` -> ``(6192, 2656)``.
    """
    m = SIZE_MULTIPLE
    return max(m, (width + m // 2) // m * m), max(m, (height + m // 2) // m * m)


def guidance_from_scale(scale: float) -> float:
    """Dreamina ``scale`` (0..1, text influence vs the reference images) -> classifier-free
    guidance: ``1.0 + 7.0 * scale`` (0 -> 1.0, i.e. no text push; 0.5 -> 4.5; 1 -> 8.0).

    FLUX.2 [klein] (distilled) ignores guidance; for it the engine may use ``spec.scale`` for
    reference conditioning instead. Which one an engine honours is the engine's choice.
    """
    return 1.0 + 7.0 * scale


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
            ``"standard"``; its exceptions propagate. None = rules only.
        seed (`int | None`): used when the inputs carry no ``seed``; None = a random 31-bit int.

    Returns:
        GenerationSpec. ``plan`` holds :meth:`SeriesPlan.to_dict` plus ``"optimize_prompt"``
        (``"fast"`` | ``"standard"``), ``"requested_size"`` and ``"output_size"`` (``[w, h]``).
        Counting: the cap is ``inputs[task.max_images_field]`` (15 when the task has none),
        ``sequential_image_generation`` (default ``"auto"``) and ``force_single`` (default
        False) as in :func:`~modelapi.engine.planner.plan_series`.

    Raises:
        ValueError: the size is unparseable, or ``sequential_image_generation`` is neither
            ``"auto"`` nor ``"disabled"`` (the schema leaves that field free-form).
    """
    task = model.task
    requested = parse_size(inputs[task.size_field])
    width, height = round_size(*requested)

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

    scale = float(inputs["scale"]) if "scale" in inputs else None  # dreamina only
    return GenerationSpec(
        model_id=model.model_id,
        prompts=list(plan.prompts),
        width=width,
        height=height,
        requested_size=requested,
        seed=seed,
        references=[im if im.mode == "RGB" else im.convert("RGB") for im in references],
        scale=scale,
        guidance_scale=None if scale is None else guidance_from_scale(scale),
        num_inference_steps=None,
        plan={
            **plan.to_dict(),
            "optimize_prompt": optimize,
            "requested_size": list(requested),
            "output_size": [width, height],
        },
    )
