"""Routes of accounts: the admin API (``/v1/admin/...``, admin keys only: 403 403003 for a user
key) and every key's self-service (``GET /v1/keys/me``, ``GET /v1/usage``). Thin: parse,
authorise, one call to the service's :class:`~modelapi.core.accounts.Accounts` (or the job
store's reads); the shapes below are the response models, so /openapi.json documents them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, BeforeValidator, Field
from starlette.concurrency import run_in_threadpool

from ..core import usage
from ..core.accounts import Accounts, KeyFields, Period, Role
from ..core.auth import ApiKey
from ..errors import ValidationError
from ..types import Status
from . import schemas
from .schemas import StatusName
from .service import Service

router = APIRouter()


# -- shapes -----------------------------------------------------------------------------------
class KeyCreate(KeyFields):
    """The body of ``POST /v1/admin/keys``: every field optional."""


class KeyChange(KeyFields):
    """The body of ``PATCH /v1/admin/keys/{id}``: the fields to change; ``null`` removes a limit."""


class KeyState(BaseModel):
    """A key (never its secret) and where its limits stand now."""

    id: str
    name: str
    prefix: str = Field(description="The key's first characters, for recognising it")
    role: Role
    created_at: str
    last_used_at: str | None = Field(description="Its last submit, or its last call (written at most once a minute)")
    expires_at: str | None
    revoked_at: str | None
    models: list[str] = Field(description="Model ids it may submit to; empty: all")
    rpm: int | None = Field(description="Submits per UTC minute; null: unlimited")
    max_queued: int | None = Field(description="Requests in_queue at once; null: the server's --max-queued-per-key")
    max_running: int | None = Field(description="Requests in_progress at once; null: the server's --max-running-per-key")
    budget_usd: float | None = Field(description="Most cost per budget_period, USD; null: no budget")
    budget_period: Period | None
    budget_spent_usd: float | None = Field(description="Cost of its completed requests in the current period")
    budget_reserved_usd: float | None = Field(description="Most its queued and running requests may still cost")
    budget_remaining_usd: float | None = Field(description="budget_usd less spent and reserved; null: no budget")
    budget_resets_at: str | None = Field(description="When the period ends (null: no budget, or total)")
    rate_remaining: int | None = Field(description="Submits left in this minute; null: no rpm")
    rate_resets_at: str = Field(description="When the current minute ends")
    queued: int
    running: int


class KeyCreated(KeyState):
    key: str = Field(description="The secret (`mapi_...`): shown only in this answer")


class KeyList(BaseModel):
    keys: list[KeyState] = Field(description="Oldest first")


class UsageRow(BaseModel):
    key_id: str | None = Field(None, description="group_by=key")
    name: str | None = Field(None, description="group_by=key: the key's name")
    model_id: str | None = Field(None, description="group_by=model")
    day: str | None = Field(None, description="group_by=day: YYYY-MM-DD (UTC)")
    requests: int = Field(description="Completed (billed) requests")
    images: int
    billed_units: int
    cost_usd: float


class UsageReport(BaseModel):
    group_by: Literal["key", "model", "day"]
    from_: str | None = Field(alias="from", description="Inclusive; null: from the start")
    to: str | None = Field(description="Exclusive; null: until now")
    rows: list[UsageRow]
    requests: int = Field(description="Totals over the rows")
    images: int
    billed_units: int
    cost_usd: float


class AdminRequestItem(schemas.RequestItem):
    key_id: str = Field(description="The key that submitted it")


class AdminRequestPage(BaseModel):
    requests: list[AdminRequestItem] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class WorkerInfo(BaseModel):
    worker_id: str
    host: str
    pid: int
    engine: dict[str, Any]
    current_request: str | None
    draining: bool
    started_at: float = Field(description="Unix seconds (the database's clock)")
    heartbeat_age_s: float


class WorkerList(BaseModel):
    workers: list[WorkerInfo] = Field(description="Live workers, oldest first")


class ModelQueue(BaseModel):
    model_id: str
    queued: int
    running: int
    oldest_queued_at: str | None
    oldest_wait_s: float | None = Field(description="Seconds the oldest queued request has waited")


class QueueInfo(BaseModel):
    queued: int
    running: int
    oldest_queued_at: str | None
    oldest_wait_s: float | None
    models: list[ModelQueue]


# -- dependencies -----------------------------------------------------------------------------
def _service(request: Request) -> Service:
    return request.app.state.service


def api_key(request: Request, authorization: str | None = Header(None, alias="Authorization",
                                                                 description="`Bearer <API key>`")) -> ApiKey:
    """The calling key. 401 (401001): missing, unknown, revoked or expired."""
    token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
    return _service(request).accounts.authenticate(token or None)


def admin_key(key: ApiKey = Depends(api_key)) -> ApiKey:
    """The calling key, an admin key. 403 (403003) for a user key."""
    return Accounts.require_admin(key)


Admin = Depends(admin_key)
AnyKey = Depends(api_key)
ADMIN_ERRORS = schemas.errors(401, 403)
def _iso_8601(value: Any) -> Any:
    """Only ISO 8601 text reaches the datetime parse (pydantic alone would also take a number as
    a Unix time, which the documented ``format: date-time`` does not allow)."""
    if isinstance(value, str) and not (value[:4].isdigit() and value[4:5] == "-"):
        raise ValueError("must be an ISO 8601 date or time, e.g. 2026-12-01 or 2026-12-01T00:00:00Z")
    return value


From = Annotated[datetime | None, BeforeValidator(_iso_8601),
                 Query(alias="from", description="ISO 8601 date or time (UTC when no offset), inclusive")]
To = Annotated[datetime | None, BeforeValidator(_iso_8601),
               Query(alias="to", description="ISO 8601 date or time (UTC when no offset), exclusive")]


def _report(engine: Any, group_by: usage.GroupBy, key_id: str | None, start: datetime | None,
            end: datetime | None) -> dict[str, Any]:
    start, end = (v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc) for v in (start, end))
    if start is not None and end is not None and end <= start:
        raise ValidationError("Invalid range", [{"loc": ["query", "to"], "msg": "Must be after from", "type": "value_error"}])
    rows = usage.summary(engine, group_by, key_id=key_id, start=start, end=end)
    return {"group_by": group_by, "from": start and start.isoformat(), "to": end and end.isoformat(), "rows": rows,
            **{f: sum(r[f] for r in rows) for f in ("requests", "images", "billed_units")},
            "cost_usd": round(sum(r["cost_usd"] for r in rows), 6)}


# -- self-service -----------------------------------------------------------------------------
@router.get("/v1/keys/me", response_model=KeyState, tags=["account"], responses=schemas.errors(401))
def key_me(request: Request, key: ApiKey = AnyKey) -> dict:
    """The calling key: its limits, expiry, remaining budget (``budget_remaining_usd``) and
    rate (``rate_remaining``)."""
    return _service(request).accounts.state(key.id)


@router.get("/v1/usage", response_model=UsageReport, tags=["account"], responses=schemas.errors(401, 422))
def my_usage(request: Request, group_by: Literal["model", "day"] = Query("model"), start: From = None,
             end: To = None, key: ApiKey = AnyKey) -> dict:
    """The calling key's completed requests, images, billed units and cost, by model or by
    day (UTC) of completion."""
    return _report(_service(request).db, group_by, key.id, start, end)


# -- administration ---------------------------------------------------------------------------
@router.post("/v1/admin/keys", status_code=201, response_model=KeyCreated, tags=["admin"],
             responses=schemas.errors(400, 401, 403, 422))
def create_key(request: Request, fields: KeyCreate | None = Body(None), _: ApiKey = Admin) -> dict:
    """A new key with the given limits (every field optional; role ``user`` by default); its
    secret (``key``) is in this answer only."""
    state, secret = _service(request).accounts.create(fields or KeyCreate())
    return {**state, "key": secret}


@router.get("/v1/admin/keys", response_model=KeyList, tags=["admin"], responses=ADMIN_ERRORS)
def list_keys(request: Request, _: ApiKey = Admin) -> dict:
    """Every key (revoked ones too), oldest first."""
    return {"keys": _service(request).accounts.keys()}


@router.get("/v1/admin/keys/{key_id}", response_model=KeyState, tags=["admin"], responses=schemas.errors(401, 403, 404))
def get_key(request: Request, key_id: str, _: ApiKey = Admin) -> dict:
    return _service(request).accounts.state(key_id)


@router.patch("/v1/admin/keys/{key_id}", response_model=KeyState, tags=["admin"],
              responses=schemas.errors(400, 401, 403, 404, 422))
def change_key(request: Request, key_id: str, changes: KeyChange, _: ApiKey = Admin) -> dict:
    """Change a key's limits (the fields given; ``null`` removes a limit). They apply from the
    key's next submit, on every API process."""
    return _service(request).accounts.update(key_id, changes)


@router.post("/v1/admin/keys/{key_id}/revoke", response_model=KeyState, tags=["admin"],
             responses=schemas.errors(401, 403, 404))
def revoke_key(request: Request, key_id: str, _: ApiKey = Admin) -> dict:
    """Revoke a key (idempotent): its calls answer 401 from now on."""
    return _service(request).accounts.revoke(key_id)


@router.get("/v1/admin/usage", response_model=UsageReport, tags=["admin"], responses=schemas.errors(401, 403, 422))
def usage_report(request: Request, group_by: Literal["key", "model", "day"] = Query("key"),
                 start: From = None, end: To = None,
                 key_id: str | None = Query(None, description="Only this key's"), _: ApiKey = Admin) -> dict:
    """Completed requests, images, billed units and cost by key, model or day (UTC) of
    completion, from the billing ledger."""
    return _report(_service(request).db, group_by, key_id, start, end)


@router.get("/v1/admin/requests", response_model=AdminRequestPage, tags=["admin"], responses=schemas.errors(401, 403, 422))
async def all_requests(request: Request, status: StatusName | None = Query(None),
                       model: str | None = Query(None, description="A model id"),
                       key_id: str | None = Query(None, description="Only this key's"),
                       limit: int = Query(20, ge=1, le=100), cursor: str | None = Query(None, description="A page's next_cursor"),
                       _: ApiKey = Admin) -> dict:
    """Every key's requests, newest first, as ``GET /v1/requests`` lists a key's own, each with
    its ``key_id``."""
    base = await request.app.state.request_base_url(request)
    return await run_in_threadpool(_service(request).list_all_requests, key_id=key_id,
                                   status=Status(status) if status else None, model_id=model, limit=limit,
                                   cursor=cursor, base_url=base)


@router.get("/v1/admin/workers", response_model=WorkerList, tags=["admin"], responses=ADMIN_ERRORS)
def workers(request: Request, _: ApiKey = Admin) -> dict:
    """Live workers: id, host, engine, the request each runs, seconds since its heartbeat."""
    return {"workers": _service(request).jobs.workers.live()}


@router.get("/v1/admin/queue", response_model=QueueInfo, tags=["admin"], responses=ADMIN_ERRORS)
def queue(request: Request, _: ApiKey = Admin) -> dict:
    """The queue's depth and running requests by model, and the oldest queued request's wait."""
    return _service(request).jobs.queue_summary()
