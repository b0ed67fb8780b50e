"""The application service: what each route does, with no HTTP in it.

Routes parse and authorise, then call one method here; errors are raised as
:class:`~modelapi.errors.APIStatusError` subclasses and mapped to the wire by the app. Methods
that build absolute URLs take ``base_url``: the base the current HTTP request reached the API at,
computed once per request by the app (a dependency of its routes; see
:func:`modelapi.api.app.forwarded_base_url`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from .. import catalog
from ..backends.placement import Placement
from ..backends.runcomfy import RunComfyConfig, forward_cancel
from ..core import bodies, delivery
from ..core.accounts import Accounts, Admission
from ..core.auth import ApiKey, hash_key
from ..core.context import Core
from ..core.fetch import FetchPolicy, check_url_async, decode_image, fetch, load_image, open_image, read_data_uri
from ..core.files import FileStore
from ..core.jobs import Polled, Request, new_request_id
from ..core.storage import content_type_of
from ..core.sweep import Sweeper
from ..errors import (APIStatusError, AuthenticationError, ConflictError, GoneError, InputError, NotFoundError,
                      RateLimitError, ValidationError)
from ..types import Status
from ..validation import check_image, check_input, image_fields, sniff_format
from .errors import ServiceUnavailable

log = logging.getLogger("modelapi.service")


@dataclass(frozen=True)
class Ignored:
    """The body fields a submit ignored (unknown to the schema), as answered and logged: the
    first :attr:`LISTED` names in sorted order, each cut to :attr:`NAME_CHARS` characters
    (``"…"`` marks a cut), and how many there were in all."""

    LISTED = 20
    NAME_CHARS = 100
    fields: list[str]
    count: int

    @classmethod
    def of(cls, names: list[str]) -> Ignored:
        cut = [n if len(n) <= cls.NAME_CHARS else n[:cls.NAME_CHARS] + "…" for n in heapq.nsmallest(cls.LISTED, names)]
        return cls(cut, len(names))


@dataclass(frozen=True)
class _Plan:
    """What :meth:`Service.submit` learnt before any network work."""

    inputs: dict[str, Any]
    problems: list[dict[str, Any]]
    body_hash: str
    ignored: Ignored
    earlier: Request | None = None
    admission: Admission | None = None


class Service:
    """Everything the routes need, built once per process."""

    def __init__(self, core: Core) -> None:
        settings = core.settings
        self.settings = settings
        self.db = core.db
        self.jobs = core.jobs
        self.storage = core.storage
        self.files = FileStore(core.db)
        self.draining = threading.Event()
        self.policy = FetchPolicy.from_settings(settings)
        self.sweeper = Sweeper(settings, core.jobs, core.storage)
        self._fetching: dict[str, int] = {}  # submits fetching inputs, by key id (event loop only)
        self.accounts = Accounts(core.db, max_queued_per_key=settings.max_queued_per_key, prices_usd=settings.prices_usd)
        self.placement = Placement(core.jobs, settings.routes, settings.overflow_wait_s, settings.worker_concurrency)
        self.backends_health: Callable[[], dict[str, Any]] | None = None
        """The in-process worker's backends and circuit breakers (``/healthz`` with a key), when it has one."""

    # -- submit ------------------------------------------------------------------------------
    async def submit(self, key: ApiKey, model: catalog.Model, body: Any, idempotency_key: str | None,
                     webhook: str | None = None, *, base_url: str, cancel_after_s: float | None = None,
                     intermediate: bool = False, headers: MutableHeaders | None = None,
                     retention_s: int | None = None) -> tuple[Request, Ignored]:
        """Validate, fetch and check the reference images, store them, store the request and
        put it on the durable queue — in that order, so that a 2xx means durably accepted.
        Called on the event loop: the database, the store and the image decoding run on the
        thread pool; URL inputs are fetched on the loop, all of one submit's at once, each under
        the one ``--fetch-timeout-s`` deadline, so a slow image host holds no thread.

        A submit with image inputs or a webhook holds one of its key's
        ``--max-fetching-per-key`` slots (per API process) while it resolves, fetches, checks
        and stores them.

        The key's limits (:mod:`modelapi.core.accounts`) are checked, and its budget reserved, in
        the transaction that stores the request; a key with ``rpm`` gets its rate window's
        ``RateLimit-*`` values in ``headers`` (the response's, when given).

        Returns the request and the body's fields that the schema does not know, which were
        ignored (the hosted documentation does not forbid them; ``--strict-inputs`` refuses
        them with a 422 instead). The webhook record keeps ``base_url``: the delivery, later and
        in another process, builds the body's URLs on it. ``cancel_after_s``: the request's
        deadline, seconds after it is stored (``Cancel-After``; None: none).
                ``intermediate``
        (``?webhook_intermediate_status=true``): the webhook also gets the status changes before
        the end (:mod:`modelapi.core.webhook_events`); it needs ``webhook``.
        ``retention_s``: how long the request's files are kept once it finished (None:
        ``--retention-s``; the route keeps it at most that).

        Raises:
            ValidationError: 422, one detail entry per problem (schema and image rules).
            ForbiddenError: 403 (403003), a model outside the key's ``models``.
            RateLimitedError: 429 (429002), over the key's ``rpm``.
            RateLimitError: 429, the key already has ``max_queued`` (``max_queued_per_key``)
                requests queued, or ``max_fetching_per_key`` submits fetching their inputs.
            InsufficientFundsError: 402 (10001), the key's budget cannot cover the request.
            ServiceUnavailable: 503 while shutting down.
            sqlalchemy.exc.OperationalError: the database is unreachable (the app answers 503).
        """
        plan = await run_in_threadpool(self._plan, key, model, body, idempotency_key)
        remote = {} if plan.problems else self._remote_inputs(model, plan.inputs, base_url)
        has_images = any(plan.inputs.get(f) for f in image_fields(model.input_schema))
        with self._fetch_slot(key) if webhook or has_images else contextlib.nullcontext():
            problems = plan.problems
            if webhook is not None:
                try:
                    await check_url_async(webhook, self.policy, loc=["query", "webhook"])  # resolves; connects to nothing
                except InputError as exc:
                    problems = [*problems, exc.to_detail()]
            elif intermediate:
                problems = [*problems, {"loc": ["query", "webhook_intermediate_status"], "type": "missing_webhook",
                                        "msg": "webhook_intermediate_status=true needs a webhook URL (?webhook=...)"}]
            if problems:
                raise ValidationError("Input fails the model's schema", problems)
            if plan.earlier is not None:
                return self._same_request(plan.earlier, plan.body_hash), plan.ignored
            fetched = await self._fetch_all(remote)
            req = await run_in_threadpool(self._accept, key, model, plan, fetched, idempotency_key, webhook, base_url,
                                          cancel_after_s, intermediate, retention_s)
        if headers is not None and plan.admission is not None and plan.admission.rate is not None:
            headers.update(plan.admission.rate.headers())
        if plan.ignored.count:
            log.info("request.ignored_fields", extra={"request_id": req.request_id, "fields": plan.ignored.fields,
                                                      "count": plan.ignored.count})
        return req, plan.ignored

    def _plan(self, key: ApiKey, model: catalog.Model, body: Any, idempotency_key: str | None) -> _Plan:
        """The thread-pool half before any network: the schema check, the ignored fields, the
        earlier request of ``idempotency_key`` and the key's limits to check (its model allow-list
        at once; the rest when the request is stored)."""
        if self.draining.is_set():
            raise ServiceUnavailable("the server is shutting down; retry shortly")
        self.accounts.check_model(key, model.model_id)
        ignored = Ignored([], 0)
        if isinstance(body, dict) and not self.settings.strict_inputs:
            known = model.input_schema.get("properties", {})
            unknown = [k for k in body if k not in known]
            if unknown:
                ignored = Ignored.of(unknown)
                body = {k: v for k, v in body.items() if k in known}
        inputs, problems = check_input(model.input_schema, body)
        if not problems:
            problems = catalog.engine_limits(inputs)
        body_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        if problems:
            return _Plan(inputs, problems, body_hash, ignored)
        earlier = self.jobs.find_idempotent(key.id, idempotency_key) if idempotency_key else None
        return _Plan(inputs, problems, body_hash, ignored, earlier, self.accounts.admission(key, model, inputs))

    @contextlib.contextmanager
    def _fetch_slot(self, key: ApiKey) -> Iterator[None]:
        """Hold one of ``key``'s ``max_fetching_per_key`` slots; entered and left on the event
        loop only (so the count needs no lock). Raises RateLimitError (429) when none is free."""
        limit, held = self.settings.max_fetching_per_key, self._fetching.get(key.id, 0)
        if held >= limit:
            raise RateLimitError(f"this key already has {limit} submits fetching their input images "
                                 "(--max-fetching-per-key); retry when one has finished", retry_after_s=1)
        self._fetching[key.id] = held + 1
        try:
            yield
        finally:
            self._fetching[key.id] -= 1
            if not self._fetching[key.id]:
                del self._fetching[key.id]

    def _remote_inputs(self, model: catalog.Model, inputs: dict[str, Any], base_url: str) -> dict[tuple[str, int], str]:
        """The image inputs to fetch over the network, by (field, index): neither ``data:``
        URIs nor uploads to this server."""
        return {(field, i): uri for field in image_fields(model.input_schema)
                for i, uri in enumerate(inputs.get(field, [])) if self._upload_id(uri, base_url) is None
                and not uri.startswith("data:")}

    async def _fetch_all(self, remote: dict[tuple[str, int], str]) -> dict[tuple[str, int], bytes | InputError]:
        """Fetch every URL of ``remote`` at once, on the event loop; each entry is the body or
        the reason it was refused."""
        fetched: dict[tuple[str, int], bytes | InputError] = {}

        async def one(where: tuple[str, int], uri: str) -> None:
            try:
                fetched[where] = await fetch(uri, self.policy, loc=["body", *where])
            except InputError as exc:
                fetched[where] = exc

        async with anyio.create_task_group() as tasks:
            for where, uri in remote.items():
                tasks.start_soon(one, where, uri)
        return fetched

    def _accept(self, key: ApiKey, model: catalog.Model, plan: _Plan, fetched: dict[tuple[str, int], bytes | InputError],
                idempotency_key: str | None, webhook: str | None, base_url: str,
                cancel_after_s: float | None = None, intermediate: bool = False,
                retention_s: int | None = None) -> Request:
        """The thread-pool half after the fetches: check, decode and store the images, then
        store the request and enqueue it."""
        request_id = new_request_id()
        input_files = self._store_images(model, plan.inputs, key, request_id, base_url, fetched)
        seed = plan.inputs.get("seed")
        upstream, tried = self.placement.place(model.model_id)
        created = False
        try:
            req = self.jobs.create(
                request_id=request_id, owner_key_id=key.id, model_id=model.model_id, inputs=plan.inputs,
                input_files=input_files, seed=seed if seed is not None else secrets.randbelow(2**31),
                idempotency_key=idempotency_key, body_hash=plan.body_hash,
                webhook={"url": webhook, "base_url": base_url, **({"intermediate_status": True} if intermediate else {})}
                if webhook else None, admission=plan.admission, cancel_after_s=cancel_after_s,
                retention_s=retention_s, upstream=upstream, tried=tried,
            )
            created = True
            return req
        except sa.exc.IntegrityError:  # the same idempotency key, submitted at the same moment
            earlier = self.jobs.find_idempotent(key.id, idempotency_key or "")
            if earlier is None:
                raise
            return self._same_request(earlier, plan.body_hash)
        finally:
            if not created:  # refused (rate, queue, budget), a replay, or the database failed: no row names them
                self._discard(input_files)

    def _discard(self, keys: list[str]) -> None:
        """Delete the input images a submit stored for a request that was never created, so a
        key refused again and again leaves nothing behind; a failure is logged, not raised."""
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception as exc:  # noqa: BLE001 - left behind, logged
                log.warning("could not delete %s: %s: %s", key, type(exc).__name__, exc)

    @staticmethod
    def _same_request(earlier: Request, body_hash: str) -> Request:
        if earlier.body_hash != body_hash:
            raise ValidationError("Idempotency-Key reused with a different body", [
                {"loc": ["header", "Idempotency-Key"], "msg": "This key was used with a different request body", "type": "idempotency_mismatch"}
            ])
        return earlier

    def _store_images(self, model: catalog.Model, inputs: dict[str, Any], key: ApiKey, request_id: str,
                      base_url: str, fetched: dict[tuple[str, int], bytes | InputError]) -> list[str]:
        """Check every image input against the schema's rules and the pixel limit from its
        header alone, decode them only when all pass (a refused image costs no decoding), then
        store them. ``fetched`` holds the URL inputs' bodies (or errors) by (field, index)."""
        problems: list[dict[str, Any]] = []
        opened: list[tuple[bytes, Image.Image, list[Any]]] = []
        for field, rules in image_fields(model.input_schema).items():
            for i, uri in enumerate(inputs.get(field, [])):
                loc = ["body", field, i]
                try:
                    got = fetched.get((field, i))
                    if isinstance(got, InputError):
                        raise got
                    data = got if got is not None else self.load_input(uri, key, loc, base_url)
                    image = open_image(data, self.policy, loc=loc)  # the header only
                except InputError as exc:
                    problems.append(exc.to_detail())
                    continue
                problems += check_image(rules, file_bytes=len(data), width=image.width, height=image.height, loc=loc)
                opened.append((data, image, loc))
        if not problems:
            for _, image, loc in opened:
                try:
                    load_image(image, self.policy, loc=loc)
                except InputError as exc:
                    problems.append(exc.to_detail())
        if problems:
            raise ValidationError("Input images fail the model's rules", problems)
        keys = []
        for i, (data, _, _) in enumerate(opened):
            keys.append(f"inputs/{request_id}/{i}.{'jpg' if sniff_format(data) == 'jpeg' else 'png'}")
            self._put(keys[-1], data, content_type_of(keys[-1]))
        return keys

    def _upload_id(self, uri: str, base_url: str) -> str | None:
        """The file id of a URL of an upload to this server (under ``base_url`` or the
        configured base), else None."""
        for base in {base_url, self.settings.base_url}:
            if uri.startswith(f"{base}/v1/files/"):
                return uri[len(f"{base}/v1/files/"):]
        return None

    def load_input(self, uri: str, key: ApiKey, loc: list[Any], base_url: str) -> bytes:
        """The bytes of one local image input: an upload to this server (no network fetch) or a
        ``data:`` URI. http(s) URLs are fetched by :meth:`submit` on the event loop, never here.

        Raises:
            InputError: ``file_unknown``, the :func:`~modelapi.core.fetch.read_data_uri` types,
                or ``url_invalid`` for anything else.
        """
        file_id = self._upload_id(uri, base_url)
        if file_id is not None:
            return self.read_upload(file_id, key, loc)
        if uri.startswith("data:"):
            return read_data_uri(uri, self.policy, loc=loc)
        raise InputError("not an upload of this server or a data: URI", loc, "url_invalid")

    # -- uploads -----------------------------------------------------------------------------
    def upload(self, key: ApiKey, data: bytes, base_url: str) -> dict[str, Any]:
        """Store an uploaded JPEG/PNG image, decoded whole first (not only its signature
        sniffed) under the input-image policy (``max_input_bytes``, ``max_input_pixels``).
        Returns ``{"id", "url", "bytes", "content_type"}``.

        Raises:
            ValidationError: 422 naming ``["body", "file"]``: over ``max_input_bytes``
                (``file_too_large``), not a JPEG or PNG by content (``image_format``), over
                ``max_input_pixels`` (``image_too_large``), or truncated or undecodable
                (``image_corrupt``).
            APIStatusError: 413 (413001), the key's stored uploads and this one together would
                be over ``max_upload_bytes_per_key`` bytes (``--max-upload-bytes-per-key``;
                checked before storing, so uploads racing each other may pass it by a few).
            ServiceUnavailable: 503, the file store cannot take the file.
        """
        loc = ["body", "file"]
        try:
            decode_image(data, self.policy, loc=loc).close()
        except InputError as exc:
            raise ValidationError("Invalid image", [exc.to_detail()]) from None
        quota, used = self.settings.max_upload_bytes_per_key, self.files.stored_bytes(key.id)
        if used + len(data) > quota:
            raise APIStatusError(f"upload quota exceeded: this key's uploads would hold {used + len(data)} bytes, "
                                 f"over its {quota}-byte quota (--max-upload-bytes-per-key)", status_code=413)
        fmt = sniff_format(data)
        assert fmt is not None  # decoded as one
        upload = self.files.new(key.id, fmt, len(data))
        self._put(upload.storage_key, data, upload.content_type)
        self.files.add(upload)
        return {"id": upload.id, "url": f"{base_url}/v1/files/{upload.id}", "bytes": upload.bytes,
                "content_type": upload.content_type}

    def webhook_secret(self, key: ApiKey) -> dict[str, str]:
        """``{"key": "whsec_..."}``: the key's webhook signing secret (Standard Webhooks)."""
        return {"key": delivery.signing_secret(self.db, key.id)}

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        """Store an input. Raises ServiceUnavailable (503, with Retry-After) when the store
        refuses or cannot be reached: nothing was accepted, and the client may retry."""
        try:
            self.storage.put(key, data, content_type)
        except Exception as exc:  # noqa: BLE001 - a full disk, a read-only folder, a bucket refusing writes
            log.error("storage refused %s: %s: %s", key, type(exc).__name__, exc)
            raise ServiceUnavailable(f"the file store cannot take the file now ({type(exc).__name__}); retry shortly") from None

    def upload_record(self, file_id: str, key: ApiKey) -> dict[str, Any] | None:
        return self.files.get(file_id, key.id)

    def read_upload(self, file_id: str, key: ApiKey, loc: list[Any]) -> bytes:
        record = self.upload_record(file_id, key)
        if record is None:
            raise InputError("Unknown file: upload it with POST /v1/files using the same API key", loc, "file_unknown")
        try:
            return self.storage.get(record["storage_key"])
        except KeyError:  # deleted by the sweeper (--upload-retention-s) since the row was read
            raise InputError("Unknown file: upload it with POST /v1/files using the same API key", loc, "file_unknown") from None

    def engine_info(self, live: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The engine of the oldest of ``live`` workers (default: read now); ``{}`` when none."""
        live = self.jobs.workers.live() if live is None else live
        return dict(live[0]["engine"]) if live else {}

    # -- reads -------------------------------------------------------------------------------
    def get(self, request_id: str, key: ApiKey) -> Request:
        """Raises NotFoundError for unknown requests and for another key's (the same 404)."""
        req = self.jobs.get(request_id, key.id)
        if req is None:
            raise NotFoundError(f"request {request_id} not found", request_id=request_id)
        return req

    def urls(self, request_id: str, base_url: str) -> dict[str, str]:
        return bodies.urls(base_url, request_id)

    def status(self, request_id: str, token: str | None, base_url: str) -> dict[str, Any]:
        """The status body for the holder of API key ``token``, checked in the same query.

        Raises:
            AuthenticationError: missing, unknown or revoked key.
            NotFoundError: unknown request, or another key's (the same 404).
        """
        polled = self.jobs.poll(request_id, hash_key(token)) if token else (False, None)
        return self._polled_body(request_id, polled, base_url)

    async def status_async(self, request_id: str, token: str | None, base_url: str) -> dict[str, Any]:
        """:meth:`status` without blocking (``jobs.async_reads`` must exist: Postgres)."""
        polled = await self.jobs.poll_async(request_id, hash_key(token)) if token else (False, None)
        return self._polled_body(request_id, polled, base_url)

    def _polled_body(self, request_id: str, polled: tuple[bool, Polled | None], base_url: str) -> dict[str, Any]:
        key_ok, found = polled
        if not key_ok:
            raise AuthenticationError("missing, unknown or revoked API key")
        if found is None:
            raise NotFoundError(f"request {request_id} not found", request_id=request_id)
        return bodies.status_body(base_url, request_id, found.status, found.progress, found.queue_position,
                                  bodies.partial_urls(self.storage, found.partial_outputs, self.settings.url_ttl_s, base_url))

    def _cancel_upstream(self, req: Request) -> bool:
        record = req.upstream or {}
        if record.get("backend") != "runcomfy" or record.get("status") != "in_queue":
            return False
        try:
            config = RunComfyConfig.from_env()
        except ValueError:
            return False
        return forward_cancel(record, config) and self.jobs.cancel_running(req)

    def status_body(self, req: Request, base_url: str) -> dict[str, Any]:
        return bodies.request_status_body(req, base_url=base_url, storage=self.storage, url_ttl_s=self.settings.url_ttl_s)

    def result_body(self, req: Request, include_cost: bool, base_url: str) -> dict[str, Any]:
        """The result body (see :func:`modelapi.core.bodies.result_body`).

        Raises:
            GoneError: 410, the request's outputs were deleted (retention or ``DELETE``).
        """
        if req.deleted_at is not None:
            message, detail = bodies.expired(req)
            raise GoneError(message, detail, request_id=req.request_id)
        return bodies.result_body(req, base_url=base_url, storage=self.storage, url_ttl_s=self.settings.url_ttl_s,
                                  include_cost=include_cost)

    def list_requests(self, key: ApiKey, *, status: Status | None, model_id: str | None, limit: int,
                      cursor: str | None, base_url: str) -> dict[str, Any]:
        """A page of the key's requests, newest first: ``{"requests": [item], "next_cursor": str |
        None}``; each item is the status body plus ``model_id``, ``created_at`` and
        ``finished_at``. ``cursor`` is a page's ``next_cursor`` (opaque).

        Raises:
            ValidationError: 422 for an unknown ``model`` or a malformed ``cursor``.
        """
        return self._listing(key.id, status=status, model_id=model_id, limit=limit, cursor=cursor, base_url=base_url)

    def list_all_requests(self, *, key_id: str | None, status: Status | None, model_id: str | None, limit: int,
                          cursor: str | None, base_url: str) -> dict[str, Any]:
        """:meth:`list_requests` over every key's requests (of ``key_id`` alone when given),
        each item with its ``key_id``: the admin listing."""
        return self._listing(key_id, status=status, model_id=model_id, limit=limit, cursor=cursor, base_url=base_url,
                             with_key=True)

    def _listing(self, owner_key_id: str | None, *, status: Status | None, model_id: str | None, limit: int,
                 cursor: str | None, base_url: str, with_key: bool = False) -> dict[str, Any]:
        if model_id is not None and catalog.get(model_id) is None:
            raise ValidationError("Unknown model", [
                {"loc": ["query", "model"], "msg": "Must be one of the model ids of GET /v1/models", "type": "enum"}])
        before = None
        if cursor is not None:
            try:
                before = int(base64.urlsafe_b64decode(cursor.encode("ascii") + b"==").decode("ascii"))
            except (ValueError, UnicodeError):
                raise ValidationError("Malformed cursor", [
                    {"loc": ["query", "cursor"], "msg": "Must be a next_cursor from this route", "type": "value_error"}]) from None
        page = self.jobs.page(owner_key_id, status=status, model_id=model_id, limit=limit, before_seq=before)
        next_cursor = None
        if len(page) == limit:
            next_cursor = base64.urlsafe_b64encode(str(page[-1].seq).encode()).decode().rstrip("=")
        return {"requests": [self.status_body(r, base_url) | {"model_id": r.model_id, "created_at": bodies.iso(r.created_at),
                                                    "finished_at": bodies.iso(r.finished_at)}
                             | ({"key_id": r.owner_key_id} if with_key else {}) for r in page],
                "next_cursor": next_cursor}

    STOP_WAIT_S = 10.0
    """How long ``POST /cancel?running=true`` waits for the stop it asked before answering
    ``stopping``, seconds."""

    def cancel(self, req: Request, running: bool = False) -> dict[str, Any]:
        """in_queue -> cancelled (and off the queue); in_progress on ``runcomfy`` while the
        upstream still queues it -> the cancel forwarded upstream, and cancelled when the
        upstream cancelled it; in_progress with ``running`` -> asked to stop at its next step (``{"status": "in_progress", "outcome": "stopping"}``: the route
        waits for it to end, see :meth:`cancel_answer`); anything else -> not_cancellable.
        Idempotent: ``{"request_id", "status", "outcome"}``."""
        if req.status is Status.IN_QUEUE and self.jobs.cancel(req):
            return {"request_id": req.request_id, "status": Status.CANCELLED.value, "outcome": "cancelled"}
        if req.status is Status.IN_PROGRESS and self._cancel_upstream(req):
            return {"request_id": req.request_id, "status": Status.CANCELLED.value, "outcome": "cancelled"}
        if running and self.jobs.request_stop(req):  # conditional on in_progress as stored now
            return {"request_id": req.request_id, "status": Status.IN_PROGRESS.value, "outcome": "stopping"}
        return self.cancel_answer(self.jobs.get(req.request_id) or req)

    @staticmethod
    def cancel_answer(req: Request, stopping: bool = False) -> dict[str, Any]:
        """The cancel answer of ``req`` as it is now: cancelled; ``stopping`` while still
        in_progress when a stop was asked (``stopping``); else not_cancellable."""
        if req.status is Status.CANCELLED:
            outcome = "cancelled"
        elif stopping and req.status is Status.IN_PROGRESS:
            outcome = "stopping"
        else:
            outcome = "not_cancellable"
        return {"request_id": req.request_id, "status": req.status.value, "outcome": outcome}

    def delete(self, req: Request, base_url: str) -> dict[str, Any]:
        """``DELETE``: delete a finished request's outputs, inputs and the uploads it was the
        last to use, now; a queued one is cancelled first. Returns the status body plus
        ``deleted_at`` (ISO 8601 UTC); idempotent: deleting again answers the same ``deleted_at``.

        Raises:
            ConflictError: 409, the request is running (it can be deleted once it ends).
        """
        if req.status is Status.IN_QUEUE:
            self.jobs.cancel(req)
            req = self.jobs.get(req.request_id) or req
        if not req.status.is_terminal:
            raise ConflictError(f"request {req.request_id} is {req.status.value}: it can be deleted once it has finished",
                                {"request_id": req.request_id, "status": req.status.value}, request_id=req.request_id)
        marked, uploads = self.jobs.mark_deleted(req)
        if uploads is not None:
            self.sweeper.purge([marked], uploads, queue=False)
        return self.status_body(marked, base_url) | {"deleted_at": bodies.iso(marked.deleted_at)}
