"""Where a FLUX.2 pipeline's weights are, and which diffusers pipeline class they are.

Weights are located without hanging: a local folder is used as is; a hub id is looked up in the
local hub cache first, and the hub is only asked (with a short timeout) when ``HF_HUB_OFFLINE``
is not set. Missing weights raise :class:`~modelapi.errors.EngineError` saying what to do.

:func:`resolve_default_model` picks FLUX.2-klein-4B when present locally, else the tiny
random-weight pipeline of :mod:`modelapi.engine.tiny` (noise images, loudly logged). Loading
itself is :meth:`Flux2Engine.from_pretrained <modelapi.engine.flux2.Flux2Engine.from_pretrained>`
(diffusers' ``from_pretrained``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from modelapi.engine.tiny import is_random_weights, make_tiny
from modelapi.engine.errors import EngineError

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


def locate(model: str) -> tuple[str, Path | None]:
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


def pipeline_class_name(model: str, folder: Path | None) -> str:
    """The diffusers pipeline class of ``model``: ``_class_name`` of ``folder``'s
    ``model_index.json`` when the weights are local, else told from the hub id
    (``"klein"`` -> ``"Flux2KleinPipeline"``, ``"flux.2-dev"`` -> ``"Flux2Pipeline"``).

    Raises:
        EngineError: ``model_index.json`` is unreadable, or the hub id names neither.
    """
    if folder is not None:
        try:
            return json.loads((folder / "model_index.json").read_text())["_class_name"]
        except (OSError, ValueError, KeyError) as exc:
            raise EngineError(
                f"cannot read {folder / 'model_index.json'} ({exc}); an incomplete download? "
                f"run `hf download {model}` again, or pass another --model"
            ) from exc
    if "klein" in model.lower():
        return "Flux2KleinPipeline"
    if "flux.2-dev" in model.lower():
        return "Flux2Pipeline"
    raise EngineError(
        f"cannot tell which FLUX.2 pipeline {model} is: download it and pass the folder "
        "(its model_index.json names the pipeline)"
    )


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

