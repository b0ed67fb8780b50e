"""Billing, in one place: what a completed request costs (and, at submit, the most it can
cost), and the totals per key, model or day.

A completed request is billed once, in the same transaction that completes it (see
:meth:`modelapi.core.jobs.JobStore.finish`), as one row of the ``usage`` ledger; so is a request
stopped while running that kept images (per image kept).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from .. import catalog
from ..series.planner import MAX_TOTAL_IMAGES
from . import db

GroupBy = Literal["key", "model", "day"]


def bill(model: catalog.Model, inputs: dict[str, Any], images: int, prices_usd: dict[str, float]) -> tuple[int, float]:
    """(billed units, cost in USD) of a completed request.

    Seedream bills ``sequential_image_generation_options`` (the cap the caller asked for);
    dreamina bills the images produced (the catalogue's ``billed_by``). The price per unit
    comes from ``--prices-usd`` (default 0.03 USD per unit for each model).
    """
    field = model.task.max_images_field
    if model.task.billed_by == "max_images" and field is not None:
        units = int(inputs.get(field) or images)
    else:
        units = images
    return units, round(units * prices_usd.get(model.model_id, 0.0), 6)


def bill_images(model_id: str, images: int, prices_usd: dict[str, float]) -> tuple[int, float]:
    """(billed units, cost in USD) of a request stopped while running (``POST
    /cancel?running=true``): one unit per image finished and kept, whatever the model bills
    when it completes; (0, 0.0) when none was."""
    return images, round(images * prices_usd.get(model_id, 0.0), 6)


def estimate(model: catalog.Model, inputs: dict[str, Any], prices_usd: dict[str, float]) -> tuple[int, float]:
    """(billed units, cost in USD) the request can cost at most, known at submit: what a budget
    reserves. Seedream: its ``sequential_image_generation_options`` (exactly what it bills);
    dreamina: one image with ``force_single``, else the most images it can produce
    (15 less the references)."""
    field = model.task.max_images_field
    if model.task.billed_by == "max_images" and field is not None and inputs.get(field):
        units = int(inputs[field])
    elif inputs.get("force_single"):
        units = 1
    else:
        refs = inputs.get(model.task.image_field, []) if model.task.image_field else []
        units = max(1, MAX_TOTAL_IMAGES - len(refs))
    return units, round(units * prices_usd.get(model.model_id, 0.0), 6)


def record(conn: sa.Connection, request_id: str, owner_key_id: str, model_id: str, units: int, cost_usd: float,
           images: int | None = None, metadata: dict[str, Any] | None = None,
           ledger: dict[str, Any] | None = None) -> None:
    """Add the ledger row of a completed request (call inside the completing transaction);
    ``images``: how many it produced. From the result's ``metadata`` (when given): ``backend``,
    and for an upstream the provider's request id (``upstream.request_id``); from ``ledger``
    (what clients never see) the units the provider billed (``upstream_units``)."""
    meta = metadata or {}
    upstream = meta.get("upstream")
    upstream = upstream if isinstance(upstream, dict) else {}
    conn.execute(db.usage.insert().values(
        request_id=request_id, owner_key_id=owner_key_id, model_id=model_id,
        billed_units=units, cost_usd=cost_usd, created_at=db.utcnow(), images=images,
        backend=meta.get("backend"), upstream_request_id=upstream.get("request_id"),
        upstream_units=(ledger or {}).get("upstream_units"),
    ))


def spent_since(conn: sa.Connection, owner_key_id: str, start: datetime | None) -> float:
    """The key's billed cost (USD) since ``start`` (None: ever), from the ledger."""
    U = db.usage.c
    query = sa.select(sa.func.coalesce(sa.func.sum(U.cost_usd), 0.0)).where(U.owner_key_id == owner_key_id)
    if start is not None:
        query = query.where(U.created_at >= start)
    return float(conn.execute(query).scalar_one())


def summary(engine: sa.Engine, group_by: GroupBy, *, key_id: str | None = None, start: datetime | None = None,
            end: datetime | None = None) -> list[dict[str, Any]]:
    """The ledger's completed requests grouped by ``group_by``, in ``[start, end)`` of their
    completion time (None: unbounded), of one key when ``key_id`` is given. Each row:
    ``{"key_id" | "model_id" | "day" (YYYY-MM-DD, UTC), "requests", "images", "billed_units",
    "cost_usd"}``, ordered by the group (``key`` rows add ``name``; oldest key first)."""
    U = db.usage.c
    if group_by == "day":
        if engine.dialect.name == "sqlite":
            group: sa.ColumnElement[Any] = sa.func.strftime("%Y-%m-%d", U.created_at)
        else:
            group = sa.func.to_char(sa.func.timezone("UTC", U.created_at), "YYYY-MM-DD")
    else:
        group = U.owner_key_id if group_by == "key" else U.model_id
    name = {"key": "key_id", "model": "model_id", "day": "day"}[group_by]
    query = sa.select(
        group.label(name), sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(U.images), 0).label("images"),
        sa.func.coalesce(sa.func.sum(U.billed_units), 0).label("billed_units"),
        sa.func.coalesce(sa.func.sum(U.cost_usd), 0.0).label("cost_usd"),
    ).group_by(group).order_by(group)
    if key_id is not None:
        query = query.where(U.owner_key_id == key_id)
    if start is not None:
        query = query.where(U.created_at >= start)
    if end is not None:
        query = query.where(U.created_at < end)
    with engine.connect() as conn:
        rows = [dict(r) | {"cost_usd": round(float(r["cost_usd"]), 6)} for r in conn.execute(query).mappings()]
        if group_by == "key":
            K = db.api_keys.c
            keys = {k.id: (k.name, k.created_at) for k in conn.execute(sa.select(K.id, K.name, K.created_at))}
            rows = sorted(({**r, "name": keys.get(r["key_id"], (None, None))[0]} for r in rows),
                          key=lambda r: (str(keys.get(r["key_id"], (None, ""))[1]), r["key_id"]))
    return rows


def totals(engine: sa.Engine) -> list[dict[str, Any]]:
    """Per key, oldest key first: ``{id, name, prefix, requests, completed, billed_units, cost_usd}``."""
    K, U, R = db.api_keys.c, db.usage.c, db.requests.c
    requests = sa.select(R.owner_key_id, sa.func.count().label("n")).group_by(R.owner_key_id).subquery()
    billed = (
        sa.select(U.owner_key_id, sa.func.count().label("n"), sa.func.sum(U.billed_units).label("units"),
                  sa.func.sum(U.cost_usd).label("cost"))
        .group_by(U.owner_key_id).subquery()
    )
    query = (
        sa.select(
            K.id, K.name, K.prefix,
            sa.func.coalesce(requests.c.n, 0).label("requests"),
            sa.func.coalesce(billed.c.n, 0).label("completed"),
            sa.func.coalesce(billed.c.units, 0).label("billed_units"),
            sa.func.coalesce(billed.c.cost, 0.0).label("cost_usd"),
        )
        .select_from(db.api_keys.outerjoin(requests, requests.c.owner_key_id == K.id)
                     .outerjoin(billed, billed.c.owner_key_id == K.id))
        .order_by(K.created_at)
    )
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
