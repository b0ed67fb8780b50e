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

__all__ = ["Backend", "Job", "Rejected", "Router", "Unavailable", "BACKENDS", "UPSTREAMS", "check_routes", "build_router",
           "check_upstream_worker", "effective_routes", "entry_kind", "upstream_names"]

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


def upstream_names(routes: dict[str, list[str]]) -> set[str]:
    """The upstream backends ``routes`` name (as they run: :func:`effective_routes`)."""
    return {n for names in effective_routes(routes).values() for n in names if n != "local"}


def check_upstream_worker(routes: dict[str, list[str]], names: list[str]) -> None:
    """Check ``modelapi worker --backends NAMES`` against the routes: only upstream names, and
    every upstream the routes name (any upstream worker may take any upstream job).

    Raises:
        ValueError: the message names the backend.
    """
    for name in names:
        if name not in UPSTREAMS:
            raise ValueError(f"--backends: {name!r} is not an upstream backend; expected some of {list(UPSTREAMS)} "
                             "(a worker without --backends runs local jobs)")
    missing = sorted(upstream_names(routes) - set(names))
    if missing:
        raise ValueError(f"--backends must include every upstream backend the routes name: {missing} missing")


def entry_kind(routes: dict[str, list[str]], model_id: str) -> str:
    """The queue a new request of ``model_id`` goes on: ``"run"`` (local) when its route starts
    with ``local`` (every model not named), else ``"upstream"``."""
    route = routes.get(model_id) or ["local"]
    return "run" if route[0] == "local" else "upstream"


def build_router(settings: Settings, engine: Engine | None, names: set[str] | None = None) -> Router:
    """The router of a worker: ``local`` on ``engine`` (when given) and each upstream its
    routes name (only those of ``names`` when given: a GPU worker passes none).

    Raises:
        ValueError: see :func:`check_routes`.
    """
    check_routes(settings.routes)
    routes = effective_routes(settings.routes)
    backends: dict[str, Backend] = {}
    if engine is not None:
        from .local import LocalBackend

        backends["local"] = LocalBackend(engine)
    named = upstream_names(settings.routes) & (set(UPSTREAMS) if names is None else set(names))
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
