"""Backends: the ways a request can be run — ``local`` (this worker's engine), ``modelark``
(BytePlus ModelArk's Seedream 4.0), ``jimeng`` (Volcengine's Jimeng 4.0, dreamina edit) and
``runcomfy`` (the hosted Model API, or another modelapi server) — and the routing between them
(``--routes``).

See docs/BACKENDS.md for set-up per provider, routes and fallback.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .. import catalog
from .base import Backend, Job, Rejected, Unavailable
from .routing import Router

if TYPE_CHECKING:
    from ..core.config import Settings
    from ..engine.base import Engine

__all__ = ["Backend", "Job", "Rejected", "Router", "Unavailable", "BACKENDS", "check_routes", "build_router"]

BACKENDS = ("local", "modelark", "jimeng", "runcomfy")
"""The backend names a route may use."""
UPSTREAMS = BACKENDS[1:]
"""The backends that call a provider (no engine): what ``modelapi worker --backends`` may name."""
DREAMINA_EDIT = "bytedance/dreamina-4-0/edit"
JIMENG_MODELS = (DREAMINA_EDIT,)
"""The models the ``jimeng`` backend serves."""


def effective_routes(routes: dict[str, list[str]], env: dict[str, str] | None = None) -> dict[str, list[str]]:
    """``routes`` as they run: dreamina edit's ``modelark`` becomes ``jimeng`` when the Jimeng
    credentials (``MODELAPI_JIMENG_ACCESS_KEY`` and ``MODELAPI_JIMENG_SECRET_KEY``) are set and
    the route does not name ``jimeng`` itself (Jimeng honours ``scale``; ModelArk does not)."""
    env = dict(os.environ if env is None else env)
    has_jimeng = all(env.get(v, "").strip() for v in ("MODELAPI_JIMENG_ACCESS_KEY", "MODELAPI_JIMENG_SECRET_KEY"))
    out = {model: list(names) for model, names in routes.items()}
    names = out.get(DREAMINA_EDIT)
    if has_jimeng and isinstance(names, list) and "modelark" in names and "jimeng" not in names:
        out[DREAMINA_EDIT] = ["jimeng" if n == "modelark" else n for n in names]
    return out


def check_routes(routes: dict[str, list[str]], env: dict[str, str] | None = None) -> None:
    """Check ``--routes`` at start: known model ids, known backend names, at least one per
    route, and the credentials of every upstream backend named.

    Raises:
        ValueError: the message names the model, the backend or the missing environment variable.
    """
    from .jimeng import JimengConfig
    from .modelark import ModelArkConfig
    from .runcomfy import RunComfyConfig

    configs = {"modelark": ModelArkConfig.from_env, "jimeng": JimengConfig.from_env, "runcomfy": RunComfyConfig.from_env}

    for model_id, names in routes.items():
        if catalog.get(model_id) is None:
            raise ValueError(f"--routes: unknown model id {model_id!r}; expected one of {sorted(catalog.models())}")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"--routes: the route of {model_id!r} must be a non-empty list of backend names")
        for name in names:
            if name not in BACKENDS:
                raise ValueError(f"--routes: unknown backend {name!r} for {model_id!r}; expected one of {list(BACKENDS)}")
            if name == "jimeng" and model_id not in JIMENG_MODELS:
                raise ValueError(f"--routes: the jimeng backend serves only {list(JIMENG_MODELS)}, not {model_id!r}")
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
    routes = effective_routes(settings.routes)
    backends: dict[str, Backend] = {"local": LocalBackend(engine)}
    named = {name for names in routes.values() for name in names}
    if "jimeng" in named:
        from .jimeng import JimengBackend, JimengConfig

        backends["jimeng"] = JimengBackend(JimengConfig.from_env(), settings.base_url, settings.url_ttl_s)
    if "modelark" in named:
        from .modelark import ModelArkBackend, ModelArkConfig

        backends["modelark"] = ModelArkBackend(ModelArkConfig.from_env())
    if "runcomfy" in named:
        from .runcomfy import RunComfyBackend, RunComfyConfig

        backends["runcomfy"] = RunComfyBackend(RunComfyConfig.from_env(), settings.base_url, settings.url_ttl_s)
    return Router(routes, backends)
