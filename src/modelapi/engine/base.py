"""The engine interface: what the jobs layer hands a generation engine, and what it gets back.

The engine never sees HTTP, keys or the database. The worker turns a validated request into a
:class:`GenerationSpec` (see :mod:`modelapi.series.params`), then calls ``engine.generate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

from PIL import Image

ProgressCallback = Callable[[float], None]
"""Called with the fraction done, 0.0-1.0, after each denoising step."""

StopCheck = Callable[[], bool]
"""Returns True when the engine must stop between steps (raise ``GenerationStopped``)."""

ImageCallback = Callable[[int, Image.Image], None]
"""Called with ``(index, image)`` as soon as image ``index`` of the series exists, in its final
form (cropped to ``requested_size``), before ``generate`` returns. It runs on the engine's
critical path: hand the image over (e.g. to a pool that encodes and stores it) and return."""


@dataclass
class GenerationSpec:
    """One request, planned and ready for an engine.

    Attributes:
        model_id (`str`): e.g. ``"bytedance/seedream-4-0/sequential"``.
        prompts (`list[str]`): one prompt per output image; ``len(prompts)`` images are made.
        width, height (`int`, px, multiples of 16): the size the pipeline generates at: the
            nearest accepted size at or above ``requested_size``
            (:func:`~modelapi.series.params.generation_size`).
        requested_size (`tuple[int, int]`, px): the size the request asked for and the size of
            every returned image: each is cropped centrally from ``width`` x ``height``
            (:func:`~modelapi.series.params.crop_center`); equal to ``(width, height)`` when
            those are already multiples of 16.
        seed (`int`): the request's seed; image ``i`` uses ``seed + i`` for its generator.
        references (`list[PIL.Image.Image]`): the user's reference images (RGB), maybe empty.
        scale (`float | None`): dreamina's text influence, 0..1 (None for seedream); the engine
            maps it (FLUX.2: :func:`~modelapi.engine.flux2.text_weight`).
        guidance_scale (`float | None`): an explicit guidance; None (what the server sends) =
            the engine's per-family default, adjusted by ``scale``.
        num_inference_steps (`int | None`): None = the engine's per-family default.
        plan (`dict`): the series plan (count, per-image prompts, how the count was found).
    """

    model_id: str
    prompts: list[str]
    width: int
    height: int
    requested_size: tuple[int, int]
    seed: int
    references: list[Image.Image] = field(default_factory=list)
    scale: float | None = None
    guidance_scale: float | None = None
    num_inference_steps: int | None = None
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class EngineInfo:
    """What a loaded engine reports: in /v1/models and /healthz, the workers table, and each
    result's metadata (:meth:`as_dict`).

    Attributes:
        engine (`str`): e.g. ``"flux2-klein"``.
        weights (`str`): the hub id or folder the weights came from.
        random_weights (`bool`): the weights are random (outputs are noise).
        device (`str`): e.g. ``"cuda:0"``, ``"cpu"``.
        dtype (`str | None`): e.g. ``"bfloat16"``.
        default_steps (`int | None`): inference steps when a request sets none.
        default_guidance (`float | None`): guidance scale when a request sets none.
    """

    engine: str
    weights: str
    random_weights: bool
    device: str
    dtype: str | None = None
    default_steps: int | None = None
    default_guidance: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Engine(Protocol):
    """A loaded generation engine, kept warm for the life of a worker; ``info`` says which."""

    info: EngineInfo

    def generate(
        self,
        spec: GenerationSpec,
        progress: ProgressCallback,
        should_stop: StopCheck,
        on_image: ImageCallback | None = None,
    ) -> list[Image.Image]:
        """Make ``spec.count`` images of ``spec.requested_size``, generated at ``spec.width`` x
        ``spec.height`` and cropped centrally.

        ``on_image(i, image)``, when given, is called once per image, as soon as image ``i``
        exists (an engine that makes the series in passes calls it after each pass, before the
        next), with the same object ``generate`` returns at index ``i``. Its exceptions propagate
        out of ``generate``.

        Returns:
            the ``spec.count`` images, in order (also those already handed to ``on_image``).

        Raises:
            GenerationStopped: ``should_stop()`` turned True between steps.
            EngineError: the engine could not run.
        """
        ...

    def rewrite_prompts(self, prompts: list[str], instruction: str) -> list[str]:
        """Rewrite per-image prompts with the engine's own language model
        (optimize_prompt_options="standard"). Engines without one return ``prompts`` unchanged."""
        ...
