"""Generation engines. :func:`load_engine` picks one from the settings."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import EngineError

if TYPE_CHECKING:
    from ..core.config import Settings
    from .base import Engine


def load_engine(settings: "Settings") -> "Engine":
    """The engine named by ``settings.engine``: ``"flux2"`` (diffusers FLUX.2, weights from
    ``settings.model`` or :func:`~modelapi.engine.weights.resolve_default_model`; ``device``, ``vae_tiling_pixels``,
    ``compile``, ``offload`` and ``attention_backend`` from the settings, see
    :meth:`~modelapi.engine.flux2.Flux2Engine.from_pretrained`; warmed up before it is returned), or
    ``"module:factory"`` — a callable taking the settings and returning an engine (used by
    tests).

    Raises:
        EngineError: the weights could not be found or loaded (with what to do about it).
    """
    if settings.engine == "flux2":
        from .flux2 import Flux2Engine
        from .weights import resolve_default_model

        model = settings.model
        if model is None:
            model, _ = resolve_default_model(settings.data_dir)
        return Flux2Engine.from_pretrained(
            model,
            device=settings.device,
            vae_tiling_pixels=settings.vae_tiling_pixels,
            compile=settings.compile,
            offload=settings.offload,
            attention_backend=settings.attention_backend,
        )
    module_name, _, attr = settings.engine.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"--engine {settings.engine!r}: expected 'flux2' or 'module:factory' ({exc})") from None
    return factory(settings)
