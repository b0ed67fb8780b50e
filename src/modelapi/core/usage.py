"""Billing, in one place: what a completed request costs, and the totals per key.

A completed request is billed once, in the same transaction that completes it (see
:meth:`modelapi.core.jobs.JobStore.finish`), as one row of the ``usage`` ledger.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import catalog
from . import db


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


def record(conn: sa.Connection, request_id: str, owner_key_id: str, model_id: str, units: int, cost_usd: float,
           metadata: dict[str, Any] | None = None, ledger: dict[str, Any] | None = None) -> None:
    """Add the ledger row of a completed request (call inside the completing transaction).
    From the result's ``metadata`` (when given): ``backend``, and for an upstream the provider's
    request id (``upstream.request_id``); from ``ledger`` (what clients never see) the units the
    provider billed (``upstream_units``)."""
    meta = metadata or {}
    upstream = meta.get("upstream")
    upstream = upstream if isinstance(upstream, dict) else {}
    conn.execute(db.usage.insert().values(
        request_id=request_id, owner_key_id=owner_key_id, model_id=model_id,
        billed_units=units, cost_usd=cost_usd, created_at=db.utcnow(),
        backend=meta.get("backend"), upstream_request_id=upstream.get("request_id"),
        upstream_units=(ledger or {}).get("upstream_units"),
    ))


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
