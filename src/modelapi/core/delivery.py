"""Webhook delivery: on a request's terminal state, its result body is POSTed to the URL named at submit
(``?webhook=URL``), signed per the Standard Webhooks specification
(https://www.standardwebhooks.com: headers ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; HMAC-SHA256 with the submitting key's secret, ``whsec_…``).

Delivery is durable: each attempt is an entry of the webhook queue (DBOS), the first written in
the same transaction as the terminal state (:mod:`modelapi.core.jobs`), each retry enqueued with
a delay by the attempt before it — so deliveries survive kill -9 and restarts, and no waiting
retry holds a worker thread. An attempt succeeds on any 2xx; timeouts, connection errors,
redirects and other statuses are retried with exponential backoff (1 s, 2 s, 4 s, … capped at
1 h) for ``--webhook-retry-s`` (default 24 h). Every attempt has the same ``webhook-id``
(``msg_<request id>``), so receivers can drop duplicates. The URL passes the same address
check as image inputs (:func:`modelapi.core.fetch.check_url`) at submit and again before every
attempt, and the connection goes to the address checked.

Any role may host the attempts (:class:`Delivery`: build, sign, send, record, re-enqueue); a
worker process registers the webhook queue's workflow that calls it
(:mod:`modelapi.worker.runtime`). Attempts are recorded by the state machine
(:meth:`modelapi.core.jobs.JobStore.record_webhook_attempt`), the one writer of requests.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from datetime import datetime, timezone

import httpx
import sqlalchemy as sa
from standardwebhooks import Webhook

from ..errors import InputError
from . import bodies, db
from .config import Settings
from .fetch import FetchPolicy, check_url, pinned
from .jobs import JobStore, retry_db
from .storage import Storage

log = logging.getLogger("modelapi.webhooks")
MAX_BACKOFF_S = 3600.0


def signing_secret(engine: sa.Engine, key_id: str) -> str:
    """The key's webhook signing secret (``whsec_`` + base64 of 24 random bytes), made on first
    use; concurrent first uses agree on one."""
    K = db.api_keys.c
    with engine.begin() as conn:
        secret = conn.execute(sa.select(K.webhook_secret).where(K.id == key_id)).scalar()
        if secret is None:
            fresh = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            conn.execute(db.api_keys.update().where(K.id == key_id, K.webhook_secret.is_(None)).values(webhook_secret=fresh))
            secret = conn.execute(sa.select(K.webhook_secret).where(K.id == key_id)).scalar_one()
    return secret


def backoff_s(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): 1, 2, 4, … at most 1 h."""
    return min(2.0 ** (attempt - 1), MAX_BACKOFF_S)


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def signed_headers(secret: str, msg_id: str, payload: str, at: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``payload`` (and the JSON content type)."""
    at = at or datetime.now(timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, payload),
        "content-type": "application/json",
    }


def post(url: str, body: str, headers: dict[str, str], policy: FetchPolicy, timeout_s: float) -> int | None:
    """One delivery attempt: POST ``body`` (JSON) to ``url`` (checked now; no redirects
    followed). Returns the HTTP status, or None when no answer came (refused address, timeout,
    connection error); the reason is logged."""
    try:
        target, addrs = check_url(url, policy, loc=["query", "webhook"])
    except InputError as exc:
        log.warning("webhook refused: %s", exc.msg, extra={"url": url})
        return None
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout_s) as client:
        for addr in addrs:
            pinned_url, host, ext = pinned(target, addr)
            try:
                resp = client.post(pinned_url, content=body.encode(), extensions=ext, headers={**headers, **host})
                return resp.status_code
            except httpx.ConnectError:
                continue
            except httpx.HTTPError as exc:
                log.warning("webhook attempt failed: %s", type(exc).__name__, extra={"url": url})
                return None
    log.warning("webhook attempt failed: could not connect", extra={"url": url})
    return None


class Delivery:
    """Webhook attempts of ``jobs``' requests, their images under URLs of ``storage``."""

    def __init__(self, settings: Settings, jobs: JobStore, storage: Storage) -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.policy = FetchPolicy.from_settings(settings)

    def attempt(self, request_id: str, attempt: int) -> None:
        """Webhook attempt ``attempt`` for a terminal request: POST its result body, signed;
        on failure enqueue the next attempt after the backoff, until ``--webhook-retry-s``
        after the request finished."""
        req = retry_db(lambda: self.jobs.get(request_id), "delivering a webhook")
        if req is None or not req.webhook or req.webhook.get("delivered_at") or req.finished_at is None:
            return
        payload = json.dumps(bodies.result_body(
            req, base_url=req.webhook["base_url"], storage=self.storage, url_ttl_s=self.settings.url_ttl_s,
            include_cost=True, include_webhook=False))
        secret = signing_secret(self.jobs.db, req.owner_key_id)
        headers = signed_headers(secret, message_id(request_id), payload)
        code = post(req.webhook["url"], payload, headers, self.policy, self.settings.webhook_timeout_s)
        record = retry_db(lambda: self.jobs.record_webhook_attempt(request_id, code), "recording a webhook attempt")
        extra = {"request_id": request_id, "attempt": record["attempts"], "status_code": code}
        if record.get("delivered_at"):
            log.info("webhook.delivered", extra=extra)
            return
        delay = backoff_s(attempt)
        if time.time() + delay > req.finished_at.timestamp() + self.settings.webhook_retry_s:
            log.warning("webhook.given_up", extra=extra)
            return
        log.info("webhook.retrying", extra={**extra, "in_s": delay})
        retry_db(lambda: self.jobs.queue.enqueue_webhook(None, request_id=request_id, attempt=attempt + 1, delay_s=delay),
                 "enqueueing a webhook retry")
