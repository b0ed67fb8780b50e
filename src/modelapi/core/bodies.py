"""The JSON bodies of the contract (README, "The API") that more than one role writes: the status body (status routes and
streams) and the result body (the result route, and webhook deliveries sent by workers).
Absolute URLs are built on ``base_url``, the base the client reached the API at."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from ..types import Status
from .db import iso
from .jobs import Request
from .storage import Storage


def urls(base_url: str, request_id: str) -> dict[str, str]:
    base = f"{base_url}/v1/requests/{request_id}"
    return {"status_url": f"{base}/status", "result_url": f"{base}/result", "cancel_url": f"{base}/cancel"}


def status_body(base_url: str, request_id: str, status: Status, progress: float | None, position: int | None,
                partial_urls: list[str] | None = None) -> dict[str, Any]:
    """``{"request_id", "status", "queue_position" (in_queue only), "progress" (in_progress
    only), "partial_output": {"images": [url]} (in_progress, once images of the series are
    stored), "status_url", "result_url"}``."""
    body: dict[str, Any] = {"request_id": request_id, "status": status.value}
    if status is Status.IN_QUEUE:
        body["queue_position"] = position
    if status is Status.IN_PROGRESS:
        body["progress"] = progress or 0.0
        if partial_urls:
            body["partial_output"] = {"images": partial_urls}
    links = urls(base_url, request_id)
    body["status_url"], body["result_url"] = links["status_url"], links["result_url"]
    return body


def partial_urls(storage: Storage, keys: list[str] | None, url_ttl_s: float, base_url: str) -> list[str] | None:
    """URLs of the images stored so far, valid ``url_ttl_s`` seconds from now."""
    return [storage.url(k, time.time() + url_ttl_s, base_url) for k in keys] if keys else None


def request_status_body(req: Request, *, base_url: str, storage: Storage, url_ttl_s: float) -> dict[str, Any]:
    """:func:`status_body` of ``req`` as a client sees it (:meth:`Request.shown`: in_queue at an
    upstream's queue position while the upstream queues it), with the URLs of its stored images
    while in_progress."""
    status, progress, position = req.shown()
    partial = partial_urls(storage, req.partial_outputs, url_ttl_s, base_url) if status is Status.IN_PROGRESS else None
    return status_body(base_url, req.request_id, status, progress, position, partial)


def result_body(req: Request, *, base_url: str, storage: Storage, url_ttl_s: float, include_cost: bool,
                include_webhook: bool = True) -> dict[str, Any]:
    """The result of a terminal request (output images under URLs valid ``url_ttl_s`` seconds
    after it finished, seed, metadata or error, times, cost in USD when ``include_cost``, and
    the webhook's delivery state when one was given: ``{"url", "attempts", "last_status_code",
    "delivered_at"}``, and ``"events"`` (the same but url, per intermediate event) with
    ``?webhook_intermediate_status=true``); the status body otherwise. A request
    stopped while running (cancelled) has the ``output`` and ``seed`` of the images it kept; one
    cancelled at its deadline has ``error`` (``code: "deadline"``). Once its files were
    deleted (``req.deleted_at``: retention or ``DELETE``), no output, seed or metadata but
    ``"deleted_at"`` (the result route answers 410 instead: :func:`expired`)."""
    if not req.status.is_terminal:
        return request_status_body(req, base_url=base_url, storage=storage, url_ttl_s=url_ttl_s)
    body: dict[str, Any] = {"request_id": req.request_id, "status": req.status.value}
    if req.deleted_at is not None:
        body["deleted_at"] = iso(req.deleted_at)
        if req.status in (Status.FAILED, Status.CANCELLED) and req.error:
            body["error"] = req.error
    elif req.status is Status.COMPLETED or (req.status is Status.CANCELLED and req.outputs):
        assert req.finished_at is not None
        expires = req.finished_at + timedelta(seconds=url_ttl_s)
        images = [storage.url(k, expires.timestamp(), base_url) for k in req.outputs or []]
        body["output"] = {"images": images, **({"image": images[0]} if len(images) == 1 else {})}
        body["seed"] = req.seed
        if req.status is Status.COMPLETED:
            body["metadata"] = req.metadata
    if req.status is not Status.COMPLETED and req.error:
        body["error"] = req.error
    body["created_at"], body["finished_at"] = iso(req.created_at), iso(req.finished_at)
    if include_cost:
        body["cost"] = req.cost_usd or 0.0
    if include_webhook and req.webhook:
        state = ("attempts", "last_status_code", "delivered_at")
        body["webhook"] = {k: req.webhook.get(k) for k in ("url", *state)}
        if req.webhook.get("intermediate_status"):
            body["webhook"]["events"] = [{k: e.get(k) for k in state} for e in req.webhook.get("events") or []]
    return body


def expired(req: Request) -> tuple[str, dict[str, Any]]:
    """The message and detail of the 410 that ``GET /result`` answers for a request whose files
    were deleted: ``{"request_id", "status", "deleted_at"}``."""
    assert req.deleted_at is not None
    when = iso(req.deleted_at)
    return (f"the outputs and inputs of request {req.request_id} expired (were deleted) at {when}; "
            "its status still answers"), {"request_id": req.request_id, "status": req.status.value, "deleted_at": when}
