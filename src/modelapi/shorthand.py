"""The short form of a request — a prompt, an image count, a size, a seed, reference images —
turned into a catalogue model's input body. The OpenAI Images routes
(:mod:`modelapi.api.openai_images`) and the MCP tools (:mod:`modelapi.mcp_server`) send what
this builds, through the model's ordinary submit path.

Rules:

* ``n`` alone sets how many images come out, whatever the prompt says. The models read the
  count from the prompt (README, "How many images"), so the body carries it there:
  ``n == 1`` sends ``sequential_image_generation: "disabled"`` (seedream) or
  ``force_single: true`` (dreamina) and the prompt unchanged; ``n >= 2`` caps the series at
  ``n`` (``sequential_image_generation_options``, seedream's billed unit) and keeps the prompt
  when it already asks for at least ``n`` images, else states the count in front of what it
  asks to draw (``"Generate 3 images of <the prompt without its own count>"``; a shot list or
  a story with fewer items than ``n`` repeats its items in order). The planner of the worker
  (:func:`modelapi.series.planner.plan_series`) is asked here whether the body gives exactly
  ``n``; it is the same code the worker runs.
* ``size``: ``None`` or ``"auto"`` is the model's default; a value of the model's size enum is
  taken as is; ``"WxH"`` maps to the documented size of exactly the same aspect ratio, or, for a
  model whose sizes name the pixels (several documented sizes share a ratio: dreamina), to
  that exact size. Anything else is refused, listing what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from .catalog import Model
from .series.planner import MAX_TOTAL_IMAGES, plan_series

_WXH = re.compile(r"\s*(\d{1,5})\s*[x×]\s*(\d{1,5})\s*")
_ENUM_SIZE = re.compile(r"\s*(\d+)\s*[:x×]\s*(\d+)")
_RATIO = re.compile(r"\((\d+:\d+)\)")


class ParamError(ValueError):
    """A short-form parameter is refused.

    Attributes:
        param (`str`): the parameter's name as the caller wrote it (``"n"``, ``"size"``, ...).
        message (`str`): what is wrong and what is allowed.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


def max_count(model: Model, n_references: int = 0) -> int:
    """The largest ``n`` for ``model`` with ``n_references`` reference images: the series cap
    of its spec (15) less the references (references + outputs <= 15), at least 1."""
    task = model.task
    cap = MAX_TOTAL_IMAGES
    if task.max_images_field:
        cap = max(model.input_schema["properties"][task.max_images_field]["enum"])
    return max(1, min(cap, MAX_TOTAL_IMAGES - n_references))


def documented_sizes(model: Model) -> list[tuple[str, int, int]]:
    """``(enum value, width, height)`` (px) of each documented size of ``model``, in spec order."""
    out = []
    for value in model.input_schema["properties"][model.task.size_field]["enum"]:
        m = _ENUM_SIZE.match(value)
        assert m is not None, f"unparseable documented size {value!r}"
        out.append((value, int(m[1]), int(m[2])))
    return out


def takes_exact_sizes(model: Model) -> bool:
    """True when ``model``'s documented sizes name pixels, not only a ratio: two of them share
    an aspect ratio (dreamina's ``width×height``)."""
    ratios = [Fraction(w, h) for _, w, h in documented_sizes(model)]
    return len(set(ratios)) != len(ratios)


def allowed_sizes(model: Model) -> str:
    """The sizes ``model`` accepts, in words (for error messages)."""
    sizes = ", ".join(f"{w}x{h}" for _, w, h in documented_sizes(model))
    if takes_exact_sizes(model):
        return f"one of {sizes}, or auto"
    labels = {Fraction(w, h): _RATIO.search(value) for value, w, h in documented_sizes(model)}
    ratios = ", ".join(m[1] if m else f"{r.numerator}:{r.denominator}" for r, m in labels.items())
    return f"a WxH of one of the aspect ratios {ratios} (it maps to {sizes}), or auto"


def size_value(model: Model, size: str | None) -> str | None:
    """The enum value of ``model``'s size field for ``size`` (rules: the module docstring);
    None for the model's default.

    Raises:
        ParamError: ``size`` is not a string of the form ``WxH``, or has no documented match.
    """
    if size is None or size == "auto":
        return None
    if not isinstance(size, str):
        raise ParamError("size", f"must be a string 'WxH' or 'auto', not {size!r}")
    sizes = documented_sizes(model)
    if size in {value for value, _, _ in sizes}:
        return size
    m = _WXH.fullmatch(size)
    if m is None or int(m[1]) == 0 or int(m[2]) == 0:
        raise ParamError("size", f"must be 'WxH' (e.g. '1024x1024') or 'auto', not {size!r}; {model.model_id} takes {allowed_sizes(model)}")
    width, height = int(m[1]), int(m[2])
    exact = takes_exact_sizes(model)
    for value, w, h in sizes:
        if ((w, h) == (width, height)) if exact else (w * height == h * width):
            return value
    rule = "no documented size" if exact else "no documented size of the same aspect ratio"
    raise ParamError("size", f"{size} has {rule} for {model.model_id}; allowed: {allowed_sizes(model)}")


def count_prompt(prompt: str, n: int, n_references: int = 0) -> str:
    """A prompt asking for exactly ``n`` (>= 2) images with the series capped at ``n``: the
    prompt itself when it asks for at least ``n``, else the count stated in front of what it
    asks to draw (the module docstring).

    Raises:
        ParamError: no prompt could be built that the planner reads as ``n`` images (not
            expected; the message says so).
    """
    def count(text: str) -> int:
        return plan_series(text, max_images=n, n_references=n_references).count

    if count(prompt) == n:
        return prompt
    asked = plan_series(prompt, max_images=MAX_TOTAL_IMAGES, n_references=0)
    if asked.source in ("shot_list", "beats"):
        items = [" ".join(asked.prompts[i % len(asked.prompts)].split()) for i in range(n)]
        candidate = "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
    else:
        what = plan_series(prompt, max_images=1, sequential="disabled").prompts[0]
        candidate = f"Generate {n} images of {what}"
    if count(candidate) != n:
        raise ParamError("prompt", f"could not make this prompt ask for exactly {n} images; state the count in it")
    return candidate


def build_input(model: Model, prompt: Any, *, n: Any = 1, size: str | None = None, seed: Any = None,
                images: Sequence[str] = ()) -> dict[str, Any]:
    """``model``'s input body for the short form.

    Args:
        model: a catalogue model.
        prompt (`str`): what to draw; at most the spec's ``maxLength`` characters.
        n (`int`, 1..:func:`max_count`): how many images, exactly.
        size (`str | None`): see :func:`size_value`.
        seed (`int | None`): the seed of the first image (image i uses ``seed + i``); only for
            models whose schema has one.
        images (`list[str]`): reference image URIs (https, data:, uploads); required exactly
            for models that take references.

    Returns:
        The input body (checked by the submit path like any other).

    Raises:
        ParamError: a parameter breaks a rule above (``param`` names it).
    """
    task, props = model.task, model.input_schema["properties"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ParamError("prompt", "must be a non-empty string")
    limit = props[task.prompt_field].get("maxLength")
    if limit is not None and len(prompt) > limit:
        raise ParamError("prompt", f"must be at most {limit} characters for {model.model_id}, got {len(prompt)}")
    if task.image_field is None and images:
        raise ParamError("image", f"{model.model_id} takes no reference images")
    if task.image_field is not None and not images:
        raise ParamError("image", f"{model.model_id} needs 1 to {props[task.image_field].get('maxItems', 10)} reference images")
    cap = max_count(model, len(images))
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cap:
        refs = f" with {len(images)} reference images" if images else ""
        raise ParamError("n", f"must be an integer from 1 to {cap} for {model.model_id}{refs}, not {n!r}")
    if seed is not None and "seed" not in props:
        raise ParamError("seed", f"{model.model_id} takes no seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ParamError("seed", f"must be an integer, not {seed!r}")

    body: dict[str, Any] = {}
    if task.image_field is not None:
        body[task.image_field] = list(images)
    if n == 1:
        body[task.prompt_field] = prompt
        if "force_single" in props:
            body["force_single"] = True
        else:
            body["sequential_image_generation"] = "disabled"
    else:
        body[task.prompt_field] = count_prompt(prompt, n, len(images))
        if limit is not None and len(body[task.prompt_field]) > limit:
            raise ParamError("prompt", f"too long to state the count of {n} images in it: at most "
                                       f"{limit - (len(body[task.prompt_field]) - len(prompt))} characters with n={n}")
    if task.max_images_field:
        body[task.max_images_field] = n
    value = size_value(model, size)
    if value is not None:
        body[task.size_field] = value
    if seed is not None:
        body["seed"] = seed
    return body
