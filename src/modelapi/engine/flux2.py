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
``torch.Generator`` per image. Two pipeline calls for any N.

Weights are located without hanging: a local folder is used as is; a hub id is looked up in the
local hub cache first, and the hub is only asked (with a short timeout) when ``HF_HUB_OFFLINE``
is not set. Missing weights raise :class:`~modelapi.errors.EngineError` saying what to do.

:func:`resolve_default_model` picks FLUX.2-klein-4B when present locally, else the tiny
random-weight pipeline of :mod:`modelapi.engine.tiny` (noise images, loudly logged).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from modelapi.engine.base import GenerationSpec, ProgressCallback, StopCheck
from modelapi.engine.params import crop_center
from modelapi.engine.tiny import is_random_weights, make_tiny
from modelapi.errors import EngineError, GenerationStopped

logger = logging.getLogger("modelapi.engine")

DEFAULT_MODEL_ID = "black-forest-labs/FLUX.2-klein-4B"
"""The default weights (Apache-2.0, ~4 B transformer + Qwen3-4B text encoder)."""

TINY_DIRNAME = "tiny-flux2-klein"
"""Folder under the data dir where the tiny random-weight pipeline is built on first use."""

LOCAL_KLEIN_DIRNAME = "FLUX.2-klein-4B"
"""Folder under the data dir that :func:`resolve_default_model` checks for real klein weights
(``hf download black-forest-labs/FLUX.2-klein-4B --local-dir <data_dir>/FLUX.2-klein-4B``)."""

HUB_TIMEOUT_S = 5.0
"""How long the hub may take to answer the "does this model exist" probe, seconds."""

REWRITE_MAX_NEW_TOKENS = 60
"""Most tokens :meth:`Flux2Engine.rewrite_prompts` generates per prompt."""

REWRITE_MAX_TIME_S = 20.0
"""Most time :meth:`Flux2Engine.rewrite_prompts` spends generating one prompt, seconds."""

PIPELINE_MAX_REFERENCE_PX = 1024 * 1024
"""The pipelines resize each reference to at most this area (pixels) before encoding it."""


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
"""Flux2 pipelines refuse references under 64 px a side (ENGINE.md)."""


def _missing_weights_message(model: str, why: str) -> str:
    return (
        f"weights for {model} not found locally and {why}: download them with "
        f"`hf download {model}` on a connected machine (then copy the hub cache, or pass the "
        "folder with --model PATH), or run `modelapi model make-tiny PATH` for a tiny "
        "random-weight pipeline (noise images) and pass --model PATH"
    )


def _hub_offline() -> bool:
    import huggingface_hub.constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE) or env in {"1", "ON", "YES", "TRUE"}


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "./", "../", "~", "\\"))
        or model.count("/") > 1
        or (len(model) > 1 and model[1] == ":")  # C:\...
    )


def _cached_snapshot(repo_id: str) -> Path | None:
    """The local hub-cache folder of ``repo_id`` (no network), or None when not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        return None


def _locate(model: str) -> tuple[str, Path | None]:
    """Where to load ``model`` from: ``(source for from_pretrained, local folder or None)``.

    Raises:
        EngineError: not found locally, and the hub is off (``HF_HUB_OFFLINE``) or unreachable,
            or has no such model.
    """
    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise EngineError(
                f"{folder} is not a diffusers pipeline folder (no model_index.json); pass the "
                "folder made by `hf download` or `modelapi model make-tiny PATH`"
            )
        return str(folder), folder
    if _looks_like_path(model) or folder.exists():
        raise EngineError(
            f"model folder {model} does not exist: pass a folder holding model_index.json, "
            f"a hub id such as {DEFAULT_MODEL_ID}, or run `modelapi model make-tiny {model}` "
            "for a tiny random-weight pipeline"
        )
    snapshot = _cached_snapshot(model)
    if snapshot is not None:
        return str(snapshot), snapshot
    if _hub_offline():
        raise EngineError(_missing_weights_message(model, "HF_HUB_OFFLINE is set"))
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(model, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as exc:
        raise EngineError(
            f"{model} is gated on the hub: accept its licence on huggingface.co and log in "
            "with `hf auth login`, or pass --model PATH to downloaded weights"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise EngineError(f"no model {model} on the hub (or it is private): check the id") from exc
    except Exception as exc:  # connection refused, DNS, timeout, proxy errors...
        raise EngineError(
            _missing_weights_message(model, f"the hub is unreachable ({type(exc).__name__})")
        ) from exc
    return model, None


def _family_for(model: str, folder: Path | None) -> _Family:
    if folder is not None:
        try:
            class_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
        except (OSError, ValueError, KeyError) as exc:
            raise EngineError(
                f"cannot read {folder / 'model_index.json'} ({exc}); an incomplete download? "
                f"run `hf download {model}` again, or pass another --model"
            ) from exc
    elif "klein" in model.lower():
        class_name = "Flux2KleinPipeline"
    elif "flux.2-dev" in model.lower():
        class_name = "Flux2Pipeline"
    else:
        raise EngineError(
            f"cannot tell which FLUX.2 pipeline {model} is: download it and pass the folder "
            "(its model_index.json names the pipeline)"
        )
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


class Flux2Engine:
    """A FLUX.2 pipeline loaded once and kept warm; implements :class:`~modelapi.engine.base.Engine`.

    Args:
        model (`str`): a hub id (e.g. ``"black-forest-labs/FLUX.2-klein-4B"``) or a local
            pipeline folder (holding ``model_index.json``).
        device (`str`, default ``"auto"``): ``"auto"`` = cuda, then mps, then cpu; or a torch
            device string. bfloat16 on cuda/mps, float32 on cpu.

    Attributes:
        info (`dict`): ``{"engine": "flux2-klein" | "flux2-dev", "weights": model,
            "random_weights": bool, "device": str, "dtype": str, "default_steps": int,
            "default_guidance": float}``.

    Raises:
        EngineError: weights missing (with what to do), unreadable, or the device unusable.

    ``generate`` and ``rewrite_prompts`` hold a lock: one call runs at a time per engine.
    """

    def __init__(self, model: str, *, device: str = "auto") -> None:
        import diffusers
        import torch

        torch_device = _pick_device(device)
        source, folder = _locate(model)
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
        try:
            pipe.to(torch_device)
        except torch.OutOfMemoryError as exc:
            raise EngineError(f"{model} does not fit in {torch_device} memory: {exc}") from exc
        random_weights = folder is not None and is_random_weights(folder)
        self._setup(pipe, weights=model, random_weights=random_weights, family=family)

    @classmethod
    def from_pipeline(cls, pipe: Any, *, weights: str, random_weights: bool) -> Flux2Engine:
        """Wrap an already built pipeline (on its device), e.g. a random-weight full-size
        architecture for benchmarks. ``weights`` is what ``info["weights"]`` reports."""
        family = _FAMILY_BY_CLASS.get(type(pipe).__name__)
        if family is None:
            raise EngineError(f"{type(pipe).__name__} is not a FLUX.2 pipeline this engine runs")
        engine = cls.__new__(cls)
        engine._setup(pipe, weights=weights, random_weights=random_weights, family=family)
        return engine

    def _setup(self, pipe: Any, *, weights: str, random_weights: bool, family: _Family) -> None:
        if family is _KLEIN and not pipe.config.get("is_distilled", False):
            family = _KLEIN_BASE
        pipe.set_progress_bar_config(disable=True)
        pipe.vae.enable_slicing()  # pass 2 decodes its N-1 images one at a time: bounded memory
        self.pipe = pipe
        self._family = family
        self._lock = threading.Lock()
        self._out_layers = text_encoder_out_layers(pipe)
        self._multiple = pipe.vae_scale_factor * 2
        device = pipe.transformer.device
        self.device = device
        self.info: dict[str, Any] = {
            "engine": family.engine,
            "weights": weights,
            "random_weights": random_weights,
            "device": str(device),
            "dtype": str(pipe.transformer.dtype).removeprefix("torch."),
            "default_steps": family.default_steps,
            "default_guidance": family.default_guidance,
        }
        if random_weights:
            logger.warning(
                "engine %s runs RANDOM WEIGHTS from %s: every image will be noise",
                family.engine,
                weights,
            )

    # -- generation ---------------------------------------------------------------------------

    def guidance_for(self, spec: GenerationSpec) -> float:
        """The ``guidance_scale`` passed to the pipeline for ``spec``.

        ``spec.guidance_scale`` when set; else the family default, scaled by dreamina's
        ``spec.scale`` (text influence, 0..1) where guidance acts (dev; klein base):
        ``default * (0.5 + scale)``, so 0 -> half, 0.5 (dreamina's default) -> the default,
        1 -> 1.5x. Step-distilled klein ignores guidance (it gets 1.0).
        """
        if spec.guidance_scale is not None:
            return float(spec.guidance_scale)
        guidance = self._family.default_guidance
        if spec.scale is not None and self._family.guidance_used:
            guidance *= 0.5 + spec.scale
        return guidance

    def reference_area_for(self, spec: GenerationSpec) -> int:
        """Most pixels (width x height) each of the user's references is given to the model.

        Dreamina's ``spec.scale`` (text influence, 0..1) maps onto the one lever that
        step-distilled klein has (it ignores guidance): how much detail of the user's references
        the model sees. ``area = clamp(1.75 - 1.5 * scale, 0.25, 1.0)`` megapixels: scale <= 0.5
        (dreamina's default) keeps the pipeline's own 1 MP (~4096 tokens per reference); scale 1
        gives 0.25 MP (~1024 tokens), so the references weigh less in joint attention and the
        text more. This is a heuristic, not a calibrated control. Families where guidance acts
        (dev, klein base) use guidance instead (:meth:`guidance_for`) and keep 1 MP.
        """
        if spec.scale is None or self._family.guidance_used:
            return PIPELINE_MAX_REFERENCE_PX
        megapixels = min(1.0, max(0.25, 1.75 - 1.5 * spec.scale))
        return int(megapixels * PIPELINE_MAX_REFERENCE_PX)

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
        self, spec: GenerationSpec, progress: ProgressCallback, should_stop: StopCheck
    ) -> list[Image.Image]:
        """Make ``spec.count`` images of ``spec.requested_size`` by reference chaining.

        Pass 1: ``prompts[0]`` with the user's references (``image=``, when any) and a generator
        seeded ``spec.seed``. Pass 2 (count > 1): ``prompts[1:]`` in one batched call with
        ``[image 1] + references``, image ``i`` seeded ``spec.seed + i``. Generators live on the
        CPU except on cuda, so the same spec gives pixel-identical images on CPU. Both passes
        run at ``spec.width`` x ``spec.height`` (multiples of 16, image 1 is chained uncropped);
        every image is then cropped centrally to ``spec.requested_size``
        (:func:`~modelapi.engine.params.crop_center`): exact sizes, no distortion, no padding.
        Steps: ``spec.num_inference_steps`` or the family default; guidance: :meth:`guidance_for`;
        user references are first downsized to :meth:`reference_area_for`.

        Args:
            spec: the planned request (``width``/``height`` multiples of 16, each at most 15 px
                above ``requested_size``).
            progress: called after each step with the fraction done over the whole series
                (both passes), non-decreasing, ending at 1.0.
            should_stop: polled before each pass and after each step.

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
            )
            images = first
            if spec.count > 1:
                images = first + self._call(
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
                )
        for image in images:
            if image.size != (spec.width, spec.height):
                raise EngineError(
                    f"pipeline made {image.size[0]}x{image.size[1]}, not {spec.width}x{spec.height}"
                )
        return [crop_center(image, spec.requested_size) for image in images]

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
    ) -> list[Image.Image]:
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

        try:
            result = self.pipe(
                image=references or None,
                prompt=prompts,
                height=spec.height,
                width=spec.width,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                callback_on_step_end=on_step_end,
                text_encoder_out_layers=self._out_layers,
            )
        except GenerationStopped:
            raise
        except torch.OutOfMemoryError as exc:
            raise EngineError(
                f"out of memory making {len(prompts)} image(s) of {spec.width}x{spec.height} "
                f"with {len(references)} reference(s) on {self.device}"
            ) from exc
        except Exception as exc:
            raise EngineError(f"generation failed ({type(exc).__name__}: {exc})") from exc
        return list(result.images)

    # -- prompt rewriting ---------------------------------------------------------------------

    def rewrite_prompts(self, prompts: list[str], instruction: str) -> list[str]:
        """Rewrite each prompt with the pipeline's own text encoder used as a causal LM
        (``optimize_prompt_options="standard"``), in the prompt's own language as
        ``instruction`` asks (:func:`~modelapi.engine.planner.rewrite_instruction` says why).

        Each prompt is sent as ``[system: instruction, user: prompt]`` through the tokenizer's
        chat template (thinking off) and answered greedily, at most
        :data:`REWRITE_MAX_NEW_TOKENS` tokens and :data:`REWRITE_MAX_TIME_S` seconds per prompt.
        An empty answer keeps that prompt unchanged. With random weights the answer is garbage:
        generation runs once (for the first prompt, so the path is exercised) and ``prompts``
        are returned unchanged.

        Returns:
            list of str, ``len == len(prompts)``.

        Raises:
            EngineError: the language model failed.
        """
        if not prompts:
            return []
        with self._lock:
            try:
                if self.info["random_weights"]:
                    self._chat(instruction, prompts[0])
                    return list(prompts)
                return [self._chat(instruction, p) or p for p in prompts]
            except EngineError:
                raise
            except Exception as exc:
                raise EngineError(f"prompt rewriting failed ({type(exc).__name__}: {exc})") from exc

    def _chat(self, instruction: str, prompt: str) -> str:
        import torch

        tokenizer = self.pipe.tokenizer
        if self._family is _DEV:  # a PixtralProcessor: content is a list of parts
            messages = [
                {"role": "system", "content": [{"type": "text", "text": instruction}]},
                {"role": "user", "content": [{"type": "text", "text": prompt}]},
            ]
            inputs = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
            )
            text_tokenizer = tokenizer.tokenizer
        else:
            messages = [{"role": "system", "content": instruction}, {"role": "user", "content": prompt}]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
            inputs = tokenizer(text, return_tensors="pt")
            text_tokenizer = tokenizer
        model = self.pipe.text_encoder
        inputs = {k: v.to(model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                max_new_tokens=REWRITE_MAX_NEW_TOKENS,
                max_time=REWRITE_MAX_TIME_S,
                do_sample=False,
                pad_token_id=text_tokenizer.pad_token_id,
                eos_token_id=text_tokenizer.eos_token_id,
            )
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        answer = text_tokenizer.decode(new_tokens, skip_special_tokens=True)
        answer = re.sub(r"<think>.*?(</think>|$)", "", answer, flags=re.DOTALL)
        return " ".join(answer.split())


def resolve_default_model(data_dir: Path) -> tuple[str, bool]:
    """The weights to run when none were named: ``(model for Flux2Engine, is_random)``.

    In order: ``data_dir/FLUX.2-klein-4B`` (a pipeline folder); FLUX.2-klein-4B in the local hub
    cache (returned as the hub id; no network); else the tiny random-weight pipeline at
    ``data_dir/tiny-flux2-klein``, built on first use with
    :func:`~modelapi.engine.tiny.make_tiny` (about a second), with a loud warning: its images
    are noise.
    """
    data_dir = Path(data_dir).expanduser()
    local = data_dir / LOCAL_KLEIN_DIRNAME
    if (local / "model_index.json").is_file():
        return str(local), is_random_weights(local)
    snapshot = _cached_snapshot(DEFAULT_MODEL_ID)
    if snapshot is not None:
        return DEFAULT_MODEL_ID, is_random_weights(snapshot)
    tiny = data_dir / TINY_DIRNAME
    if not (tiny / "model_index.json").is_file():
        make_tiny(tiny)
    logger.warning(
        "%s not found locally (no %s, not in the hub cache): using the TINY RANDOM-WEIGHT "
        "pipeline at %s; every image will be NOISE. Download real weights with "
        "`hf download %s` or pass --model PATH.",
        DEFAULT_MODEL_ID,
        local,
        tiny,
        DEFAULT_MODEL_ID,
    )
    return str(tiny), True

