"""Backends: the ways a request can be run — ``local`` (this worker's engine), ``modelark``
(BytePlus ModelArk's Seedream 4.0) and ``runcomfy`` (the hosted Model API, or another modelapi
server) — and the routing between them (``--routes``).

See docs/BACKENDS.md for set-up per provider, routes and fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import catalog
from .base import Backend, Job, Rejected, Unavailable
from .routing import Router

if TYPE_CHECKING:
    from ..core.config import Settings
    from ..engine.base import Engine

__all__ = ["Backend", "Job", "Rejected", "Router", "Unavailable", "BACKENDS", "check_routes", "build_router"]

BACKENDS = ("local", "modelark", "runcomfy")
"""The backend names a route may use."""


def check_routes(routes: dict[str, list[str]], env: dict[str, str] | None = None) -> None:
    """Check ``--routes`` at start: known model ids, known backend names, at least one per
    route, and the credentials of every upstream backend named.

    Raises:
        ValueError: the message names the model, the backend or the missing environment variable.
    """
    from .modelark import ModelArkConfig
    from .runcomfy import RunComfyConfig

    configs = {"modelark": ModelArkConfig.from_env, "runcomfy": RunComfyConfig.from_env}

    for model_id, names in routes.items():
        if catalog.get(model_id) is None:
            raise ValueError(f"--routes: unknown model id {model_id!r}; expected one of {sorted(catalog.models())}")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"--routes: the route of {model_id!r} must be a non-empty list of backend names")
        for name in names:
            if name not in BACKENDS:
                raise ValueError(f"--routes: unknown backend {name!r} for {model_id!r}; expected one of {list(BACKENDS)}")
            if name in configs:
                try:
                    configs[name](env)
                except ValueError as exc:
                    raise ValueError(f"--routes names the {name} backend for {model_id!r}, but {exc}") from None


def build_router(settings: Settings, engine: Engine) -> Router:
    """The router of a worker: ``local`` on ``engine`` and each upstream its routes name.

    Raises:
        ValueError: see :func:`check_routes`.
    """
    from .local import LocalBackend

    check_routes(settings.routes)
    backends: dict[str, Backend] = {"local": LocalBackend(engine)}
    named = {name for names in settings.routes.values() for name in names}
    if "modelark" in named:
        from .modelark import ModelArkBackend, ModelArkConfig

        backends["modelark"] = ModelArkBackend(ModelArkConfig.from_env())
    if "runcomfy" in named:
        from .runcomfy import RunComfyBackend, RunComfyConfig

        backends["runcomfy"] = RunComfyBackend(RunComfyConfig.from_env(), settings.base_url, settings.url_ttl_s)
    return Router(settings.routes, backends)
