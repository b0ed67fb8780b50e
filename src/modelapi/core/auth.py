"""API keys: created once and printed once, stored as SHA-256 hashes, prefixed ``mapi_``.

A key sees only its own requests; a revoked or expired key is refused (401). A key's limits and
role are kept with it (their rules: :mod:`modelapi.core.accounts`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from . import db

KEY_PREFIX = "mapi_"


ROLES = ("user", "admin")
LIMITS = ("models", "rpm", "max_queued", "max_running", "budget_usd", "budget_period")
"""The limit fields of a key (None: no limit of that kind; ``models`` None or empty: all)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the secret itself). ``prefix`` is the first characters, for display;
    ``role`` is ``user`` or ``admin``; the rest are its expiry and limits (see
    :mod:`modelapi.core.accounts`)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    role: str = "user"
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    models: list[str] | None = None
    rpm: int | None = None
    max_queued: int | None = None
    max_running: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(bind: sa.Engine | sa.Connection, name: str = "default", *, role: str | None = None,
               expires_at: datetime | None = None, **limits: Any) -> tuple[ApiKey, str]:
    """Create a key. Returns (the stored record, the secret) — the secret is shown only now.
    ``role`` None: ``admin`` for the first key of an empty database, else ``user``; ``limits``:
    any of :data:`LIMITS` (checked by the caller: :class:`modelapi.core.accounts.KeyFields`)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = {
        "id": "key_" + secrets.token_hex(8),
        "name": name,
        "prefix": secret[:12],
        "key_hash": hash_key(secret),
        "created_at": db.utcnow(),
        "revoked_at": None,
        "expires_at": expires_at,
        **{k: limits.get(k) for k in LIMITS},
    }
    if isinstance(bind, sa.Connection):
        _insert(bind, row, role)
    else:
        with bind.begin() as conn:
            _insert(conn, row, role)
    return _record(row), secret


def _insert(conn: sa.Connection, row: dict[str, Any], role: str | None) -> None:
    if role is None:
        role = "user" if conn.execute(sa.select(db.api_keys.c.id).limit(1)).first() else "admin"
    row["role"] = role
    conn.execute(db.api_keys.insert().values(**row))


def list_keys(engine: sa.Engine) -> list[ApiKey]:
    with engine.connect() as conn:
        rows = conn.execute(db.api_keys.select().order_by(db.api_keys.c.created_at)).mappings()
        return [_record(r) for r in rows]


def revoke_key(engine: sa.Engine, key_id_or_prefix: str) -> bool:
    """Revoke by id (``key_...``) or by the displayed prefix. Returns False when none matched."""
    c = db.api_keys.c
    with engine.begin() as conn:
        result = conn.execute(
            db.api_keys.update()
            .where(sa.or_(c.id == key_id_or_prefix, c.prefix == key_id_or_prefix))
            .where(c.revoked_at.is_(None))
            .values(revoked_at=db.utcnow())
        )
    return result.rowcount > 0


def live_key(key_hash: Any) -> sa.ColumnElement[bool]:
    """What makes a key live, as SQL — the one definition: the stored key whose hash is
    ``key_hash`` (a value or a bind parameter), not revoked and not expired (on the database's
    clock). :func:`authenticate` selects by it, and so does the status poll's single query
    (:meth:`modelapi.core.jobs.JobStore.poll`)."""
    c = db.api_keys.c
    return sa.and_(c.key_hash == key_hash, c.revoked_at.is_(None), unexpired())


def unexpired() -> sa.ColumnElement[bool]:
    """A key with no ``expires_at``, or one still ahead of the database's clock (UTC)."""
    c = db.api_keys.c
    return sa.or_(c.expires_at.is_(None), c.expires_at > sa.func.current_timestamp())


_LIVE = db.api_keys.select().where(live_key(sa.bindparam("h")))


def authenticate(engine: sa.Engine, secret: str | None) -> ApiKey | None:
    """The live key matching ``secret``, or None (missing, unknown or revoked)."""
    if not secret or not secret.startswith(KEY_PREFIX):
        return None
    with engine.connect() as conn:
        row = conn.execute(_LIVE, {"h": hash_key(secret)}).mappings().first()
    return None if row is None else _record(row)


def operations_authorized(engine: sa.Engine, metrics_token: str | None, secret: str | None) -> bool:
    """Whether ``secret`` (a Bearer token, or None) may read the operations details (/metrics,
    the full /healthz): a live API key, or ``metrics_token`` (``--metrics-token``; compared in
    constant time, never when unset or empty)."""
    if not secret:
        return False
    if metrics_token and hmac.compare_digest(secret.encode("utf-8", "replace"), metrics_token.encode("utf-8", "replace")):
        return True
    return authenticate(engine, secret) is not None


def ensure_initial_key(conn: sa.Connection, data_dir: Path) -> str | None:
    """On a database with no keys, create one and write it to ``<data_dir>/initial_api_key``
    (mode 0600). Returns the new secret, or None when keys already exist. Call it under the
    start-up lock (:func:`modelapi.core.db.startup_lock`) so that only one process creates it."""
    if conn.execute(sa.select(sa.func.count()).select_from(db.api_keys)).scalar_one():
        return None
    _, secret = create_key(conn, name="initial")
    path = data_dir / "initial_api_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.chmod(path, 0o600)
    return secret


def _record(row) -> ApiKey:  # noqa: ANN001
    created_at = db.as_utc(row["created_at"])
    assert created_at is not None  # a NOT NULL column
    return ApiKey(row["id"], row["name"], row["prefix"], created_at, db.as_utc(row["revoked_at"]),
                  row.get("role") or "user", db.as_utc(row.get("expires_at")), db.as_utc(row.get("last_used_at")),
                  list(row["models"]) if row.get("models") else None,
                  *(row.get(k) for k in ("rpm", "max_queued", "max_running", "budget_usd", "budget_period")))
