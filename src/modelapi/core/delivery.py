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
(``msg_<request id>``), so receivers can drop duplicates.

With ``?webhook_intermediate_status=true`` the receiver also gets the request's status body
(``in_progress``, then each new ``partial_output``) as events before the terminal one, each with
a ``webhook-id`` of its own (``msg_<request id>_<k>``), signed and retried the same way (for
``--webhook-retry-s`` after the event, but given up at its first failure once the request has
moved on to a later event or ended, so a failing receiver never holds the terminal delivery
back), and in order: an event's (and the terminal delivery's) first attempt is enqueued only
once the one before it was delivered or given up (:mod:`modelapi.core.webhook_events`). The URL passes the same address
check as image inputs (:func:`modelapi.core.fetch.check_url`) at submit and again before every
attempt, and the connection goes to the address checked.

One tenant's receivers cannot hold up another's deliveries:

- an attempt ends within ``--webhook-timeout-s`` in all, whatever the receiver does (a total
  deadline over resolution, connect, sending and the answer's headers), and the answer's body
  is never read;
- the webhook queue is partitioned by the request's owner key: one key's attempts hold at most
  :data:`~modelapi.core.queue.WEBHOOK_PER_KEY` of a worker's
  :data:`~modelapi.core.queue.WEBHOOK_CONCURRENCY` delivery slots;
- a receiver (one key's ``scheme://host:port``) that keeps giving no answer is backed off
  (:class:`ReceiverBreaker`): its attempts are put off without a POST, each taking a slot only
  for a moment;
- URLs are logged as ``scheme://host[:port]/path`` (:func:`loggable`): a query may hold the
  receiver's secret token.

Any role may host the attempts (:class:`Delivery`: build, sign, send, record, re-enqueue); a
worker process registers the webhook queue's workflow that calls it
(:mod:`modelapi.worker.runtime`). Attempts are recorded by the state machine
(:meth:`modelapi.core.jobs.JobStore.record_webhook_attempt`), the one writer of requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone

import httpx
import sqlalchemy as sa
from standardwebhooks import Webhook

from ..errors import InputError
from ..types import Status
from . import bodies, db, webhook_events
from .config import Settings
from .fetch import FetchPolicy, IPAddress, check_url, pinned
from .jobs import JobStore, Request, retry_db
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


def message_id(request_id: str, event: int = 0) -> str:
    """The ``webhook-id`` of a request's terminal delivery (``msg_<request id>``), or of its
    intermediate event ``event`` (1-based: ``msg_<request id>_<event>``)."""
    return f"msg_{request_id}_{event}" if event else f"msg_{request_id}"


def signed_headers(secret: str, msg_id: str, payload: str, at: datetime | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for ``payload`` (and the JSON content type)."""
    at = at or datetime.now(timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, payload),
        "content-type": "application/json",
    }


def loggable(url: str) -> str:
    """``url`` as logs show it: ``scheme://host[:port]/path``, without query, fragment or
    userinfo (a query often holds a receiver's secret token)."""
    try:
        parsed = httpx.URL(url)
        return str(parsed.copy_with(query=None, fragment=None, username=None, password=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"


def post(url: str, body: str, headers: dict[str, str], policy: FetchPolicy, timeout_s: float) -> int | None:
    """One delivery attempt: POST ``body`` (JSON) to ``url`` (checked now; no redirects
    followed). Returns the HTTP status, or None when no answer came (refused address, timeout,
    connection error); the reason is logged.

    The whole attempt — name resolution, connect, sending, the answer's status line and
    headers — ends within ``timeout_s`` seconds, whatever the receiver does (a receiver that
    trickles its answer byte by byte is cut off at the deadline); the answer's body is never
    read (the connection is closed after the headers)."""
    deadline = time.monotonic() + timeout_s
    try:
        target, addrs = check_url(url, replace(policy, connect_timeout_s=min(policy.connect_timeout_s, timeout_s)),
                                  loc=["query", "webhook"])
    except InputError as exc:
        log.warning("webhook refused: %s", exc.msg, extra={"url": loggable(url)})
        return None
    try:
        code = asyncio.run(_post_pinned(target, addrs, body.encode(), headers, deadline - time.monotonic()))
        if code is None:
            log.warning("webhook attempt failed: could not connect", extra={"url": loggable(url)})
        return code
    except TimeoutError:
        log.warning("webhook attempt failed: no answer within %.3g s", timeout_s, extra={"url": loggable(url)})
    except httpx.HTTPError as exc:
        log.warning("webhook attempt failed: %s", type(exc).__name__, extra={"url": loggable(url)})
    return None


async def _post_pinned(target: httpx.URL, addrs: list[IPAddress], body: bytes, headers: dict[str, str],
                       timeout_s: float) -> int | None:
    """POST to each checked address of ``target`` in turn until one connects; its status.
    Raises ``TimeoutError`` after ``timeout_s`` seconds in all (httpx's own timeouts bound each
    read or write, not the whole), ``httpx.HTTPError`` on other failures."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with asyncio.timeout(max(timeout_s, 0.0)):
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout_s, limits=limits) as client:
            for addr in addrs:
                pinned_url, host, ext = pinned(target, addr)
                try:
                    async with client.stream("POST", pinned_url, content=body, extensions=ext,
                                             headers={**headers, **host}) as resp:
                        return resp.status_code  # leaving the block closes the connection unread
                except httpx.ConnectError:
                    continue
    return None


class ReceiverBreaker:
    """Receivers that keep giving no answer (timeouts, connection errors), backed off for a
    while: one process's memory of them, safe to share between threads.

    A receiver is one key's ``scheme://host:port`` (a key never backs off another's receivers).
    After ``threshold`` attempts in a row without an answer, it is not tried for ``cooldown_s``
    seconds, doubled for each further unanswered attempt (at most ``max_cooldown_s``); then one
    attempt probes it (for ``probe_s`` seconds the others keep waiting); an answer of any
    status forgets it. At most ``capacity`` receivers are remembered (the least recently
    failed are forgotten first).
    """

    def __init__(self, *, threshold: int = 3, cooldown_s: float = 30.0, max_cooldown_s: float = MAX_BACKOFF_S,
                 probe_s: float = 10.0, capacity: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.cooldown_s, self.max_cooldown_s = threshold, cooldown_s, max_cooldown_s
        self.probe_s, self.capacity, self.clock = probe_s, capacity, clock
        self._failed: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        """receiver -> (unanswered attempts in a row, monotonic time before which it is not tried)"""
        self._lock = threading.Lock()

    @staticmethod
    def receiver(owner_key_id: str, url: str) -> tuple[str, str]:
        """The receiver of ``url`` for key ``owner_key_id``: ``(key, "scheme://host:port")``."""
        try:
            parsed = httpx.URL(url)
            host = parsed.raw_host.decode("ascii")
            host = f"[{host}]" if ":" in host else host
            return owner_key_id, f"{parsed.scheme}://{host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"
        except (httpx.InvalidURL, TypeError, ValueError):
            return owner_key_id, url

    def wait_s(self, receiver: tuple[str, str]) -> float:
        """Seconds before ``receiver`` may be tried (0: now; the caller then makes the attempt,
        and when it is a probe the others wait ``probe_s`` more)."""
        with self._lock:
            failures, until = self._failed.get(receiver, (0, 0.0))
            now = self.clock()
            if failures < self.threshold:
                return 0.0
            if now < until:
                return until - now
            self._failed[receiver] = (failures, now + self.probe_s)
            return 0.0

    def record(self, receiver: tuple[str, str], answered: bool) -> None:
        """The outcome of an attempt at ``receiver``: an answer (any status), or none."""
        with self._lock:
            if answered:
                self._failed.pop(receiver, None)
                return
            failures = self._failed.pop(receiver, (0, 0.0))[0] + 1
            until = 0.0
            if failures >= self.threshold:
                until = self.clock() + min(self.cooldown_s * 2.0 ** (failures - self.threshold), self.max_cooldown_s)
            self._failed[receiver] = (failures, until)
            while len(self._failed) > self.capacity:
                self._failed.popitem(last=False)


class Delivery:
    """Webhook attempts of ``jobs``' requests, their images under URLs of ``storage``; receivers
    that keep giving no answer are backed off (:class:`ReceiverBreaker`, one per process)."""

    def __init__(self, settings: Settings, jobs: JobStore, storage: Storage) -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.policy = FetchPolicy.from_settings(settings)
        self.breaker = ReceiverBreaker(probe_s=settings.webhook_timeout_s + 1.0)

    def attempt(self, request_id: str, attempt: int, event: int = 0) -> None:
        """Webhook attempt ``attempt`` for a terminal request: POST its result body, signed;
        on failure enqueue the next attempt after the backoff, until ``--webhook-retry-s``
        after the request finished. While the receiver is backed off no POST is made (nor
        counted in the request's ``webhook.attempts``): the next attempt is enqueued for when
        it may be tried again.

        With ``event`` (1-based), an attempt at the request's intermediate event ``event``
        instead (``?webhook_intermediate_status=true``): its status body as it was then, the
        ``webhook-id`` ``msg_<request id>_<event>``, retried likewise for ``--webhook-retry-s``
        after the event was made; once it is delivered or given up, the state machine enqueues
        the next event's (or the terminal delivery's) first attempt. Nothing is sent for an
        event that has ended already."""
        req = retry_db(lambda: self.jobs.get(request_id), "delivering a webhook")
        if req is None or not req.webhook:
            return
        if event:
            if event != webhook_events.current(req.webhook):
                return
            made_at = datetime.fromisoformat(req.webhook["events"][event - 1]["made_at"].replace("Z", "+00:00"))
        elif req.webhook.get("delivered_at") or req.finished_at is None:
            return
        else:
            made_at = req.finished_at
        url = req.webhook["url"]
        receiver = self.breaker.receiver(req.owner_key_id, url)
        extra: dict[str, object] = {"request_id": request_id, "url": loggable(url), **({"event": event} if event else {})}
        wait_s = self.breaker.wait_s(receiver)
        if wait_s > 0:
            self._retry(req, attempt, wait_s, "webhook.backed_off", extra, event, made_at)
            return
        payload = json.dumps(self._body(req, event))
        secret = signing_secret(self.jobs.db, req.owner_key_id)
        headers = signed_headers(secret, message_id(request_id, event), payload)
        code = post(url, payload, headers, self.policy, self.settings.webhook_timeout_s)
        self.breaker.record(receiver, answered=code is not None)
        record = retry_db(lambda: self.jobs.record_webhook_attempt(request_id, code, event), "recording a webhook attempt")
        outcome = record["events"][event - 1] if event else record
        extra.update(attempt=outcome["attempts"], status_code=code)
        if outcome.get("delivered_at"):
            log.info("webhook.delivered", extra=extra)
            return
        self._retry(req, attempt, backoff_s(attempt), "webhook.retrying", extra, event, made_at)

    def _body(self, req: Request, event: int) -> dict[str, object]:
        """The payload: the result body (as ``GET /result?include_cost=true``), or for
        intermediate event ``event`` the status body as it was when the event was made
        (``in_progress`` with its progress, and ``partial_output.images`` once images were
        stored), its image URLs valid ``--url-ttl-s`` from now."""
        base_url = req.webhook["base_url"] if req.webhook else ""
        if not event:
            return bodies.result_body(req, base_url=base_url, storage=self.storage, url_ttl_s=self.settings.url_ttl_s,
                                      include_cost=True, include_webhook=False)
        made = req.webhook["events"][event - 1] if req.webhook else {}
        partial = bodies.partial_urls(self.storage, made["partial_outputs"], self.settings.url_ttl_s, base_url)
        return bodies.status_body(base_url, req.request_id, Status.IN_PROGRESS, made["progress"], None, partial)

    def _retry(self, req: Request, attempt: int, delay_s: float, what: str, extra: dict[str, object],
               event: int, since: datetime) -> None:
        """Enqueue attempt ``attempt + 1`` of ``req``'s webhook (of its intermediate event
        ``event`` when not 0) after ``delay_s`` seconds, unless that is past
        ``--webhook-retry-s`` after ``since`` (when the request finished, or the event was
        made): then it is given up (an event's end lets the next one go). A failed intermediate
        event is given up at once when a later state exists (a later event, or the end): it
        is stale, and retrying it would hold the later ones back."""
        superseded = event and (req.finished_at is not None or len((req.webhook or {}).get("events", [])) > event)
        if superseded or time.time() + delay_s > since.timestamp() + self.settings.webhook_retry_s:
            log.warning("webhook.superseded" if superseded else "webhook.given_up", extra=extra)
            if event:
                retry_db(lambda: self.jobs.give_up_webhook_event(req.request_id, event), "giving up a webhook event")
            return
        log.info(what, extra={**extra, "in_s": round(delay_s, 3)})
        retry_db(lambda: self.jobs.queue.enqueue_webhook(None, request_id=req.request_id, attempt=attempt + 1,
                                                         owner_key_id=req.owner_key_id, delay_s=delay_s, event=event),
                 "enqueueing a webhook retry")
