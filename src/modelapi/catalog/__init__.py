"""The catalogue: one JSON spec per endpoint (data, exactly as documented) plus its engine mapping.

Adding an endpoint = dropping ``specs/<owner>__<model>__<variant>.json`` here and adding one
:class:`Task` line to ``TASKS``; no route code changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SEQUENTIAL_MODES = ("auto", "disabled")
"""The values of ``sequential_image_generation`` the engine implements (the schemas list more)."""

SEED_RANGE = (-(2**63), 2**63 - 1 - 14)
"""Seeds the engine can use: image ``i`` (0..14) of a series is seeded ``seed + i`` in a signed
64-bit generator seed (the schemas give ``seed`` no bounds)."""


def engine_limits(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Problems (``{"loc", "msg", "type"}``) with schema-valid ``inputs`` that the engine cannot
    honour: a ``sequential_image_generation`` other than :data:`SEQUENTIAL_MODES`, a ``seed``
    outside :data:`SEED_RANGE`."""
    problems = []
    if inputs.get("sequential_image_generation", "auto") not in SEQUENTIAL_MODES:
        problems.append({"loc": ["body", "sequential_image_generation"], "msg": "Input should be 'auto' or 'disabled'", "type": "enum"})
    seed = inputs.get("seed")
    if isinstance(seed, int) and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        problems.append({"loc": ["body", "seed"], "type": "seed_range",
                         "msg": f"Input should be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]} (a 64-bit seed; image i uses seed + i)"})
    return problems


@dataclass(frozen=True)
class Task:
    """How an endpoint's input fields map onto the engine.

    Attributes:
        prompt_field: the input field holding the prompt.
        image_field: the input field holding reference images (``format: image_uri``), or None.
        size_field: the input field holding the output size.
        max_images_field: the field capping the series length (and the billed unit), or None.
        billed_by: ``"max_images"`` (seedream: sequential_image_generation_options) or
            ``"images"`` (dreamina: the number of images produced).
    """

    prompt_field: str
    image_field: str | None
    size_field: str
    max_images_field: str | None
    billed_by: str


TASKS: dict[str, Task] = {
    "bytedance/seedream-4-0/sequential": Task(
        "text", None, "image_size", "sequential_image_generation_options", "max_images"
    ),
    "bytedance/seedream-4-0/edit-sequential": Task(
        "text", "images", "image_size", "sequential_image_generation_options", "max_images"
    ),
    "bytedance/dreamina-4-0/edit": Task("prompt", "image_urls", "width×height", None, "images"),
}


@dataclass(frozen=True)
class Model:
    """One endpoint of the catalogue. ``spec`` is the JSON file as documented."""

    model_id: str
    spec: dict[str, Any]
    task: Task

    @property
    def input_schema(self) -> dict[str, Any]:
        return self.spec["input_schema"]

    @property
    def output_schema(self) -> dict[str, Any]:
        return self.spec["output_schema"]

    @property
    def example_request(self) -> dict[str, Any]:
        return self.spec["example_request"]


@cache
def models() -> dict[str, Model]:
    """All endpoints, by model id. Raises ``KeyError`` if a spec has no entry in ``TASKS``."""
    out: dict[str, Model] = {}
    for entry in sorted(resources.files(__package__).joinpath("specs").iterdir(), key=str):
        if not entry.name.endswith(".json"):
            continue
        spec = json.loads(entry.read_text(encoding="utf-8"))
        model_id = spec["model_id"]
        out[model_id] = Model(model_id, spec, TASKS[model_id])
    return out


def get(model_id: str) -> Model | None:
    """The endpoint ``model_id`` (``owner/model/variant``), or None when unknown."""
    return models().get(model_id)
