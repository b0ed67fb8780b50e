"""The FLUX.2 engine: diffusers' ``Flux2KleinPipeline`` / ``Flux2Pipeline``, loaded once, kept warm.

Families (picked from ``model_index.json``'s ``_class_name`` for a folder, else from the hub id):

==============  ====================  =============  ==================================
``info.engine``  pipeline              default steps  default guidance
==============  ====================  =============  ==================================
flux2-klein     Flux2KleinPipeline    4              1.0 (ignored: step-distilled)
flux2-klein     (``is_distilled`` no) 50             4.0 (klein "base": real CFG)
flux2-dev       Flux2Pipeline         28             4.0 (guidance embedding)
==============  ====================  =============  ==================================

A series is kept coherent by **reference chaining** (the model's own multi-reference ability):
image 1 is made from ``prompts[0]`` (with the user's references, if any); images 2..N are made
in ONE batched call with ``[image 1] + references`` as references, one prompt and one
``torch.Generator`` per image. Two pipeline calls for any N. The pipeline returns latents; the
engine decodes each image itself, hands it to ``generate``'s ``on_image`` at once (image 1
before pass 2 starts), and decodes tile by tile above ``vae_tiling_pixels`` (bounded memory for
the ~16 MP sizes).

Dreamina's ``scale`` has one mapping, :func:`text_weight`, applied to guidance (families that use
it) and to the detail given to the user's references (every family; the only lever of the
default, step-distilled klein).

GPU options (all off by default; see :class:`Flux2Engine`): ``compile`` (regional
``torch.compile``), ``offload`` (``model`` / ``sequential``), ``attention_backend`` (diffusers'
attention dispatcher). Every engine is warmed up at start (:meth:`Flux2Engine.warm_up`).

:meth:`Flux2Engine.from_pretrained` loads weights that :mod:`modelapi.engine.weights` locates
(a folder, the hub cache or the hub; :func:`~modelapi.engine.weights.resolve_default_model`
when none is named); ``Flux2Engine(pipe, ...)`` wraps a pipeline already built. Prompt
rewriting with the text encoder is :mod:`modelapi.engine.rewrite`. Missing weights raise
:class:`~modelapi.engine.errors.EngineError` saying what to do.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, get_args

from PIL import Image

from modelapi.engine.base import EngineInfo, GenerationSpec, ImageCallback, ProgressCallback, StopCheck
from modelapi.engine import rewrite
from modelapi.engine.errors import EngineError, GenerationStopped
from modelapi.engine.tiny import is_random_weights
from modelapi.engine.weights import locate, pipeline_class_name
from modelapi.series.params import crop_center
from modelapi.types import DEFAULT_VAE_TILING_PIXELS, OffloadMode

logger = logging.getLogger("modelapi.engine")


PIPELINE_MAX_REFERENCE_PX = 1024 * 1024
"""The pipelines resize each reference to at most this area (pixels) before encoding it."""

VAE_TILE_PX = 1024
"""Side of the square tiles of tiled VAE decoding, px (the FLUX.2 VAE's own ``sample_size``; 128
latent px). Neighbouring tiles overlap by a quarter and are blended (diffusers' tiling)."""

OFFLOAD_MODES: tuple[str, ...] = get_args(OffloadMode)
"""``--offload`` values (see :class:`Flux2Engine`)."""

WARMUP_PX = {"cpu": 64}
"""Side of the light warm-up's image by device type, px (:meth:`Flux2Engine.warm_up`); 256
elsewhere."""


@dataclass(frozen=True)
class _Family:
    engine: str
    pipeline_class: str
    default_steps: int
    default_guidance: float
    guidance_used: bool


_KLEIN = _Family("flux2-klein", "Flux2KleinPipeline", 4, 1.0, guidance_used=False)
_KLEIN_BASE = _Family("flux2-klein", "Flux2KleinPipeline", 50, 4.0, guidance_used=True)
_DEV = _Family("flux2-dev", "Flux2Pipeline", 28, 4.0, guidance_used=True)
_FAMILY_BY_CLASS = {"Flux2KleinPipeline": _KLEIN, "Flux2Pipeline": _DEV}


MIN_REFERENCE_PX = 64
"""Smallest side of a reference the FLUX.2 pipelines accept, px; smaller references are upscaled."""


def _family_for(model: str, folder: Path | None) -> _Family:
    """The family of ``model``'s pipeline class (:func:`~modelapi.engine.weights.pipeline_class_name`).

    Raises:
        EngineError: the class is unknown, or not one this engine runs.
    """
    class_name = pipeline_class_name(model, folder)
    if class_name not in _FAMILY_BY_CLASS:
        raise EngineError(
            f"{model} is a {class_name}; this engine runs {', '.join(_FAMILY_BY_CLASS)}"
        )
    return _FAMILY_BY_CLASS[class_name]

def _pick_device(device: str):
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        picked = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EngineError(f"unknown device {device!r}: use 'auto', 'cuda', 'mps' or 'cpu'") from exc
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if picked.type == "mps" and not torch.backends.mps.is_available():
        raise EngineError(f"device {device!r} asked for, but MPS is not available")
    return picked


def _check_offload(offload: str) -> None:
    if offload not in OFFLOAD_MODES:
        raise EngineError(f"unknown offload mode {offload!r}: use one of {', '.join(OFFLOAD_MODES)}")


def _set_attention_backend(transformer: Any, name: str) -> None:
    """``transformer.set_attention_backend(name)``, or a clear EngineError."""
    known = attention_backends()
    if name.lower() not in known:
        raise EngineError(f"unknown attention backend {name!r}: diffusers knows {', '.join(known)}")
    try:
        transformer.set_attention_backend(name)
    except Exception as exc:  # RuntimeError: its package (flash-attn, sageattention, kernels) is missing
        raise EngineError(f"attention backend {name!r} cannot be used here: {exc}") from exc


@contextlib.contextmanager
def _engine_errors(doing: str) -> Iterator[None]:
    """Pipeline failures as EngineError (out of memory said so); GenerationStopped passes."""
    import torch

    try:
        yield
    except (GenerationStopped, EngineError):
        raise
    except torch.OutOfMemoryError as exc:
        raise EngineError(f"out of memory {doing}") from exc
    except Exception as exc:
        raise EngineError(f"generation failed {doing} ({type(exc).__name__}: {exc})") from exc


def text_encoder_out_layers(pipe: Any) -> tuple[int, ...]:
    """Which text-encoder hidden layers make the prompt embedding of ``pipe``.

    The pipeline's default (klein ``(9, 18, 27)`` of 36, dev ``(10, 20, 30)`` of 40) when the
    encoder has those layers; otherwise ``n`` evenly spaced layers that exist, ``n`` being
    ``transformer.config.joint_attention_dim / hidden_size`` (the tiny pipeline: ``(1,)``).
    """
    default = tuple(inspect.signature(type(pipe).__call__).parameters["text_encoder_out_layers"].default)
    config = pipe.text_encoder.config
    config = getattr(config, "text_config", config)
    n_layers, hidden = config.num_hidden_layers, config.hidden_size
    joint_dim = pipe.transformer.config.joint_attention_dim
    n_out, rest = divmod(joint_dim, hidden)
    if len(default) == n_out and max(default) <= n_layers:
        return default
    if rest or not 1 <= n_out <= n_layers:
        raise EngineError(
            f"text encoder (hidden size {hidden}, {n_layers} layers) does not fit the "
            f"transformer's joint_attention_dim {joint_dim}"
        )
    return tuple(n_layers * (k + 1) // (n_out + 1) for k in range(n_out))


def text_weight(scale: float | None) -> float:
    """The engine's one mapping of dreamina's ``scale`` (0..1, "how strongly the text prompt
    influences the result relative to input images"): a text weight ``w = 2 ** (2 * scale - 1)``.

    0 -> 0.5, 0.5 (dreamina's default) -> 1.0 (the engine's own defaults), 1 -> 2.0; None
    (seedream, no ``scale``) -> 1.0. :class:`Flux2Engine` applies ``w`` to FLUX.2's two levers,
    the same way for every family:

    - guidance (:meth:`Flux2Engine.guidance_for`): ``default_guidance * w`` where the family uses
      guidance (FLUX.2 [dev], klein base: 2..8 around their default 4). Step-distilled klein
      ignores guidance and always gets 1.0.
    - reference detail (:meth:`Flux2Engine.reference_area_for`): each of the user's references
      is given at most ``1 MP / w**2`` (its side divided by ``w``), capped at the pipelines'
      own 1 MP: scale 1 -> 0.25 MP (~1024 tokens per reference instead of ~4096), so the
      references weigh less in joint attention and the text more; scale <= 0.5 keeps 1 MP (the
      pipelines give a reference no more detail than that).

    For the default family (FLUX.2 [klein] 4B, step-distilled) only the second lever acts, so a
    scale below 0.5 changes nothing there. A heuristic, not a calibrated control.

    Raises:
        ValueError: ``scale`` is outside 0..1.
    """
    if scale is None:
        return 1.0
    if not 0.0 <= scale <= 1.0:
        raise ValueError(f"scale={scale} must be within 0..1")
    return float(2.0 ** (2.0 * scale - 1.0))


def configure_vae_tiling(vae: Any) -> None:
    """Give ``vae`` (an ``AutoencoderKLFlux2``) tiles of :data:`VAE_TILE_PX` for when its tiling
    is on; tiling itself stays off (``vae.enable_tiling()`` turns it on).

    diffusers derives the tile size from the VAE's ``sample_size``: 1024 px for FLUX.2's VAE, but
    64 px for the tiny test VAE, which would cut a 16 MP image into ~7,000 tiles. Setting it here
    makes every FLUX.2 VAE tile alike.
    """
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = VAE_TILE_PX
    vae.tile_latent_min_size = VAE_TILE_PX // factor
    vae.disable_tiling()


def compile_transformer(transformer: Any, **compile_kwargs: Any) -> str:
    """``torch.compile`` ``transformer`` in place: regional compilation (diffusers'
    ``compile_repeated_blocks``: each repeated block class is compiled once and reused by every
    block) where the model declares its repeated blocks, as FLUX.2's transformer does; else the
    whole module. ``compile_kwargs`` go to ``torch.compile``. Compilation itself happens on the
    first call (the engine's warm-up).

    Returns:
        ``"regional"`` or ``"whole"``: what was compiled.
    """
    if getattr(transformer, "_repeated_blocks", None):
        transformer.compile_repeated_blocks(**compile_kwargs)
        return "regional"
    transformer.compile(**compile_kwargs)
    return "whole"


def attention_backends() -> list[str]:
    """The names diffusers' attention dispatcher accepts (``--attention-backend``)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return sorted(b.value for b in AttentionBackendName)


class Flux2Engine:
    """A FLUX.2 pipeline kept warm; implements :class:`~modelapi.engine.base.Engine`.

    Load weights with :meth:`from_pretrained`; the constructor wraps a pipeline already built
    (e.g. a random-weight full-size architecture for benchmarks), as diffusers' pipelines take
    their components.

    Args:
        pipe: a ``Flux2KleinPipeline`` or ``Flux2Pipeline``.
        weights (`str`): what ``info.weights`` reports (the hub id or folder it came from).
        random_weights (`bool`): the weights are random (outputs are noise; logged loudly).
        device (`torch.device | None`, default None): where the pipeline runs; None = where it
            is (``pipe._execution_device``).
        vae_tiling_pixels (`int`, default :data:`~modelapi.types.DEFAULT_VAE_TILING_PIXELS`): generated images
            larger than this (width x height, px) are decoded tile by tile (tiles of
            :data:`VAE_TILE_PX`, overlapping and blended: diffusers' VAE tiling), so the VAE's
            memory stays that of one tile whatever the size; smaller ones in one piece (exact,
            no seams). Lower it on a GPU that runs out of memory decoding large images; 0 tiles
            every image larger than one tile.
        compile (`bool`, default False): ``torch.compile`` the transformer at start (regional
            compilation, :func:`compile_transformer`, dynamic shapes so the many sizes and batch
            sizes do not recompile), compiled by the warm-up. Use it on a GPU serving many
            requests: start-up takes longer (tens of seconds), every image after is faster. On
            CPU it does nothing (logged).
        offload (`str`, default ``"none"``): for a GPU with less memory than the pipeline.
            ``"model"`` (diffusers' ``enable_model_cpu_offload``) keeps the components in CPU
            memory and moves one whole component (text encoder, transformer, VAE) to the GPU
            while it runs: peak GPU memory is the largest component, at the cost of copying
            each one over per pass. ``"sequential"`` (``enable_sequential_cpu_offload``)
            streams the weights layer by layer: the least GPU memory, many times slower; a last
            resort. On CPU both do nothing (logged).
        attention_backend (`str | None`, default None): a diffusers attention dispatcher
            backend for the transformer (``pipe.transformer.set_attention_backend``), e.g.
            ``"flash"`` (FlashAttention 2, needs ``flash-attn``), ``"_flash_3"`` (FlashAttention
            3 on Hopper), ``"sage"`` (SageAttention, needs ``sageattention``), ``"native"``
            (PyTorch SDPA); None keeps the pipeline's own (PyTorch SDPA). Use one on a GPU where
            its kernel is installed and faster than SDPA; a name diffusers does not know, or
            whose package is missing, is an :class:`~modelapi.engine.errors.EngineError` at start.
        warmup (`bool`, default True): run one small generation at start (:meth:`warm_up`) so
            that the first request does not pay compilation or lazy initialisation.

    Attributes:
        info (:class:`~modelapi.engine.base.EngineInfo`): engine ``"flux2-klein"`` or
            ``"flux2-dev"``, weights, random_weights, device, dtype, default inference steps and
            guidance scale.

    Raises:
        EngineError: not a FLUX.2 pipeline this engine runs, it does not fit in the device's
            memory, an unknown offload mode or attention backend, or the warm-up failed.

    ``generate`` and ``rewrite_prompts`` hold a lock: one call runs at a time per engine.
    """

    def __init__(
        self,
        pipe: Any,
        *,
        weights: str,
        random_weights: bool,
        device: Any = None,
        vae_tiling_pixels: int = DEFAULT_VAE_TILING_PIXELS,
        compile: bool = False,
        offload: OffloadMode = "none",
        attention_backend: str | None = None,
        warmup: bool = True,
    ) -> None:
        import torch

        family = _FAMILY_BY_CLASS.get(type(pipe).__name__)
        if family is None:
            raise EngineError(f"{type(pipe).__name__} is not a FLUX.2 pipeline this engine runs")
        _check_offload(offload)
        if device is None:
            device = pipe._execution_device
        if family is _KLEIN and not pipe.config.get("is_distilled", False):
            family = _KLEIN_BASE
        pipe.set_progress_bar_config(disable=True)
        configure_vae_tiling(pipe.vae)
        self.pipe = pipe
        self.device = device
        self.vae_tiling_pixels = vae_tiling_pixels
        self._family = family
        self._lock = threading.Lock()
        self._out_layers = text_encoder_out_layers(pipe)
        self._multiple = pipe.vae_scale_factor * 2
        accelerator = device.type != "cpu"
        if attention_backend is not None:
            _set_attention_backend(pipe.transformer, attention_backend)
        self._offload = offload if accelerator else "none"
        try:
            if self._offload == "model":
                pipe.enable_model_cpu_offload(device=device)
            elif self._offload == "sequential":
                pipe.enable_sequential_cpu_offload(device=device)
            else:
                pipe.to(device)
        except torch.OutOfMemoryError as exc:
            raise EngineError(
                f"{weights} does not fit in {device} memory: {exc}; try --offload model"
            ) from exc
        if offload != "none" and not accelerator:
            logger.info("--offload %s does nothing on %s: the weights are in CPU memory already", offload, device)
        self.compiled: str | None = None
        """``"regional"`` / ``"whole"`` when the transformer was compiled, else None."""
        if compile and accelerator:
            self.compiled = compile_transformer(pipe.transformer, fullgraph=True, dynamic=True)
        elif compile:
            logger.info("--compile does nothing on %s: the transformer runs eagerly", device)
        self.info = EngineInfo(
            engine=family.engine, weights=weights, random_weights=random_weights, device=str(device),
            dtype=str(pipe.transformer.dtype).removeprefix("torch."), default_steps=family.default_steps,
            default_guidance=family.default_guidance,
        )
        if random_weights:
            logger.warning(
                "engine %s runs RANDOM WEIGHTS from %s: every image will be noise",
                family.engine,
                weights,
            )
        if warmup:
            self.warm_up()

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        device: str = "auto",
        vae_tiling_pixels: int = DEFAULT_VAE_TILING_PIXELS,
        compile: bool = False,
        offload: OffloadMode = "none",
        attention_backend: str | None = None,
        warmup: bool = True,
    ) -> Flux2Engine:
        """Load ``model`` with diffusers' ``from_pretrained`` (located by
        :func:`~modelapi.engine.weights.locate`; the family from
        :func:`~modelapi.engine.weights.pipeline_class_name`) and wrap it.

        Args:
            model (`str`): a hub id (e.g. ``"black-forest-labs/FLUX.2-klein-4B"``) or a local
                pipeline folder (holding ``model_index.json``).
            device (`str`, default ``"auto"``): ``"auto"`` = cuda, then mps, then cpu; or a
                torch device string. bfloat16 on cuda/mps, float32 on cpu.
            vae_tiling_pixels, compile, offload, attention_backend, warmup: as for
                :class:`Flux2Engine`.

        Returns:
            Flux2Engine: ``info.weights == model``; ``info.random_weights`` from the folder's
            marker (:func:`~modelapi.engine.tiny.is_random_weights`).

        Raises:
            EngineError: weights missing (with what to do), unreadable, the device unusable, an
                unknown offload mode or attention backend, or the warm-up failed.
        """
        import diffusers
        import torch

        _check_offload(offload)
        torch_device = _pick_device(device)
        source, folder = locate(model)
        family = _family_for(model, folder)
        dtype = torch.float32 if torch_device.type == "cpu" else torch.bfloat16
        pipeline_class = getattr(diffusers, family.pipeline_class)
        try:
            pipe = pipeline_class.from_pretrained(source, dtype=dtype)
        except Exception as exc:
            raise EngineError(
                f"could not load {model} from {source} ({type(exc).__name__}: {exc}); the "
                f"download may be incomplete: run `hf download {model}` again, or pass another "
                "--model"
            ) from exc
        random_weights = folder is not None and is_random_weights(folder)
        return cls(
            pipe, weights=model, random_weights=random_weights, device=torch_device,
            vae_tiling_pixels=vae_tiling_pixels, compile=compile, offload=offload,
            attention_backend=attention_backend, warmup=warmup,
        )

    def warm_up(self, full: bool | None = None) -> float:
        """Generate untimed by any request, so that lazy initialisation (kernels, memory pools,
        the VAE's encoder and decoder) and, with ``compile``, compilation happen here and not in
        the first request. 1 denoising step per pass.

        Args:
            full (`bool | None`): None = full on accelerators, light on CPU. Light: one image
                with one reference at :data:`WARMUP_PX` (64 px; ~0.1 s with the tiny pipeline,
                one text encoding with real weights). Full: a series of 3 with one reference at
                256 px (pass 1 at batch 1, pass 2 at batch 2, both with references), then one
                image without references at 384x256 px: a compiled transformer has then seen
                the batch, sequence and reference variations it is compiled for (dynamic
                shapes), and later sizes do not recompile.

        Returns:
            seconds it took.

        Raises:
            EngineError: a generation failed (e.g. an attention backend that cannot run on
                this device, or compilation failed).
        """
        if full is None:
            full = self.device.type != "cpu"
        reference = Image.new("RGB", (MIN_REFERENCE_PX, MIN_REFERENCE_PX), (128, 128, 128))
        if full:
            runs = [(3, (256, 256), [reference]), (1, (384, 256), [])]
        else:
            side = WARMUP_PX.get(self.device.type, 256)
            runs = [(1, (side, side), [reference])]
        started = time.perf_counter()
        for count, size, references in runs:
            spec = GenerationSpec(
                model_id="warm-up",
                prompts=["warm-up"] * count,
                width=size[0],
                height=size[1],
                requested_size=size,
                seed=0,
                references=references,
                num_inference_steps=1,
            )
            try:
                self.generate(spec, lambda fraction: None, lambda: False)
            except EngineError as exc:
                raise EngineError(f"the warm-up generation failed: {exc}") from exc
        seconds = time.perf_counter() - started
        logger.info(
            "engine warmed up in %.1f s (%s%s)", seconds, self.device,
            f", transformer compiled ({self.compiled})" if self.compiled else "",
        )
        return seconds

    # -- generation ---------------------------------------------------------------------------

    def guidance_for(self, spec: GenerationSpec) -> float:
        """The ``guidance_scale`` passed to the pipeline for ``spec``: ``spec.guidance_scale``
        when set; else the family default, times :func:`text_weight` of ``spec.scale`` where the
        family uses guidance (dev, klein base). Step-distilled klein ignores guidance: 1.0."""
        if spec.guidance_scale is not None:
            return float(spec.guidance_scale)
        if not self._family.guidance_used:
            return self._family.default_guidance
        return self._family.default_guidance * text_weight(spec.scale)

    def reference_area_for(self, spec: GenerationSpec) -> int:
        """Most pixels (width x height) each of the user's references is given to the model:
        the pipelines' 1 MP divided by the square of :func:`text_weight` of ``spec.scale``,
        capped at 1 MP (scale 1 -> 0.25 MP; scale <= 0.5 or no scale -> 1 MP)."""
        weight = text_weight(spec.scale)
        return round(PIPELINE_MAX_REFERENCE_PX / max(1.0, weight * weight))

    def tiled_for(self, spec: GenerationSpec) -> bool:
        """Whether ``spec``'s images are decoded tile by tile: generated width x height above
        ``vae_tiling_pixels``."""
        return spec.width * spec.height > self.vae_tiling_pixels

    def _check(self, spec: GenerationSpec) -> None:
        if spec.count < 1:
            raise EngineError("spec.prompts is empty: nothing to generate")
        for name, value, out in zip(("width", "height"), (spec.width, spec.height), spec.requested_size):
            if value < self._multiple or value % self._multiple:
                raise EngineError(
                    f"spec.{name}={value} must be a positive multiple of {self._multiple} px"
                )
            if not 0 <= value - out < self._multiple:
                raise EngineError(
                    f"spec.requested_size {spec.requested_size[0]}x{spec.requested_size[1]} must be "
                    f"within {self._multiple - 1} px below the generated {spec.width}x"
                    f"{spec.height} (the nearest accepted size at or above it)"
                )
        if spec.scale is not None and not 0.0 <= spec.scale <= 1.0:
            raise EngineError(f"spec.scale={spec.scale} must be within 0..1")
        if spec.num_inference_steps is not None and spec.num_inference_steps < 1:
            raise EngineError(f"spec.num_inference_steps={spec.num_inference_steps} must be >= 1")

    def _references(self, spec: GenerationSpec) -> list[Image.Image]:
        area = self.reference_area_for(spec)
        out = []
        for ref in spec.references:
            ref = ref.convert("RGB")
            w, h = ref.size
            if w * h > area:
                factor = (area / (w * h)) ** 0.5
                size = (max(MIN_REFERENCE_PX, round(w * factor)), max(MIN_REFERENCE_PX, round(h * factor)))
                ref = ref.resize(size, Image.Resampling.LANCZOS)
            elif min(w, h) < MIN_REFERENCE_PX:
                # The pipeline needs >= 64 px a side; the schemas accept smaller (edit-sequential: > 14 px),
                # so small references are upscaled, keeping their aspect ratio.
                factor = MIN_REFERENCE_PX / min(w, h)
                ref = ref.resize((max(MIN_REFERENCE_PX, round(w * factor)), max(MIN_REFERENCE_PX, round(h * factor))), Image.Resampling.LANCZOS)
            out.append(ref)
        return out

    def generate(
        self,
        spec: GenerationSpec,
        progress: ProgressCallback,
        should_stop: StopCheck,
        on_image: ImageCallback | None = None,
    ) -> list[Image.Image]:
        """Make ``spec.count`` images of ``spec.requested_size`` by reference chaining.

        Pass 1: ``prompts[0]`` with the user's references (``image=``, when any) and a generator
        seeded ``spec.seed``. Pass 2 (count > 1): ``prompts[1:]`` in one batched call with
        ``[image 1] + references``, image ``i`` seeded ``spec.seed + i``. Generators live on the
        CPU except on cuda, so the same spec gives pixel-identical images on CPU. Both passes
        run at ``spec.width`` x ``spec.height`` (multiples of 16, image 1 is chained uncropped);
        every image is then cropped centrally to ``spec.requested_size``
        (:func:`~modelapi.series.params.crop_center`): exact sizes, no distortion, no padding.
        Steps: ``spec.num_inference_steps`` or the family default; guidance: :meth:`guidance_for`;
        user references are first downsized to :meth:`reference_area_for`.

        The pipeline returns latents; the engine decodes them one image at a time, tiled when
        :meth:`tiled_for` (above ``vae_tiling_pixels``), and hands each image to ``on_image``
        as soon as it is decoded and cropped: image 1 right after pass 1, before pass 2 starts.

        Args:
            spec: the planned request (``width``/``height`` multiples of 16, each at most 15 px
                above ``requested_size``).
            progress: called after each step with the fraction done over the whole series
                (both passes), non-decreasing, ending at 1.0.
            should_stop: polled before each pass and after each step.
            on_image: called ``(i, image)`` once per image, in index order, with the object
                returned at index ``i``; its exceptions propagate (the series stops).

        Returns:
            list of ``PIL.Image.Image`` (RGB), ``len == spec.count``, each of
            ``spec.requested_size`` (w, h) px.

        Raises:
            GenerationStopped: ``should_stop()`` turned True.
            EngineError: bad spec values, out of memory, or the pipeline failed.
        """
        self._check(spec)
        steps = spec.num_inference_steps or self._family.default_steps
        guidance = self.guidance_for(spec)
        references = self._references(spec)
        passes = 1 if spec.count == 1 else 2
        total = steps * passes
        images: list[Image.Image] = []

        def emit(image: Image.Image) -> None:
            images.append(crop_center(image, spec.requested_size))
            if on_image is not None:
                on_image(len(images) - 1, images[-1])

        with self._lock:
            first = self._call(
                prompts=spec.prompts[:1],
                references=references,
                seeds=[spec.seed],
                spec=spec,
                steps=steps,
                guidance=guidance,
                done_before=0,
                total=total,
                progress=progress,
                should_stop=should_stop,
                emit=emit,
            )
            if spec.count > 1:
                self._call(
                    prompts=spec.prompts[1:],
                    references=first + references,
                    seeds=[spec.seed + i for i in range(1, spec.count)],
                    spec=spec,
                    steps=steps,
                    guidance=guidance,
                    done_before=steps,
                    total=total,
                    progress=progress,
                    should_stop=should_stop,
                    emit=emit,
                )
        return images

    def _call(
        self,
        *,
        prompts: list[str],
        references: list[Image.Image],
        seeds: list[int],
        spec: GenerationSpec,
        steps: int,
        guidance: float,
        done_before: int,
        total: int,
        progress: ProgressCallback,
        should_stop: StopCheck,
        emit: Callable[[Image.Image], None],
    ) -> list[Image.Image]:
        """One pipeline call; each image is decoded and handed to ``emit`` in turn. Returns
        the uncropped images (for chaining).

        The pipeline (``output_type="latent"``) returns latents of ``(len(prompts), C,
        spec.height / 8, spec.width / 8)``, split into ``(1, C, ...)`` per image for
        :meth:`_decode`. ``on_step_end`` gets the step index, the ``timestep`` (a 0-d tensor) and
        the pipeline's callback tensors (by default ``{"latents": ...}``, packed tokens of
        ``(B, (spec.height / 16) * (spec.width / 16), 4 * C)``); it changes none of them.
        """
        import torch

        if should_stop():
            raise GenerationStopped("stop requested before a denoising pass")
        generator_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        generators = [torch.Generator(device=generator_device).manual_seed(s) for s in seeds]

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            progress(min(1.0, (done_before + step + 1) / total))
            if should_stop():
                pipe._interrupt = True
                raise GenerationStopped(f"stop requested after step {done_before + step + 1}/{total}")
            return {}

        what = f"{len(prompts)} image(s) of {spec.width}x{spec.height} with {len(references)} reference(s)"
        with _engine_errors(f"making {what} on {self.device}"):
            latents = self.pipe(
                image=references or None,
                prompt=prompts,
                height=spec.height,
                width=spec.width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                callback_on_step_end=on_step_end,
                text_encoder_out_layers=self._out_layers,
                output_type="latent",
            ).images
        decoded = []
        for one in latents.split(1):
            with _engine_errors(f"decoding one of {what} on {self.device}"):
                image = self._decode(one, tiled=self.tiled_for(spec))
            if image.size != (spec.width, spec.height):
                raise EngineError(
                    f"pipeline made {image.size[0]}x{image.size[1]}, not {spec.width}x{spec.height}"
                )
            decoded.append(image)
            emit(image)
        if self._offload == "model":
            self.pipe.maybe_free_model_hooks()  # the VAE back to the CPU, as after a pipeline call
        return decoded

    def _decode(self, latents: Any, *, tiled: bool) -> Image.Image:
        """One image's latents (as the pipeline returns for ``output_type="latent"``) to a PIL
        image: what the pipeline itself does after denoising (``vae.decode`` on the VAE's
        execution device, then ``image_processor.postprocess``), tile by tile when ``tiled``.
        Tiling is on only during this decode: the references' encoding is never tiled.

        Args:
            latents (`torch.Tensor`, ``(1, C, H / 8, W / 8)``): unpatchified, de-normalised
                latents of one ``W`` x ``H`` px image; ``C = vae.config.latent_channels`` (32
                for FLUX.2's VAE), 8 = ``pipe.vae_scale_factor``. The VAE turns them into
                pixels of ``(1, 3, H, W)`` in -1..1.
            tiled (`bool`): decode tile by tile (:meth:`tiled_for`).

        Returns:
            PIL.Image.Image (RGB), ``W`` x ``H`` px.
        """
        import torch
        from diffusers.utils.torch_utils import get_module_execution_device

        vae = self.pipe.vae
        if tiled:
            vae.enable_tiling()
        try:
            with torch.no_grad():
                pixels = vae.decode(latents.to(get_module_execution_device(vae)), return_dict=False)[0]
        finally:
            vae.disable_tiling()
        with torch.no_grad():
            (image,) = self.pipe.image_processor.postprocess(pixels, output_type="pil")
        return image

    # -- prompt rewriting ---------------------------------------------------------------------

    def rewrite_prompts(self, prompts: list[str], instruction: str) -> list[str]:
        """Rewrite each prompt with the pipeline's own text encoder used as a causal LM
        (``optimize_prompt_options="standard"``): :func:`modelapi.engine.rewrite.rewrite_prompts`,
        one call at a time with ``generate``.

        Returns:
            list of str, ``len == len(prompts)``.

        Raises:
            EngineError: the language model failed.
        """
        if not prompts:
            return []
        with self._lock:
            return rewrite.rewrite_prompts(
                self.pipe, prompts, instruction, random_weights=self.info.random_weights,
                processor=self._family is _DEV,
            )

