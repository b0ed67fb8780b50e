"""Accounts: what a key may do and how much — its role, expiry, model allow-list, submits per
minute, queue and running caps, and budget — enforced for the whole fleet from the database.

Every limit is counted in the database, so N API processes (and the workers) share one count:

- **rate** (``rpm``): a fixed window per UTC minute kept on the key's own row
  (``rate_window``, ``rate_count``), counted by the submit's transaction.
- **queue** (``max_queued``, else ``--max-queued-per-key``): the key's in_queue requests,
  counted in the submit's transaction.
- **budget** (``budget_usd`` per ``budget_period``: ``day`` and ``month`` in UTC, or ``total``):
  one ``key_budgets`` row per key and period holds ``reserved_usd`` (the most the key's requests
  submitted in the period and not yet ended can cost: :func:`modelapi.core.usage.estimate`) and
  ``spent_usd`` (what those completed cost). A submit reserves in its own transaction; the
  transaction that ends the request (:mod:`modelapi.core.jobs`) gives the reservation back and
  adds what it cost (nothing when cancelled or failed): a burst can never overspend. A period's
  row starts from what the ledger shows the key spent in it so far.
- **running** (``max_running``): checked by the worker as it starts a request
  (:func:`at_running_cap`); over it, the request waits on a delayed queue entry. The queue's own
  partition limit (``--max-running-per-key``, one value for every key) stays the ceiling.

A submit's checks (:meth:`Admission.check`) run in the transaction that stores the request,
first taking the key's row (an UPDATE), so one key's submits are checked one at a time across
the fleet, and a refused submit rolls back and counts against nothing. Refusals answer in this
order: key (401), model (403 403003), rate (429 429002), queue (429 429001), budget
(402 10001).

``modelapi_requests_refused_total{reason, key_id}`` counts refusals (``expired``, ``model``,
``rate``, ``queue``, ``budget``) per API process (Prometheus sums them across processes).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import sqlalchemy as sa
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import catalog
from ..errors import (AuthenticationError, ForbiddenError, InsufficientFundsError, KeyExpiredError, NotFoundError,
                      RateLimitedError, RateLimitError, ValidationError)
from . import auth, db, usage
from .auth import ApiKey

K = db.api_keys.c
B = db.key_budgets.c
R = db.requests.c
Period = Literal["day", "month", "total"]
Role = Literal["user", "admin"]
RUNNING_RETRY_S = 2.0
"""How long a request that found its key at ``max_running`` waits before it is tried again, s."""
QUEUE_RETRY_S = 5
"""Retry-After of a submit refused for the key's queue cap, s."""

REFUSED = Counter("modelapi_requests_refused", "Requests refused by a key's limits, by reason "
                  "(expired, model, rate, queue, budget) and key id; per API process",
                  ["reason", "key_id"], registry=None)


class KeyFields(BaseModel):
    """The settable fields of a key (the admin API's bodies and the CLI's flags), each checked
    here. In a change (PATCH), a field left out stays as it is and ``null`` removes a limit."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, description="A label")
    role: Role | None = Field(default=None, description="user (default) or admin (the admin API)")
    expires_at: datetime | None = Field(default=None, description="ISO 8601; after it the key answers 401 (401001). "
                                        "A time without an offset is UTC. null: never")
    models: list[str] | None = Field(default=None, description="Model ids the key may submit to; empty or null: all")
    rpm: int | None = Field(default=None, ge=1, le=1_000_000, description="Submits per UTC minute; null: unlimited")
    max_queued: int | None = Field(default=None, ge=0, le=10_000_000, description="Requests in_queue at once; null: "
                                   "the server's --max-queued-per-key")
    max_running: int | None = Field(default=None, ge=1, le=100_000, description="Requests in_progress at once; null: "
                                    "the server's --max-running-per-key")
    budget_usd: float | None = Field(default=None, ge=0, le=1e9, description="Most cost per budget_period, USD; null: none")
    budget_period: Period | None = Field(default=None, description="day or month (UTC) or total; required with budget_usd")

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str] | None) -> list[str] | None:
        for model_id in value or []:
            if catalog.get(model_id) is None:
                raise ValueError(f"unknown model id {model_id!r}; the models are {', '.join(catalog.models())}")
        return sorted(set(value)) if value else value

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None


# -- time windows -----------------------------------------------------------------------------
def budget_period(kind: str, now: datetime) -> tuple[str, datetime | None, datetime | None]:
    """(period key, start, resets_at) of budget period ``kind`` (``day``, ``month``, ``total``)
    containing ``now`` (UTC); ``total`` has neither start nor reset."""
    if kind == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"day:{start:%Y-%m-%d}", start, start + timedelta(days=1)
    if kind == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return f"month:{start:%Y-%m}", start, (start + timedelta(days=32)).replace(day=1)
    return "total", None, None


def rate_window(now_s: float) -> tuple[int, int]:
    """(the UTC minute ``now_s`` (unix seconds) falls in, as ``now_s // 60``; whole seconds to
    its end, 1-60)."""
    window = int(now_s // 60)
    return window, max(1, math.ceil((window + 1) * 60 - now_s))


@dataclass
class RateState:
    """A key's rate window after a submit: the ``RateLimit-*`` headers' values."""

    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset_s)}


@dataclass
class Admission:
    """One submit's checks and reservation, made by :meth:`check` inside the transaction that
    stores the request (:meth:`modelapi.core.jobs.JobStore.create`). After it, ``rate`` holds the
    key's rate window (when it has an ``rpm``) and ``reserved_usd``/``period`` the reservation
    (when it has a budget), which the request row keeps."""

    key_id: str
    cost_usd: float
    max_queued_default: int
    rate: RateState | None = None
    reserved_usd: float | None = None
    period: str | None = None
    _now: float = field(default=0.0, repr=False)

    def check(self, conn: sa.Connection) -> None:
        """Take the key's row (one key's submits are checked one at a time, fleet-wide), count
        this submit in its minute, then check, in order, the rate, the queue and the budget —
        with the key's limits as they are now.

        Raises:
            AuthenticationError: the key was revoked meanwhile (401).
            RateLimitedError: over ``rpm`` (429 429002, Retry-After: seconds to the window's end).
            RateLimitError: ``max_queued`` (else ``--max-queued-per-key``) requests already queued (429 429001).
            InsufficientFundsError: the budget left cannot cover ``cost_usd`` (402 10001).
        The caller's transaction must roll back on any of them (nothing is then counted)."""
        self._now = now_s = time.time()
        now = datetime.fromtimestamp(now_s, timezone.utc)
        window, reset_s = rate_window(now_s)
        row = conn.execute(
            db.api_keys.update().where(K.id == self.key_id).values(
                last_used_at=now, rate_count=sa.case((K.rate_window == window, K.rate_count + 1), else_=1),
                rate_window=window,
            ).returning(K.rate_count, K.rpm, K.max_queued, K.budget_usd, K.budget_period, K.revoked_at)
        ).one_or_none()
        if row is None or row.revoked_at is not None:
            raise AuthenticationError("missing, unknown or revoked API key")
        if row.rpm is not None:
            self.rate = RateState(row.rpm, max(0, row.rpm - row.rate_count), reset_s)
            if row.rate_count > row.rpm:
                REFUSED.labels("rate", self.key_id).inc()
                raise RateLimitedError(
                    f"rate limit: this key may submit {row.rpm} requests per minute (rpm); the window resets in {reset_s} s",
                    {"limit": "rpm", "rpm": row.rpm, "resets_in_s": reset_s},
                    retry_after_s=reset_s, rate_limit=(row.rpm, 0, reset_s))
        limit = row.max_queued if row.max_queued is not None else self.max_queued_default
        queued = conn.execute(sa.select(sa.func.count()).select_from(
            sa.select(sa.literal(1)).where(R.owner_key_id == self.key_id, R.status == "in_queue").limit(limit).subquery()
        )).scalar_one()
        if queued >= limit:
            REFUSED.labels("queue", self.key_id).inc()
            raise RateLimitError(f"queue cap: this key already has {queued} requests in the queue, its limit "
                                 f"(max_queued) is {limit}", {"limit": "max_queued", "max_queued": limit},
                                 retry_after_s=QUEUE_RETRY_S)
        if row.budget_usd is not None and row.budget_period is not None:
            self._reserve(conn, row.budget_usd, row.budget_period, now)

    def _reserve(self, conn: sa.Connection, budget: float, kind: str, now: datetime) -> None:
        period, start, resets_at = budget_period(kind, now)
        where = sa.and_(B.key_id == self.key_id, B.period == period)
        got = conn.execute(db.key_budgets.update().where(where).values(reserved_usd=B.reserved_usd + self.cost_usd)
                           .returning(B.reserved_usd, B.spent_usd)).one_or_none()
        if got is None:  # the period's first submit: start from what the ledger shows spent in it
            spent = usage.spent_since(conn, self.key_id, start)
            conn.execute(db.key_budgets.insert().values(key_id=self.key_id, period=period, reserved_usd=self.cost_usd,
                                                        spent_usd=spent))
            reserved = self.cost_usd
        else:
            reserved, spent = got
        if reserved + spent > budget + 1e-9:
            remaining = round(max(0.0, budget - (reserved - self.cost_usd) - spent), 6)
            REFUSED.labels("budget", self.key_id).inc()
            raise InsufficientFundsError(
                f"insufficient funds: this request may cost {self.cost_usd} USD and the key's {kind} budget of "
                f"{budget} USD has {remaining} USD left", {"budget_remaining_usd": remaining, "resets_at": db.iso(resets_at)})
        self.reserved_usd, self.period = self.cost_usd, period


def settle(conn: sa.Connection, owner_key_id: str, reserved_usd: float | None, period: str | None, cost_usd: float) -> None:
    """In the transaction that ends a request: give back what its submit reserved and count
    ``cost_usd`` (0 when cancelled or failed) as spent in the same period. Nothing when the
    submit reserved nothing."""
    if reserved_usd is None or period is None:
        return
    conn.execute(db.key_budgets.update().where(B.key_id == owner_key_id, B.period == period).values(
        reserved_usd=B.reserved_usd - reserved_usd, spent_usd=B.spent_usd + cost_usd))


def at_running_cap(conn: sa.Connection, owner_key_id: str) -> bool:
    """Whether the key has a ``max_running`` and as many requests in_progress (in the caller's
    transaction, which it serialises with the key's other starts by taking the key's row)."""
    cap = conn.execute(sa.select(K.max_running).where(K.id == owner_key_id)).scalar()
    if cap is None:
        return False
    # a write to the key's row: its lock on Postgres, the database's write lock on SQLite
    conn.execute(db.api_keys.update().where(K.id == owner_key_id).values(max_running=K.max_running))
    running = conn.execute(sa.select(sa.func.count()).select_from(
        sa.select(sa.literal(1)).where(R.owner_key_id == owner_key_id, R.status == "in_progress").limit(cap).subquery()
    )).scalar_one()
    return bool(running >= cap)


# -- keys -------------------------------------------------------------------------------------
def key_body(key: ApiKey) -> dict[str, Any]:
    """A key as the admin API shows it (never the secret): ``{"id", "name", "prefix", "role",
    "created_at", "last_used_at", "expires_at", "revoked_at" (ISO 8601 or null), "models" (list;
    empty = all), "rpm", "max_queued", "max_running", "budget_usd", "budget_period"}``."""
    return {"id": key.id, "name": key.name, "prefix": key.prefix, "role": key.role,
            "created_at": db.iso(key.created_at), "last_used_at": db.iso(key.last_used_at),
            "expires_at": db.iso(key.expires_at), "revoked_at": db.iso(key.revoked_at),
            "models": key.models or [], "rpm": key.rpm, "max_queued": key.max_queued, "max_running": key.max_running,
            "budget_usd": key.budget_usd, "budget_period": key.budget_period}


class Accounts:
    """Keys, their limits and their state, for the routes and the CLI.

    Args:
        engine: the database.
        max_queued_per_key: the server's queue cap (``--max-queued-per-key``), for keys without ``max_queued``.
        prices_usd: price per billed unit by model id (``--prices-usd``), for reservations.
    """

    LAST_USED_EVERY_S = 60.0
    """``last_used_at`` is written at every submit, and at most this often for other calls, s."""

    def __init__(self, engine: sa.Engine, *, max_queued_per_key: int = 100,
                 prices_usd: dict[str, float] | None = None) -> None:
        self.db = engine
        self.max_queued_per_key = max_queued_per_key
        self.prices_usd = prices_usd or {}
        self._select_by_hash = db.api_keys.select().where(K.key_hash == sa.bindparam("h"), K.revoked_at.is_(None))

    # -- per request --------------------------------------------------------------------------
    def authenticate(self, secret: str | None) -> ApiKey:
        """The live key of ``secret`` (a Bearer token).

        Raises:
            KeyExpiredError: its ``expires_at`` has passed (401 401001, counted as ``expired``).
            AuthenticationError: missing, unknown or revoked (401 401001)."""
        if not secret or not secret.startswith(auth.KEY_PREFIX):
            raise AuthenticationError("missing, unknown or revoked API key")
        with self.db.connect() as conn:
            row = conn.execute(self._select_by_hash, {"h": auth.hash_key(secret)}).mappings().first()
        if row is None:
            raise AuthenticationError("missing, unknown or revoked API key")
        key = auth._record(row)
        now = db.utcnow()
        if key.expires_at is not None and key.expires_at <= now:
            REFUSED.labels("expired", key.id).inc()
            raise KeyExpiredError(f"this API key expired at {db.iso(key.expires_at)}")
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > self.LAST_USED_EVERY_S:
            with self.db.begin() as conn:
                conn.execute(db.api_keys.update().where(K.id == key.id).values(last_used_at=now))
            key = replace(key, last_used_at=now)
        return key

    def check_model(self, key: ApiKey, model_id: str) -> None:
        """Raises ForbiddenError (403 403003, counted as ``model``) when ``key`` has a
        ``models`` allow-list without ``model_id``."""
        if key.models and model_id not in key.models:
            REFUSED.labels("model", key.id).inc()
            raise ForbiddenError(f"this key may not use {model_id}; its models are {', '.join(key.models)}",
                                 {"limit": "models", "models": key.models})

    def admission(self, key: ApiKey, model: catalog.Model, inputs: dict[str, Any]) -> Admission:
        """The checks of one submit of ``inputs`` to ``model`` by ``key``, to run in the
        transaction that stores it (:meth:`Admission.check`). Raises ForbiddenError (403003)
        at once for a model outside the key's allow-list."""
        self.check_model(key, model.model_id)
        return Admission(key.id, usage.estimate(model, inputs, self.prices_usd)[1], self.max_queued_per_key)

    @staticmethod
    def require_admin(key: ApiKey) -> ApiKey:
        """``key`` when it is an admin key; else ForbiddenError (403 403003)."""
        if key.role != "admin":
            raise ForbiddenError("this route needs an admin key", {"role": key.role})
        return key

    # -- administration -----------------------------------------------------------------------
    def create(self, fields: KeyFields) -> tuple[dict[str, Any], str]:
        """A new key with ``fields`` (name default ``default``; role default ``user``, or
        ``admin`` for the first key of an empty database). Returns (its :meth:`state`, the
        secret: shown only now). Raises ValidationError (422) for a budget without a period."""
        _check_budget(fields.budget_usd, fields.budget_period)
        values = fields.model_dump(exclude={"name", "role", "expires_at"})
        key, secret = auth.create_key(self.db, fields.name or "default", role=fields.role,
                                      expires_at=fields.expires_at, **values)
        return self.state(key.id), secret

    def keys(self) -> list[dict[str, Any]]:
        """Every key's :meth:`state`, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(db.api_keys.select().order_by(K.created_at, K.id)).mappings().all()
            return self._states(conn, [auth._record(r) for r in rows])

    def get(self, key_id: str) -> ApiKey:
        """The key ``key_id`` (revoked ones too). Raises NotFoundError (404)."""
        with self.db.connect() as conn:
            row = conn.execute(db.api_keys.select().where(K.id == key_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"key {key_id} not found")
        return auth._record(row)

    def state(self, key_id: str) -> dict[str, Any]:
        """The key (:func:`key_body`) and where its limits stand now: ``budget_spent_usd``,
        ``budget_reserved_usd``, ``budget_remaining_usd``, ``budget_resets_at`` (null without a
        budget; resets_at null for ``total``), ``rate_remaining`` (null without ``rpm``),
        ``rate_resets_at``, ``queued``, ``running``. Raises NotFoundError (404)."""
        key = self.get(key_id)
        with self.db.connect() as conn:
            return self._states(conn, [key])[0]

    def _states(self, conn: sa.Connection, keys: list[ApiKey]) -> list[dict[str, Any]]:
        now_s = time.time()
        now = datetime.fromtimestamp(now_s, timezone.utc)
        window, reset_s = rate_window(now_s)
        periods = {kind: budget_period(kind, now) for kind in ("day", "month", "total")}
        ids = [k.id for k in keys]
        budgets = {(r.key_id, r.period): r for r in conn.execute(sa.select(db.key_budgets).where(
            B.key_id.in_(ids), B.period.in_([p[0] for p in periods.values()])))} if ids else {}
        rates = dict(conn.execute(sa.select(K.id, K.rate_count).where(K.id.in_(ids), K.rate_window == window)).all()) if ids else {}
        active = {(k, s): n for k, s, n in conn.execute(sa.select(R.owner_key_id, R.status, sa.func.count()).where(
            R.owner_key_id.in_(ids), R.status.in_(["in_queue", "in_progress"])).group_by(R.owner_key_id, R.status))} if ids else {}
        out = []
        for key in keys:
            body = key_body(key)
            spent = reserved = remaining = None
            resets_at = None
            if key.budget_usd is not None and key.budget_period is not None:
                period, start, resets = periods[key.budget_period]
                row = budgets.get((key.id, period))
                spent = round(row.spent_usd, 6) if row else round(usage.spent_since(conn, key.id, start), 6)
                reserved = round(max(0.0, row.reserved_usd), 6) if row else 0.0
                remaining = round(max(0.0, key.budget_usd - spent - reserved), 6)
                resets_at = db.iso(resets)
            body |= {"budget_spent_usd": spent, "budget_reserved_usd": reserved, "budget_remaining_usd": remaining,
                     "budget_resets_at": resets_at,
                     "rate_remaining": None if key.rpm is None else max(0, key.rpm - rates.get(key.id, 0)),
                     "rate_resets_at": db.iso(datetime.fromtimestamp(now_s + reset_s, timezone.utc).replace(microsecond=0)),
                     "queued": active.get((key.id, "in_queue"), 0), "running": active.get((key.id, "in_progress"), 0)}
            out.append(body)
        return out

    def update(self, key_id: str, changes: KeyFields) -> dict[str, Any]:
        """Change the fields set in ``changes`` (``null`` removes a limit; ``models`` null or
        empty: all models). Returns the key's :meth:`state`. Raises NotFoundError (404);
        ValidationError (422) for a budget without a period."""
        key = self.get(key_id)
        values = {name: getattr(changes, name) for name in changes.model_fields_set}
        if values.get("name", key.name) is None:
            values.pop("name")
        if "role" in values and values["role"] is None:
            values["role"] = "user"
        _check_budget(values.get("budget_usd", key.budget_usd), values.get("budget_period", key.budget_period))
        if values:
            with self.db.begin() as conn:
                conn.execute(db.api_keys.update().where(K.id == key_id).values(**values))
        return self.state(key_id)

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke the key (idempotent: an already revoked key stays as it was); its calls answer
        401 from now on. Returns its :meth:`state`. Raises NotFoundError (404)."""
        self.get(key_id)
        with self.db.begin() as conn:
            conn.execute(db.api_keys.update().where(K.id == key_id, K.revoked_at.is_(None)).values(revoked_at=db.utcnow()))
        return self.state(key_id)


def _check_budget(budget_usd: float | None, period: str | None) -> None:
    if budget_usd is not None and period is None:
        raise ValidationError("budget_usd needs a budget_period", [
            {"loc": ["body", "budget_period"], "msg": "Required with budget_usd: day, month or total", "type": "missing"}])
